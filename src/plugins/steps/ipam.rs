//! IPAM delegation (in-process when CNI_PATH resolves to this binary, exec otherwise) and
//! applying its result inside the container.

use super::undo::Undo;
use crate::cni::result::{go_ipnet_value, go_quote};
use crate::cni::{delegate, CniResult, Ctx};
use crate::netlink::addr::Family;
use crate::netlink::route::RouteSpec;
use crate::netlink::socket::go_context;
use crate::netlink::{Link, Netlink};
use crate::sys::netns::NetNs;
use crate::sys::sysctl;
use anyhow::{Context, Result};
use std::net::IpAddr;

/// ADD step: IPAM ADD with its rollback pushed; it must return addresses, which all get
/// interface 0 (callers with more interfaces renumber them).
pub fn add(ctx: &Ctx, undo: &mut Undo) -> Result<CniResult> {
    let mut r = delegate::ipam_add(ctx)?;
    let ctx2 = ctx.clone();
    undo.push("IPAM allocation", move || delegate::ipam_del(&ctx2));
    if r.ips.is_empty() {
        anyhow::bail!("IPAM plugin returned missing IP config");
    }
    for ip in &mut r.ips {
        ip.interface = Some(0);
    }
    Ok(r)
}

/// IPAM DEL, when the config names an IPAM type.
pub fn del_if_set(ctx: &Ctx) -> Result<()> {
    when_set(ctx, delegate::ipam_del)
}

/// IPAM CHECK, when the config names an IPAM type.
pub fn check_if_set(ctx: &Ctx) -> Result<()> {
    when_set(ctx, delegate::ipam_check)
}

/// STATUS of a plugin whose only dependency is its IPAM: IPAM STATUS when configured.
pub fn status_if_set(ctx: &Ctx) -> Result<()> {
    when_set(ctx, delegate::ipam_status)
}

/// IPAM GC, when the config names an IPAM type (spec 1.1.0: a plugin passes GC on to its
/// delegated IPAM). `cni.dev/valid-attachments` is validated first: a list that does not decode
/// (code 6) or has an entry without its containerID or ifname (code 7) fails the GC before the
/// IPAM plugin, which may not check it (a foreign one, by exec), can release anything by it.
pub fn gc_if_set(ctx: &Ctx) -> Result<()> {
    ctx.valid_attachments()?;
    when_set(ctx, delegate::ipam_gc)
}

/// Run an IPAM verb when the config names an IPAM type; without one there is nothing to do.
fn when_set(ctx: &Ctx, verb: fn(&Ctx) -> Result<()>) -> Result<()> {
    match ctx.ipam_type() {
        Some(_) => verb(ctx),
        None => Ok(()),
    }
}

