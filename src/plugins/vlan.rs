//! vlan: an 802.1Q sub-interface of a host (or container) interface, moved into the container
//! (checklist §2.6).

use super::steps::{self, Undo};
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::{delegate, CniError, CniResult, Ctx};
use crate::netlink::{LinkKind, LinkSpec, Netlink};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const APPLET: Plugin = Plugin {
    name: "vlan",
    about: "802.1Q VLAN sub-interface of a host interface, moved into the container",
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
    summary: "An 802.1Q VLAN interface on a master interface.",
    section: "",
    keys: &[
        k("master", "string", "", "required: parent interface"),
        k("vlanId", "int 0-4094", "0", "VLAN id (without it the VLAN has id 0, as with the reference)"),
        k("mtu", "int", "0 (kernel)", "MTU, at most the master's"),
        k("linkInContainer", "bool", "false", "the master lives in the container's netns"),
        k("ipam", "object", "", "required"),
        DNS_KEY,
    ],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "vlan100",
  "type": "vlan",
  "master": "eth0",
  "vlanId": 100,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.100.0.0/24"}]]}
}"#,
    config: Some(config_fields::<Conf>),
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

/// Parse and validate what needs no kernel: master given, VLAN id 0-4094 (the MTU is checked
/// against the master's on ADD, as the reference checks it with the master looked up).
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
            // sic: the reference's words, though it refuses 4095 too
            "invalid VLAN ID {} (must be between 0 and 4095 inclusive)",
            conf.vlan_id
        ))
        .into());
    };
    Ok((conf, master, id))
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let (conf, master, id) = load(ctx)?;
    if ctx.ipam_type().is_none() {
        return Err(CniError::config("vlan requires an IPAM configuration (ipam.type)").into());
    }
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    let master = {
        let nl = if conf.link_in_container { &mut cont } else { &mut host };
        steps::link::lookup_master(nl, Some(&master))?
    };
    let mtu = steps::link::mtu_within_master(conf.mtu, &master)?;
    let template = LinkSpec {
        parent: Some(master.index),
        mtu: (mtu > 0).then_some(mtu),
        ..LinkSpec::new("", LinkKind::Vlan { id })
    };
    let link = steps::link::create_renamed(&mut host, &mut cont, &ns, &ctx.ifname, conf.link_in_container, &template)?;
    steps::link::undo_delete(&mut undo, ns.path(), &ctx.ifname);

    let mut result = steps::ipam::add(ctx, &mut undo).context("failed to execute IPAM delegate")?;
    result.interfaces = vec![steps::link::container_iface(ctx, &link)];
    steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
    result.dns = steps::ipam::conf_dns(ctx).unwrap_or_default();
    undo.commit();
    Ok(result)
}

/// DEL needs neither the master nor a valid VLAN id (the reference fails DEL when the master
/// is gone; we do not).
fn del(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::del_if_set(ctx)?;
    steps::link::delete(ctx)?;
    Ok(())
}

fn check(ctx: &Ctx) -> Result<()> {
    let (conf, master, id) = load(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    delegate::ipam_check(ctx)?;
    let prev = steps::check::require_prev_of(ctx, "vlan: ")?;
    let (idx, want) = steps::check::prev_iface(ctx, prev)?;
    steps::check::master(&mut cont, conf.link_in_container, Some(&master))?;
    let Some(d) = steps::check::link_details(&mut cont, &ctx.ifname)? else {
        bail!("vlan: Container Interface name in prevResult: {} not found", ctx.ifname)
    };
    steps::check::link_kind(&d.link, &ctx.ifname, "vlan")?;
    steps::check::link_mac_of(&d.link, want, "vlan: ")?;
    // the reference's words, sic ("promisc" for the VLAN id, "Tuning" in a vlan plugin)
    if d.vlan_id != Some(id) {
        let have = d.vlan_id.unwrap_or_default();
        bail!("Error: Tuning link {} configured promisc is {id}, current value is {have}", ctx.ifname);
    }
    if conf.mtu != 0 && i64::from(d.link.mtu) != conf.mtu {
        bail!("Error: Tuning configured MTU of {} is {}, current value is {}", ctx.ifname, conf.mtu, d.link.mtu);
    }
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: the VLAN link dies with its netns, so only IPAM holds state: GC is passed on to it.
fn gc(ctx: &Ctx) -> Result<()> {
    // GC uses no key of the plugin's own: one that does not decode stops nothing
    steps::ipam::gc_if_set(ctx)
}

/// STATUS goes to IPAM unconditionally, as the reference does.
fn status(ctx: &Ctx) -> Result<()> {
    // the reference decodes its whole config first: a key of the wrong type fails STATUS
    let _conf: Conf = ctx.plugin_conf()?;
    delegate::ipam_status(ctx)
}
