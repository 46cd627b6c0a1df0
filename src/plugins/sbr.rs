//! sbr: source-based routing for the container interface (checklist §2.18).
//!
//! ADD (chained; needs prevResult), serialised by an flock on the netns file:
//! - default mode: for each IP of CNI_IFNAME pick the first routing table id ≥ 100 that no rule
//!   uses (routes count only in main, as the reference's listing sees them), add `from IP/32 (/128) lookup T`, a default route via the IP's gateway in
//!   T, and copy every main-table route of the interface that belongs to this IP (its `src` or
//!   `via` is in the IP's subnet, or it has neither) into T; finally delete the interface's
//!   routes from the main table.
//! - `table` set: only the rules `from IP lookup <table>`; routes are left alone, and the
//!   interface is not looked up (as the reference: it needs only prevResult's addresses).
//!
//! Routes are copied whole (every metric, tos, realm, protocol, scope), as the reference's
//! `netlink.RouteReplace` of a listed route. A `table` outside 0..=4294967295 is a configuration
//! error for ADD (code 7).
//!
//! DEL removes the rules whose source is one of the interface's current addresses (only those
//! pointing at `table` when it is set and not 0); a missing namespace or interface is success, and
//! so is a `table` that is no routing table id (nothing can point at it).
//! CHECK is a no-op that does not even read the config, as the reference (verifying here would
//! break CHECK of the plugins before it).
//!
//! Upstream main (unreleased) keys are supported too: `gateways` (at most one IPv4 and one IPv6
//! gateway replacing prevResult's in the new tables) and `addSourceHints` (the interface's
//! link-scope subnet routes stay in main, pinned with `src` = the interface address).

use super::steps::{self, NsOrGone, Undo};
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::addr::Family;
use crate::netlink::route::{RouteSpec, Scope, Table};
use crate::netlink::rule::RuleSpec;
use crate::netlink::socket::{go_context, is_not_found, Netlink};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const APPLET: Plugin = Plugin {
    name: "sbr",
    about: "source-based routing: one routing table per container address",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: None,
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Meta,
    summary: "Source-based routing: traffic from the interface's addresses uses its own routing \
              table (by default a new one per address, holding the interface's routes).",
    section: "",
    keys: &[
        k(
            "table",
            "int",
            "",
            "only add `from <ip> lookup <table>` rules, leave the routes alone; a routing table id, 0 to 4294967295",
        ),
        k("gateways", "list of IPs", "", "at most one IPv4 and one IPv6 gateway overriding the prevResult's"),
        k("addSourceHints", "bool", "false", "keep subnet routes in main with a source hint"),
    ],
    notes: &[
        "A route is copied into an address's table whole: its metrics (mtu, advmss, initcwnd, congctl, … and \
         their locks), tos, realm, protocol and scope.",
        "DEL removes the rules from the interface's addresses (only those to `table` when it is set and not 0) \
         and succeeds when the namespace or the interface is gone, or when `table` is no routing table id.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "sbrnet",
  "plugins": [
    {"type": "ipvlan", "master": "eth1", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.7.0/24"}]]}},
    {"type": "sbr"}
  ]
}"#,
    config: Some(config_fields::<Conf>),
};

/// The first table id the reference considers.
pub const FIRST_TABLE: u32 = 100;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    /// a Go `*int`, as the reference's: any int64 decodes; ADD takes only a routing table id
    table: Option<i64>,
    /// upstream main: at most one IPv4 and one IPv6 gateway overriding prevResult's
    gateways: Vec<String>,
    /// upstream main: keep the interface's link-scope (subnet) routes in main, with a `src` hint
    #[serde(rename = "addsourcehints")]
    add_source_hints: bool,
}

/// Parse `gateways`: at most two, at most one per family.
fn parse_gateways(list: &[String]) -> Result<(Option<IpAddr>, Option<IpAddr>)> {
    if list.len() > 2 {
        bail!("gateways: at most one IPv4 and one IPv6 gateway may be given, got {}", list.len());
    }
    let (mut v4, mut v6) = (None, None);
    for g in list {
        let ip: IpAddr = g.parse().map_err(|_| anyhow::anyhow!("gateways: invalid IP address {g:?}"))?;
        let slot = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if slot.replace(ip).is_some() {
            bail!("gateways: more than one gateway for the same IP family");
        }
    }
    Ok((v4, v6))
}

