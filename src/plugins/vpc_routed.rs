//! vpc-routed: the routed-veth pod data plane of the AWS VPC CNI and Calico.
//!
//! Why the name: both projects wire every pod the same way — no bridge, no L2 domain, the node
//! routes each pod's address (usually a VPC address) over a dedicated veth — and the defining
//! trait is "VPC addresses, routed", so `vpc-routed`.
//!
//! Per pod:
//! - a veth pair; the host end is named `<prefix><11 hex of sha1("<namespace>.<pod>")>` (prefix
//!   `eni` by default, the name ≤ 15 bytes; without Kubernetes CNI_ARGS the container id is hashed);
//! - inside the pod: the IPAM addresses as /32 (/128), a link-scoped route to 169.254.1.1, a default
//!   route via it, and a permanent neighbour entry 169.254.1.1 → host veth MAC (IPv6: fe80::1);
//! - on the node: a /32 (/128) route to the pod over the host veth, `ip rule to POD lookup main`
//!   at priority 512 and, when the pod's ENI has its own route table (`table`, or
//!   `deviceNumber` + 1), `ip rule from POD lookup TABLE` at priority 1536.
//!
//! Node preparation (rp_filter, the node-port fwmark rule, ENI links and their tables) is the
//! separate subcommand `cni-multi vpc-routed setup-host` ([`setup_host_main`]).

use super::steps::{self, veth::Pair, NsOrGone, Undo};
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Subcommand, Version, DNS_KEY};
use crate::cni::result::{Interface, IpConfig, Route};
use crate::cni::{config, delegate};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::addr::Family;
use crate::netlink::route::{RouteSpec, Scope, Table};
use crate::netlink::rule::RuleSpec;
use crate::netlink::socket::{is_not_found, Netlink};
use crate::netlink::Link;
use crate::sys::netns::NetNs;
use crate::sys::sysctl;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const APPLET: Plugin = Plugin {
    name: "vpc-routed",
    about: "routed veth per pod, AWS VPC CNI / Calico style (169.254.1.1 gateway, per-pod rules)",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
    subcommands: &[Subcommand { word: "setup-host", main: setup_host_main }],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Interface,
    summary: "Routed veth as AWS VPC CNI and Calico wire pods: the pod's default route goes via \
              169.254.1.1 (fe80::1) answered by the host veth, the host routes the pod's /32 \
              (/128) over the veth, with policy rules for ENI route tables.",
    section: "",
    keys: &[
        k("vethPrefix", "string", "\"eni\"", "prefix of the host veth name (the rest is a hash of the pod)"),
        k(
            "mtu",
            "int or numeric string",
            "9001",
            "MTU of both veth ends (68-65535; the VPC's jumbo frames by default)",
        ),
        k("table", "int", "", "route table of the pod's ENI: adds `from <pod> lookup <table>`"),
        k("deviceNumber", "int", "", "the pod's ENI device number: without `table`, table = deviceNumber + 1 when > 0"),
        k("ipam", "object", "", "required"),
        DNS_KEY,
    ],
    notes: &["`cni-multi vpc-routed setup-host` prepares the node (rp_filter, fwmark rule, ENI routes)."],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "vpc",
  "type": "vpc-routed",
  "mtu": 9001,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.11.0/24"}]]}
}"#,
    config: Some(config_fields::<RawConf>),
};

pub const GW_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const GW_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// `ip rule to POD lookup main`
pub const TO_POD_PRIORITY: u32 = 512;
/// `ip rule from POD lookup TABLE`
pub const FROM_POD_PRIORITY: u32 = 1536;
pub const DEFAULT_PREFIX: &str = "eni";
/// The AWS VPC CNI's default (jumbo frames inside a VPC).
pub const DEFAULT_MTU: u32 = 9001;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawConf {
    #[serde(rename = "vethprefix")]
    veth_prefix: Option<String>,
    /// number or string (the AWS config writes `"mtu": "9001"`)
    mtu: Option<Value>,
    table: Option<u32>,
    #[serde(rename = "devicenumber")]
    device_number: Option<u32>,
}

#[derive(Debug, PartialEq)]
struct Conf {
    prefix: String,
    mtu: u32,
    /// the pod's ENI route table; `None` = main (no from-rule)
    table: Option<u32>,
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let raw: RawConf = ctx.plugin_conf()?;
    let prefix = raw.veth_prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    if prefix.is_empty()
        || prefix.len() > 4
        || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CniError::config(format!(
            "vethPrefix {prefix:?}: 1-4 characters [A-Za-z0-9_-] (the host veth name is the prefix + 11 hex digits, at most 15)"
        ))
        .into());
    }
    let mtu = match raw.mtu {
        None => DEFAULT_MTU,
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| anyhow!("invalid mtu {n}"))?
        }
        Some(Value::String(s)) => {
            s.trim().parse::<u32>().map_err(|_| CniError::config(format!("invalid mtu {s:?}")))?
        }
        Some(other) => bail!("invalid mtu {other}"),
    };
    if !(68..=65535).contains(&mtu) {
        return Err(CniError::config(format!("mtu {mtu} out of range 68-65535")).into());
    }
    let table = match (raw.table, raw.device_number) {
        (Some(t), _) if t == 0 || t == Table::MAIN => None,
        (Some(t), _) => Some(t),
        (None, Some(d)) if d > 0 => Some(d + 1),
        _ => None,
    };
    if table.is_some_and(|t| t == Table::DEFAULT || t == Table::LOCAL) {
        return Err(CniError::config("table: 253 (default) and 255 (local) are reserved").into());
    }
    Ok(Conf { prefix, mtu, table })
}

