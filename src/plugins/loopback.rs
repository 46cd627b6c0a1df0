//! loopback: set `lo` up inside the container (checklist §2.8). CNI_IFNAME is ignored.

use super::steps::{self, NsOrGone};
use crate::cni::plugin::{Doc, Kind, Plugin, Version};
use crate::cni::result::{Interface, IpConfig};
use crate::cni::{CniResult, Ctx};
use crate::netlink::socket::Netlink;
use anyhow::{bail, Context, Result};

pub const APPLET: Plugin = Plugin {
    name: "loopback",
    about: "set up the loopback interface of the container",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: None,
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Interface,
    summary: "Sets the container's `lo` up (DEL sets it down). CNI_IFNAME is ignored. The result is \
              the prevResult when there is one, else `lo` with its loopback addresses.",
    section: "",
    keys: &[],
    notes: &["ADD fails when `lo` carries a non-loopback address."],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "lo",
  "type": "loopback"
}"#,
    config: None,
};

fn add(ctx: &Ctx) -> Result<CniResult> {
    // passed on unchanged; one that does not parse fails ADD before `lo` is touched, as the
    // reference's parseNetConf runs before it enters the namespace
    let prev = ctx.read_prev_result()?;
    let ns = steps::ns::open(ctx)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let lo = nl.link_by_name("lo")?.context("failed to find lo")?;
    let was_up = lo.is_up();
    nl.link_set_up(lo.index, true).context("failed to set lo up")?;
    tracing::debug!("lo is up");
    let addrs = nl.addrs(Some(lo.index), None)?;
    // IPv4 first, then IPv6, and the address quoted without its prefix: the reference's text
    let mut v4_first =
        addrs.iter().filter(|a| a.addr.addr().is_ipv4()).chain(addrs.iter().filter(|a| a.addr.addr().is_ipv6()));
    if let Some(a) = v4_first.find(|a| !a.addr.addr().is_loopback()) {
        bail!("loopback interface found with non-loopback address \"{}\"", a.addr.addr());
    }
    if let Some(prev) = prev {
        return Ok(prev.clone());
    }
    let mut result = CniResult {
        interfaces: vec![Interface {
            name: "lo".into(),
            mac: Some("00:00:00:00:00:00".into()),
            sandbox: ctx.netns.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    for v4 in [true, false] {
        if let Some(a) = addrs.iter().find(|a| a.addr.addr().is_ipv4() == v4) {
            result.ips.push(IpConfig { address: a.addr, gateway: None, interface: Some(0) });
        }
    }
    // `lo` without addresses has no 0.1.0/0.2.0 result (code 7): fail here, putting `lo` back
    // as it was, rather than leave it to the protocol layer's rollback (DEL sets `lo` down even
    // when it was up before this ADD)
    if let Err(e) = result.to_json(&ctx.version) {
        if !was_up {
            nl.link_set_up(lo.index, false).context("failed to set lo down")?;
        }
        return Err(e.into());
    }
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    let NsOrGone::Ns(ns) = steps::ns::open_for_del(ctx)? else {
        return Ok(());
    };
    let mut nl = Netlink::in_netns(&ns)?;
    if let Some(lo) = nl.link_by_name("lo")? {
        nl.link_set_up(lo.index, false).context("failed to set lo down")?;
    }
    Ok(())
}

fn check(ctx: &Ctx) -> Result<()> {
    let ns = steps::ns::open(ctx)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let lo = nl.link_by_name("lo")?.context("failed to find lo")?;
    if !lo.is_up() {
        bail!("loopback interface is down");
    }
    Ok(())
}
