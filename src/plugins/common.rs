//! Steps shared by the interface plugins: opening the container namespace, the undo stack,
//! applying an IPAM result inside the container (ConfigureIface), forwarding, and the CHECK helpers.

use crate::cni::{code, CniError, CniResult, Ctx};
use crate::netlink::addr::Family;
use crate::netlink::route::RouteSpec;
use crate::netlink::socket::Netlink;
use crate::sys::netns::{NetNs, NsError};
use crate::sys::sysctl;
use anyhow::{Context, Result};
use ipnet::IpNet;
use std::io::Read;
use std::net::IpAddr;

/// Outcome of opening CNI_NETNS on the DEL path, where a vanished namespace is success.
pub enum NsOrGone {
    Ns(NetNs),
    Gone,
}

/// Open CNI_NETNS for container-side work (ADD/CHECK): it must be a network namespace and must not be
/// the namespace this plugin runs in (a stale path once let a plugin take down the host's `lo`).
pub fn open_container_ns(ctx: &Ctx) -> Result<NetNs> {
    let path = ctx.require_netns()?;
    let ns = NetNs::open(path).map_err(|e| CniError::new(code::INVALID_NETNS, e.to_string()))?;
    refuse_own_ns(&ns)?;
    Ok(ns)
}

/// DEL flavour: no netns given or the path is gone ⇒ `Gone`; other failures are errors.
pub fn open_container_ns_for_del(ctx: &Ctx) -> Result<NsOrGone> {
    let Some(path) = ctx.netns.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(NsOrGone::Gone);
    };
    match NetNs::open(path) {
        Ok(ns) => {
            refuse_own_ns(&ns)?;
            Ok(NsOrGone::Ns(ns))
        }
        Err(NsError::NotExist(_)) => Ok(NsOrGone::Gone),
        Err(e) => Err(CniError::new(code::INVALID_NETNS, e.to_string()).into()),
    }
}

fn refuse_own_ns(ns: &NetNs) -> Result<()> {
    if ns.is_current()? && std::env::var("CNI_NETNS_OVERRIDE").map(|v| v != "1" && v != "true").unwrap_or(true) {
        return Err(CniError::new(
            code::INVALID_NETNS,
            format!("netns {:?} is the plugin's own namespace: refusing to change it", ns.path()),
        )
        .into());
    }
    Ok(())
}

/// The undo stack of an ADD: each successful step pushes its inverse; unless `commit` is called,
/// dropping the stack runs the inverses in reverse order (errors are logged, not returned).
#[derive(Default)]
pub struct Undo {
    steps: Vec<(&'static str, UndoStep)>,
}

type UndoStep = Box<dyn FnOnce() -> Result<()>>;

impl Undo {
    pub fn push(&mut self, what: &'static str, f: impl FnOnce() -> Result<()> + 'static) {
        self.steps.push((what, Box::new(f)));
    }
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some((what, f)) = self.steps.pop() {
            if let Err(e) = f() {
                tracing::warn!("rollback of {what} failed: {e:#}");
            } else {
                tracing::debug!("rolled back {what}");
            }
        }
    }
}

/// `veth` + 8 random hex digits, as the reference names host-side veths.
pub fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        b = (t ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// The container MAC from runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC.
pub fn requested_mac(ctx: &Ctx) -> Result<Option<[u8; 6]>> {
    let s = ctx
        .runtime_config("mac")
        .and_then(|v| v.as_str())
        .or_else(|| ctx.args_cni("mac").and_then(|v| v.as_str()))
        .or_else(|| ctx.cni_arg("MAC"));
    match s {
        None | Some("") => Ok(None),
        Some(s) => crate::netlink::link::parse_mac(s)
            .map(Some)
            .map_err(|e| CniError::config(format!("invalid MAC address {s:?}: {e}")).into()),
    }
}

pub fn family_of(ip: &IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).unwrap_or_else(|_| IpNet::from(ip))
}

/// Enable IP forwarding in the current namespace for the families present in `result`.
pub fn enable_forwarding(result: &CniResult) -> Result<()> {
    let v4 = result.ips.iter().any(|i| i.address.addr().is_ipv4());
    let v6 = result.ips.iter().any(|i| i.address.addr().is_ipv6());
    if v4 {
        set_if_needed("net.ipv4.ip_forward")?;
    }
    if v6 {
        set_if_needed("net.ipv6.conf.all.forwarding")?;
    }
    Ok(())
}

