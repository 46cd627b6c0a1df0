//! Real clients drive cni-multi: a cnitool built from Debian's libcni sources
//! (scripts/build-cnitool.sh) runs every testdata scenario, wrapped in a conflist, and the
//! bridge+portmap+firewall+tuning+bandwidth chains of testdata/clients/, once over a CNI_PATH of
//! symlinks to our binary and once over the reference plugins in /usr/lib/cni. The printed results
//! (normalised), the kernel state, the firewall rules, tc qdiscs and the host-local store must be
//! the same, except for the deliberate differences in `DELIBERATE`.
//!
//! Podman and containerd (`make test-clients`, not in `make test`) are in `podman_*`/`ctr_*`
//! below; docs/guides/clients.md shows the configs.

use crate::harness::runtime::{run_in, Out, Tmp};
use crate::harness::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

/// cniVersions every scenario runs at (libcni 1.1.2 speaks up to 1.0.0; CHECK needs 0.4.0).
const VERSIONS: &[&str] = &["0.4.0", "1.0.0"];

/// Deliberate differences between cni-multi and the Debian 1.1.1 reference seen through cnitool:
/// (testdata file or "*", text in the difference line, why). Each is listed in docs/differences.md.
const DELIBERATE: &[(&str, &str, &str)] = &[
    (
        "*",
        "/keep_addr_on_down: \"0\" != \"1\"",
        "newest upstream (v1.7.0) sets keep_addr_on_down=1 on the container interface before its first IPv6 address",
    ),
    (
        "bridge-static.json",
        "ADD result /dns",
        "bridge returns the IPAM plugin's DNS (newest upstream); Debian 1.1.1 prints an empty dns",
    ),
    (
        "*",
        "ifalias: only on the right: \"cni bandwidth net=",
        "bandwidth labels its ifb with an alias (`cni bandwidth net=… id=…`) so GC can find this network's stale ifbs",
    ),
    (
        "loopback.json",
        "/version: \"\" != \"",
        "loopback results are converted to the requested version; Debian 1.1.1 prints its 1.x result (no ips[].version) labelled with an older version, which libcni then prints with an empty version",
    ),
];

/// CHECK failures of the reference that ours must not copy: (file, why).
const ORACLE_CHECK_BUGS: &[(&str, &str)] = &[
    ("bridge-l2.json", "bridge CHECK calls IPAM CHECK with an empty ipam type in L2 mode"),
    ("clients/chain-iptables.conflist", PORTMAP_DUAL_CHECK),
    ("clients/chain-default.conflist", PORTMAP_DUAL_CHECK),
];

const PORTMAP_DUAL_CHECK: &str =
    "Debian 1.1.1 portmap CHECK of a dual-stack attachment looks for the IPv4 DNAT rules in ip6tables (\"could not check ipv6 dnat\")";

/// Build (once per process; the script caches across runs) and return the cnitool path.
pub fn cnitool() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(root.join("scripts/build-cnitool.sh"))
            .output()
            .expect("run scripts/build-cnitool.sh");
        assert!(out.status.success(), "build-cnitool.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    None,
    /// bridge `cmbr0` already in the host netns with `<v4a>.254/24`
    BridgeWithAddr,
    /// `<tmp>/resolv.conf` for host-local `resolvConf`
    ResolvConf,
}

#[derive(Clone, Copy)]
struct Scn {
    file: &'static str,
    cni_args: Option<&'static str>,
    cap_args: Option<&'static str>,
    setup: Setup,
    keep_mac: Option<&'static str>,
    /// the rule set must be the same on both sides (explicit backends); otherwise only "no
    /// leftover rules" is checked, in both iptables and nft (the default backend is the node's)
    same_rules: bool,
}

const fn scn(file: &'static str) -> Scn {
    Scn { file, cni_args: None, cap_args: None, setup: Setup::None, keep_mac: None, same_rules: true }
}

const CHAIN_CAPS: &str = r#"{"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}, {"hostPort": 18053, "containerPort": 53, "protocol": "udp"}], "bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000, "egressRate": 8000000, "egressBurst": 80000}}"#;