/// The host-side veth name for this pod.
pub fn host_veth_name(prefix: &str, ctx: &Ctx) -> String {
    let key = match (ctx.cni_arg("K8S_POD_NAMESPACE"), ctx.cni_arg("K8S_POD_NAME")) {
        (Some(ns), Some(pod)) if !pod.is_empty() => format!("{ns}.{pod}"),
        _ => ctx.container_id.clone(),
    };
    crate::names::vpc_host_veth_name(prefix, &key)
}

fn host_net(ip: IpAddr) -> IpNet {
    steps::veth::host_route(ip)
}

fn gw_for(ip: &IpAddr) -> IpAddr {
    gw_of_family(ip.is_ipv4())
}

/// The pod's gateway: 169.254.1.1 for IPv4, fe80::1 for IPv6.
fn gw_of_family(v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(GW_V4)
    } else {
        IpAddr::V6(GW_V6)
    }
}

fn to_rule(ip: IpAddr) -> RuleSpec {
    let mut r = RuleSpec::new(Family::of(&ip));
    r.priority = Some(TO_POD_PRIORITY);
    r.table = Some(Table::MAIN);
    r.dst = Some(host_net(ip));
    r
}

fn from_rule(ip: IpAddr, table: Option<u32>) -> RuleSpec {
    let mut r = RuleSpec::new(Family::of(&ip));
    r.priority = Some(FROM_POD_PRIORITY);
    r.table = table;
    r.src = Some(host_net(ip));
    r
}

