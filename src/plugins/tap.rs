//! tap: a persistent tap device in the container, created through /dev/net/tun and netlink
//! (never the `ip` binary), optionally owned, multi-queue, and enslaved to a bridge that lives
//! in the container (checklist §2.10).

use super::steps::{self, Undo};
use crate::cni::plugin::{arg, cap, config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::{Link, Netlink};
use crate::sys::netns::NetNs;
use crate::sys::{selinux, tun};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const APPLET: Plugin = Plugin {
    name: "tap",
    about: "persistent tap device in the container",
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
    summary: "A tap device in the container (for VMs in pods), created over netlink and ioctl \
              only (no `ip` binary).",
    section: "",
    keys: &[
        k("mac", "string", "random", "MAC address"),
        k("mtu", "int", "kernel default", "MTU"),
        k("multiQueue", "bool", "false", "multi-queue tap"),
        k("owner", "int (uid)", "", "owner of the tap device"),
        k("group", "int (gid)", "", "group of the tap device"),
        k(
            "selinuxContext",
            "string",
            "",
            "SELinux context for the device (made by a short-lived child process in that context); \
             ignored where SELinux is not enabled",
        ),
        k("bridge", "string", "", "enslave the tap to this existing bridge inside the container"),
        k("ipam", "object", "", "optional"),
        DNS_KEY,
        cap("mac", "string", "MAC address"),
        arg("MAC", "string", "MAC address"),
    ],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "vmnet",
  "type": "tap",
  "multiQueue": true,
  "owner": 107,
  "group": 107,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.4.0/24"}]]}
}"#,
    config: Some(config_fields::<Conf>),
};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    mac: Option<String>,
    mtu: i64,
    #[serde(rename = "multiqueue")]
    multi_queue: bool,
    owner: Option<u32>,
    group: Option<u32>,
    #[serde(rename = "selinuxcontext")]
    selinux_context: Option<String>,
    bridge: Option<String>,
}

fn load(ctx: &Ctx) -> Result<(Conf, Option<[u8; 6]>)> {
    let conf: Conf = ctx.plugin_conf()?;
    if conf.mtu < 0 || conf.mtu > i64::from(u32::MAX) {
        return Err(CniError::config(format!("invalid MTU {}", conf.mtu)).into());
    }
    let mac = steps::link::configured_mac(ctx, conf.mac.as_deref())?;
    Ok((conf, mac))
}

/// Create the tap under `tmp` inside the container (labelled with `selinuxContext` when SELinux
/// is active; without SELinux the key is ignored, where the reference's ADD fails).
fn create_tap(ns: &NetNs, conf: &Conf, tmp: &str) -> Result<()> {
    let label = conf.selinux_context.as_deref().filter(|s| !s.is_empty());
    let label = match label {
        Some(l) if selinux::enabled() => Some(l),
        Some(l) => {
            tracing::debug!("SELinux is not enabled: ignoring selinuxContext {l:?}");
            None
        }
        None => None,
    };
    // like the reference's netlink path, vnet_hdr is set when both owner and group are given
    let spec = tun::TapSpec {
        name: tmp,
        tap: true,
        multi_queue: conf.multi_queue,
        vnet_hdr: conf.owner.is_some() && conf.group.is_some() && label.is_none(),
        owner: conf.owner,
        group: conf.group,
    };
    ns.run(|| {
        // labelled: made by a forked child in that context (the plugin's own never changes)
        let r = match label {
            Some(l) => tun::create_persistent_labelled(&spec, l),
            None => tun::create_persistent(&spec),
        };
        r.map(|_| ()).with_context(|| format!("failed to create tap {tmp:?}"))
    })
}

/// MTU, MAC, final name, bridge, up — on the tap created as `tmp`.
fn finish_tap(cont: &mut Netlink, ifname: &str, tmp: &str, conf: &Conf, mac: Option<[u8; 6]>) -> Result<Link> {
    let link = cont.link_by_name(tmp)?.with_context(|| format!("failed to find tap {tmp:?}"))?;
    if conf.mtu > 0 {
        cont.link_set_mtu(link.index, u32::try_from(conf.mtu).unwrap_or(u32::MAX))?;
    }
    if let Some(m) = mac {
        cont.link_set_mac(link.index, m)?;
    }
    cont.link_set_name(link.index, ifname).with_context(|| format!("failed to rename tap to {ifname:?}"))?;
    if let Some(br_name) = conf.bridge.as_deref().filter(|b| !b.is_empty()) {
        let Some(br) = cont.link_by_name(br_name)? else {
            return Err(CniError::config(format!("failed to find bridge {br_name:?} in the container")).into());
        };
        if br.kind.as_deref() != Some("bridge") {
            return Err(CniError::config(format!("{br_name:?} is not a bridge")).into());
        }
        cont.link_set_master(link.index, Some(br.index))
            .with_context(|| format!("failed to set tap {ifname:?} master to {br_name:?}"))?;
    }
    cont.link_set_up(link.index, true).context("failed to set tap interface up")?;
    cont.link_by_index(link.index)?.with_context(|| format!("failed to refetch tap {ifname:?}"))
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let (conf, mac) = load(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    if cont.link_by_name(&ctx.ifname)?.is_some() {
        bail!("interface {:?} already exists in the container", ctx.ifname);
    }
    let tmp = crate::names::random_veth_name();
    create_tap(&ns, &conf, &tmp)?;
    let link = match finish_tap(&mut cont, &ctx.ifname, &tmp, &conf, mac) {
        Ok(l) => l,
        Err(e) => {
            for name in [tmp.as_str(), ctx.ifname.as_str()] {
                let _ = steps::link::delete_in(&mut cont, name);
            }
            return Err(e);
        }
    };
    steps::link::undo_delete(&mut undo, ns.path(), &ctx.ifname);
    let mut result = CniResult { interfaces: vec![steps::link::container_iface(ctx, &link)], ..Default::default() };

    if ctx.ipam_type().is_some() {
        let ipam = steps::ipam::add(ctx, &mut undo)?;
        (result.ips, result.routes) = (ipam.ips, ipam.routes);
        steps::link::set_notify(&ns, &mut cont, &link, false);
        steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
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
    let _ = load(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    steps::ipam::check_if_set(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    let (idx, _) = steps::check::prev_iface(ctx, prev)?;
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: the tap dies with its netns, so only IPAM holds state: GC is passed on to it.
fn gc(ctx: &Ctx) -> Result<()> {
    // GC uses no key of the plugin's own: one that does not decode stops nothing
    steps::ipam::gc_if_set(ctx)
}

/// STATUS: the config must decode (a mistyped key fails, as the reference's cmdStatus
/// unmarshals its NetConf); then IPAM's STATUS.
fn status(ctx: &Ctx) -> Result<()> {
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::status_if_set(ctx)
}
