//! host-local IPAM: allocate addresses from configured ranges, one per range set, and
//! record them in the reference's on-disk store (see `store.rs`), so a node can switch
//! between this binary and the reference without losing a lease.
//!
//! Better than the reference: the whole ADD runs under one lock; a failed ADD releases
//! exactly what it reserved (not older reservations of the same attachment); a gateway
//! of the wrong family or outside its subnet is a config error (code 7); DEL needs only
//! the data directory (a broken range config cannot block teardown, and nothing is
//! created); GC releases stale reservations; STATUS checks the config and that the store
//! can be written, creating nothing (a config without ranges is ready: they may come at ADD).

use anyhow::Context;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::common::{self, RawRoute};
use super::range::{parse_ip_maybe_cidr, RangeSet, RawRange};
use super::resolvconf;
use super::store::{self, Store};
use crate::cni::plugin::{acni, arg, cap, config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::result::{Dns, IpConfig, Route};
use crate::cni::{code, config, CniError, CniResult, Ctx};

pub const APPLET: Plugin = Plugin {
    name: "host-local",
    about: "IPAM: allocate addresses from ranges, store on disk",
    min_version: Version::new(0, 1, 0),
    cni_args: Some(&["IP"]),
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Ipam,
    summary: "Allocates addresses from ranges and keeps one file per address under dataDir, in \
              the same layout as the reference, so a node can switch implementations.",
    section: "ipam",
    keys: &[
        k(
            "ranges",
            "list of range sets",
            "",
            "one address is allocated per set; a set is a list of ranges of one family",
        ),
        k("subnet", "CIDR", "", "a range's subnet (also accepted directly under ipam, the legacy form)"),
        k("rangeStart", "IP", "subnet + 1", "first address of a range"),
        k("rangeEnd", "IP", "last usable", "last address of a range"),
        k("gateway", "IP", "subnet + 1", "gateway of a range (never allocated)"),
        k("routes", "list of {dst, gw}", "[]", "routes put into the result"),
        k(
            "dataDir",
            "string",
            "\"/var/lib/cni/networks\"",
            "store directory (one subdirectory per network); a relative path resolves against the runtime's \
             working directory, as in the reference",
        ),
        k("resolvConf", "string", "", "resolv.conf file whose contents become the result's dns"),
        cap("ipRanges", "list of range sets", "prepended to the configured ranges"),
        cap("ips", "list of IPs", "addresses to allocate"),
        acni("ips", "list of IPs", "addresses to allocate"),
        arg("IP", "IP", "address to allocate"),
    ],
    notes: &[
        "GC releases addresses of attachments missing from `cni.dev/valid-attachments` (the reference has no GC).",
        "STATUS answers 50 for an invalid config or a store that cannot be written (the network's directory, or \
         while it does not exist its nearest existing ancestor, must be a writable directory) and creates \
         nothing; a config without ranges is ready, as they may come from the `ipRanges` capability at ADD.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "bridge",
  "ipam": {
    "type": "host-local",
    "ranges": [
      [{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20", "rangeEnd": "10.10.3.50", "gateway": "10.10.0.254"}],
      [{"subnet": "fd00:10::/64"}]
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    "dataDir": "/var/lib/cni/networks"
  }
}"#,
    // the legacy single range is read from the `ipam` object itself
    config: Some(|path| Ok([config_fields::<RawIpam>(path)?, config_fields::<RawRange>(path)?].concat())),
};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// `ipam` as written (keys lower-cased by the protocol layer). The legacy single range
/// (`subnet`, `rangeStart`, `rangeEnd`, `gateway`) is read from the same object.
#[derive(Debug, Default, Deserialize)]
struct RawIpam {
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default, rename = "datadir")]
    data_dir: Option<String>,
    #[serde(default, rename = "resolvconf")]
    resolv_conf: Option<String>,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
}

/// The validated host-local configuration.
#[derive(Debug, Clone)]
pub struct HostLocalConf {
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// requested addresses (CNI_ARGS `IP`, then `args.cni.ips`, then the `ips` capability)
    pub requested: Vec<IpAddr>,
}

fn ipam_value(ctx: &Ctx) -> anyhow::Result<&serde_json::Value> {
    match ctx.get("ipam") {
        Some(v) if v.is_object() => Ok(v),
        Some(_) => Err(anyhow::anyhow!("failed to load netconf: 'ipam' must be an object")),
        None => Err(CniError::config("IPAM config missing 'ipam' key").into()),
    }
}

/// Just `ipam.dataDir`, so DEL and GC do not depend on the rest of the config parsing.
#[derive(Debug, Default, Deserialize)]
struct RawDataDir {
    #[serde(default, rename = "datadir")]
    data_dir: Option<String>,
}

fn data_dir_of(data_dir: Option<&str>) -> Result<PathBuf, CniError> {
    let dir = match data_dir {
        None | Some("") => PathBuf::from(DEFAULT_DATA_DIR),
        Some(d) => PathBuf::from(d),
    };
    store::validate_data_dir(&dir)?;
    Ok(dir)
}

/// Only the data directory (DEL and GC need nothing else).
pub fn load_data_dir(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let raw: RawDataDir = config::decode(ipam_value(ctx)?)?;
    Ok(data_dir_of(raw.data_dir.as_deref())?)
}

fn requested_ips(ctx: &Ctx) -> anyhow::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !out.contains(&ip) {
            out.push(ip);
        }
    };
    if let Some(v) = ctx.cni_arg("IP").map(str::trim).filter(|v| !v.is_empty()) {
        let ip = parse_ip_maybe_cidr(v)
            .ok_or_else(|| anyhow::anyhow!("ARGS: error parsing value of pair \"IP={v}\": invalid IP address {v}"))?;
        push(ip);
    }
    let lists = [
        ("args.cni.ips", common::string_list("args.cni.ips", ctx.args_cni("ips"))?),
        ("runtimeConfig.ips", common::string_list("runtimeConfig.ips", ctx.runtime_config("ips"))?),
    ];
    for (what, list) in lists {
        for s in list {
            let ip = parse_ip_maybe_cidr(&s)
                .ok_or_else(|| CniError::config(format!("cannot understand ip: {what} entry {s:?} is not an IP")))?;
            push(ip);
        }
    }
    Ok(out)
}

