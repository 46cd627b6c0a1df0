//! vlan: an 802.1Q sub-interface of a host (or container) interface, moved into the container
//! (checklist §2.6).

use super::common::{self, Undo};
use crate::applets::Applet;
use crate::cni::{delegate, CniError, CniResult, Ctx};
use crate::netlink::{LinkKind, LinkSpec, Netlink};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const APPLET: Applet = Applet {
    name: "vlan",
    about: "802.1Q VLAN sub-interface of a host interface, moved into the container",
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
    master: Option<String>,
    #[serde(rename = "vlanid")]
    vlan_id: i64,
    mtu: i64,
    #[serde(rename = "linkincontainer")]
    link_in_container: bool,
}

/// Parse and validate what needs no kernel: master given, VLAN id 0-4094, MTU not negative.
fn load(ctx: &Ctx) -> Result<(Conf, String, u16)> {
    let conf: Conf = ctx.plugin_conf()?;
    let Some(master) = conf.master.clone().filter(|m| !m.is_empty()) else {
        return Err(CniError::config(
            "\"master\" field is required. It specifies the host interface name to create the VLAN for",
        )
        .into());
    };
    let Some(id) = u16::try_from(conf.vlan_id).ok().filter(|&v| v <= 4094) else {
        return Err(CniError::config(format!(
            "invalid VLAN ID {} (must be between 0 and 4094 inclusive)",
            conf.vlan_id
        ))
        .into());
    };
    common::check_mtu_not_negative(conf.mtu)?;
    Ok((conf, master, id))
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let (conf, master, id) = load(ctx)?;
    if ctx.ipam_type().is_none() {
        return Err(CniError::config("vlan requires an IPAM configuration (ipam.type)").into());
    }
    let ns = common::open_container_ns(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    let master = {
        let nl = if conf.link_in_container { &mut cont } else { &mut host };
        common::resolve_master(nl, Some(&master))?
    };
    let mtu = common::mtu_within_master(conf.mtu, &master)?;
    let template = LinkSpec {
        parent: Some(master.index),
        mtu: (mtu > 0).then_some(mtu),
        txqlen: Some(0), // as the reference (see macvlan)
        ..LinkSpec::new("", LinkKind::Vlan { id })
    };
    let link = common::create_renamed(&mut host, &mut cont, &ns, &ctx.ifname, conf.link_in_container, &template)
        .context("failed to create vlan")?;
    common::undo_delete_link(&mut undo, ns.path(), &ctx.ifname);

    let mut result = common::ipam_add_for_iface0(ctx, &mut undo).context("failed to execute IPAM delegate")?;
    result.interfaces = vec![common::container_iface(ctx, &link)];
    common::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
    result.dns = common::conf_dns(ctx).unwrap_or_default();
    undo.commit();
    Ok(result)
}

/// DEL needs neither the master nor a valid VLAN id (the reference fails DEL when the master
/// is gone; we do not).
fn del(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    common::del_ipam_and_link(ctx)
}

fn check(ctx: &Ctx) -> Result<()> {
    let (conf, master, id) = load(ctx)?;
    let ns = common::open_container_ns(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    delegate::ipam_check(ctx)?;
    let Some(prev) = ctx.prev_result.as_ref() else {
        return Err(CniError::config("vlan: Required prevResult missing").into());
    };
    let (idx, want) = common::check_prev_iface(ctx, prev)?;
    common::check_master(&mut cont, conf.link_in_container, Some(&master))?;
    let Some(d) = common::container_link_details(&mut cont, &ctx.ifname)? else {
        bail!("vlan: Container Interface name in prevResult: {} not found", ctx.ifname)
    };
    common::check_link_kind(&d.link, &ctx.ifname, "vlan")?;
    common::check_link_mac(&d.link, want)?;
    if d.vlan_id != Some(id) {
        bail!("Error: container link {} has VLAN id {:?}, configured {id}", ctx.ifname, d.vlan_id);
    }
    if conf.mtu != 0 && i64::from(d.link.mtu) != conf.mtu {
        bail!("Error: configured MTU of {} is {}, current value is {}", ctx.ifname, conf.mtu, d.link.mtu);
    }
    common::check_addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: the VLAN link dies with its netns, so only IPAM holds state: GC is passed on to it.
fn gc(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    common::ipam_gc_if_set(ctx)
}

/// STATUS goes to IPAM unconditionally, as the reference does.
fn status(ctx: &Ctx) -> Result<()> {
    delegate::ipam_status(ctx)
}