/// Delete every rule matching `r` (a missing rule is success).
fn rule_del_all(nl: &mut Netlink, r: &RuleSpec) -> Result<()> {
    for _ in 0..16 {
        match nl.rule_del(r) {
            Ok(()) => continue,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Add `r` once: a stale copy (from an earlier pod with the same IP) is replaced.
fn rule_set(nl: &mut Netlink, r: &RuleSpec) -> Result<()> {
    let mut any = r.clone();
    any.table = None;
    rule_del_all(nl, &any)?;
    nl.rule_add(r)
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    if ctx.ipam_type().is_none() {
        return Err(CniError::config("vpc-routed requires an IPAM configuration (ipam.type)").into());
    }
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // 1. the pod's addresses
    let ipam = steps::ipam::add(ctx, &mut undo)?;
    let pod_ips: Vec<IpAddr> = ipam.ips.iter().map(|i| i.address.addr()).collect();
    steps::veth::enable_forwarding(&mut host, &ipam)?;

    // 2. the veth pair under the pod's host name; a leftover of an earlier pod with it goes first
    let host_name = host_veth_name(&conf.prefix, ctx);
    if let Some(old) = host.link_by_name(&host_name)? {
        tracing::info!("deleting stale host veth {host_name}");
        host.link_del(old.index).with_context(|| format!("failed to delete stale {host_name:?}"))?;
    }
    let pair = Pair { mtu: conf.mtu, mac: None, host_name: Some(&host_name) };
    let steps::veth::Ends { host: host_veth, cont: cont_link } =
        steps::veth::add_pair(ctx, &mut host, &mut cont, &ns, &mut undo, pair)?;
    let host_mac = host_veth.mac.ok_or_else(|| anyhow!("host veth {host_name} has no MAC address"))?;
    host.link_set_up(host_veth.index, true).with_context(|| format!("failed to set {host_name:?} up"))?;

    // 3. inside the pod: /32 (/128) addresses, the gateway on the link, default routes, neighbours
    configure_pod(&ns, &mut cont, &cont_link, &pod_ips, host_mac)?;

    // 4. on the node: route and rules per pod address
    route_node_to_pod(&mut host, &mut undo, host_veth.index, &pod_ips, conf.table)?;

    let mut result = pod_result(ctx, &host_veth, &cont_link, &pod_ips);
    result.dns = steps::ipam::conf_dns(ctx).unwrap_or(ipam.dns);
    undo.commit();
    Ok(result)
}

/// The address families of the pod's addresses, in the order they appear (true = IPv4).
fn families(pod_ips: &[IpAddr]) -> Vec<bool> {
    let mut families: Vec<bool> = Vec::new();
    for ip in pod_ips {
        if !families.contains(&ip.is_ipv4()) {
            families.push(ip.is_ipv4());
        }
    }
    families
}

/// The default route of one family: 0.0.0.0/0 via 169.254.1.1, ::/0 via fe80::1.
fn default_dst(v4: bool) -> IpNet {
    if v4 {
        IpNet::V4(Default::default())
    } else {
        IpNet::V6(Default::default())
    }
}

/// The pod side: addresses as /32 (/128); per family a default route via the link-local gateway
/// (IPv4 with a link route to it first), and a permanent neighbour entry gateway → host veth MAC.
fn configure_pod(ns: &NetNs, cont: &mut Netlink, link: &Link, pod_ips: &[IpAddr], host_mac: [u8; 6]) -> Result<()> {
    let ifname = link.name.as_str();
    if pod_ips.iter().any(|i| i.is_ipv6()) {
        ns.run(|| {
            sysctl::set_if("ipv6", ifname, "disable_ipv6", "0").context("failed to enable IPv6")?;
            // the /128 is unique by construction; skip DAD so it is usable at once
            let _ = sysctl::set_if("ipv6", ifname, "accept_dad", "0");
            let _ = sysctl::set_if("ipv6", ifname, "accept_ra", "0");
            Ok(())
        })?;
    }
    cont.link_set_up(link.index, true).with_context(|| format!("failed to set {ifname:?} up"))?;
    for ip in pod_ips {
        cont.addr_add(link.index, host_net(*ip))
            .with_context(|| format!("failed to add {} to {ifname:?}", host_net(*ip)))?;
    }
    for v4 in families(pod_ips) {
        let gw = gw_of_family(v4);
        let family = Some(Family::of(&gw));
        if v4 {
            let to_gw = RouteSpec {
                dst: Some(host_net(gw)),
                family,
                oif: Some(link.index),
                scope: Some(Scope::LINK),
                ..Default::default()
            };
            cont.route_replace(&to_gw).with_context(|| format!("failed to add route to {gw}"))?;
        }
        let default = RouteSpec {
            dst: Some(default_dst(v4)),
            family,
            gw: Some(gw),
            oif: Some(link.index),
            scope: Some(Scope::UNIVERSE),
            ..Default::default()
        };
        cont.route_replace(&default).with_context(|| format!("failed to add default route via {gw}"))?;
        cont.neigh_add(link.index, gw, host_mac, true).with_context(|| format!("failed to add neighbour {gw}"))?;
    }
    Ok(())
}

/// The node side: per pod address a host route over the host veth, `to POD lookup main` and,
/// with an ENI table, `from POD lookup TABLE`. Their undo is pushed first, so a failure half-way
/// still removes what was added.
fn route_node_to_pod(
    host: &mut Netlink,
    undo: &mut Undo,
    host_veth: u32,
    pod_ips: &[IpAddr],
    table: Option<u32>,
) -> Result<()> {
    let ips = pod_ips.to_vec();
    undo.push("node rules", move || {
        let mut h = Netlink::new()?;
        for ip in ips {
            rule_del_all(&mut h, &to_rule(ip))?;
            rule_del_all(&mut h, &from_rule(ip, None))?;
        }
        Ok(())
    });
    for ip in pod_ips {
        let r = RouteSpec {
            dst: Some(host_net(*ip)),
            family: Some(Family::of(ip)),
            oif: Some(host_veth),
            scope: Some(Scope::LINK),
            ..Default::default()
        };
        host.route_replace(&r).with_context(|| format!("failed to add host route to {ip}"))?;
        rule_set(host, &to_rule(*ip)).with_context(|| format!("failed to add rule to {ip}"))?;
        if let Some(t) = table {
            rule_set(host, &from_rule(*ip, Some(t))).with_context(|| format!("failed to add rule from {ip}"))?;
        }
    }
    Ok(())
}

/// The ADD result (pure): host veth and pod interface, each address as /32 (/128) via the
/// family's link-local gateway, one default route per family.
fn pod_result(ctx: &Ctx, host_veth: &Link, cont_link: &Link, pod_ips: &[IpAddr]) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface { name: host_veth.name.clone(), mac: host_veth.mac_string(), ..Default::default() },
            Interface {
                name: ctx.ifname.clone(),
                mac: cont_link.mac_string(),
                sandbox: ctx.netns.clone(),
                ..Default::default()
            },
        ],
        ips: pod_ips
            .iter()
            .map(|ip| IpConfig { address: host_net(*ip), gateway: Some(gw_for(ip)), interface: Some(1) })
            .collect(),
        routes: families(pod_ips)
            .into_iter()
            .map(|v4| {
                Route::new(default_dst(v4), Some(gw_for(&if v4 { IpAddr::V4(GW_V4) } else { IpAddr::V6(GW_V6) })))
            })
            .collect(),
        ..Default::default()
    }
}