/// Load and validate everything ADD needs (the reference's `LoadIPAMConfig`).
pub fn load_conf(ctx: &Ctx) -> anyhow::Result<HostLocalConf> {
    parse_conf(ctx, true)
}

/// [`load_conf`]; with `need_ranges` false a config without any range set is valid (STATUS:
/// the ranges may come from the `ipRanges` capability at ADD, which libcni's STATUS does not pass).
fn parse_conf(ctx: &Ctx, need_ranges: bool) -> anyhow::Result<HostLocalConf> {
    let ipam = ipam_value(ctx)?;
    let raw: RawIpam = config::decode(ipam)?;
    let legacy: RawRange = config::decode(ipam)?;
    let requested = requested_ips(ctx)?;

    let mut raw_sets: Vec<Vec<RawRange>> = Vec::new();
    if let Some(cap) = ctx.runtime_config("ipranges") {
        let cap: Vec<Vec<RawRange>> = config::decode(cap)?;
        raw_sets.extend(cap);
    }
    if legacy.subnet.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        raw_sets.push(vec![legacy]);
    }
    raw_sets.extend(raw.ranges.iter().cloned());
    if raw_sets.is_empty() && need_ranges {
        return Err(CniError::config("no IP ranges specified").into());
    }

    let mut ranges = Vec::with_capacity(raw_sets.len());
    for (i, set) in raw_sets.iter().enumerate() {
        let set = RangeSet::from_raw(set).map_err(|e| CniError::config(format!("invalid range set {i}: {e}")))?;
        ranges.push(set);
    }
    let v4 = ranges.iter().filter(|s| s.is_v4()).count();
    common::check_per_family(ctx, v4, ranges.len() - v4)?;
    for (i, a) in ranges.iter().enumerate() {
        for (j, b) in ranges.iter().enumerate().skip(i + 1) {
            if a.overlaps(b) {
                return Err(CniError::config(format!("range set {i} overlaps with {j}")).into());
            }
        }
    }

    Ok(HostLocalConf {
        ranges,
        routes: common::routes(&raw.routes)?,
        data_dir: data_dir_of(raw.data_dir.as_deref())?,
        resolv_conf: raw.resolv_conf.filter(|s| !s.is_empty()).map(PathBuf::from),
        requested,
    })
}