/// One side's record of add/check/del/del.
struct Rec {
    add: Out,
    add_result: Value,
    add_state: Value,
    add_rules: String,
    check: Option<Out>,
    del: Out,
    del_state: Value,
    del_rules: String,
    del2: Out,
    leases_after_del: Vec<String>,
}

/// `nft list ruleset` with counters masked, tables sorted and the chains of each table sorted by
/// name: the order in which tables and chains were created is not part of the rule set's meaning
/// (rule order inside a chain is, and stays).
fn nft_ruleset(ns: &Netns) -> String {
    let text = String::from_utf8_lossy(&ns.exec(&["nft", "list", "ruleset"]).stdout).into_owned();
    let mut tables: Vec<String> = vec![];
    let mut header = String::new();
    let mut chains: Vec<String> = vec![];
    let mut cur: Option<String> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words: Vec<&str> = line.split(' ').collect();
        for i in 1..words.len() {
            if words[i - 1] == "packets" || words[i - 1] == "bytes" {
                words[i] = "N";
            }
        }
        let line = words.join(" ") + "\n";
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
    tables.concat()
}

/// The rule set of a netns (nft + iptables-save + ip6tables-save), counters masked.
fn ruleset(ns: &Netns) -> String {
    let mut out = nft_ruleset(ns);
    for tool in ["iptables-save", "ip6tables-save"] {
        let o = ns.exec(&[tool]);
        for line in String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.starts_with('#')) {
            let l = if line.starts_with(':') { line.split(" [").next().unwrap_or(line) } else { line };
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// `tc qdisc show` of every netns of the world (bandwidth's ingress/egress shaping).
fn qdiscs(w: &World) -> String {
    let mut s = String::new();
    for ns in std::iter::once(&w.host).chain(w.containers.iter()) {
        let o = ns.exec(&["tc", "qdisc", "show"]);
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            // the host-side veth name is random
            let l: Vec<&str> = l.split(' ').map(|t| if t.starts_with("veth") { "vethX" } else { t }).collect();
            s.push_str(&l.join(" "));
            s.push('\n');
        }
    }
    s
}

type Vars = Vec<(&'static str, String)>;

fn world_for(imp: Impl, tag: &str, s: &Scn, subnets: &Subnets, version: &str) -> (World, Value, Vars) {
    let w = World::new(tag, 1, imp);
    w.host_nodad();
    let vars = vars(&w, subnets, &format!("net-{tag}"));
    let mut conf = load(s.file, &vars, version);
    if conf.get("plugins").is_none() {
        // a single-plugin scenario becomes a one-plugin conflist
        let mut plugin = conf.clone();
        if let Some(o) = plugin.as_object_mut() {
            o.remove("name");
            o.remove("cniVersion");
        }
        conf = json!({"cniVersion": version, "name": conf["name"], "plugins": [plugin]});
    }
    match s.setup {
        Setup::None => {}
        Setup::BridgeWithAddr => {
            w.host.must(&["ip", "link", "add", "cmbr0", "type", "bridge"]);
            w.host.must(&["ip", "addr", "add", &format!("{}.254/24", subnets.v4a), "dev", "cmbr0"]);
            w.host.must(&["ip", "link", "set", "cmbr0", "up"]);
        }
        Setup::ResolvConf => {
            let text = format!(
                "# test resolver\nnameserver {}.53\nnameserver {}::53\ndomain example.test\nsearch a.test b.test\noptions ndots:3 timeout:1\n",
                subnets.v4a, subnets.v6a
            );
            std::fs::write(w.tmp.join("resolv.conf"), text).expect("write resolv.conf");
        }
    }
    (w, conf, vars)
}

/// Run add/check/del/del through cnitool in `w`, with the container netns reached through the
/// symlink `sandbox` (the same path on both sides, so cnitool derives the same container id).
fn drive(w: &World, conf: &Value, vars: &Vars, s: &Scn, sandbox: &Path, version: &str) -> Rec {
    let _ = std::fs::remove_file(sandbox);
    std::os::unix::fs::symlink(&w.c(0).path, sandbox).expect("symlink sandbox");
    let netconf = w.tmp.join("net.d");
    std::fs::create_dir_all(&netconf).expect("net.d");
    std::fs::write(netconf.join("10-test.conflist"), serde_json::to_vec_pretty(conf).expect("json")).expect("write");
    let subst = |a: &str| vars.iter().fold(a.to_string(), |t, (k, v)| t.replace(k, v));
    let mut env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", w.bin_dir.display().to_string()),
        ("CNI_CACHE_DIR", w.tmp.join("cache").display().to_string()),
    ];
    if let Some(a) = s.cni_args {
        env.push(("CNI_ARGS", subst(a)));
    }
    if let Some(a) = s.cap_args {
        env.push(("CAP_ARGS", a.to_string()));
    }
    let name = net_name(conf);
    let sb = sandbox.display().to_string();
    let run = |verb: &str| run_in(&w.host, cnitool(), &[], &env, &[verb, &name, &sb]);
    let mut norm = Normalizer::for_world(w);
    if let Some(m) = s.keep_mac {
        norm = norm.keep_mac(m);
    }
    let add = run("add");
    let add_result = norm.result(&add.stdout);
    let add_state = norm.snapshot(&w.snapshot());
    let add_rules = norm.text(&(ruleset(&w.host) + &qdiscs(w)));
    let check = (add.ok && version_ge(version, "0.4.0")).then(|| run("check"));
    let del = run("del");
    let del_state = norm.snapshot(&w.snapshot());
    let del_rules = norm.text(&(ruleset(&w.host) + &qdiscs(w)));
    let del2 = run("del");
    let leases_after_del = w.leases(&name);
    Rec { add, add_result, add_state, add_rules, check, del, del_state, del_rules, del2, leases_after_del }
}

/// Lines of `b` not in `a` and of `a` not in `b` (for rule sets).
fn line_diff(a: &str, b: &str) -> Vec<String> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out: Vec<String> = la.iter().filter(|l| !lb.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(lb.iter().filter(|l| !la.contains(l)).map(|l| format!("+ {l}")));
    if out.is_empty() && la != lb {
        let i = la.iter().zip(&lb).position(|(x, y)| x != y).unwrap_or(0);
        out.push(format!(
            "same rules in another order, from line {i}: reference {:?} / ours {:?}",
            &la[i..(i + 4).min(la.len())],
            &lb[i..(i + 4).min(lb.len())]
        ));
    }
    out
}

/// Rules that name this attachment (its container id, or one of its addresses) after DEL.
fn leftover_rules(rules: &str, cid_part: &str, addrs: &[String]) -> Vec<String> {
    rules
        .lines()
        .filter(|l| l.contains(cid_part) || addrs.iter().any(|a| l.contains(a.as_str())))
        .map(str::to_string)
        .collect()
}

/// What a failed ADD must not leave: a container interface, a host veth, a lease.
fn failed_add_leftovers(w: &World) -> Vec<String> {
    let mut out = vec![];
    if w.c(0).link("eth0").is_some() {
        out.push("container eth0".to_string());
    }
    out.extend(w.host.link_names().into_iter().filter(|n| n.starts_with("veth")).map(|n| format!("host {n}")));
    out
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect()
}

fn deliberate(file: &str, line: &str) -> Option<&'static str> {
    DELIBERATE.iter().find(|(f, needle, _)| (*f == "*" || *f == file) && line.contains(needle)).map(|(_, _, w)| *w)
}