/// Every address the pod had: prevResult, /32 (/128) routes over the host veth, the container link.
fn pod_ips_for_del(ctx: &Ctx, host: &mut Netlink, host_index: Option<u32>, cont: Option<&mut Netlink>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    };
    if let Some(p) = &ctx.prev_result {
        for i in &p.ips {
            push(i.address.addr());
        }
    }
    if let Some(idx) = host_index {
        for fam in [Family::V4, Family::V6] {
            for r in host.routes(fam, Some(Table::MAIN)).unwrap_or_default() {
                if r.oif == Some(idx) {
                    if let Some(d) = r.dst.filter(|d| d.prefix_len() == d.max_prefix_len()) {
                        push(d.addr());
                    }
                }
            }
        }
    }
    if let Some(c) = cont {
        if let Ok(Some(l)) = c.link_by_name(&ctx.ifname) {
            for a in steps::link::global_addrs(c, l.index) {
                push(a.addr());
            }
        }
    }
    ips
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let mut host = Netlink::new()?;
    let host_name = host_veth_name(&conf.prefix, ctx);
    let host_link = host.link_by_name(&host_name)?;
    let mut errs: Vec<String> = Vec::new();
    let ns = match steps::ns::open_for_del(ctx) {
        Ok(NsOrGone::Ns(ns)) => Some(ns),
        Ok(NsOrGone::Gone) => None,
        Err(e) => {
            errs.push(format!("{e:#}"));
            None
        }
    };
    let mut cont = match &ns {
        Some(ns) => Some(Netlink::in_netns(ns)?),
        None => None,
    };
    let ips = pod_ips_for_del(ctx, &mut host, host_link.as_ref().map(|l| l.index), cont.as_mut());
    for ip in &ips {
        for r in [to_rule(*ip), from_rule(*ip, None)] {
            if let Err(e) = rule_del_all(&mut host, &r) {
                errs.push(format!("{e:#}"));
            }
        }
        if let Some(l) = &host_link {
            let r = RouteSpec {
                dst: Some(host_net(*ip)),
                family: Some(Family::of(ip)),
                oif: Some(l.index),
                ..Default::default()
            };
            if let Err(e) = host.route_del(&r) {
                if !is_not_found(&e) && !is_no_such_process(&e) {
                    errs.push(format!("{e:#}"));
                }
            }
        }
    }
    if let Some(c) = cont.as_mut() {
        if let Err(e) = steps::link::delete_in(c, &ctx.ifname) {
            errs.push(format!("{e:#}"));
        }
    }
    if let Some(l) = host.link_by_name(&host_name)? {
        if let Err(e) = host.link_del(l.index) {
            if !is_not_found(&e) {
                errs.push(format!("{e:#}"));
            }
        }
    }
    if ctx.ipam_type().is_some() {
        if let Err(e) = delegate::ipam_del(ctx) {
            errs.push(format!("{e:#}"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        bail!("{}", errs.join("; "))
    }
}

/// GC: passed on to IPAM; then, when the runtime sent its list of valid attachments, the node
/// rules of pods that are gone without DEL. A deleted netns takes the veth pair and the host
/// route over it away, but not the `to POD` / `from POD` rules: a rule at our priorities whose
/// /32 (/128) has no route in the main table any more is a leftover. (ADD adds the route before
/// the rules and DEL removes the rules first, so a live pod never looks like one.)
fn gc(ctx: &Ctx) -> Result<()> {
    let _conf = load(ctx)?;
    let mut errors = steps::gc::GcErrors::default();
    if steps::gc::ipam(ctx, &mut errors)?.is_some() {
        errors.note("node rules", Netlink::new().and_then(|mut host| gc_rules(&mut host)));
    }
    errors.finish()
}

/// Delete the `to POD lookup main` and `from POD lookup TABLE` rules whose pod has no host route.
fn gc_rules(host: &mut Netlink) -> Result<()> {
    for fam in [Family::V4, Family::V6] {
        let routed: Vec<IpNet> = host
            .routes(fam, Some(Table::MAIN))?
            .into_iter()
            .filter(|r| r.oif.is_some())
            .filter_map(|r| r.dst)
            .collect();
        for rule in host.rules(fam)? {
            let pod = match rule.priority {
                Some(TO_POD_PRIORITY) if rule.table == Some(Table::MAIN) && rule.src.is_none() => rule.dst,
                Some(FROM_POD_PRIORITY) if rule.dst.is_none() => rule.src,
                _ => None,
            };
            let Some(pod) = pod.filter(|p| p.prefix_len() == p.max_prefix_len()) else { continue };
            if routed.contains(&pod) {
                continue;
            }
            tracing::info!(rule = ?rule, "removing the rule of a pod that is gone");
            match host.rule_del(&rule) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.context(format!("failed to delete the rule of {pod}"))),
            }
        }
    }
    Ok(())
}

