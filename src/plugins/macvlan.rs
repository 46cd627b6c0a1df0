//! macvlan: a macvlan of a host (or container) interface, moved into the container (checklist §2.4).

use super::steps::{self, Undo};
use crate::cni::plugin::{arg, cap, config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::{Link, LinkKind, LinkSpec, MacvlanMode, Netlink};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const APPLET: Plugin = Plugin {
    name: "macvlan",
    about: "macvlan sub-interface of a host interface, moved into the container",
    min_version: Version::new(0, 1, 0),
    cni_args: Some(&["MAC"]),
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
    summary: "A macvlan interface on a host interface (the master), with its own MAC address.",
    section: "",
    keys: &[
        k("master", "string", "the default-route interface", "parent interface"),
        k("mode", "string", "\"bridge\"", "bridge, private, vepa or passthru"),
        k("mtu", "int", "0 (kernel)", "MTU, at most the master's"),
        k("mac", "string", "random", "MAC address of the interface"),
        k("linkInContainer", "bool", "false", "the master lives in the container's netns"),
        k("bcqueuelen", "int", "0 (kernel)", "broadcast queue length"),
        k("ipam", "object", "", "optional; without it the interface is only created and set up"),
        DNS_KEY,
        cap("mac", "string", "MAC address (wins over CNI_ARGS and the config)"),
        arg("MAC", "string", "MAC address (wins over the config)"),
    ],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "macvlan",
  "master": "eth0",
  "mode": "bridge",
  "ipam": {"type": "dhcp"}
}"#,
    config: Some(config_fields::<Conf>),
};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    master: Option<String>,
    mode: Option<String>,
    mtu: i64,
    mac: Option<String>,
    #[serde(rename = "linkincontainer")]
    link_in_container: bool,
    #[serde(rename = "bcqueuelen")]
    bc_queue_len: Option<i64>,
}

/// The configured mode ("" and absent mean bridge).
fn mode_of(s: Option<&str>) -> Result<MacvlanMode> {
    match s.unwrap_or("") {
        "" | "bridge" => Ok(MacvlanMode::Bridge),
        m @ ("private" | "vepa" | "passthru") => MacvlanMode::from_name(m).context("macvlan mode"),
        m => Err(CniError::config(format!("unknown macvlan mode: {m:?}")).into()),
    }
}

fn mode_name(m: u32) -> &'static str {
    match MacvlanMode::from_u32(m) {
        Some(MacvlanMode::Bridge) => "bridge",
        Some(MacvlanMode::Private) => "private",
        Some(MacvlanMode::Vepa) => "vepa",
        Some(MacvlanMode::Passthru) => "passthru",
        Some(MacvlanMode::Source) => "source",
        None => "unknown",
    }
}

struct Loaded {
    conf: Conf,
    mode: MacvlanMode,
    mac: Option<[u8; 6]>,
}

/// Validate the config beyond the master and MTU (which [`master_and_mtu`] checks first, as the
/// reference's loadConf does); the MAC comes from runtimeConfig > CNI_ARGS MAC > `mac`.
fn load(ctx: &Ctx, conf: Conf) -> Result<Loaded> {
    let mode = mode_of(conf.mode.as_deref())?;
    if conf.bc_queue_len.is_some_and(|q| !(0..=i64::from(u32::MAX)).contains(&q)) {
        return Err(CniError::config("invalid bcqueuelen: must be between 0 and 4294967295").into());
    }
    let mac = steps::link::configured_mac(ctx, conf.mac.as_deref())?;
    Ok(Loaded { conf, mode, mac })
}

/// The lower device (the default-route interface when `master` is empty) and the MTU bound it
/// sets: checked before the rest of the config, as v1.9.1's loadConf does (a missing master is
/// `Link not found` whatever else is wrong).
fn master_and_mtu(conf: &Conf, host: &mut Netlink, cont: &mut Netlink) -> Result<(Link, u32)> {
    let nl = if conf.link_in_container { cont } else { host };
    let master = steps::link::lookup_master(nl, conf.master.as_deref())?;
    let mtu = steps::link::mtu_within_master(conf.mtu, &master)?;
    Ok((master, mtu))
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf: Conf = ctx.plugin_conf()?;
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // 1. the lower device and its MTU bound, then the rest of the config
    let (master, mtu) = master_and_mtu(&conf, &mut host, &mut cont)?;
    let Loaded { conf, mode, mac } = load(ctx, conf)?;

    // 2. the macvlan, created under a temporary name in the container and renamed there
    let bcqueuelen = conf.bc_queue_len.filter(|&q| q > 0).and_then(|q| u32::try_from(q).ok());
    let template = LinkSpec {
        parent: Some(master.index),
        mtu: (mtu > 0).then_some(mtu),
        mac,
        // no txqueuelen: the kernel's default (1000), as v1.9.1's NewLinkAttrs leaves it (the
        // Debian 1.1.1 reference sent 0 from a LinkAttrs literal); ipvlan, vlan, dummy alike
        ..LinkSpec::new("", LinkKind::Macvlan { mode, bcqueuelen })
    };
    let link = steps::link::create_renamed(&mut host, &mut cont, &ns, &ctx.ifname, conf.link_in_container, &template)?;
    steps::link::undo_delete(&mut undo, ns.path(), &ctx.ifname);
    let mut result = CniResult { interfaces: vec![steps::link::container_iface(ctx, &link)], ..Default::default() };

    // 3. L3 from IPAM, or just up for an L2-only interface
    if ctx.ipam_type().is_some() {
        let ipam = steps::ipam::add(ctx, &mut undo)?;
        (result.ips, result.routes) = (ipam.ips, ipam.routes);
        steps::link::set_notify(&ns, &mut cont, &link, true);
        steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
    } else {
        cont.link_set_up(link.index, true).with_context(|| format!("failed to set {:?} UP", ctx.ifname))?;
    }
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
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    // the master is looked up with the config, as the reference's loadConf does
    master_and_mtu(&conf, &mut Netlink::new()?, &mut cont)?;
    let Loaded { mode, .. } = load(ctx, conf)?;
    steps::ipam::check_if_set(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    let (idx, want) = steps::check::prev_iface(ctx, prev)?;
    let Some(d) = steps::check::link_details(&mut cont, &ctx.ifname)? else {
        bail!("Container Interface name in prevResult: {} not found", ctx.ifname)
    };
    steps::check::link_kind(&d.link, &ctx.ifname, "macvlan")?;
    let have = d.macvlan_mode.unwrap_or(0);
    if have != mode as u32 {
        bail!("Container macvlan mode {} does not match expected value: {}", mode_name(have), mode_name(mode as u32));
    }
    steps::check::link_mac(&d.link, want)?;
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: the macvlan dies with its netns, so only IPAM holds state: GC is passed on to it.
fn gc(ctx: &Ctx) -> Result<()> {
    // GC uses no key of the plugin's own: one that does not decode stops nothing
    steps::ipam::gc_if_set(ctx)
}

fn status(ctx: &Ctx) -> Result<()> {
    // the reference decodes its whole config first: a key of the wrong type fails STATUS
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::status_if_set(ctx)
}
