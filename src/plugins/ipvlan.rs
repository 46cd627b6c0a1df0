//! ipvlan: an ipvlan of a host (or container) interface, moved into the container; in a chain it
//! can take its master and addresses from the previous plugin (checklist §2.5).

use super::steps::{self, Undo};
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::{IpvlanFlag, IpvlanMode, LinkKind, LinkSpec, Netlink};
use anyhow::{bail, Result};
use serde::Deserialize;

pub const APPLET: Plugin = Plugin {
    name: "ipvlan",
    about: "ipvlan sub-interface of a host interface, moved into the container",
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
    summary: "An ipvlan interface sharing the master's MAC address.",
    section: "",
    keys: &[
        k(
            "master",
            "string",
            "the default-route interface",
            "parent interface; when chained, the single interface of the prevResult",
        ),
        k("mode", "string", "\"l2\"", "l2, l3 or l3s"),
        k("mtu", "int", "kernel default", "MTU"),
        k("linkInContainer", "bool", "false", "the master lives in the container's netns"),
        k("ipam", "object", "", "required, unless chained with a prevResult whose addresses are reused"),
        DNS_KEY,
    ],
    notes: &["DEL looks for no master: it releases the IPAM address and deletes CNI_IFNAME in the \
             container also when no master can be found (no `master` and no default route, or a \
             prevResult without a single named interface), where the reference's DEL fails."],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "ipvlan",
  "master": "eth0",
  "mode": "l2",
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.2.0/24"}]]}
}"#,
    config: Some(config_fields::<Conf>),
};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    master: Option<String>,
    mode: Option<String>,
    mtu: i64,
    #[serde(rename = "linkincontainer")]
    link_in_container: bool,
}

fn mode_of(s: Option<&str>) -> Result<IpvlanMode> {
    match s.unwrap_or("") {
        "" => Ok(IpvlanMode::L2),
        m => IpvlanMode::from_name(m).ok_or_else(|| CniError::config(format!("unknown ipvlan mode: {m:?}")).into()),
    }
}

fn mode_name(m: u16) -> &'static str {
    match IpvlanMode::from_u16(m) {
        Some(IpvlanMode::L2) => "l2",
        Some(IpvlanMode::L3) => "l3",
        Some(IpvlanMode::L3s) => "l3s",
        None => "unknown",
    }
}

/// The master: configured, else (in a chain) the previous result's single named interface,
/// else the default-route interface.
fn master_name(ctx: &Ctx, conf: &Conf) -> Result<Option<String>> {
    if let Some(m) = conf.master.as_deref().filter(|m| !m.is_empty()) {
        return Ok(Some(m.to_string()));
    }
    match &ctx.prev_result {
        None => Ok(None),
        Some(prev) => match prev.interfaces.as_slice() {
            [only] if !only.name.is_empty() => Ok(Some(only.name.clone())),
            _ => Err(CniError::config("chained master failure. PrevResult lacks a single named interface").into()),
        },
    }
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf: Conf = ctx.plugin_conf()?;
    // a chained ipvlan takes its master and addresses from prevResult: one that does not parse
    // fails ADD (as the reference's loadConf), it is not taken for an absent one
    ctx.read_prev_result()?;
    // the chained master first, as the reference's loadConf (the mode is read when creating)
    let master = master_name(ctx, &conf)?;
    let mode = mode_of(conf.mode.as_deref())?;
    // addresses come from IPAM, or (chained, without IPAM) from the previous result
    let reuse_prev = ctx.ipam_type().is_none() && ctx.prev_result.as_ref().is_some_and(|p| !p.ips.is_empty());
    if ctx.ipam_type().is_none() && !reuse_prev {
        return Err(CniError::config(
            "ipvlan needs an IPAM configuration (ipam.type), or a previous result with IPs when chained",
        )
        .into());
    }
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    let master = {
        let nl = if conf.link_in_container { &mut cont } else { &mut host };
        steps::link::resolve_master(nl, master.as_deref())?
    };
    let mtu = u32::try_from(conf.mtu.max(0)).unwrap_or(u32::MAX);
    let template = LinkSpec {
        parent: Some(master.index),
        mtu: (mtu > 0).then_some(mtu),
        ..LinkSpec::new("", LinkKind::Ipvlan { mode, flag: IpvlanFlag::Bridge })
    };
    let link = steps::link::create_renamed(&mut host, &mut cont, &ns, &ctx.ifname, conf.link_in_container, &template)?;
    steps::link::undo_delete(&mut undo, ns.path(), &ctx.ifname);

    let mut result = match (&ctx.prev_result, reuse_prev) {
        (Some(prev), true) => {
            let mut r = prev.clone();
            for ip in &mut r.ips {
                ip.interface = Some(0);
            }
            r
        }
        _ => steps::ipam::add(ctx, &mut undo)?,
    };
    result.interfaces = vec![steps::link::container_iface(ctx, &link)];
    steps::link::set_notify(&ns, &mut cont, &link, true);
    steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
    result.dns = steps::ipam::conf_dns(ctx).unwrap_or_default();
    undo.commit();
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::del_if_set(ctx)?;
    steps::link::delete(ctx)?;
    Ok(())
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf: Conf = ctx.plugin_conf()?;
    let mode = mode_of(conf.mode.as_deref())?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    steps::ipam::check_if_set(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    let (idx, want) = steps::check::prev_iface(ctx, prev)?;
    if let Some(m) = conf.master.as_deref().filter(|m| !m.is_empty()) {
        steps::check::master(&mut cont, conf.link_in_container, Some(m))?;
    }
    let Some(d) = steps::check::link_details(&mut cont, &ctx.ifname)? else {
        bail!("Container Interface name in prevResult: {} not found", ctx.ifname)
    };
    steps::check::link_kind(&d.link, &ctx.ifname, "ipvlan")?;
    let have = d.ipvlan_mode.unwrap_or(0);
    if have != mode as u16 {
        bail!("Container IPVlan mode {} does not match expected value: {}", mode_name(have), mode_name(mode as u16));
    }
    steps::check::link_mac(&d.link, want)?;
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: the ipvlan dies with its netns, so only IPAM holds state: GC is passed on to it.
fn gc(ctx: &Ctx) -> Result<()> {
    // GC uses no key of the plugin's own: one that does not decode stops nothing
    steps::ipam::gc_if_set(ctx)
}

fn status(ctx: &Ctx) -> Result<()> {
    // the reference decodes its whole config first: a key of the wrong type fails STATUS
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::status_if_set(ctx)
}
