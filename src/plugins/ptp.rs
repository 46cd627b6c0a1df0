//! ptp: a veth pair with the container routed through a /32 (/128) host route (checklist §2.3).

use super::steps::{self, veth::Pair, Undo};
use crate::cni::delegate;
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::result::{Interface, IpConfig};
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall;
use crate::netlink::addr::Family;
use crate::netlink::route::{RouteSpec, Scope};
use crate::netlink::socket::{is_exists, is_not_found, Netlink};
use crate::netlink::Link;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::IpAddr;

pub const APPLET: Plugin = Plugin {
    name: "ptp",
    about: "point-to-point veth pair routed through the host (no bridge)",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Interface,
    summary: "A veth pair without a bridge: the container reaches everything through a /32 (/128) \
              route to the host end, which carries the IPAM gateway address.",
    section: "",
    keys: &[
        k("ipMasq", "bool", "false", "masquerade traffic from the container leaving its subnet"),
        k("ipMasqBackend", "\"nftables\" or \"iptables\"", "auto", "firewall backend for ipMasq"),
        k("mtu", "int", "kernel default", "MTU of both veth ends"),
        k("ipam", "object", "", "required; every address needs a gateway"),
        DNS_KEY,
    ],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "p2p",
  "type": "ptp",
  "ipam": {
    "type": "host-local",
    "ranges": [[{"subnet": "10.1.1.0/24"}]],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}"#,
    config: Some(config_fields::<Conf>),
};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    #[serde(rename = "ipmasq")]
    ip_masq: bool,
    #[serde(rename = "ipmasqbackend")]
    ip_masq_backend: Option<String>,
    /// a Go int in the reference: 0 or less is the kernel's default
    mtu: i64,
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let c: Conf = ctx.plugin_conf()?;
    if ctx.ipam_type().is_none() {
        return Err(CniError::config("ptp requires an IPAM configuration (ipam.type)").into());
    }
    Ok(c)
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // 1. addresses first (they become interface 1 below, with the veth pair)
    let mut result = steps::ipam::add(ctx, &mut undo)?;
    for ip in &result.ips {
        if ip.gateway.is_none() {
            return Err(CniError::config(format!("ptp needs a gateway for {} from IPAM", ip.address)).into());
        }
    }
    steps::veth::enable_forwarding(&mut host, &result)?;
    tracing::debug!(ips = ?result.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(), "IPAM allocated");

    // 2. the veth pair
    let pair = Pair { mtu: steps::veth::mtu_key(conf.mtu)?, ..Pair::default() };
    let steps::veth::Ends { host: host_veth, cont: cont_link } =
        steps::veth::add_pair(ctx, &mut host, &mut cont, &ns, &mut undo, pair)?;
    host.link_set_up(host_veth.index, true).with_context(|| format!("failed to set {:?} up", host_veth.name))?;
    result.interfaces = vec![
        Interface { name: host_veth.name.clone(), mac: host_veth.mac_string(), ..Default::default() },
        Interface {
            name: ctx.ifname.clone(),
            mac: cont_link.mac_string(),
            sandbox: ctx.netns.clone(),
            ..Default::default()
        },
    ];
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }

    // 3. container side: addresses, then the connected route replaced by gw/32 + subnet via gw
    steps::ipam::configure_link(&ns, &mut cont, &cont_link, 1, &result)?;
    route_container_via_gateways(&mut cont, cont_link.index, &result)?;
    tracing::debug!(ifname = %ctx.ifname, "container addresses and routes configured");

    // 4. host side: the gateway address on the veth and a host route to the container
    route_host_to_container(&mut host, &host_veth, &result)?;
    tracing::debug!(host_veth = %host_veth.name, "host gateway addresses and routes configured");
    if conf.ip_masq {
        steps::ipmasq::setup(ctx, conf.ip_masq_backend.as_deref(), &result, &mut undo)?;
    }
    if let Some(dns) = steps::ipam::conf_dns(ctx) {
        result.dns = dns;
    }
    undo.commit();
    Ok(result)
}

/// The container's routes for one address (pure): the connected route to delete, a link route
/// to the gateway, and the subnet via the gateway (both with the address as source).
fn container_routes(ip: &IpConfig, gw: IpAddr, oif: u32) -> [RouteSpec; 3] {
    let subnet = ip.address.trunc();
    let family = Some(Family::of(&gw));
    let src = Some(ip.address.addr());
    [
        RouteSpec { dst: Some(subnet), family, oif: Some(oif), scope: Some(Scope::NOWHERE), ..Default::default() },
        RouteSpec {
            dst: Some(steps::veth::host_route(gw)),
            family,
            oif: Some(oif),
            scope: Some(Scope::LINK),
            src,
            ..Default::default()
        },
        RouteSpec {
            dst: Some(subnet),
            family,
            oif: Some(oif),
            gw: Some(gw),
            src,
            scope: Some(Scope::UNIVERSE),
            ..Default::default()
        },
    ]
}

