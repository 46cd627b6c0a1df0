//! ptp: a veth pair with the container routed through a /32 (/128) host route (checklist §2.3).

use super::steps::{self, veth::Pair, Undo};
use crate::applets::Applet;
use crate::cni::delegate;
use crate::cni::result::Interface;
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall;
use crate::netlink::route::RouteSpec;
use crate::netlink::socket::{is_exists, is_not_found, Netlink};
use anyhow::{Context, Result};
use serde::Deserialize;

pub const APPLET: Applet = Applet {
    name: "ptp",
    about: "point-to-point veth pair routed through the host (no bridge)",
    min_version: "0.1.0",
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
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
    if c.ip_masq {
        return Err(CniError::new(
            crate::cni::code::UNSUPPORTED_FIELD,
            "ipMasq: not supported by this build yet (firewall layer)",
        )
        .into());
    }
    let _ = &c.ip_masq_backend;
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
    steps::veth::enable_forwarding(&result)?;
    tracing::debug!(ips = ?result.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(), "IPAM allocated");

    // 2. the veth pair
    let host_veth =
        steps::veth::add_pair(ctx, &mut host, &mut cont, &ns, &mut undo, Pair { mtu: conf.mtu, ..Pair::default() })?;
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
    steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 1, &result)?;
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
            dst: Some(steps::veth::host_route(gw)),
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
        let gw_host = steps::veth::host_route(gw);
        if let Err(e) = host.addr_add(host_veth.index, gw_host) {
            if !is_exists(&e) {
                return Err(e.context(format!("failed to add {gw_host} to {host_name:?}")));
            }
        }
        let to_cont = RouteSpec {
            dst: Some(steps::veth::host_route(ip.address.addr())),
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
        steps::ipmasq::setup(ctx, conf.ip_masq_backend.as_deref(), &result, &mut undo)?;
    }
    if let Some(dns) = steps::ipam::conf_dns(ctx) {
        result.dns = dns;
    }
    undo.commit();
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf: Conf = ctx.plugin_conf()?;
    steps::ipam::del_if_set(ctx)?;
    let addrs = steps::link::delete(ctx)?;
    // rules are found by their comments: this also cleans up when the netns is already gone
    if conf.ip_masq {
        firewall::teardown_ipmasq(&ctx.name, &ctx.container_id, &ctx.ifname, &addrs)?;
    }
    Ok(())
}

/// GC (the reference has none): IPAM reservations and masquerade rules of attachments not in
/// `cni.dev/valid-attachments`; an absent list removes nothing.
fn gc(ctx: &Ctx) -> Result<()> {
    let conf: Conf = ctx.plugin_conf()?;
    let mut errors = steps::gc::GcErrors::default();
    steps::gc::ipam(ctx, &mut errors);
    if conf.ip_masq {
        if let Some(valid) = ctx.valid_attachments()? {
            steps::ipmasq::gc(ctx, &valid, &mut errors);
        }
    }
    errors.finish()
}

fn check(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    delegate::ipam_check(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let (idx, _) = steps::check::container_veth(ctx, &mut cont, prev)?;
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

fn status(ctx: &Ctx) -> Result<()> {
    delegate::ipam_status(ctx).map(|_| ())
}