/// The IPs of prevResult that belong to `ifname` (an IP without an interface index is assumed
/// to; an index outside the interface list is kept, as the reference does).
pub fn ips_for(ifname: &str, prev: &CniResult) -> Result<Vec<crate::cni::result::IpConfig>> {
    if prev.ips.is_empty() {
        bail!("No IP addresses supplied on interface: {ifname}");
    }
    Ok(prev
        .ips
        .iter()
        .filter(|ip| match ip.interface {
            None => true,
            Some(i) => prev.interfaces.get(i).is_none_or(|itf| itf.name == ifname),
        })
        .cloned()
        .collect())
}

/// The first table id ≥ `from` that is not in `used`.
pub fn next_free_table(used: &[u32], from: u32) -> u32 {
    let mut t = from;
    while used.contains(&t) {
        t = t.saturating_add(1);
        if t == u32::MAX {
            break;
        }
    }
    t
}

/// Should route `r` be copied into the table of `ip`?
pub fn route_belongs_to(ip: &IpNet, r: &RouteSpec) -> bool {
    let net = ip.trunc();
    let inside = |a: Option<IpAddr>| a.is_some_and(|a| net.contains(&a));
    inside(r.src) || inside(r.gw) || (r.src.is_none() && r.gw.is_none())
}

fn host_net(ip: IpAddr) -> IpNet {
    steps::veth::host_route(ip)
}

