//! CHECK helpers: the prevResult entry of CNI_IFNAME, the container link's kind and MAC, its
//! addresses and the routes.

use super::link::resolve_master;
use crate::cni::result::Interface;
use crate::cni::{CniResult, Ctx};
use crate::netlink::addr::Family;
use crate::netlink::route::RouteSpec;
use crate::netlink::{Link, LinkDetails, Netlink};
use anyhow::{Context, Result};

/// prevResult is required for CHECK: without one, the reference's error (999, not a config error);
/// one that does not parse fails here, with the parse error (the protocol layer lets CHECK run
/// with it, for the plugins whose CHECK never reads it).
pub fn require_prev(ctx: &Ctx) -> Result<&CniResult> {
    require_prev_of(ctx, "")
}

/// [`require_prev`] for the plugins whose reference message names them (`ptp: `, `vlan: `).
pub fn require_prev_of<'a>(ctx: &'a Ctx, prefix: &str) -> Result<&'a CniResult> {
    ctx.read_prev_result()?.ok_or_else(|| anyhow::anyhow!("{prefix}Required prevResult missing"))
}

/// The veth plugins' prevResult entry for CNI_IFNAME: the first with that name and a sandbox,
/// which must be CNI_NETNS (the reference's message otherwise).
pub fn veth_iface(ctx: &Ctx, prev: &CniResult) -> Result<usize> {
    for (i, itf) in prev.interfaces.iter().enumerate() {
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

/// The interface plugins' prevResult entry for CNI_IFNAME in CNI_NETNS and its index
/// (the reference's message when there is none).
pub fn prev_iface<'a>(ctx: &Ctx, prev: &'a CniResult) -> Result<(usize, &'a Interface)> {
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

/// How a plugin's reference words its CHECK of the container veth: the prefix of its
/// messages (`ptp: `) and the type it names for a link that is no veth (`veth/p2p`).
pub struct VethWords {
    pub prefix: &'static str,
    pub kind: &'static str,
}

/// The container veth of bridge and ptp: its prevResult entry, and the link, which must be a
/// veth with the prevResult MAC (in the plugin's reference's `words`). Returns the entry's
/// index and the link.
pub fn container_veth(ctx: &Ctx, cont: &mut Netlink, prev: &CniResult, words: VethWords) -> Result<(usize, Link)> {
    let idx = veth_iface(ctx, prev)?;
    let c = cont
        .link_by_name(&ctx.ifname)?
        .with_context(|| format!("{}Container Interface name in prevResult: {} not found", words.prefix, ctx.ifname))?;
    if c.kind.as_deref() != Some("veth") {
        anyhow::bail!("Error: Container interface {} not of type {}", ctx.ifname, words.kind);
    }
    if let Some(want) = prev.interfaces.get(idx) {
        link_mac_of(&c, want, words.prefix)?;
    }
    Ok((idx, c))
}

/// The link has the prevResult MAC (when the prevResult gives one).
pub fn link_mac(link: &Link, want: &Interface) -> Result<()> {
    link_mac_of(link, want, "")
}

/// [`link_mac`] for the plugins whose reference prefixes the message (`ptp: `, `vlan: `).
/// A link without a hardware address (an L3 tun) matches no MAC, as the reference compares
/// with its empty text; the case of the letters does not count (the reference compares text).
pub fn link_mac_of(link: &Link, want: &Interface, prefix: &str) -> Result<()> {
    if let Some(w) = want.mac.as_deref().filter(|m| !m.is_empty()) {
        let h = link.hw_addr_string().unwrap_or_default();
        if !w.eq_ignore_ascii_case(&h) {
            anyhow::bail!("{prefix}Interface {} Mac {w} doesn't match container Mac: {h}", want.name);
        }
    }
    Ok(())
}

/// The link is of `kind` (the reference's message).
pub fn link_kind(link: &Link, ifname: &str, kind: &str) -> Result<()> {
    if link.kind.as_deref() != Some(kind) {
        anyhow::bail!("Error: Container interface {ifname} not of type {kind}");
    }
    Ok(())
}

/// The container link `ifname` with its kind-specific details, if it exists.
pub fn link_details(cont: &mut Netlink, ifname: &str) -> Result<Option<LinkDetails>> {
    match cont.link_by_name(ifname)? {
        Some(l) => cont.link_details(l.index),
        None => Ok(None),
    }
}

/// The master still resolves: on the container's socket with linkInContainer, else on a host
/// socket opened for it.
pub fn master(cont: &mut Netlink, link_in_container: bool, master: Option<&str>) -> Result<()> {
    if link_in_container {
        resolve_master(cont, master)?;
    } else {
        resolve_master(&mut Netlink::new()?, master)?;
    }
    Ok(())
}

/// The prevResult addresses of interface `idx` (IPs that name no interface count as its own)
/// and every prevResult route.
pub fn addrs_and_routes(cont: &mut Netlink, ifname: &str, idx: usize, prev: &CniResult) -> Result<()> {
    addrs(cont, ifname, idx, prev)?;
    routes(cont, prev)
}

/// Every prevResult address of interface `idx` (IPs that name no interface count as its own)
/// is on `ifname`, and a route over `ifname` to exactly its subnet exists, as the reference's
/// `ValidateExpectedInterfaceIPs` wants. Not the kernel's `local` route of the address itself
/// (table 255), which is there as long as the address is; any other table counts, so a
/// source-based-routing plugin later in the chain (which moves the subnet route to a table of
/// its own) does not make this CHECK fail. A /32 or /128 address needs no route (the reference
/// fails CHECK there: the kernel makes none in `main`).
pub fn addrs(nl: &mut Netlink, ifname: &str, idx: usize, prev: &CniResult) -> Result<()> {
    const RT_TABLE_LOCAL: u32 = 255;
    let link = nl.link_by_name(ifname)?.with_context(|| format!("interface {ifname:?} not found"))?;
    let have = nl.addrs(Some(link.index), None)?;
    let routes_v4 = nl.routes(Family::V4, None)?;
    let routes_v6 = nl.routes(Family::V6, None)?;
    for ip in prev.ips.iter().filter(|i| i.interface.unwrap_or(idx) == idx) {
        if !have.iter().any(|a| a.addr == ip.address) {
            anyhow::bail!("Failed to match addr {} on interface {ifname}", ip.address);
        }
        let net = ip.address.trunc();
        let routes = if net.addr().is_ipv4() { &routes_v4 } else { &routes_v6 };
        // a /32 or /128 address is its own subnet: the kernel makes no route for it but the local one
        let found = net.prefix_len() == net.max_prefix_len()
            || routes
                .iter()
                .any(|r| r.oif == Some(link.index) && r.dst == Some(net) && r.table != Some(RT_TABLE_LOCAL));
        if !found {
            // the reference's words (ValidateExpectedInterfaceIPs), whose route lookup is by dst
            let gw = ip.gateway.map_or_else(|| "<nil>".to_string(), |g| g.to_string());
            anyhow::bail!("Failed to find Gateway {gw} for interface {ifname}");
        }
    }
    Ok(())
}

/// Every prevResult route exists (dst, and gw if set; for a default route only that some default exists).
/// An unspecified `gw` (0.0.0.0, `::`) is an on-link route: the kernel's has no gateway (the
/// reference compares the kernel's missing gateway with 0.0.0.0 and fails its own attachment).
pub fn routes(nl: &mut Netlink, prev: &CniResult) -> Result<()> {
    let routes_v4 = nl.routes(Family::V4, None)?;
    let routes_v6 = nl.routes(Family::V6, None)?;
    for r in &prev.routes {
        let routes = if r.dst.addr().is_ipv4() { &routes_v4 } else { &routes_v6 };
        let dst = r.dst.trunc();
        let found = if dst.prefix_len() == 0 {
            routes.iter().any(|x| x.dst.map(|d| d.prefix_len() == 0).unwrap_or(true))
        } else {
            let want_gw = |x: &RouteSpec| match r.gw {
                None => true,
                Some(g) if g.is_unspecified() => x.gw.is_none(),
                Some(g) => x.gw == Some(g),
            };
            routes.iter().any(|x| x.dst == Some(dst) && want_gw(x))
        };
        if !found {
            anyhow::bail!("Failed to find route {} {}", r.dst, r.gw.map(|g| format!("via {g}")).unwrap_or_default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::{CniError, Command};

    fn prev() -> CniResult {
        let itf = |name: &str, sandbox: Option<&str>| Interface {
            name: name.into(),
            mac: Some("02:00:00:00:00:01".into()),
            sandbox: sandbox.map(String::from),
            ..Default::default()
        };
        CniResult {
            interfaces: vec![itf("cni0", None), itf("eth0", None), itf("eth0", Some("/run/netns/a"))],
            ..Default::default()
        }
    }

    fn ctx(netns: &str) -> Ctx {
        Ctx { ifname: "eth0".into(), netns: Some(netns.into()), ..Ctx::new(Command::Check) }
    }

    #[test]
    fn prevresult_entries_are_found_like_the_reference() {
        let p = prev();
        assert_eq!(veth_iface(&ctx("/run/netns/a"), &p).unwrap(), 2);
        assert_eq!(
            veth_iface(&ctx("/run/netns/b"), &p).unwrap_err().to_string(),
            "Sandbox in prevResult /run/netns/a doesn't match configured netns: /run/netns/b"
        );
        assert_eq!(prev_iface(&ctx("/run/netns/a"), &p).unwrap().0, 2);
        assert_eq!(
            prev_iface(&ctx("/run/netns/b"), &p).unwrap_err().to_string(),
            "Sandbox in prevResult  doesn't match configured netns: /run/netns/b"
        );
        let e = CniError::from_anyhow(&require_prev(&ctx("/x")).unwrap_err());
        assert_eq!((e.code, e.msg.as_str()), (999, "Required prevResult missing"));
    }

    #[test]
    fn link_kind_and_mac() {
        let p = prev();
        let mut l = Link {
            name: "eth0".into(),
            kind: Some("veth".into()),
            mac: Some([2, 0, 0, 0, 0, 1]),
            ..Default::default()
        };
        link_kind(&l, "eth0", "veth").unwrap();
        assert_eq!(
            link_kind(&l, "eth0", "macvlan").unwrap_err().to_string(),
            "Error: Container interface eth0 not of type macvlan"
        );
        link_mac(&l, &p.interfaces[2]).unwrap();
        l.mac = Some([2, 0, 0, 0, 0, 2]);
        assert_eq!(
            link_mac(&l, &p.interfaces[2]).unwrap_err().to_string(),
            "Interface eth0 Mac 02:00:00:00:00:01 doesn't match container Mac: 02:00:00:00:00:02"
        );
        assert_eq!(
            link_mac_of(&l, &p.interfaces[2], "ptp: ").unwrap_err().to_string(),
            "ptp: Interface eth0 Mac 02:00:00:00:00:01 doesn't match container Mac: 02:00:00:00:00:02"
        );
    }
}