fn is_no_such_process(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::netlink::socket::NlError>().is_some_and(|n| n.errno == nix::errno::Errno::ESRCH as i32)
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    delegate::ipam_check(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut host = Netlink::new()?;
    let host_name = host_veth_name(&conf.prefix, ctx);
    let hv = host.link_by_name(&host_name)?.with_context(|| format!("host veth {host_name} not found"))?;
    let c = cont.link_by_name(&ctx.ifname)?.with_context(|| format!("interface {} not found", ctx.ifname))?;
    if c.kind.as_deref() != Some("veth") {
        bail!("container interface {} is not a veth", ctx.ifname);
    }
    let addrs = cont.addrs(Some(c.index), None)?;
    let neighs = cont.neighs(Some(c.index))?;
    let host_rules_v4 = host.rules(Family::V4)?;
    let host_rules_v6 = host.rules(Family::V6)?;
    for ip in prev.ips.iter().map(|i| i.address.addr()) {
        if !addrs.iter().any(|a| a.addr == host_net(ip)) {
            bail!("address {} missing on {}", host_net(ip), ctx.ifname);
        }
        let gw = gw_for(&ip);
        if !neighs.iter().any(|n| n.ip == gw && n.mac == hv.mac) {
            bail!("neighbour {gw} -> {} missing on {}", hv.mac_string().unwrap_or_default(), ctx.ifname);
        }
        let rules = if ip.is_ipv4() { &host_rules_v4 } else { &host_rules_v6 };
        if !rules.iter().any(|r| r.priority == Some(TO_POD_PRIORITY) && r.dst == Some(host_net(ip))) {
            bail!("rule to {ip} (priority {TO_POD_PRIORITY}) missing");
        }
        if let Some(t) = conf.table {
            if !rules
                .iter()
                .any(|r| r.priority == Some(FROM_POD_PRIORITY) && r.src == Some(host_net(ip)) && r.table == Some(t))
            {
                bail!("rule from {ip} lookup {t} (priority {FROM_POD_PRIORITY}) missing");
            }
        }
        let routes = host.routes(Family::of(&ip), Some(Table::MAIN))?;
        if !routes.iter().any(|r| r.dst == Some(host_net(ip)) && r.oif == Some(hv.index)) {
            bail!("host route to {ip} via {host_name} missing");
        }
    }
    steps::check::routes(&mut cont, prev)?;
    Ok(())
}

fn status(ctx: &Ctx) -> Result<()> {
    delegate::ipam_status(ctx)
}

// ---------------------------------------------------------------------------------------------
// setup-host

/// `cni-multi vpc-routed setup-host` configuration. Keys are matched without regard to case,
/// as in every plugin config (decoded from the folded config: lower-case serde names), and an
/// unknown key is an error ([`HostConf::parse`]).
#[derive(Debug, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostConf {
    /// the node's primary interface: gets `rp_filter` (default 2, loose)
    #[serde(rename = "primaryinterface")]
    pub primary_interface: Option<String>,
    #[serde(rename = "rpfilter")]
    pub rp_filter: Option<u32>,
    /// fwmark for node-port traffic: `fwmark M/M lookup main` (default 0x80; 0 disables); number or "0x80"
    #[serde(rename = "nodeportmark")]
    pub node_port_mark: Option<Value>,
    #[serde(rename = "nodeportrulepriority")]
    pub node_port_rule_priority: Option<u32>,
    pub enis: Vec<EniConf>,
}

/// The keys of [`HostConf`] and [`EniConf`] as documented (a unit test holds them to the structs).
const HOST_KEYS: &[&str] = &["primaryInterface", "rpFilter", "nodePortMark", "nodePortRulePriority", "enis"];
const ENI_KEYS: &[&str] = &["interface", "deviceNumber", "table", "mtu", "gateway", "subnet"];

/// The keys of `obj` that are none of `known` (compared as the folded config compares them).
fn unknown_keys<'a>(obj: &'a serde_json::Map<String, Value>, known: &[&str]) -> Vec<&'a str> {
    let known: Vec<String> = known.iter().map(|k| config::fold_key(k)).collect();
    obj.keys().filter(|k| !known.contains(&config::fold_key(k))).map(String::as_str).collect()
}