/// Allocate one address per range set into `held` (what this call reserved, for rollback).
fn allocate(store: &Store, ctx: &Ctx, conf: &HostLocalConf, held: &mut Vec<IpAddr>) -> anyhow::Result<Vec<IpConfig>> {
    let (id, ifname) = (ctx.container_id.as_str(), ctx.ifname.as_str());
    // addresses this call tried or took (the store's view answers for the rest)
    let mut taken = std::collections::HashSet::new();
    let mine = store.get_by_id(id, ifname)?;
    let mut requested = conf.requested.clone();
    let mut ips = Vec::with_capacity(conf.ranges.len());

    for (idx, set) in conf.ranges.iter().enumerate() {
        let wanted = requested.iter().position(|ip| set.contains(*ip)).map(|p| requested.remove(p));
        let one = (|| -> anyhow::Result<IpConfig> {
            if let Some(ip) = wanted {
                let r = set.range_for(ip).ok_or_else(|| anyhow::anyhow!("{ip} not in range set {set}"))?;
                if ip == r.gateway {
                    anyhow::bail!("requested ip {ip} is subnet's gateway");
                }
                if !store.reserve(id, ifname, ip, idx)? {
                    anyhow::bail!("requested IP address {ip} is not available in range set {set}");
                }
                held.push(ip);
                taken.insert(ip);
                return Ok(ip_config(ip, r.subnet.prefix_len(), r.gateway));
            }
            if let Some(dup) = mine.iter().find(|ip| set.contains(**ip)) {
                anyhow::bail!("{dup} has been allocated to {id}, duplicate allocation is not allowed");
            }
            for (cand, r) in set.iter_from(store.last_reserved_ip(idx)) {
                if taken.contains(&cand) || store.is_held(cand)? {
                    continue;
                }
                if store.reserve(id, ifname, cand, idx)? {
                    held.push(cand);
                    taken.insert(cand);
                    return Ok(ip_config(cand, r.subnet.prefix_len(), r.gateway));
                }
                taken.insert(cand);
            }
            anyhow::bail!("no IP addresses available in range set: {set}")
        })();
        ips.push(one.with_context(|| format!("failed to allocate for range {idx}"))?);
    }

    if !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(ToString::to_string).collect();
        anyhow::bail!("failed to allocate all requested IPs: {}", list.join(" "));
    }
    Ok(ips)
}

fn ip_config(ip: IpAddr, prefix: u8, gateway: IpAddr) -> IpConfig {
    let address = ipnet::IpNet::new(ip, prefix).unwrap_or_else(|_| ipnet::IpNet::from(ip));
    IpConfig { address, gateway: Some(gateway), interface: None }
}

fn add(ctx: &Ctx) -> anyhow::Result<CniResult> {
    let conf = load_conf(ctx)?;
    if conf.data_dir.is_relative() {
        tracing::warn!(
            data_dir = %conf.data_dir.display(),
            "host-local: dataDir is relative: the store depends on the runtime's working directory"
        );
    }
    let dns = match &conf.resolv_conf {
        Some(p) => resolvconf::load(p)?,
        None => Dns::default(),
    };
    let store = Store::open(&conf.data_dir, &ctx.name)?;
    let mut held = Vec::new();
    match allocate(&store, ctx, &conf, &mut held) {
        Ok(ips) => Ok(CniResult { interfaces: Vec::new(), ips, routes: conf.routes.clone(), dns }),
        Err(e) => {
            for ip in held {
                if let Err(re) = store.release(ip) {
                    tracing::warn!(%ip, error = %format!("{re:#}"), "rollback: failed to release");
                }
            }
            Err(e)
        }
    }
}

/// How many range sets the config names (runtimeConfig `ipRanges`, the legacy `subnet`,
/// `ranges`), counted without validating them (DEL must not depend on a valid config);
/// 1 when it names none.
fn range_set_count(ctx: &Ctx) -> usize {
    let len = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_array).map_or(0, Vec::len);
    let ipam = ctx.get("ipam");
    let legacy = ipam.and_then(|i| i.get("subnet")).and_then(|s| s.as_str()).is_some_and(|s| !s.trim().is_empty());
    let n = len(ctx.runtime_config("ipranges")) + usize::from(legacy) + len(ipam.and_then(|i| i.get("ranges")));
    n.max(1)
}