/// flock on the netns file, held for the duration of the work (as the reference's filemutex).
fn lock_netns(path: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::File::open(path).with_context(|| format!("failed to open {path} for locking"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("failed to lock {path}: {e}"))
}

/// `table` as a routing table id. The reference's `*int` takes any int64 and its netlink library
/// sends a negative one as table 0 and a larger one cut to 32 bits (4294967297 is table 1), so
/// that what ADD does depends on the kernel: refused here as a configuration error.
fn table_id(table: Option<i64>) -> Result<Option<u32>> {
    table
        .map(|t| {
            u32::try_from(t).map_err(|_| {
                CniError::config(format!("invalid table {t}: a routing table id is between 0 and {}", u32::MAX))
            })
        })
        .transpose()
        .map_err(Into::into)
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf: Conf = ctx.plugin_conf()?;
    let table = table_id(conf.table)?;
    let prev =
        ctx.prev_result.clone().ok_or_else(|| anyhow::anyhow!("This plugin must be called as chained plugin"))?;
    let (gw4, gw6) = parse_gateways(&conf.gateways)?;
    let mut ips = ips_for(&ctx.ifname, &prev)?;
    for ip in &mut ips {
        match ip.address.addr() {
            IpAddr::V4(_) if gw4.is_some() => ip.gateway = gw4,
            IpAddr::V6(_) if gw6.is_some() => ip.gateway = gw6,
            _ => {}
        }
    }
    let ns = steps::ns::open(ctx)?;
    let _lock = lock_netns(ns.path())?;
    let mut nl = Netlink::in_netns(&ns)?;
    // a failed ADD takes back its rules and routes and puts the moved routes back in main
    let mut undo = Undo::default();
    let path = ns.path();

    // with `table` only rules are added, from prevResult's addresses: the interface is not
    // looked up (as the reference's doRoutesWithTable)
    if let Some(table) = table {
        for ip in &ips {
            let mut rule = RuleSpec::new(crate::netlink::addr::Family::of(&ip.address.addr()));
            rule.src = Some(host_net(ip.address.addr()));
            rule.table = Some(table);
            nl.rule_add(&rule).map_err(|e| go_context(e, "failed to add rule"))?;
            undo.push_in("sbr rule", path, move |nl| nl.rule_del(&rule));
        }
        undo.commit();
        return Ok(prev);
    }

    let link = nl
        .link_by_name(&ctx.ifname)?
        .with_context(|| format!("Cannot find network interface {}: Link not found", ctx.ifname))?;
    let mut used: Vec<u32> = Vec::new();
    let mut all_routes = Vec::new();
    for fam in [Family::V4, Family::V6] {
        used.extend(nl.rules(fam)?.iter().filter_map(|r| r.table));
        all_routes.extend(nl.routes(fam, None)?);
    }
    // as the reference: the tables of the rules and of main's routes only (its netlink library's
    // RouteList without a table filter skips every other table), so a table that holds routes
    // but no rule (an earlier sbr's: DEL removes only rules) is used again
    used.extend(all_routes.iter().filter_map(|r| r.table).filter(|&t| t == Table::MAIN));
    let link_routes: Vec<RouteSpec> = all_routes
        .into_iter()
        .filter(|r| r.oif == Some(link.index) && r.table.unwrap_or(Table::MAIN) == Table::MAIN)
        .collect();

    let mut table = next_free_table(&used, FIRST_TABLE);
    for ip in &ips {
        let addr = ip.address.addr();
        let fam = crate::netlink::addr::Family::of(&addr);
        let mut rule = RuleSpec::new(fam);
        rule.src = Some(host_net(addr));
        rule.table = Some(table);
        nl.rule_add(&rule).map_err(|e| go_context(e, "Failed to add rule"))?;
        undo.push_in("sbr rule", path, move |nl| nl.rule_del(&rule));
        if let Some(gw) = ip.gateway {
            let zero: IpAddr = if addr.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            let def = RouteSpec {
                dst: IpNet::new(zero, 0).ok(),
                family: Some(fam),
                gw: Some(gw),
                oif: Some(link.index),
                table: Some(table),
                ..Default::default()
            };
            nl.route_add(&def).map_err(|e| go_context(e, &format!("Failed to add default route to {gw}")))?;
            undo.push_in("sbr default route", path, move |nl| nl.route_del(&def));
        }
        let overridden = if addr.is_ipv4() { gw4.is_some() } else { gw6.is_some() };
        for r in link_routes.iter().filter(|r| route_belongs_to(&ip.address, r)) {
            if overridden && r.dst.is_some_and(|d| d.prefix_len() == 0) {
                continue; // the configured gateway's default route wins over the copied one
            }
            let copy = RouteSpec { table: Some(table), ..r.clone() };
            nl.route_replace(&copy).map_err(|e| go_context(e, "Failed to readd route"))?;
            undo.push_in("sbr route copy", path, move |nl| nl.route_del(&copy));
        }
        used.push(table);
        table = next_free_table(&used, table.saturating_add(1));
    }
    // delete after copying: several IPs of one subnet each need the connected route while copying
    for r in &link_routes {
        tracing::debug!("sbr: moving route {r:?} out of main");
        if conf.add_source_hints && r.scope == Some(Scope::LINK) {
            // keep the subnet route in main, pinned to this interface's address of that subnet
            let hint = ips.iter().map(|i| i.address).find(|a| r.dst.is_some_and(|d| d.contains(&a.addr())));
            if let Some(a) = hint {
                let pinned = RouteSpec { src: Some(a.addr()), ..r.clone() };
                nl.route_replace(&pinned).context("Failed to add source hint to route")?;
                let original = r.clone();
                undo.push_in("sbr source hint", path, move |nl| nl.route_replace(&original));
            }
            continue;
        }
        match nl.route_del(r) {
            Ok(()) => {
                let moved = r.clone();
                undo.push_in("sbr route moved out of main", path, move |nl| nl.route_add(&moved));
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(go_context(e, "Failed to delete route")),
        }
    }
    undo.commit();
    Ok(prev)
}

fn del(ctx: &Ctx) -> Result<()> {
    // only `table` is read, and leniently: a DEL must succeed even for a config ADD refuses
    let table = match ctx.get("table") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) => match t.as_u64().and_then(|t| u32::try_from(t).ok()) {
            // `table: 0` filters nothing, as in the reference (its netlink library ignores a
            // table filter of 0): the kernel picked the rules' table at ADD
            Some(0) => None,
            Some(t) => Some(t),
            // no rule can point at a table that is no routing table id (-1, 4294967296, 1.5,
            // "100"): ADD refused it, so there is nothing to delete (the reference's DEL of an
            // out-of-range int matches no rule and succeeds too)
            None => return Ok(()),
        },
    };
    let NsOrGone::Ns(ns) = steps::ns::open_for_del(ctx)? else {
        return Ok(());
    };
    let _lock = lock_netns(ns.path())?;
    let mut nl = Netlink::in_netns(&ns)?;
    let Some(link) = nl.link_by_name(&ctx.ifname)? else {
        return Ok(()); // the reference fails a second DEL here; the spec says DEL must succeed
    };
    let addrs: Vec<IpAddr> = nl.addrs(Some(link.index), None)?.into_iter().map(|a| a.addr.addr()).collect();
    let mut last_err = None;
    for fam in [Family::V4, Family::V6] {
        for rule in nl.rules(fam)? {
            let Some(src) = rule.src else { continue };
            if !addrs.contains(&src.addr()) {
                continue;
            }
            if table.is_some() && rule.table != table {
                continue;
            }
            if let Err(e) = nl.rule_del(&rule) {
                if !is_not_found(&e) {
                    tracing::warn!("sbr: {e:#}");
                    last_err = Some(e);
                }
            }
        }
    }
    match last_err {
        Some(e) => Err(go_context(e, "Failed to delete rule")),
        None => Ok(()),
    }
}