/// The `dns` key of a plugin config, when it is set as v1.9.1's `dnsConfSet` (bridge, ptp) sees
/// it: a list that is present counts even when empty (Go decodes `[]` as a non-nil slice), so
/// `"nameservers": []` replaces the IPAM's DNS with none; a `null` or absent list does not, nor
/// does an empty `domain`. (macvlan, ipvlan, vlan, tap and host-device take the config's `dns`
/// whatever it holds, as the reference: `unwrap_or_default()`.)
pub fn conf_dns(ctx: &Ctx) -> Option<crate::cni::result::Dns> {
    let d = ctx.get("dns")?;
    let list = |k: &str| d.get(k).and_then(|v| v.as_array());
    let strings = |k: &str| -> Vec<String> {
        list(k).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let domain = d.get("domain").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(String::from);
    let set = domain.is_some() || ["nameservers", "search", "options"].into_iter().any(|k| list(k).is_some());
    set.then(|| crate::cni::result::Dns {
        nameservers: strings("nameservers"),
        domain,
        search: strings("search"),
        options: strings("options"),
    })
}

/// The gateway of an IPAM route, as the reference's ConfigureIface picks it: a route without
/// `gw` goes via its family's first gateway of `ips` (none there: on-link); an explicit
/// unspecified `gw` (`0.0.0.0`, `::`) means on-link, as the dhcp IPAM reports an option-121
/// route whose next hop is 0.0.0.0. The reference hands 0.0.0.0 to the kernel, which takes it
/// as no gateway; `::` it hands over too, which the kernel refuses (`Invalid gateway address`),
/// so for IPv6 ours is on-link where the reference's ADD fails.
pub fn route_gateway(r: &crate::cni::result::Route, v4gw: Option<IpAddr>, v6gw: Option<IpAddr>) -> Option<IpAddr> {
    match r.gw {
        Some(gw) if gw.is_unspecified() => None,
        Some(gw) => Some(gw),
        None if r.dst.addr().is_ipv4() => v4gw,
        None => v6gw,
    }
}

/// Apply an IPAM result to `ifname` inside the container (the reference's ConfigureIface):
/// addresses whose interface index points at `ifname` (`our_index`), link up, optional DAD wait,
/// then every route (appended, so a second nexthop for one destination becomes ECMP).
pub fn configure_iface(ns: &NetNs, nl: &mut Netlink, ifname: &str, our_index: usize, result: &CniResult) -> Result<()> {
    let link = nl.link_by_name(ifname)?.with_context(|| format!("failed to lookup {ifname:?}"))?;
    configure_link(ns, nl, &link, our_index, result)
}

/// [`configure_iface`] for a link already looked up.
pub fn configure_link(ns: &NetNs, nl: &mut Netlink, link: &Link, our_index: usize, result: &CniResult) -> Result<()> {
    let ifname = link.name.as_str();
    let mut v4gw = None;
    let mut v6gw = None;
    let mut v6_prepared = false;
    for ip in &result.ips {
        match ip.interface {
            Some(i) if i == our_index => {}
            Some(i) => {
                let other = result.interfaces.get(i).map(|x| x.name.as_str()).unwrap_or("?");
                if other != ifname {
                    let i = ip.interface_go().unwrap_or_default();
                    anyhow::bail!("failed to add IP addr {} to {ifname:?}: invalid interface index {i}", ip.address);
                }
            }
            None => continue,
        }
        if ip.address.addr().is_ipv6() && !v6_prepared {
            // v1.9.1's ConfigureIface: for `lo` and the interface, read disable_ipv6 (a failed
            // read is logged and passed over: a link whose MTU is below IPv6's minimum has no
            // IPv6 settings) and write 0 unless it is 0; then keep_addr_on_down, whose failure
            // fails the ADD
            ns.run(|| {
                for iface in ["lo", ifname] {
                    let value = match sysctl::get_if("ipv6", iface, "disable_ipv6") {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!("ipam_linux: failed to read sysctl \"net/ipv6/conf/{iface}/disable_ipv6\": {e}");
                            continue;
                        }
                    };
                    if value != "0" {
                        sysctl::set_if("ipv6", iface, "disable_ipv6", "0").map_err(|e| {
                            anyhow::anyhow!(
                                "failed to enable IPv6 for interface {} (net/ipv6/conf/{iface}/disable_ipv6={value}): {e}",
                                go_quote(iface)
                            )
                        })?;
                    }
                }
                sysctl::set_if("ipv6", ifname, "keep_addr_on_down", "1").map_err(|e| {
                    anyhow::anyhow!("failed to enable keep_addr_on_down for interface {}: {e}", go_quote(ifname))
                })
            })?;
            v6_prepared = true;
        }
        nl.addr_add(link.index, ip.address)
            .map_err(|e| go_context(e, &format!("failed to add IP addr {} to {}", ip.address, go_quote(ifname))))?;
        match (ip.address.addr(), ip.gateway) {
            (IpAddr::V4(_), Some(gw)) if v4gw.is_none() => v4gw = Some(gw),
            (IpAddr::V6(_), Some(gw)) if v6gw.is_none() => v6gw = Some(gw),
            _ => {}
        }
    }
    nl.link_set_up(link.index, true).map_err(|e| go_context(e, &format!("failed to set {} UP", go_quote(ifname))))?;
    if v6gw.is_some() {
        // IPv6 DAD: up to 5 s, fail on DADFAILED; at once when the kernel runs no DAD on the link
        // (down, no carrier: see netlink::addr::dad_runs; an ipvlan's UNKNOWN is waited for)
        nl.settle_addrs(link.index, std::time::Duration::from_secs(5))?;
    }
    for r in &result.routes {
        let gw = route_gateway(r, v4gw, v6gw);
        // Go ints in the result: as the reference's netlink library, one that is not positive
        // sets nothing; one past 32 bits has no kernel form
        let positive = |what: &str, v: Option<i64>| -> Result<Option<u32>> {
            match v.filter(|n| *n > 0) {
                None => Ok(None),
                Some(n) => u32::try_from(n).map(Some).map_err(|_| anyhow::anyhow!("route {what} {n} out of range")),
            }
        };
        let gw_text = || gw.map_or_else(|| "<nil>".to_string(), |g| g.to_string());
        let what = || format!("failed to add route '{} via {} dev {ifname}'", go_ipnet_value(&r.dst), gw_text());
        // The reference sends the destination as the result has it: the kernel refuses an IPv4
        // one with host bits set (EINVAL, "Invalid prefix for given prefix length"), which fails
        // its ADD; an IPv6 one the kernel truncates. Our route messages carry the network only,
        // so the IPv4 case is refused here, in the same words.
        if r.dst.addr().is_ipv4() && r.dst != r.dst.trunc() {
            anyhow::bail!("{}: invalid argument", what());
        }
        let spec = RouteSpec {
            dst: Some(r.dst.trunc()),
            family: Some(Family::of(&r.dst.addr())),
            gw,
            oif: Some(link.index),
            scope: r.scope,
            table: r.table,
            metric: positive("priority", r.priority)?,
            mtu: positive("mtu", r.mtu)?,
            advmss: positive("advmss", r.advmss)?,
            ..Default::default()
        };
        nl.route_prepend(&spec).map_err(|e| go_context(e, &what()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::Route;
    use crate::cni::{config, Command};

    /// A route without `gw` goes via its family's gateway; an explicit unspecified one (the dhcp
    /// IPAM's on-link option-121 route, `"gw": "0.0.0.0"` from host-local or static) is on-link,
    /// never via the gateway (which made the kernel refuse a scope-link route: "Nexthop has
    /// invalid gateway").
    #[test]
    fn route_gateway_unspecified_is_on_link() {
        let (g4, g6) = (Some("198.18.0.1".parse().unwrap()), Some("fd00::1".parse().unwrap()));
        let gw = |dst: &str, gw: Option<&str>| {
            route_gateway(&Route::new(dst.parse().unwrap(), gw.map(|g| g.parse().unwrap())), g4, g6)
        };
        assert_eq!(gw("198.18.5.0/24", None), g4);
        assert_eq!(gw("fd00:5::/64", None), g6);
        assert_eq!(gw("198.18.5.0/24", Some("0.0.0.0")), None);
        assert_eq!(gw("fd00:5::/64", Some("::")), None);
        assert_eq!(gw("198.18.5.0/24", Some("198.18.0.254")), "198.18.0.254".parse().ok());
        assert_eq!(route_gateway(&Route::new("198.18.5.0/24".parse().unwrap(), None), None, g6), None);
    }

    #[test]
    fn conf_dns_only_when_something_is_set() {
        let ctx = |conf: &str| Ctx { conf: config::parse_folded(conf.as_bytes()).unwrap(), ..Ctx::new(Command::Add) };
        assert_eq!(conf_dns(&ctx("{}")), None);
        // v1.9.1's dnsConfSet: an empty domain and null lists set nothing; a present list does
        for unset in [r#"{"dns": {}}"#, r#"{"dns": null}"#, r#"{"dns": {"domain": "", "nameservers": null}}"#] {
            assert_eq!(conf_dns(&ctx(unset)), None, "{unset}");
        }
        for empty in [r#"{"dns": {"nameservers": []}}"#, r#"{"dns": {"search": []}}"#, r#"{"dns": {"options": []}}"#] {
            assert_eq!(conf_dns(&ctx(empty)), Some(Default::default()), "{empty}");
        }
        let d = conf_dns(&ctx(r#"{"DNS": {"Nameservers": ["198.18.0.53"], "domain": "x", "search": ["a"]}}"#)).unwrap();
        assert_eq!(
            (d.nameservers, d.domain, d.search),
            (vec!["198.18.0.53".to_string()], Some("x".into()), vec!["a".into()])
        );
    }
}