/// One scenario at one version: the differences that are not deliberate.
fn compare(tag: &str, s: &Scn, version: &str) -> Vec<String> {
    let subnets = Subnets::alloc();
    let link_dir = Tmp::new(&format!("cnitool-{tag}"));
    let sandbox = link_dir.join("sandbox");
    let (rw, rconf, rvars) = world_for(Impl::Reference, tag, s, &subnets, version);
    let (ow, oconf, ovars) = world_for(Impl::Ours, tag, s, &subnets, version);
    let r = drive(&rw, &rconf, &rvars, s, &sandbox, version);
    let o = drive(&ow, &oconf, &ovars, s, &sandbox, version);
    let mut out = vec![];
    let mut push = |line: String| match deliberate(s.file, &line) {
        Some(why) => eprintln!("deliberate difference ({} @{version}): {line} ({why})", s.file),
        None => out.push(line),
    };
    if r.add.ok != o.add.ok {
        push(format!(
            "ADD outcome: reference ok={} ({}) / ours ok={} ({})",
            r.add.ok,
            r.add.stderr.trim(),
            o.add.ok,
            o.add.stderr.trim()
        ));
        return out;
    }
    if r.add.ok {
        for d in diff(&r.add_result, &o.add_result) {
            push(format!("ADD result {d}"));
        }
    } else if r.add.stderr.trim() != o.add.stderr.trim() {
        eprintln!("note: ADD error text: reference {:?} ours {:?}", r.add.stderr.trim(), o.add.stderr.trim());
    }
    if r.add.ok {
        for d in diff(&r.add_state, &o.add_state) {
            push(format!("after ADD: {d}"));
        }
    } else {
        // the reference can leave the container veth of a failed ADD behind; ours rolls back
        for l in failed_add_leftovers(&ow) {
            push(format!("ours after failed ADD: {l}"));
        }
    }
    let cid_part = "cnitool-";
    let addrs = addresses(&r.add_result);
    if s.same_rules && r.add.ok {
        for d in line_diff(&r.add_rules, &o.add_rules) {
            push(format!("rules after ADD: {d}"));
        }
        for d in line_diff(&r.del_rules, &o.del_rules) {
            push(format!("rules after DEL: {d}"));
        }
    } else if r.add_rules != o.add_rules {
        eprintln!("note ({}): the default backends differ (rules compared for leftovers only)", s.file);
    }
    // with either backend, no rule may name the attachment after DEL (iptables and nft views)
    let left = leftover_rules(&o.del_rules, cid_part, &addrs);
    if !left.is_empty() {
        push(format!("ours: rules left after DEL: {left:?}"));
    }
    let left = leftover_rules(&r.del_rules, cid_part, &addrs);
    if !left.is_empty() {
        eprintln!("note ({}): the reference left rules after DEL: {left:?}", s.file);
    }
    match (&r.check, &o.check) {
        (Some(rc), Some(oc)) => {
            let bug = ORACLE_CHECK_BUGS.iter().find(|(f, _)| *f == s.file);
            if !oc.ok {
                push(format!("ours CHECK failed: {}", oc.stderr.trim()));
            }
            if rc.ok == bug.is_some() {
                push(format!(
                    "reference CHECK ok={} but the table says {:?}: {}",
                    rc.ok,
                    bug.map(|b| b.1),
                    rc.stderr.trim()
                ));
            }
        }
        (None, None) => {}
        _ => push("CHECK ran on one side only".into()),
    }
    for (label, rec) in [("reference", &r), ("ours", &o)] {
        if r.add.ok && !rec.del.ok {
            push(format!("{label} DEL failed: {}", rec.del.stderr.trim()));
        }
        if (r.add.ok || rec.del.ok) && !rec.del2.ok {
            push(format!("{label} second DEL failed: {}", rec.del2.stderr.trim()));
        }
        if !rec.leases_after_del.is_empty() {
            push(format!("{label}: leases left after DEL: {:?}", rec.leases_after_del));
        }
    }
    // ours may succeed a DEL after a failed ADD where the reference fails
    if r.del.ok != o.del.ok && (r.add.ok || !o.del.ok) {
        push(format!("DEL outcome: reference ok={} / ours ok={}", r.del.ok, o.del.ok));
    }
    if r.add.ok {
        for d in diff(&r.del_state, &o.del_state) {
            push(format!("after DEL: {d}"));
        }
    }
    out
}