impl HostConf {
    /// Read the setup-host config: keys in any case; a key that is not one of ours (a typo) is
    /// an error naming it, so nothing is half-applied with a setting silently dropped.
    pub fn parse(bytes: &[u8]) -> Result<HostConf> {
        let raw = config::parse_raw(bytes).map_err(|e| anyhow!("not valid JSON: {e}"))?;
        let Some(obj) = raw.as_object() else { bail!("the config must be a JSON object, not {}", config::kind(&raw)) };
        let mut bad: Vec<String> = unknown_keys(obj, HOST_KEYS).iter().map(|k| format!("{k:?}")).collect();
        let enis = obj.iter().filter(|(k, _)| config::fold_key(k) == "enis").filter_map(|(_, v)| v.as_array());
        for (i, eni) in enis.flat_map(|a| a.iter().enumerate()) {
            if let Some(eni) = eni.as_object() {
                bad.extend(unknown_keys(eni, ENI_KEYS).iter().map(|k| format!("enis[{i}].{k}")));
            }
        }
        if !bad.is_empty() {
            bail!("unknown key {} (keys: {}; enis[]: {})", bad.join(", "), HOST_KEYS.join(", "), ENI_KEYS.join(", "));
        }
        let folded = config::parse_folded(bytes).map_err(|e| anyhow!("not valid JSON: {e}"))?;
        let conf: HostConf = serde_json::from_value(folded).map_err(|e| anyhow!("{e}"))?;
        for (i, eni) in conf.enis.iter().enumerate() {
            if eni.interface.is_empty() {
                bail!("enis[{i}]: no \"interface\"");
            }
        }
        Ok(conf)
    }
}

/// One secondary ENI.
#[derive(Debug, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EniConf {
    pub interface: String,
    #[serde(rename = "devicenumber")]
    pub device_number: u32,
    /// explicit table (default deviceNumber + 1)
    pub table: Option<u32>,
    pub mtu: Option<u32>,
    /// the ENI subnet's router (first address of the subnet in a VPC)
    pub gateway: Option<IpAddr>,
    /// the ENI's subnet: its connected route is removed from the main table
    pub subnet: Option<IpNet>,
}

fn parse_mark(v: &Option<Value>) -> Result<u32> {
    match v {
        None => Ok(0x80),
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| anyhow!("nodePortMark {n} out of range"))
        }
        Some(Value::String(s)) => {
            let t = s.trim();
            let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u32::from_str_radix(h, 16),
                None => t.parse::<u32>(),
            };
            r.map_err(|_| anyhow!("invalid nodePortMark {s:?}"))
        }
        Some(other) => bail!("invalid nodePortMark {other}"),
    }
}

/// Apply the node configuration in the current network namespace; idempotent. Returns what was
/// done. Everything that can be checked (the mark, every interface named) is checked before the
/// first change.
pub fn setup_host(conf: &HostConf) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut nl = Netlink::new()?;
    let mark = parse_mark(&conf.node_port_mark)?;
    if let Some(primary) = &conf.primary_interface {
        nl.link_by_name(primary)?.with_context(|| format!("primary interface {primary:?} not found"))?;
    }
    let mut links = Vec::with_capacity(conf.enis.len());
    for eni in &conf.enis {
        let link =
            nl.link_by_name(&eni.interface)?.with_context(|| format!("ENI interface {:?} not found", eni.interface))?;
        links.push(link);
    }
    if let Some(primary) = &conf.primary_interface {
        let v = conf.rp_filter.unwrap_or(2);
        sysctl::set_if("ipv4", primary, "rp_filter", &v.to_string())
            .with_context(|| format!("failed to set net.ipv4.conf.{primary}.rp_filter"))?;
        done.push(format!("net.ipv4.conf.{primary}.rp_filter={v}"));
    }
    if mark != 0 {
        let mut r = RuleSpec::new(Family::V4);
        r.priority = Some(conf.node_port_rule_priority.unwrap_or(1024));
        r.fwmark = Some(mark);
        r.fwmask = Some(mark);
        r.table = Some(Table::MAIN);
        let have = nl.rules(Family::V4)?;
        if !have
            .iter()
            .any(|x| x.priority == r.priority && x.fwmark == r.fwmark && x.fwmask == r.fwmask && x.table == r.table)
        {
            nl.rule_add(&r).context("failed to add the node-port fwmark rule")?;
        }
        done.push(format!("rule fwmark {mark:#x}/{mark:#x} lookup main pref {}", r.priority.unwrap_or(1024)));
    }
    for (eni, link) in conf.enis.iter().zip(links) {
        let table = eni.table.unwrap_or(eni.device_number + 1);
        if let Some(m) = eni.mtu {
            if link.mtu != m {
                nl.link_set_mtu(link.index, m).with_context(|| format!("failed to set mtu of {}", eni.interface))?;
            }
        }
        nl.link_set_up(link.index, true).with_context(|| format!("failed to set {} up", eni.interface))?;
        if let Some(gw) = eni.gateway {
            let fam = Some(Family::of(&gw));
            let to_gw = RouteSpec {
                dst: Some(host_net(gw)),
                family: fam,
                oif: Some(link.index),
                scope: Some(Scope::LINK),
                table: Some(table),
                ..Default::default()
            };
            nl.route_replace(&to_gw).with_context(|| format!("failed to add route to {gw} in table {table}"))?;
            let dflt = RouteSpec {
                dst: Some(if gw.is_ipv4() { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) }),
                family: fam,
                gw: Some(gw),
                oif: Some(link.index),
                table: Some(table),
                ..Default::default()
            };
            nl.route_replace(&dflt)
                .with_context(|| format!("failed to add default route via {gw} in table {table}"))?;
        }
        if let Some(sn) = eni.subnet {
            let r = RouteSpec {
                dst: Some(sn.trunc()),
                family: Some(Family::of(&sn.addr())),
                oif: Some(link.index),
                table: Some(Table::MAIN),
                ..Default::default()
            };
            match nl.route_del(&r) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) || is_no_such_process(&e) => {}
                Err(e) => return Err(e),
            }
        }
        done.push(format!("ENI {} (device {}) up, table {table}", eni.interface, eni.device_number));
    }
    Ok(done)
}

