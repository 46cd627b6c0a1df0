//! Kernel and on-disk state of a world, captured for comparison: `ip -d -j link/addr/route` per
//! netns, the sysctls plugins touch, and the host-local store files (names, modes, contents).

use super::world::{Netns, World};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Global sysctls (under /proc/sys) that plugins change.
const GLOBAL_SYSCTLS: &[&str] =
    &["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/forwarding"];

/// Per-interface sysctls that plugins change (`{}` is the interface name).
const LINK_SYSCTLS: &[&str] = &[
    "net/ipv4/conf/{}/forwarding",
    "net/ipv4/conf/{}/arp_notify",
    "net/ipv4/conf/{}/rp_filter",
    "net/ipv4/conf/{}/proxy_arp",
    "net/ipv6/conf/{}/accept_ra",
    "net/ipv6/conf/{}/accept_dad",
    "net/ipv6/conf/{}/enhanced_dad",
    "net/ipv6/conf/{}/disable_ipv6",
    "net/ipv6/conf/{}/keep_addr_on_down",
    "net/ipv6/conf/{}/forwarding",
    "net/ipv6/conf/{}/addr_gen_mode",
];

/// The state of one netns.
#[derive(Debug, Clone)]
pub struct NsState {
    /// `ip -d -j link show`
    pub links: Value,
    /// `ip -j addr show`
    pub addrs: Value,
    /// `ip -d -j route show table all` for v4 then v6
    pub routes: Value,
    /// sysctl path → value (global ones and those of every link present)
    pub sysctls: BTreeMap<String, String>,
}

/// A whole world: host, containers (`None` for a netns that was deleted) and store.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub host: NsState,
    pub containers: Vec<Option<NsState>>,
    /// relative path under dataDir → (mode, content)
    pub store: BTreeMap<String, (u32, String)>,
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => vec![],
    }
}

pub fn ns_state(ns: &Netns) -> NsState {
    let links = ns.ip_json(&["-d", "link", "show"]);
    let addrs = ns.ip_json(&["addr", "show"]);
    let mut routes = array(ns.ip_json(&["-4", "-d", "route", "show", "table", "all"]));
    routes.extend(array(ns.ip_json(&["-6", "-d", "route", "show", "table", "all"])));
    let names: Vec<String> =
        links.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect();
    let sysctls = ns.run_in(move || {
        let mut m = BTreeMap::new();
        let mut keys: Vec<String> = GLOBAL_SYSCTLS.iter().map(|s| s.to_string()).collect();
        for n in &names {
            keys.extend(LINK_SYSCTLS.iter().map(|k| k.replace("{}", n)));
        }
        for k in keys {
            let v = std::fs::read_to_string(Path::new("/proc/sys").join(&k))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "<absent>".to_string());
            m.insert(k, v);
        }
        m
    });
    NsState { links, addrs, routes: Value::Array(routes), sysctls }
}

/// Every file under `dir` (recursively): relative path → (permission bits, content).
pub fn read_store(dir: &Path) -> BTreeMap<String, (u32, String)> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        // cni-multi's host-local index: a private cache, not part of the reference's store
        if md.is_file() && e.file_name() == ".cni-multi-index" {
            continue;
        }
        let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
        if md.is_dir() {
            out.insert(format!("{rel}/"), (md.permissions().mode() & 0o7777, String::new()));
            walk(root, &p, out);
        } else {
            let content = std::fs::read(&p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            out.insert(rel, (md.permissions().mode() & 0o7777, content));
        }
    }
}

impl World {
    /// Wait for DAD everywhere, then capture host, containers and store.
    pub fn snapshot(&self) -> Snapshot {
        self.host.settle();
        for c in &self.containers {
            if !c.is_deleted() {
                c.settle();
            }
        }
        Snapshot {
            host: ns_state(&self.host),
            containers: self.containers.iter().map(|c| (!c.is_deleted()).then(|| ns_state(c))).collect(),
            store: read_store(&self.data_dir),
        }
    }
}

impl Snapshot {
    /// As one JSON value (for normalisation and diffing).
    pub fn to_value(&self) -> Value {
        fn ns(s: &NsState) -> Value {
            json!({"links": s.links, "addrs": s.addrs, "routes": s.routes, "sysctls": s.sysctls})
        }
        let store: BTreeMap<&String, Value> = self
            .store
            .iter()
            .map(|(k, (mode, content))| (k, json!({"mode": format!("{mode:o}"), "content": content})))
            .collect();
        json!({
            "host": ns(&self.host),
            "containers": self.containers.iter().map(|c| c.as_ref().map(ns).unwrap_or(Value::Null)).collect::<Vec<_>>(),
            "store": store,
        })
    }
}

/// The netfilter rules of a netns with counters masked: the `nft list ruleset` lines and the
/// `iptables-save` / `ip6tables-save` lines (save comments dropped, chain counters cut off).
pub struct Netfilter {
    pub nft: Vec<String>,
    /// (tool, line)
    pub save: Vec<(&'static str, String)>,
}

/// Read the rules of `ns` (see [`Netfilter`]).
pub fn netfilter(ns: &Netns) -> Netfilter {
    let nft = ns
        .must(&["nft", "list", "ruleset"])
        .lines()
        .map(|line| {
            let mut words: Vec<&str> = line.split(' ').collect();
            for i in 1..words.len() {
                if words[i - 1] == "packets" || words[i - 1] == "bytes" {
                    words[i] = "N";
                }
            }
            words.join(" ")
        })
        .collect();
    let mut save = vec![];
    for tool in ["iptables-save", "ip6tables-save"] {
        for line in ns.must(&[tool]).lines().filter(|l| !l.starts_with('#')) {
            let l = if line.starts_with(':') { line.split(" [").next().unwrap_or(line) } else { line };
            save.push((tool, l.to_string()));
        }
    }
    Netfilter { nft, save }
}

impl Netfilter {
    /// The save lines, one per line of text.
    fn save_text(&self) -> String {
        self.save.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// nft, then iptables, then ip6tables, in kernel order, one rule a line.
    pub fn text(&self) -> String {
        self.nft.iter().map(|l| format!("{l}\n")).collect::<String>() + &self.save_text()
    }

    /// [`Netfilter::text`] with the nft tables sorted and the chains of each table sorted by
    /// name (blank lines dropped): the order in which tables and chains were created is not part
    /// of the rule set's meaning (rule order inside a chain is, and stays).
    pub fn sorted_text(&self) -> String {
        let mut tables: Vec<String> = vec![];
        let mut header = String::new();
        let mut chains: Vec<String> = vec![];
        let mut cur: Option<String> = None;
        for line in self.nft.iter().filter(|l| !l.trim().is_empty()) {
            let line = format!("{line}\n");
            if let Some(c) = cur.as_mut() {
                c.push_str(&line);
                if line == "\t}\n" {
                    chains.extend(cur.take());
                }
            } else if line.starts_with('\t') {
                cur = Some(line);
            } else if line == "}\n" {
                chains.sort();
                tables.push(std::mem::take(&mut header) + &chains.concat() + &line);
                chains.clear();
            } else {
                header.push_str(&line);
            }
        }
        tables.sort();
        tables.concat() + &self.save_text()
    }

    /// One line a rule, tagged with its source: `iptables-save: …`, `ip6tables-save: …`, then
    /// `nft: …`.
    pub fn tagged(&self) -> Vec<String> {
        let saves = self.save.iter().map(|(tool, l)| format!("{tool}: {l}"));
        saves.chain(self.nft.iter().map(|l| format!("nft: {l}"))).collect()
    }
}