fn set_if_needed(key: &str) -> Result<()> {
    if sysctl::get(key).map(|v| v.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    sysctl::set(key, "1").with_context(|| format!("failed to set {key}=1"))
}

/// Apply an IPAM result to `ifname` inside the container (the reference's ConfigureIface):
/// addresses whose interface index points at `ifname` (`our_index`), link up, optional DAD wait,
/// then every route (appended, so a second nexthop for one destination becomes ECMP).
pub fn configure_iface(ns: &NetNs, nl: &mut Netlink, ifname: &str, our_index: usize, result: &CniResult) -> Result<()> {
    let link = nl.link_by_name(ifname)?.with_context(|| format!("failed to lookup {ifname:?}"))?;
    let mut v4gw = None;
    let mut v6gw = None;
    let mut v6_prepared = false;
    for ip in &result.ips {
        match ip.interface {
            Some(i) if i == our_index => {}
            Some(i) => {
                let other = result.interfaces.get(i).map(|x| x.name.as_str()).unwrap_or("?");
                if other != ifname {
                    anyhow::bail!("failed to add IP addr {} to {ifname:?}: invalid interface index {i}", ip.address);
                }
            }
            None => continue,
        }
        if ip.address.addr().is_ipv6() && !v6_prepared {
            ns.run(|| {
                let _ = sysctl::set_if("ipv6", "lo", "disable_ipv6", "0");
                sysctl::set_if("ipv6", ifname, "disable_ipv6", "0")
                    .with_context(|| format!("failed to enable IPv6 on {ifname:?}"))?;
                let _ = sysctl::set_if("ipv6", ifname, "keep_addr_on_down", "1");
                Ok(())
            })?;
            v6_prepared = true;
        }
        nl.addr_add(link.index, ip.address)
            .with_context(|| format!("failed to add IP addr {} to {ifname:?}", ip.address))?;
        match (ip.address.addr(), ip.gateway) {
            (IpAddr::V4(_), Some(gw)) if v4gw.is_none() => v4gw = Some(gw),
            (IpAddr::V6(_), Some(gw)) if v6gw.is_none() => v6gw = Some(gw),
            _ => {}
        }
    }
    nl.link_set_up(link.index, true).with_context(|| format!("failed to set {ifname:?} UP"))?;
    if v6gw.is_some() {
        wait_dad(nl, link.index)?;
    }
    for r in &result.routes {
        let gw = r.gw.or(if r.dst.addr().is_ipv4() { v4gw } else { v6gw });
        let spec = RouteSpec {
            dst: Some(r.dst.trunc()),
            family: Some(family_of(&r.dst.addr())),
            gw,
            oif: Some(link.index),
            scope: r.scope,
            table: r.table,
            metric: r.priority,
            mtu: r.mtu,
            advmss: r.advmss,
            ..Default::default()
        };
        nl.route_append(&spec).with_context(|| {
            format!(
                "failed to add route '{} via {}' on {ifname:?}",
                r.dst,
                gw.map(|g| g.to_string()).unwrap_or_default()
            )
        })?;
    }
    Ok(())
}

/// Wait up to 5 s for IPv6 duplicate address detection to finish on `index`.
fn wait_dad(nl: &mut Netlink, index: u32) -> Result<()> {
    const TENTATIVE: u32 = 0x40;
    const DADFAILED: u32 = 0x08;
    for _ in 0..50 {
        let addrs = nl.addrs(Some(index), Some(Family::V6))?;
        if let Some(a) = addrs.iter().find(|a| a.flags & DADFAILED != 0) {
            anyhow::bail!("IPv6 duplicate address detected for {}", a.addr);
        }
        if !addrs.iter().any(|a| a.flags & TENTATIVE != 0) {
            return Ok(());
        }
        let link = nl.link_by_index(index)?;
        if link.map(|l| l.oper_state != 6).unwrap_or(true) {
            return Ok(()); // not oper-up: DAD will not complete, give up silently like the reference
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// The container-side routes a ptp-style interface needs and the reference's CHECK reads.
pub fn host_route_to(ip: IpAddr) -> IpNet {
    host_prefix(ip)
}

/// CHECK: every prevResult IP of `ifname` is on the link and a route to its prefix exists.
pub fn check_expected_ips(nl: &mut Netlink, ifname: &str, our_index: usize, result: &CniResult) -> Result<()> {
    let link = nl.link_by_name(ifname)?.with_context(|| format!("interface {ifname:?} not found"))?;
    let have = nl.addrs(Some(link.index), None)?;
    let routes_v4 = nl.routes(Family::V4, None)?;
    let routes_v6 = nl.routes(Family::V6, None)?;
    for ip in result.ips.iter().filter(|i| i.interface == Some(our_index)) {
        if !have.iter().any(|a| a.addr == ip.address) {
            anyhow::bail!("Failed to match addr {} on interface {ifname}", ip.address);
        }
        let net = ip.address.trunc();
        let routes = if net.addr().is_ipv4() { &routes_v4 } else { &routes_v6 };
        let found = routes
            .iter()
            .any(|r| r.oif == Some(link.index) && r.dst.map(|d| d.contains(&ip.address.addr())).unwrap_or(false));
        if !found {
            anyhow::bail!("Failed to find ip route {net} on interface {ifname}");
        }
    }
    Ok(())
}

/// CHECK: every prevResult route exists (dst, and gw if set; for a default route only that some default exists).
pub fn check_expected_routes(nl: &mut Netlink, result: &CniResult) -> Result<()> {
    let routes_v4 = nl.routes(Family::V4, None)?;
    let routes_v6 = nl.routes(Family::V6, None)?;
    for r in &result.routes {
        let routes = if r.dst.addr().is_ipv4() { &routes_v4 } else { &routes_v6 };
        let dst = r.dst.trunc();
        let found = if dst.prefix_len() == 0 {
            routes.iter().any(|x| x.dst.map(|d| d.prefix_len() == 0).unwrap_or(true))
        } else {
            routes.iter().any(|x| x.dst == Some(dst) && (r.gw.is_none() || x.gw == r.gw))
        };
        if !found {
            anyhow::bail!("Failed to find route {} {}", r.dst, r.gw.map(|g| format!("via {g}")).unwrap_or_default());
        }
    }
    Ok(())
}

/// Find the container interface in prevResult (name == CNI_IFNAME, sandbox == CNI_NETNS).
pub fn find_container_iface(ctx: &Ctx, result: &CniResult) -> Result<usize> {
    for (i, itf) in result.interfaces.iter().enumerate() {
        if itf.name == ctx.ifname && itf.sandbox.is_some() {
            let sb = itf.sandbox.as_deref().unwrap_or_default();
            if ctx.netns.as_deref() != Some(sb) {
                anyhow::bail!(
                    "Sandbox in prevResult {sb} doesn't match configured netns: {}",
                    ctx.netns.as_deref().unwrap_or("")
                );
            }
            return Ok(i);
        }
    }
    anyhow::bail!("interface {} not found in prevResult", ctx.ifname)
}

/// prevResult is required for CHECK.
pub fn require_prev(ctx: &Ctx) -> Result<&CniResult> {
    ctx.prev_result.as_ref().ok_or_else(|| CniError::config("Required prevResult missing").into())
}

/// Global-unicast addresses of `ifname` in the container (remembered before DEL for ipMasq teardown).
pub fn global_addrs(nl: &mut Netlink, index: u32) -> Vec<IpNet> {
    nl.addrs(Some(index), None)
        .map(|v| v.into_iter().filter(|a| a.scope == 0).map(|a| a.addr).collect())
        .unwrap_or_default()
}

/// Delete `ifname` in the container; a missing link is success. Returns its global addresses.
pub fn delete_container_link(nl: &mut Netlink, ifname: &str) -> Result<Vec<IpNet>> {
    let Some(link) = nl.link_by_name(ifname)? else {
        return Ok(Vec::new());
    };
    let addrs = global_addrs(nl, link.index);
    if let Err(e) = nl.link_del(link.index) {
        let gone = e.downcast_ref::<crate::netlink::socket::NlError>().map(|n| n.is_not_found()).unwrap_or(false);
        if !gone {
            return Err(e.context(format!("failed to delete {ifname:?}")));
        }
    }
    Ok(addrs)
}

/// The `dns` key of a plugin config, if any field of it is set.
pub fn conf_dns(ctx: &Ctx) -> Option<crate::cni::result::Dns> {
    let d = ctx.get("dns")?;
    let strings = |k: &str| -> Vec<String> {
        d.get(k)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let dns = crate::cni::result::Dns {
        nameservers: strings("nameservers"),
        domain: d.get("domain").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(String::from),
        search: strings("search"),
        options: strings("options"),
    };
    (!dns.is_empty()).then_some(dns)
}