/// `cni-multi vpc-routed setup-host [--config FILE]` (config from stdin without `--config`).
pub fn setup_host_main(args: &[String]) -> i32 {
    let mut err = std::io::stderr();
    // `--config=FILE` is `--config FILE`
    let args: Vec<String> = match args {
        [one] => match one.split_once('=') {
            Some((flag @ ("--config" | "-c"), file)) => vec![flag.to_string(), file.to_string()],
            _ => args.to_vec(),
        },
        _ => args.to_vec(),
    };
    let usage = "Usage: cni-multi vpc-routed setup-host [--config FILE]   (the config on stdin without it)\n\
                 Config (JSON): {\"primaryInterface\": \"eth0\", \"rpFilter\": 2, \"nodePortMark\": \"0x80\",\n  \
                 \"enis\": [{\"interface\": \"eth1\", \"deviceNumber\": 1, \"mtu\": 9001, \"gateway\": \"10.0.1.1\", \"subnet\": \"10.0.1.0/24\"}]}";
    let bytes = match args.as_slice() {
        [help] if help == "--help" || help == "-h" => {
            let _ = writeln!(err, "{usage}");
            return 0;
        }
        [] => {
            let mut b = Vec::new();
            if let Err(e) = std::io::stdin().take(1 << 20).read_to_end(&mut b) {
                let _ = writeln!(err, "vpc-routed setup-host: reading stdin: {e}");
                return 1;
            }
            b
        }
        [flag, file] if flag == "--config" || flag == "-c" => match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "vpc-routed setup-host: reading {file}: {e}");
                return 1;
            }
        },
        _ => {
            let _ = writeln!(err, "{usage}");
            return 2;
        }
    };
    let conf = match HostConf::parse(&bytes) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "vpc-routed setup-host: invalid config: {e:#}");
            return 1;
        }
    };
    match setup_host(&conf) {
        Ok(done) => {
            let mut out = std::io::stdout().lock();
            for d in done {
                let _ = writeln!(out, "{d}");
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "vpc-routed setup-host: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_host_help_and_config_equals_form() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(setup_host_main(&a(&["--help"])), 0);
        assert_eq!(setup_host_main(&a(&["-h"])), 0);
        // `--config=FILE` is read as `--config FILE`: a missing file is a read error (1), not usage (2)
        assert_eq!(setup_host_main(&a(&["--config=/nonexistent/setup-host.json"])), 1);
        assert_eq!(setup_host_main(&a(&["--config", "/nonexistent/setup-host.json"])), 1);
        assert_eq!(setup_host_main(&a(&["--bogus"])), 2);
    }
    use crate::cni::{config, Command};

    fn ctx(conf: &str, args: &str) -> Ctx {
        Ctx {
            conf: config::parse_folded(conf.as_bytes()).unwrap(),
            container_id: "ctr1".into(),
            args: crate::cni::env::parse_args_lenient(args),
            ..Ctx::new(Command::Add)
        }
    }

    #[test]
    fn config_defaults_and_table() {
        let c = load(&ctx(r#"{"name":"n","type":"vpc-routed"}"#, "")).unwrap();
        assert_eq!(c, Conf { prefix: "eni".into(), mtu: 9001, table: None });
        let c = load(&ctx(r#"{"vethPrefix":"cali","MTU":"1500","deviceNumber":2}"#, "")).unwrap();
        assert_eq!(c, Conf { prefix: "cali".into(), mtu: 1500, table: Some(3) });
        assert_eq!(load(&ctx(r#"{"table":7,"deviceNumber":2}"#, "")).unwrap().table, Some(7));
        assert_eq!(load(&ctx(r#"{"deviceNumber":0}"#, "")).unwrap().table, None);
        for bad in [
            r#"{"vethPrefix":"toolong"}"#,
            r#"{"mtu":"x"}"#,
            r#"{"mtu":20}"#,
            r#"{"table":255}"#,
            r#"{"vethPrefix":""}"#,
        ] {
            assert!(load(&ctx(bad, "")).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_veth_name_is_aws_style() {
        let c = ctx("{}", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0");
        let n = host_veth_name("eni", &c);
        let h = crate::digest::hex(&crate::digest::sha1(b"default.web-0"));
        assert_eq!(n, format!("eni{}", &h[..11]));
        assert_eq!(n.len(), 14);
        assert!(host_veth_name("cali", &c).len() <= 15);
        // without Kubernetes args: the container id
        let n2 = host_veth_name("eni", &ctx("{}", ""));
        assert_eq!(n2, format!("eni{}", &crate::digest::hex(&crate::digest::sha1(b"ctr1"))[..11]));
    }

    #[test]
    fn pod_result_has_one_default_route_per_family() {
        let c = Ctx { ifname: "eth0".into(), netns: Some("/run/netns/p".into()), ..ctx("{}", "") };
        let hv = Link { name: "eniabc".into(), mac: Some([2, 0, 0, 0, 0, 1]), ..Default::default() };
        let cl = Link { name: "eth0".into(), mac: Some([2, 0, 0, 0, 0, 2]), ..Default::default() };
        let ips: Vec<IpAddr> = ["fd00:9::2", "198.18.9.2", "198.18.9.3"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(families(&ips), [false, true]);
        let r = pod_result(&c, &hv, &cl, &ips);
        let j: serde_json::Value = serde_json::from_str(&r.to_json("1.0.0").unwrap()).unwrap();
        assert_eq!(
            j["ips"],
            serde_json::json!([
                {"address": "fd00:9::2/128", "gateway": "fe80::1", "interface": 1},
                {"address": "198.18.9.2/32", "gateway": "169.254.1.1", "interface": 1},
                {"address": "198.18.9.3/32", "gateway": "169.254.1.1", "interface": 1}
            ])
        );
        assert_eq!(
            j["routes"],
            serde_json::json!([{"dst": "::/0", "gw": "fe80::1"}, {"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
        );
        assert_eq!(j["interfaces"][0], serde_json::json!({"name": "eniabc", "mac": "02:00:00:00:00:01"}));
        assert_eq!(j["interfaces"][1]["sandbox"], "/run/netns/p");
    }

    #[test]
    fn host_conf_parses() {
        let c = HostConf::parse(
            br#"{"primaryInterface":"eth0","nodePortMark":"0x80","enis":[{"interface":"eth1","deviceNumber":1,"gateway":"198.18.1.1","subnet":"198.18.1.0/24"}]}"#,
        )
        .unwrap();
        assert_eq!(parse_mark(&c.node_port_mark).unwrap(), 0x80);
        assert_eq!(parse_mark(&None).unwrap(), 0x80);
        assert_eq!(parse_mark(&Some(serde_json::json!(0))).unwrap(), 0);
        assert!(parse_mark(&Some(serde_json::json!("zz"))).is_err());
        assert_eq!(c.enis[0].device_number, 1);
    }

    /// Keys in any case, as every plugin config; unknown keys (typos) refused, naming them.
    #[test]
    fn host_conf_keys_fold_and_unknown_keys_are_refused() {
        let c = HostConf::parse(
            br#"{"PRIMARYINTERFACE":"eth0","rpfilter":1,"NodePortMark":0,"nodeportrulepriority":7,
                 "ENIS":[{"Interface":"eth1","DEVICENUMBER":2,"Table":9,"MTU":9001,"Gateway":"198.18.1.1","SubNet":"198.18.1.0/24"}]}"#,
        )
        .unwrap();
        assert_eq!(c.primary_interface.as_deref(), Some("eth0"));
        assert_eq!((c.rp_filter, c.node_port_rule_priority), (Some(1), Some(7)));
        assert_eq!(parse_mark(&c.node_port_mark).unwrap(), 0);
        let e = &c.enis[0];
        assert_eq!((e.interface.as_str(), e.device_number, e.table, e.mtu), ("eth1", 2, Some(9), Some(9001)));
        assert_eq!((e.gateway, e.subnet), ("198.18.1.1".parse().ok(), "198.18.1.0/24".parse().ok()));
        // that config spells every documented key (in another case): each is a field of the structs
        let spelled = ["primaryinterface", "rpfilter", "nodeportmark", "nodeportrulepriority", "enis"];
        assert_eq!(HOST_KEYS.iter().map(|k| config::fold_key(k)).collect::<Vec<_>>(), spelled);
        let spelled = ["interface", "devicenumber", "table", "mtu", "gateway", "subnet"];
        assert_eq!(ENI_KEYS.iter().map(|k| config::fold_key(k)).collect::<Vec<_>>(), spelled);
        for (bad, says) in [
            (r#"{"primaryInterfac":"eth0"}"#, r#"unknown key "primaryInterfac""#),
            (r#"{"enis":[{"interface":"eth1"},{"interface":"eth2","iface":"x"}]}"#, "unknown key enis[1].iface"),
            (r#"{"enis":[{"deviceNumber":1}]}"#, r#"enis[0]: no "interface""#),
            (r#"{"rpFilter":"2"}"#, "invalid type"),
            (r#"[]"#, "must be a JSON object"),
            (r#"{"#, "not valid JSON"),
        ] {
            let e = format!("{:#}", HostConf::parse(bad.as_bytes()).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