/// Nothing, as the reference's cmdCheck (`return nil`): the config is not even decoded.
fn check(_ctx: &Ctx) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::{Interface, IpConfig};

    fn ipc(a: &str, gw: Option<&str>, itf: Option<usize>) -> IpConfig {
        IpConfig { address: a.parse().unwrap(), gateway: gw.map(|g| g.parse().unwrap()), interface: itf }
    }

    #[test]
    fn picks_ips_of_the_interface() {
        let prev = CniResult {
            interfaces: vec![
                Interface { name: "veth1".into(), ..Default::default() },
                Interface { name: "net1".into(), sandbox: Some("/x".into()), ..Default::default() },
            ],
            ips: vec![
                ipc("198.18.0.2/24", Some("198.18.0.1"), Some(1)),
                ipc("198.18.1.2/24", None, Some(0)),
                ipc("fd00::2/64", None, None),
                ipc("198.18.2.2/24", None, Some(7)),
            ],
            ..Default::default()
        };
        let got: Vec<String> = ips_for("net1", &prev).unwrap().iter().map(|i| i.address.to_string()).collect();
        assert_eq!(got, vec!["198.18.0.2/24", "fd00::2/64", "198.18.2.2/24"]);
        assert!(ips_for("net1", &CniResult::default()).is_err());
    }

    #[test]
    fn gateways_validated() {
        let g = |v: &[&str]| parse_gateways(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            g(&["198.18.0.1", "fd00::1"]).unwrap(),
            (Some("198.18.0.1".parse().unwrap()), Some("fd00::1".parse().unwrap()))
        );
        assert!(g(&["198.18.0.1", "198.18.0.2"]).is_err());
        assert!(g(&["198.18.0.1", "fd00::1", "fd00::2"]).is_err());
        assert!(g(&["nope"]).is_err());
        assert_eq!(g(&[]).unwrap(), (None, None));
    }

    #[test]
    fn table_choice_skips_used_ids() {
        assert_eq!(next_free_table(&[254, 255, 253], 100), 100);
        assert_eq!(next_free_table(&[100, 101, 103], 100), 102);
        assert_eq!(next_free_table(&[100, 101, 103], 103), 104);
    }

    #[test]
    fn route_membership_like_reference() {
        let ip: IpNet = "198.18.0.2/24".parse().unwrap();
        let r = |src: Option<&str>, gw: Option<&str>| RouteSpec {
            src: src.map(|s| s.parse().unwrap()),
            gw: gw.map(|s| s.parse().unwrap()),
            ..Default::default()
        };
        assert!(route_belongs_to(&ip, &r(Some("198.18.0.2"), None)));
        assert!(route_belongs_to(&ip, &r(None, Some("198.18.0.1"))));
        assert!(route_belongs_to(&ip, &r(None, None)));
        assert!(!route_belongs_to(&ip, &r(Some("198.18.1.2"), None)));
        assert!(!route_belongs_to(&ip, &r(None, Some("fd00::1"))));
    }
}