/// Replace each address's connected route by a route to its gateway and the subnet via it.
fn route_container_via_gateways(cont: &mut Netlink, oif: u32, result: &CniResult) -> Result<()> {
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let [connected, to_gw, via_gw] = container_routes(ip, gw, oif);
        if let Err(e) = cont.route_del(&connected) {
            if !is_not_found(&e) {
                return Err(e.context(format!("failed to delete route {}", ip.address.trunc())));
            }
        }
        cont.route_add(&to_gw).with_context(|| format!("failed to add route to gateway {gw}"))?;
        cont.route_add(&via_gw).with_context(|| format!("failed to add route {} via {gw}", ip.address.trunc()))?;
    }
    Ok(())
}

/// Each gateway as a /32 (/128) on the host veth, and a host route to each container address.
fn route_host_to_container(host: &mut Netlink, host_veth: &Link, result: &CniResult) -> Result<()> {
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let gw_host = steps::veth::host_route(gw);
        if let Err(e) = host.addr_add(host_veth.index, gw_host) {
            if !is_exists(&e) {
                return Err(e.context(format!("failed to add {gw_host} to {:?}", host_veth.name)));
            }
        }
        let to_cont = RouteSpec {
            dst: Some(steps::veth::host_route(ip.address.addr())),
            family: Some(Family::of(&gw)),
            oif: Some(host_veth.index),
            scope: Some(Scope::HOST),
            ..Default::default()
        };
        if let Err(e) = host.route_add(&to_cont) {
            if !is_exists(&e) {
                return Err(e.context(format!("failed to add host route to {}", ip.address.addr())));
            }
        }
    }
    Ok(())
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf: Conf = ctx.plugin_conf()?;
    steps::ipam::del_if_set(ctx)?;
    let addrs = steps::link::delete(ctx)?;
    // rules are found by their comments: this also cleans up when the netns is already gone
    if conf.ip_masq {
        firewall::ipmasq::remove(&firewall::ipmasq::MasqSpec {
            network: &ctx.name,
            container_id: &ctx.container_id,
            ifname: &ctx.ifname,
            ips: &addrs,
        })?;
    }
    Ok(())
}

/// GC (the reference has none): IPAM reservations and masquerade rules of attachments not in
/// `cni.dev/valid-attachments`; an absent list removes nothing.
fn gc(ctx: &Ctx) -> Result<()> {
    // as bridge's GC: a plugin key that does not decode stops nothing (ipMasq then counts as on)
    let conf: Option<Conf> = steps::gc::plugin_conf(ctx);
    let mut errors = steps::gc::GcErrors::default();
    let valid = steps::gc::ipam(ctx, &mut errors)?;
    if let (true, Some(valid)) = (conf.as_ref().is_none_or(|c| c.ip_masq), valid) {
        steps::ipmasq::gc(ctx, &valid, &mut errors);
    }
    errors.finish()
}

fn check(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    delegate::ipam_check(ctx)?;
    let prev = steps::check::require_prev_of(ctx, "ptp: ")?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let words = steps::check::VethWords { prefix: "ptp: ", kind: "veth/p2p" };
    let (idx, _) = steps::check::container_veth(ctx, &mut cont, prev, words)?;
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

fn status(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    delegate::ipam_status(ctx).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_routes_go_through_the_gateway() {
        let ip = IpConfig { address: "198.18.3.5/24".parse().unwrap(), gateway: None, interface: Some(1) };
        let [connected, to_gw, via_gw] = container_routes(&ip, "198.18.3.1".parse().unwrap(), 7);
        assert_eq!(
            (connected.dst.unwrap().to_string(), connected.scope, connected.gw),
            ("198.18.3.0/24".into(), Some(255), None)
        );
        assert_eq!((to_gw.dst.unwrap().to_string(), to_gw.scope), ("198.18.3.1/32".into(), Some(253)));
        assert_eq!(to_gw.src, Some("198.18.3.5".parse().unwrap()));
        assert_eq!(
            (via_gw.dst.unwrap().to_string(), via_gw.gw, via_gw.scope),
            ("198.18.3.0/24".into(), Some("198.18.3.1".parse().unwrap()), Some(0))
        );
        assert!([connected, to_gw, via_gw].iter().all(|r| r.oif == Some(7) && r.family == Some(Family::V4)));
        let ip6 = IpConfig { address: "fd00:3::5/64".parse().unwrap(), gateway: None, interface: Some(1) };
        let [_, to_gw6, _] = container_routes(&ip6, "fd00:3::1".parse().unwrap(), 7);
        assert_eq!((to_gw6.dst.unwrap().to_string(), to_gw6.family), ("fd00:3::1/128".into(), Some(Family::V6)));
    }
}