fn run_scn(tag: &str, s: Scn) {
    assert!(config::exists(s.file), "testdata/{} missing", s.file);
    let mut report = vec![];
    for v in VERSIONS {
        for d in compare(tag, &s, v) {
            report.push(format!("{} @{v}: {d}", s.file));
        }
    }
    assert!(report.is_empty(), "cnitool: cni-multi differs from the reference:\n{}", report.join("\n"));
}

macro_rules! cnitool_tests {
    ($($name:ident => $scn:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let tag: String = stringify!($name).trim_start_matches("cnitool_").chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
                run_scn(&format!("k{tag}"), $scn);
            }
        )*
        /// Every testdata scenario runs through cnitool.
        #[test]
        fn cnitool_covers_every_scenario() {
            let files = [$($scn.file),*];
            let mut missing = vec![];
            for e in std::fs::read_dir(config::testdata_dir()).expect("testdata").flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".json") && !files.contains(&n.as_str()) {
                    missing.push(n);
                }
            }
            assert!(missing.is_empty(), "testdata not driven through cnitool: {missing:?}");
        }
    };
}

cnitool_tests! {
    cnitool_bridge_l2 => scn("bridge-l2.json");
    cnitool_bridge_v4 => scn("bridge-v4.json");
    cnitool_bridge_v4_gateway => scn("bridge-v4-gateway.json");
    cnitool_bridge_v4_default_gw => scn("bridge-v4-default-gw.json");
    cnitool_bridge_v6 => scn("bridge-v6.json");
    cnitool_bridge_dual => scn("bridge-dual.json");
    cnitool_bridge_mtu_hairpin => scn("bridge-mtu-hairpin.json");
    cnitool_bridge_promisc => scn("bridge-promisc.json");
    cnitool_bridge_enabledad => scn("bridge-enabledad.json");
    cnitool_bridge_mac_runtime => Scn {
        cap_args: Some(r#"{"mac": "0a:58:c6:12:00:07"}"#),
        keep_mac: Some("0a:58:c6:12:00:07"),
        ..scn("bridge-mac-runtime.json")
    };
    cnitool_bridge_mac_cniargs => Scn {
        cni_args: Some("IgnoreUnknown=1;MAC=0a:58:c6:12:00:06"),
        keep_mac: Some("0a:58:c6:12:00:06"),
        ..scn("bridge-mac-cniargs.json")
    };
    cnitool_bridge_force_address => Scn { setup: Setup::BridgeWithAddr, ..scn("bridge-force-address.json") };
    cnitool_bridge_conflict_noforce => Scn { setup: Setup::BridgeWithAddr, ..scn("bridge-conflict-noforce.json") };
    cnitool_bridge_routes => scn("bridge-routes.json");
    cnitool_bridge_range_bounds => scn("bridge-range-bounds.json");
    cnitool_bridge_multi_range => scn("bridge-multi-range.json");
    cnitool_bridge_two_v4_sets => scn("bridge-two-v4-sets.json");
    cnitool_bridge_static => scn("bridge-static.json");
    cnitool_bridge_dns => scn("bridge-dns.json");
    cnitool_ptp_v4 => scn("ptp-v4.json");
    cnitool_ptp_v6 => scn("ptp-v6.json");
    cnitool_ptp_dual_mtu => scn("ptp-dual-mtu.json");
    cnitool_ptp_static => scn("ptp-static.json");
    cnitool_loopback => scn("loopback.json");
    cnitool_host_local_v4 => Scn { setup: Setup::ResolvConf, ..scn("host-local-v4.json") };
    cnitool_host_local_legacy => scn("host-local-legacy.json");
    cnitool_host_local_sets => scn("host-local-sets.json");
    cnitool_host_local_requested_ip => Scn { cni_args: Some("IP=__V4A__.66"), ..scn("host-local-requested-ip.json") };
    cnitool_host_local_args_ips => scn("host-local-args-ips.json");
    cnitool_static_v4 => scn("static-v4.json");
    cnitool_static_dual => scn("static-dual.json");
    cnitool_static_cniargs => Scn {
        cni_args: Some("IP=__V4A__.20/24,__V6A__::20/64;GATEWAY=__V4A__.1"),
        ..scn("static-cniargs.json")
    };
    cnitool_static_runtime_ips => scn("static-runtime-ips.json");
    cnitool_chain_iptables => Scn { cap_args: Some(CHAIN_CAPS), ..scn("clients/chain-iptables.conflist") };
    cnitool_chain_default => Scn {
        cap_args: Some(CHAIN_CAPS),
        same_rules: false,
        ..scn("clients/chain-default.conflist")
    };
}