fn del(ctx: &Ctx) -> anyhow::Result<()> {
    let data_dir = load_data_dir(ctx)?;
    let Some(store) = Store::open_existing(&data_dir, &ctx.name)? else { return Ok(()) };
    let released = store.release_by_id(&ctx.container_id, &ctx.ifname, range_set_count(ctx))?;
    tracing::debug!(?released, "host-local DEL");
    Ok(())
}

fn check(ctx: &Ctx) -> anyhow::Result<()> {
    let conf = load_conf(ctx)?;
    let found = match Store::open_existing(&conf.data_dir, &ctx.name)? {
        Some(store) => store.find_by_id(&ctx.container_id, &ctx.ifname)?,
        None => false,
    };
    if !found {
        anyhow::bail!("host-local: Failed to find address added by container {}", ctx.container_id);
    }
    Ok(())
}

fn gc(ctx: &Ctx) -> anyhow::Result<()> {
    let data_dir = load_data_dir(ctx)?;
    let Some(valid) = ctx.valid_attachments()? else {
        tracing::info!(network = %ctx.name, "GC without cni.dev/valid-attachments: attachments unknown, nothing released");
        return Ok(());
    };
    let Some(store) = Store::open_existing(&data_dir, &ctx.name)? else { return Ok(()) };
    let valid: Vec<(String, String)> = valid.into_iter().map(|a| (a.container_id, a.ifname)).collect();
    let released = store.gc(&valid)?;
    tracing::info!(network = %ctx.name, ?released, "host-local GC");
    Ok(())
}

/// STATUS: the config is valid (ranges may be missing: they can come with ADD) and the store
/// can be written, checked without creating anything.
fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let conf = parse_conf(ctx, false).map_err(|e| unavailable(format!("invalid host-local configuration: {e:#}")))?;
    store::validate_network_name(&ctx.name).map_err(|e| unavailable(e.msg))?;
    let dir = conf.data_dir.join(&ctx.name);
    writable_or_creatable(&dir).map_err(|e| unavailable(format!("data directory {}: {e}", dir.display())))?;
    Ok(())
}

