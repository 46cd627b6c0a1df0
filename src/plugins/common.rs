//! Steps shared by the interface plugins: opening the container namespace, the undo stack,
//! applying an IPAM result inside the container (ConfigureIface), forwarding, and the CHECK helpers.

use crate::cni::{code, CniError, CniResult, Ctx};
use crate::netlink::addr::Family;
use crate::netlink::link::VethSpec;
use crate::netlink::route::RouteSpec;
use crate::netlink::socket::{is_exists, is_not_found, Netlink};
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
        // IPv6 DAD: up to 5 s, fail on DADFAILED, give up silently when the link is not oper-up
        nl.settle_addrs(link.index, std::time::Duration::from_secs(5))?;
    }
    for r in &result.routes {
        let gw = r.gw.or(if r.dst.addr().is_ipv4() { v4gw } else { v6gw });
        let spec = RouteSpec {
            dst: Some(r.dst.trunc()),
            family: Some(Family::of(&r.dst.addr())),
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
        if !is_not_found(&e) {
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

// ---- helpers for the interface plugins (macvlan, ipvlan, vlan, host-device, dummy, tap, vrf) ----

/// The name of the interface of the first default route in the main table (IPv4 first, then
/// IPv6), as the reference picks a macvlan/ipvlan master when none is configured.
pub fn default_route_ifname(nl: &mut Netlink) -> Result<String> {
    for fam in [Family::V4, Family::V6] {
        let routes = nl.routes(fam, Some(254))?;
        let hit = routes.iter().find(|r| r.dst.is_none_or(|d| d.prefix_len() == 0) && r.oif.is_some());
        if let Some(idx) = hit.and_then(|r| r.oif) {
            if let Some(l) = nl.link_by_index(idx)? {
                return Ok(l.name);
            }
        }
    }
    anyhow::bail!("no default route interface found")
}

/// Resolve the lower device of a macvlan/ipvlan/vlan: `master` (or the default-route interface
/// when empty) looked up on `nl` (the host's or, with linkInContainer, the container's socket).
/// A named master that does not exist is a configuration error (code 7).
pub fn resolve_master(nl: &mut Netlink, master: Option<&str>) -> Result<crate::netlink::Link> {
    let name = match master.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => default_route_ifname(nl)?,
    };
    match nl.link_by_name(&name)? {
        Some(l) => Ok(l),
        None => Err(CniError::config(format!("failed to lookup master {name:?}: Link not found")).into()),
    }
}

/// Create a link for the container under a temporary `veth…` name and rename it to `ifname`
/// inside the container (the reference's way to avoid clashes with host names).
/// `template` gives everything but the name and namespace. With `from_container` the link is
/// created through the container's socket (linkInContainer), otherwise through `host` with
/// IFLA_NET_NS_FD. On a failed rename the link is deleted. Returns the link as seen in the container.
pub fn create_renamed(
    host: &mut Netlink,
    cont: &mut Netlink,
    ns: &NetNs,
    ifname: &str,
    from_container: bool,
    template: &crate::netlink::LinkSpec<'_>,
) -> Result<crate::netlink::Link> {
    let mut tries = 0;
    let tmp = loop {
        let tmp = random_veth_name();
        let r = if from_container {
            cont.link_add(&crate::netlink::LinkSpec { name: &tmp, netns: None, ..*template })
        } else {
            host.link_add(&crate::netlink::LinkSpec { name: &tmp, netns: Some(ns.fd()), ..*template })
        };
        match r {
            Ok(()) => break tmp,
            Err(e) if is_exists(&e) && tries < 10 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let link = cont.link_by_name(&tmp)?.with_context(|| format!("failed to find new link {tmp:?}"))?;
    if let Err(e) = cont.link_set_name(link.index, ifname) {
        let _ = cont.link_del(link.index);
        return Err(e.context(format!("failed to rename {tmp:?} to {ifname:?}")));
    }
    cont.link_by_index(link.index)?.with_context(|| format!("failed to refetch {ifname:?}"))
}

/// An undo step that deletes `ifname` in the namespace at `ns_path` (a missing link is fine).
pub fn undo_delete_link(undo: &mut Undo, ns_path: &str, ifname: &str) {
    let (path, ifname) = (ns_path.to_string(), ifname.to_string());
    undo.push("container link", move || {
        delete_container_link(&mut Netlink::in_netns(&reopen_ns(&path)?)?, &ifname).map(|_| ())
    });
}

/// Reopen a namespace by path inside an undo step (where the typed CNI error is not needed).
pub fn reopen_ns(path: &str) -> Result<NetNs> {
    NetNs::open(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The result entry of a container interface: name, MAC, sandbox = CNI_NETNS.
pub fn container_iface(ctx: &Ctx, link: &crate::netlink::Link) -> crate::cni::result::Interface {
    crate::cni::result::Interface {
        name: link.name.clone(),
        mac: link.mac_string(),
        sandbox: ctx.netns.clone(),
        ..Default::default()
    }
}

/// `arp_notify=1` (and with `ndisc`, `ndisc_notify=1`) on `ifname` inside the container; errors ignored.
pub fn set_notify(ns: &NetNs, ifname: &str, ndisc: bool) {
    let r = ns.run(|| {
        let _ = sysctl::set_if("ipv4", ifname, "arp_notify", "1");
        if ndisc {
            let _ = sysctl::set_if("ipv6", ifname, "ndisc_notify", "1");
        }
        Ok(())
    });
    if let Err(e) = r {
        tracing::debug!("notify sysctls on {ifname}: {e:#}");
    }
}

/// Run IPAM ADD, push its rollback, and check it returned addresses; all IPs get interface 0.
pub fn ipam_add_for_iface0(ctx: &Ctx, undo: &mut Undo) -> Result<CniResult> {
    let mut r = crate::cni::delegate::ipam_add(ctx)?;
    let ctx2 = ctx.clone();
    undo.push("IPAM allocation", move || crate::cni::delegate::ipam_del(&ctx2));
    if r.ips.is_empty() {
        anyhow::bail!("IPAM plugin returned missing IP config");
    }
    for ip in &mut r.ips {
        ip.interface = Some(0);
    }
    Ok(r)
}

/// DEL step: delete CNI_IFNAME in the container; a missing netns or link is success.
/// Returns the link's global addresses (for the ipMasq teardown).
pub fn del_container_link(ctx: &Ctx) -> Result<Vec<IpNet>> {
    match open_container_ns_for_del(ctx)? {
        NsOrGone::Ns(ns) => delete_container_link(&mut Netlink::in_netns(&ns)?, &ctx.ifname),
        NsOrGone::Gone => Ok(Vec::new()),
    }
}

/// DEL of a link-in-container plugin: IPAM DEL (when configured), then the container link.
pub fn del_ipam_and_link(ctx: &Ctx) -> Result<()> {
    ipam_del_if_set(ctx)?;
    del_container_link(ctx).map(|_| ())
}

/// IPAM DEL, when the config names an IPAM type.
pub fn ipam_del_if_set(ctx: &Ctx) -> Result<()> {
    match ctx.ipam_type() {
        Some(_) => crate::cni::delegate::ipam_del(ctx),
        None => Ok(()),
    }
}

/// IPAM CHECK, when the config names an IPAM type.
pub fn ipam_check_if_set(ctx: &Ctx) -> Result<()> {
    match ctx.ipam_type() {
        Some(_) => crate::cni::delegate::ipam_check(ctx),
        None => Ok(()),
    }
}

/// STATUS of a plugin whose only dependency is its IPAM: IPAM STATUS when configured.
pub fn ipam_status_if_set(ctx: &Ctx) -> Result<()> {
    match ctx.ipam_type() {
        Some(_) => crate::cni::delegate::ipam_status(ctx),
        None => Ok(()),
    }
}

/// ADD step: IPAM ADD (rolled back by `undo`), its addresses and routes into `result` (for interface 0).
pub fn ipam_into(ctx: &Ctx, undo: &mut Undo, result: &mut CniResult) -> Result<()> {
    let ipam = ipam_add_for_iface0(ctx, undo)?;
    result.ips = ipam.ips;
    result.routes = ipam.routes;
    Ok(())
}

/// CHECK preamble shared by the interface plugins: the prevResult entry for CNI_IFNAME
/// (reference message when the sandbox does not match) and its index.
pub fn check_prev_iface<'a>(ctx: &Ctx, prev: &'a CniResult) -> Result<(usize, &'a crate::cni::result::Interface)> {
    let netns = ctx.netns.as_deref().unwrap_or("");
    let found = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == ctx.ifname && i.sandbox.as_deref().unwrap_or("") == netns);
    match found {
        Some((i, itf)) => Ok((i, itf)),
        None => anyhow::bail!("Sandbox in prevResult  doesn't match configured netns: {netns}"),
    }
}

/// CHECK: the container link exists, is not in the host namespace and has the prevResult MAC.
pub fn check_link_mac(link: &crate::netlink::Link, want: &crate::cni::result::Interface) -> Result<()> {
    if let (Some(w), Some(h)) = (want.mac.as_deref().filter(|m| !m.is_empty()), link.mac_string()) {
        if !w.eq_ignore_ascii_case(&h) {
            anyhow::bail!("Interface {} Mac {w} doesn't match container Mac: {h}", want.name);
        }
    }
    Ok(())
}

/// The IPs of `prev` that belong to interface `idx` (all of them when none names an interface).
pub fn ips_of(prev: &CniResult, idx: usize) -> CniResult {
    let mut r = prev.clone();
    for ip in &mut r.ips {
        if ip.interface.is_none() {
            ip.interface = Some(idx);
        }
    }
    r
}

/// CHECK: the container link `ifname` with its kind-specific details, if it exists.
pub fn container_link_details(cont: &mut Netlink, ifname: &str) -> Result<Option<crate::netlink::LinkDetails>> {
    match cont.link_by_name(ifname)? {
        Some(l) => cont.link_details(l.index),
        None => Ok(None),
    }
}

/// CHECK: the container link is of `kind` (the reference's message).
pub fn check_link_kind(link: &crate::netlink::Link, ifname: &str, kind: &str) -> Result<()> {
    if link.kind.as_deref() != Some(kind) {
        anyhow::bail!("Error: Container interface {ifname} not of type {kind}");
    }
    Ok(())
}

/// CHECK tail of the interface plugins: the prevResult addresses of interface `idx` (IPs that name
/// no interface count as its own) are on `ifname`, and every prevResult route exists.
pub fn check_addrs_and_routes(cont: &mut Netlink, ifname: &str, idx: usize, prev: &CniResult) -> Result<()> {
    check_expected_ips(cont, ifname, idx, &ips_of(prev, idx))?;
    check_expected_routes(cont, prev)
}

/// CHECK: the master still resolves, on the container's socket with linkInContainer, else on a
/// host socket opened for it.
pub fn check_master(cont: &mut Netlink, link_in_container: bool, master: Option<&str>) -> Result<()> {
    if link_in_container {
        resolve_master(cont, master)?;
    } else {
        resolve_master(&mut Netlink::new()?, master)?;
    }
    Ok(())
}

/// The container MAC of macvlan/tap: runtimeConfig.mac > CNI_ARGS MAC > the config's `mac`
/// (empty strings skipped), in the reference's error wording.
pub fn configured_mac(ctx: &Ctx, conf_mac: Option<&str>) -> Result<Option<[u8; 6]>> {
    let s = ctx
        .runtime_config("mac")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .or_else(|| ctx.cni_arg("MAC").filter(|s| !s.is_empty()))
        .or(conf_mac.filter(|s| !s.is_empty()));
    match s {
        None => Ok(None),
        Some(s) => crate::netlink::parse_mac(s)
            .map(Some)
            .map_err(|e| CniError::config(format!("invalid args {s} for MAC addr: {e}")).into()),
    }
}

/// Config check of a sub-interface MTU (macvlan, vlan): not negative.
pub fn check_mtu_not_negative(mtu: i64) -> Result<()> {
    if mtu < 0 {
        return Err(CniError::config(format!("invalid MTU {mtu}, must be [0, master MTU]")).into());
    }
    Ok(())
}

/// ADD: a sub-interface MTU must not exceed its master's; returns it as u32 (0 = inherit).
pub fn mtu_within_master(mtu: i64, master: &crate::netlink::Link) -> Result<u32> {
    let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
    if mtu > master.mtu {
        return Err(CniError::config(format!("invalid MTU {mtu}, must be [0, master MTU({})]", master.mtu)).into());
    }
    Ok(mtu)
}

// ---- helpers for the veth plugins (bridge, ptp) ----

/// ADD step of the veth plugins: the pair, created inside the container with its peer in the
/// host namespace under a random `veth…` name (its undo pushed); the host end gets accept_ra=0.
/// Returns the host end.
pub fn add_veth_pair(
    ctx: &Ctx,
    host: &mut Netlink,
    cont: &mut Netlink,
    ns: &NetNs,
    undo: &mut Undo,
    mtu: u32,
    mac: Option<[u8; 6]>,
) -> Result<crate::netlink::Link> {
    if cont.link_by_name(&ctx.ifname)?.is_some() {
        anyhow::bail!("container veth name provided ({}) already exists", ctx.ifname);
    }
    let host_ns = NetNs::current()?;
    let host_name = create_veth(cont, &host_ns, &ctx.ifname, mtu, mac)?;
    tracing::debug!(host_veth = %host_name, ifname = %ctx.ifname, "veth pair created");
    undo_delete_link(undo, ns.path(), &ctx.ifname);
    let host_veth = host.link_by_name(&host_name)?.with_context(|| format!("failed to lookup {host_name:?}"))?;
    let _ = sysctl::set_if("ipv6", &host_name, "accept_ra", "0");
    Ok(host_veth)
}

/// Create the pair; retry with a new host name when it collides (up to 10 times, as the reference).
fn create_veth(cont: &mut Netlink, host_ns: &NetNs, ifname: &str, mtu: u32, mac: Option<[u8; 6]>) -> Result<String> {
    let mut last = None;
    for _ in 0..10 {
        let peer = random_veth_name();
        let spec = VethSpec {
            name: ifname,
            peer_name: &peer,
            mtu: (mtu > 0).then_some(mtu),
            mac,
            peer_ns: Some(host_ns.fd()),
        };
        match cont.veth_add(&spec) {
            Ok(()) => return Ok(peer),
            Err(e) if is_exists(&e) => last = Some(e),
            Err(e) => return Err(e.context(format!("failed to create veth pair for {ifname:?}"))),
        }
    }
    Err(last.map(|e| e.context("failed to find a free veth name")).unwrap_or_else(|| anyhow::anyhow!("veth")))
}

/// CHECK of the veth plugins: the prevResult entry of CNI_IFNAME, and the container link, which
/// must be a veth with the prevResult MAC. Returns the entry's index and the link.
pub fn check_container_veth(ctx: &Ctx, cont: &mut Netlink, prev: &CniResult) -> Result<(usize, crate::netlink::Link)> {
    let idx = find_container_iface(ctx, prev)?;
    let c = cont.link_by_name(&ctx.ifname)?.with_context(|| format!("interface {} not found", ctx.ifname))?;
    check_link_kind(&c, &ctx.ifname, "veth")?;
    if let (Some(want), Some(have)) = (prev.interfaces.get(idx).and_then(|i| i.mac.clone()), c.mac_string()) {
        if !want.eq_ignore_ascii_case(&have) {
            anyhow::bail!("Interface {} Mac {want} doesn't match container Mac: {have}", ctx.ifname);
        }
    }
    Ok((idx, c))
}

/// ADD step: masquerade the result's addresses (its undo pushed).
pub fn setup_ipmasq(ctx: &Ctx, backend: Option<&str>, result: &CniResult, undo: &mut Undo) -> Result<()> {
    let ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
    crate::firewall::setup_ipmasq(backend, &ctx.name, &ctx.container_id, &ctx.ifname, &ips)
        .context("failed to set up IP masquerading")?;
    tracing::debug!("IP masquerading set up");
    let (net, cid, ifname) = (ctx.name.clone(), ctx.container_id.clone(), ctx.ifname.clone());
    undo.push("ipMasq", move || crate::firewall::teardown_ipmasq(&net, &cid, &ifname, &ips));
    Ok(())
}

/// `cni.dev/valid-attachments` as firewall attachments; None when the runtime sent no list.
pub fn valid_attachments(ctx: &Ctx) -> Result<Option<Vec<crate::firewall::Attachment>>> {
    let valid = ctx.valid_attachments()?;
    Ok(valid.map(|v| {
        v.into_iter().map(|(container_id, ifname)| crate::firewall::Attachment { container_id, ifname }).collect()
    }))
}

/// The failures of a GC that runs every step and reports them together at the end.
#[derive(Default)]
pub struct GcErrors(Vec<String>);

impl GcErrors {
    /// Remember the failure of step `what`, if it failed.
    pub fn note<T>(&mut self, what: &str, r: Result<T>) {
        if let Err(e) = r {
            self.0.push(format!("{what}: {e:#}"));
        }
    }
    /// `GC failed: what: error; …` when any step failed.
    pub fn finish(self) -> Result<()> {
        if !self.0.is_empty() {
            anyhow::bail!("GC failed: {}", self.0.join("; "));
        }
        Ok(())
    }
}

/// IPAM GC, when the config names an IPAM type (spec 1.1.0: a plugin passes GC on to its
/// delegated IPAM; in-process or by exec, as every delegation).
pub fn ipam_gc_if_set(ctx: &Ctx) -> Result<()> {
    match ctx.ipam_type() {
        Some(_) => crate::cni::delegate::ipam_gc(ctx),
        None => Ok(()),
    }
}

/// GC step of the veth plugins: IPAM GC, when the config names an IPAM type.
pub fn gc_ipam(ctx: &Ctx, errors: &mut GcErrors) {
    if ctx.ipam_type().is_some() {
        errors.note("ipam", ipam_gc_if_set(ctx));
    }
}

/// GC step of the veth plugins: masquerade rules of this network's attachments not in `valid`.
pub fn gc_ipmasq(ctx: &Ctx, valid: &[crate::firewall::Attachment], errors: &mut GcErrors) {
    errors.note("ipMasq", crate::firewall::gc_ipmasq(&ctx.name, valid));
}
