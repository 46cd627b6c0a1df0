//! ptp: a veth pair with the container routed through a /32 (/128) host route (checklist §2.3).

use super::common::{self, Undo};
use crate::cni::delegate;
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::result::Interface;
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall;
use crate::netlink::route::RouteSpec;
use crate::netlink::socket::{is_exists, is_not_found, Netlink};
use anyhow::{Context, Result};
use serde::Deserialize;

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
    mtu: u32,
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
    let ns = common::open_container_ns(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // 1. addresses first (they become interface 1 below, with the veth pair)
    let mut result = common::ipam_add_for_iface0(ctx, &mut undo)?;
    for ip in &result.ips {
        if ip.gateway.is_none() {
            return Err(CniError::config(format!("ptp needs a gateway for {} from IPAM", ip.address)).into());
        }
    }
    common::enable_forwarding(&result)?;
    tracing::debug!(ips = ?result.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(), "IPAM allocated");

    // 2. the veth pair
    let host_veth = common::add_veth_pair(ctx, &mut host, &mut cont, &ns, &mut undo, conf.mtu, None)?;
    let host_name = host_veth.name.clone();
    host.link_set_up(host_veth.index, true).with_context(|| format!("failed to set {host_name:?} up"))?;
    let cont_link = cont.link_by_name(&ctx.ifname)?.with_context(|| format!("failed to lookup {:?}", ctx.ifname))?;
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

    // 3. container side: addresses, then replace the connected route by gw/32 + subnet via gw
    common::configure_iface(&ns, &mut cont, &ctx.ifname, 1, &result)?;
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let subnet = ip.address.trunc();
        let fam = Some(crate::netlink::addr::Family::of(&gw));
        let connected = RouteSpec {
            dst: Some(subnet),
            family: fam,
            oif: Some(cont_link.index),
            scope: Some(255),
            ..Default::default()
        };
        if let Err(e) = cont.route_del(&connected) {
            if !is_not_found(&e) {
                return Err(e.context(format!("failed to delete route {subnet}")));
            }
        }
        let to_gw = RouteSpec {
            dst: Some(common::host_route_to(gw)),
            family: fam,
            oif: Some(cont_link.index),
            scope: Some(253),
            src: Some(ip.address.addr()),
            ..Default::default()
        };
        cont.route_add(&to_gw).with_context(|| format!("failed to add route to gateway {gw}"))?;
        let via_gw = RouteSpec {
            dst: Some(subnet),
            family: fam,
            oif: Some(cont_link.index),
            gw: Some(gw),
            src: Some(ip.address.addr()),
            scope: Some(0),
            ..Default::default()
        };
        cont.route_add(&via_gw).with_context(|| format!("failed to add route {subnet} via {gw}"))?;
    }
    tracing::debug!(ifname = %ctx.ifname, "container addresses and routes configured");

    // 4. host side: the gateway address on the veth and a host route to the container
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let gw_host = common::host_route_to(gw);
        if let Err(e) = host.addr_add(host_veth.index, gw_host) {
            if !is_exists(&e) {
                return Err(e.context(format!("failed to add {gw_host} to {host_name:?}")));
            }
        }
        let to_cont = RouteSpec {
            dst: Some(common::host_route_to(ip.address.addr())),
            family: Some(crate::netlink::addr::Family::of(&gw)),
            oif: Some(host_veth.index),
            scope: Some(254),
            ..Default::default()
        };
        if let Err(e) = host.route_add(&to_cont) {
            if !is_exists(&e) {
                return Err(e.context(format!("failed to add host route to {}", ip.address.addr())));
            }
        }
    }
    tracing::debug!(host_veth = %host_name, "host gateway addresses and routes configured");
    if conf.ip_masq {
        common::setup_ipmasq(ctx, conf.ip_masq_backend.as_deref(), &result, &mut undo)?;
    }
    if let Some(dns) = common::conf_dns(ctx) {
        result.dns = dns;
    }
    undo.commit();
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf: Conf = ctx.plugin_conf()?;
    common::ipam_del_if_set(ctx)?;
    let addrs = common::del_container_link(ctx)?;
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
    let conf: Conf = ctx.plugin_conf()?;
    let mut errors = common::GcErrors::default();
    common::gc_ipam(ctx, &mut errors);
    if conf.ip_masq {
        if let Some(valid) = common::valid_attachments(ctx)? {
            common::gc_ipmasq(ctx, &valid, &mut errors);
        }
    }
    errors.finish()
}

fn check(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    delegate::ipam_check(ctx)?;
    let prev = common::require_prev(ctx)?;
    let ns = common::open_container_ns(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let (idx, _) = common::check_container_veth(ctx, &mut cont, prev)?;
    common::check_expected_ips(&mut cont, &ctx.ifname, idx, prev)?;
    common::check_expected_routes(&mut cont, prev)?;
    Ok(())
}

fn status(ctx: &Ctx) -> Result<()> {
    delegate::ipam_status(ctx).map(|_| ())
}