/// `dir` if it exists, else its nearest existing ancestor, must be a writable directory.
fn writable_or_creatable(dir: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let mut at = dir;
    loop {
        // a relative path ends at "", the working directory
        let probe = if at.as_os_str().is_empty() { Path::new(".") } else { at };
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => {
                return access(probe, AccessFlags::W_OK | AccessFlags::X_OK)
                    .map_err(|e| format!("{} is not writable: {e}", probe.display()));
            }
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                at = at.parent().ok_or_else(|| format!("{} does not exist", probe.display()))?;
            }
            Err(e) => return Err(format!("cannot stat {}: {e}", probe.display())),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cni::Command;
    use crate::ipam::store::tests::TempDir;
    use serde_json::json;
    use std::fs;

    pub(crate) fn ctx(conf: serde_json::Value, id: &str, ifname: &str) -> Ctx {
        let version = conf.get("cniversion").and_then(|v| v.as_str()).unwrap_or("0.1.0").to_string();
        let name = conf.get("name").and_then(|v| v.as_str()).unwrap_or("").to_string();
        Ctx {
            command: Command::Add,
            container_id: id.into(),
            netns: Some("/proc/self/ns/net".into()),
            ifname: ifname.into(),
            conf,
            spec: version.parse().ok(),
            version,
            name,
            ..Ctx::new(Command::Add)
        }
    }

    fn conf(dir: &TempDir, ipam: serde_json::Value) -> serde_json::Value {
        let mut ipam = ipam;
        ipam["datadir"] = json!(dir.0.to_str().unwrap());
        ipam["type"] = json!("host-local");
        json!({"cniversion": "1.0.0", "name": "net", "ipam": ipam})
    }

    fn addrs(r: &CniResult) -> Vec<String> {
        r.ips.iter().map(|i| i.address.to_string()).collect()
    }

    fn files(dir: &TempDir) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir.0.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != store::INDEX_FILE)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn allocates_in_order_with_gateway_routes_dns() {
        let t = TempDir::new("hl-order");
        let resolv = t.0.join("resolv.conf");
        fs::write(&resolv, "nameserver 198.18.0.53\nsearch a.example\n").unwrap();
        let c = conf(
            &t,
            json!({"ranges": [[{"subnet": "198.18.0.0/24"}], [{"subnet": "fd00::/64"}]],
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
                   "resolvconf": resolv.to_str().unwrap()}),
        );
        let r = add(&ctx(c.clone(), "c1", "eth0")).unwrap();
        assert_eq!(addrs(&r), ["198.18.0.2/24", "fd00::2/64"]);
        assert_eq!(r.ips[0].gateway, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, Some("fd00::1".parse().unwrap()));
        assert!(r.ips.iter().all(|i| i.interface.is_none()) && r.interfaces.is_empty());
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.dns.nameservers, ["198.18.0.53"]);
        let r = add(&ctx(c.clone(), "c2", "eth0")).unwrap();
        assert_eq!(addrs(&r), ["198.18.0.3/24", "fd00::3/64"]);
        assert_eq!(
            files(&t),
            ["198.18.0.2", "198.18.0.3", "fd00::2", "fd00::3", "last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        );
        // the same attachment again: refused, and its existing reservation is kept
        let e = add(&ctx(c.clone(), "c1", "eth0")).unwrap_err();
        assert!(format!("{e:#}").contains("198.18.0.2 has been allocated to c1, duplicate allocation is not allowed"));
        assert!(t.0.join("net/198.18.0.2").exists());
        // another ifname of the same container is a different attachment
        let r = add(&ctx(c.clone(), "c1", "eth1")).unwrap();
        assert_eq!(addrs(&r), ["198.18.0.4/24", "fd00::4/64"]);
        check(&ctx(c.clone(), "c1", "eth1")).unwrap();
        del(&ctx(c.clone(), "c1", "eth1")).unwrap();
        del(&ctx(c.clone(), "c1", "eth1")).unwrap();
        assert!(check(&ctx(c, "c1", "eth1")).is_err());
        assert!(!t.0.join("net/198.18.0.4").exists());
    }

    #[test]
    fn add_waits_for_the_store_lock() {
        let t = TempDir::new("hl-lock");
        let c = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}]]}));
        let held = Store::open(&t.0, "net").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let r = add(&ctx(c, "c1", "eth0")).map(|r| addrs(&r));
            tx.send(()).unwrap();
            r
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "ADD must wait for the lock");
        assert!(!t.0.join("net/198.18.0.2").exists());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(h.join().unwrap().unwrap(), ["198.18.0.2/24"]);
    }

    #[test]
    fn round_robin_and_wrap() {
        let t = TempDir::new("hl-rr");
        let c = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/29"}]]})); // .2 .. .6
        let a = |id: &str| addrs(&add(&ctx(c.clone(), id, "eth0")).unwrap()).remove(0);
        assert_eq!(a("c1"), "198.18.0.2/29");
        assert_eq!(a("c2"), "198.18.0.3/29");
        del(&ctx(c.clone(), "c1", "eth0")).unwrap();
        // a released address is not reused until the range wraps
        assert_eq!(a("c3"), "198.18.0.4/29");
        assert_eq!(a("c4"), "198.18.0.5/29");
        assert_eq!(a("c5"), "198.18.0.6/29");
        assert_eq!(a("c6"), "198.18.0.2/29");
        let e = add(&ctx(c.clone(), "c7", "eth0")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "failed to allocate for range 0: no IP addresses available in range set: 198.18.0.1-198.18.0.6"
        );
        assert_eq!(fs::read(t.0.join("net/last_reserved_ip.0")).unwrap(), b"198.18.0.2");
        // the last reserved address outside the set: start over from rangeStart
        fs::write(t.0.join("net/last_reserved_ip.0"), "203.0.113.9").unwrap();
        del(&ctx(c.clone(), "c4", "eth0")).unwrap();
        del(&ctx(c.clone(), "c3", "eth0")).unwrap();
        assert_eq!(a("c8"), "198.18.0.4/29");
    }

    #[test]
    fn requested_ips_from_all_sources() {
        let t = TempDir::new("hl-req");
        let mut c = conf(&t, json!({"subnet": "198.18.0.0/24", "ranges": [[{"subnet": "fd00::/64"}]]}));
        c["runtimeconfig"] = json!({"ips": ["fd00::9/64"], "ipranges": [[{"subnet": "198.19.0.0/24"}]]});
        c["args"] = json!({"cni": {"ips": ["198.18.0.77"]}});
        let mut x = ctx(c.clone(), "c1", "eth0");
        x.args = vec![("IP".into(), "198.19.0.99".into())];
        let r = add(&x).unwrap();
        // capability ranges first, then the legacy range, then `ranges`
        assert_eq!(addrs(&r), ["198.19.0.99/24", "198.18.0.77/24", "fd00::9/64"]);
        assert_eq!(fs::read(t.0.join("net/last_reserved_ip.0")).unwrap(), b"198.19.0.99");
        assert_eq!(fs::read(t.0.join("net/last_reserved_ip.2")).unwrap(), b"fd00::9");
        // the same requested address for another container: not available, nothing kept
        let mut y = ctx(c.clone(), "c2", "eth0");
        y.args = vec![("IP".into(), "198.19.0.50".into())];
        let e = add(&y).unwrap_err();
        assert!(format!("{e:#}").contains("requested IP address 198.18.0.77 is not available"), "{e:#}");
        assert!(!t.0.join("net/198.19.0.50").exists(), "rolled back");
        // the gateway cannot be requested
        let plain = conf(&t, json!({"ranges": [[{"subnet": "198.20.0.0/24"}]]}));
        let mut z = ctx(plain.clone(), "c3", "eth0");
        z.args = vec![("IP".into(), "198.20.0.1".into())];
        assert!(format!("{:#}", add(&z).unwrap_err()).contains("requested ip 198.20.0.1 is subnet's gateway"));
        // a requested address outside every set is an error, and nothing stays reserved
        z.args = vec![("IP".into(), "203.0.113.5/24".into())];
        let before = files(&t);
        let e = add(&z).unwrap_err();
        assert_eq!(format!("{e:#}"), "failed to allocate all requested IPs: 203.0.113.5");
        assert_eq!(files(&t), before);
        z.args = vec![("IP".into(), "bogus".into())];
        assert!(add(&z).is_err());
    }

    #[test]
    fn rollback_releases_only_this_call() {
        let t = TempDir::new("hl-rb");
        let c = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}], [{"subnet": "fd00::/126"}]]}));
        // fill the v6 set (fd00::2, fd00::3)
        let dir = t.0.join("net");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("fd00::2"), "x\r\neth0").unwrap();
        fs::write(dir.join("fd00::3"), "y\r\neth0").unwrap();
        let e = add(&ctx(c.clone(), "c1", "eth0")).unwrap_err();
        assert!(format!("{e:#}").starts_with("failed to allocate for range 1: no IP addresses available"));
        assert!(!dir.join("198.18.0.2").exists(), "v4 reservation rolled back");
        assert!(dir.join("fd00::2").exists() && dir.join("fd00::3").exists());
    }

    #[test]
    fn config_errors_are_code_7() {
        let t = TempDir::new("hl-cfg");
        let cases = [
            (json!({"ranges": []}), "no IP ranges specified"),
            (json!({"ranges": [[{"subnet": "198.18.0.1/24"}]]}), "invalid range set 0: Network has host bits set"),
            (json!({"ranges": [[{"subnet": "198.18.0.0/24", "gateway": "fd00::1"}]]}), "is IPv6 but subnet"),
            (json!({"ranges": [[{"subnet": "198.18.0.0/24", "gateway": "198.18.9.1"}]]}), "not in network"),
            (
                json!({"ranges": [[{"subnet": "198.18.0.0/24"}], [{"subnet": "198.18.0.0/25"}]]}),
                "range set 0 overlaps with 1",
            ),
            (
                json!({"ranges": [[{"subnet": "198.18.0.0/24"}], [{"subnet": "198.19.0.0/24"}]], "datadir": "a\0b"}),
                "NUL",
            ),
        ];
        for (ipam, want) in cases {
            let mut c = conf(&t, ipam.clone());
            if ipam.get("datadir").is_some() {
                c["ipam"]["datadir"] = ipam["datadir"].clone();
            }
            let e = add(&ctx(c, "c1", "eth0")).unwrap_err();
            let ce = CniError::from_anyhow(&e);
            assert_eq!(ce.code, 7, "{ipam}: {ce:?}");
            assert!(ce.msg.contains(want), "{ipam}: {} lacks {want}", ce.msg);
        }
        let mut old = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}], [{"subnet": "198.19.0.0/24"}]]}));
        old["cniversion"] = json!("0.2.0");
        let mut x = ctx(old, "c1", "eth0");
        x.set_version("0.2.0");
        assert!(format!("{:#}", add(&x).unwrap_err()).contains("does not support more than 1 address per family"));
        let none = json!({"cniversion": "1.0.0", "name": "net"});
        assert_eq!(CniError::from_anyhow(&add(&ctx(none, "c", "e")).unwrap_err()).code, 7);
        let mut bad_name = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}]]}));
        bad_name["name"] = json!("..");
        assert_eq!(CniError::from_anyhow(&add(&ctx(bad_name, "c", "e")).unwrap_err()).code, 7);
    }

    #[test]
    fn del_is_lenient_and_idempotent() {
        let t = TempDir::new("hl-del");
        let c = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}]]}));
        // no directory yet: success, and nothing gets created
        del(&ctx(c.clone(), "c1", "eth0")).unwrap();
        assert!(!t.0.join("net").exists());
        add(&ctx(c.clone(), "c1", "eth0")).unwrap();
        // a broken range config does not block teardown
        let mut broken = c.clone();
        broken["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.1/24"}]]);
        broken["ipam"]["routes"] = json!("not a list");
        del(&ctx(broken, "c1", "eth0")).unwrap();
        assert_eq!(files(&t), ["last_reserved_ip.0", "lock"]);
        // legacy id-only files are released when no (id, ifname) file matched
        fs::write(t.0.join("net/198.18.0.9"), "c9").unwrap();
        del(&ctx(c.clone(), "c9", "eth3")).unwrap();
        assert_eq!(files(&t), ["last_reserved_ip.0", "lock"]);
        // with one range set they stay when (id, ifname) matched; with two they go too (the
        // reference releases once per range set, and its second round finds only them)
        fs::write(t.0.join("net/198.19.9.9"), "c1").unwrap();
        add(&ctx(c.clone(), "c1", "eth0")).unwrap();
        del(&ctx(c.clone(), "c1", "eth0")).unwrap();
        assert!(t.0.join("net/198.19.9.9").exists());
        let mut two = c.clone();
        two["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.0/24"}], [{"subnet": "fd00::/64"}]]);
        add(&ctx(two.clone(), "c1", "eth0")).unwrap();
        del(&ctx(two, "c1", "eth0")).unwrap();
        assert!(!t.0.join("net/198.19.9.9").exists());
        assert_eq!(files(&t), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
    }

    #[test]
    fn range_sets_are_counted_without_validation() {
        let count = |ipam: serde_json::Value, rc: serde_json::Value| {
            let mut c = json!({"cniversion": "1.0.0", "name": "net", "ipam": ipam});
            if !rc.is_null() {
                c["runtimeconfig"] = rc;
            }
            range_set_count(&ctx(c, "c1", "eth0"))
        };
        assert_eq!(count(json!({}), json!(null)), 1);
        assert_eq!(count(json!({"ranges": "not a list"}), json!(null)), 1);
        assert_eq!(count(json!({"ranges": [[{"subnet": "bogus"}], []]}), json!(null)), 2);
        assert_eq!(count(json!({"subnet": "198.18.0.1/24", "ranges": [[]]}), json!(null)), 2);
        assert_eq!(count(json!({"subnet": " "}), json!({"ipranges": [[{"subnet": "x"}]]})), 1);
        assert_eq!(count(json!({"subnet": "x", "ranges": [[]]}), json!({"ipranges": [[], []]})), 4);
        let mut no_ipam = ctx(json!({"cniversion": "1.0.0", "name": "net"}), "c1", "eth0");
        no_ipam.conf["runtimeconfig"] = json!({"ipranges": [[], []]});
        assert_eq!(range_set_count(&no_ipam), 2);
    }

    #[test]
    fn gc_absent_vs_empty_list() {
        let t = TempDir::new("hl-gc");
        let c = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}]]}));
        add(&ctx(c.clone(), "c1", "eth0")).unwrap();
        add(&ctx(c.clone(), "c2", "eth0")).unwrap();
        let mut g = ctx(c.clone(), "", "");
        g.command = Command::Gc;
        gc(&g).unwrap(); // absent list: nothing released
        assert_eq!(files(&t).len(), 4);
        g.conf["cni.dev/valid-attachments"] = json!([{"containerid": "c2", "ifname": "eth0"}]);
        gc(&g).unwrap();
        assert_eq!(files(&t), ["198.18.0.3", "last_reserved_ip.0", "lock"]);
        // legacy key accepted when the new one is absent
        let mut legacy = ctx(c.clone(), "", "");
        legacy.conf["cni.dev/attachments"] = json!([]);
        gc(&legacy).unwrap();
        assert_eq!(files(&t), ["last_reserved_ip.0", "lock"]);
        let mut bad = ctx(c, "", "");
        bad.conf["cni.dev/valid-attachments"] = json!([{"containerid": "c2"}]);
        assert_eq!(CniError::from_anyhow(&gc(&bad).unwrap_err()).code, 7);
    }

    #[test]
    fn status_reports_unusable_store() {
        let t = TempDir::new("hl-status");
        let c = conf(&t, json!({"ranges": [[{"subnet": "198.18.0.0/24"}]]}));
        let status_of = |c: &serde_json::Value| status(&ctx(c.clone(), "", "")).map_err(|e| CniError::from_anyhow(&e));
        // nothing is created: neither the network directory nor a missing dataDir
        status_of(&c).unwrap();
        assert!(!t.0.join("net").exists(), "STATUS created the network directory");
        let mut deep = c.clone();
        deep["ipam"]["datadir"] = json!(t.0.join("a/b").to_str().unwrap());
        status_of(&deep).unwrap();
        assert!(!t.0.join("a").exists(), "STATUS created the dataDir");
        // no ranges at all: they may come from the ipRanges capability at ADD (libcni's
        // STATUS passes no runtimeConfig)
        let mut no_ranges = c.clone();
        no_ranges["ipam"].as_object_mut().unwrap().remove("ranges");
        no_ranges["capabilities"] = json!({"ipranges": true});
        status_of(&no_ranges).unwrap();
        no_ranges["ipam"]["ranges"] = json!([]);
        status_of(&no_ranges).unwrap();
        let mut with_cap = no_ranges.clone();
        with_cap["runtimeconfig"] = json!({"ipranges": [[{"subnet": "198.18.0.0/24"}]]});
        assert_eq!(addrs(&add(&ctx(with_cap, "c1", "eth0")).unwrap()), ["198.18.0.2/24"]);
        // the network directory exists: it must be a directory
        status_of(&c).unwrap();
        fs::remove_dir_all(t.0.join("net")).unwrap();
        fs::write(t.0.join("net"), "").unwrap();
        let e = status_of(&c).unwrap_err();
        assert_eq!(e.code, 50);
        assert!(e.msg.contains("is not a directory"), "{}", e.msg);
        // the dataDir (or an ancestor) is a file
        let mut blocked = c.clone();
        let file = t.0.join("afile");
        fs::write(&file, "").unwrap();
        for dir in [file.clone(), file.join("below")] {
            blocked["ipam"]["datadir"] = json!(dir.to_str().unwrap());
            let e = status_of(&blocked).unwrap_err();
            assert_eq!(e.code, 50);
            assert!(e.msg.contains("afile is not a directory"), "{}", e.msg);
        }
        // other invalid configs stay code 50
        let mut invalid = c;
        invalid["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.1/24"}]]);
        assert_eq!(status_of(&invalid).unwrap_err().code, 50);
        invalid["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.0/24"}]]);
        invalid["ipam"]["routes"] = json!([{"dst": "bogus"}]);
        assert_eq!(status_of(&invalid).unwrap_err().code, 50);
    }
}
