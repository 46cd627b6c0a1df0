//! bandwidth: rate limits on a veth-attached container (checklist §2.16), all over netlink.
//!
//! Rates are bit/s and **bursts are bits** (the reference's units, kept as they are).
//! - ingress (traffic into the container): tbf root qdisc (1:) on the host-side veth;
//! - egress (traffic out of the container): ifb `bwp<12 hex of sha512(network+containerID)>`
//!   in the host netns, an ingress qdisc on the host veth whose match-all u32 filter redirects
//!   (mirred) to the ifb, and a tbf root qdisc on the ifb.
//!
//! The top-level keys win; the `bandwidth` capability is used only when none of them is present.
//! DEL deletes the ifb and, on a host veth that outlives it, the qdiscs this attachment's ADD made
//! (never another's: see `del_veth_qdiscs`). Failures are worded as the reference's
//! (`create qdisc: invalid argument`). CHECK finds the host veth, then
//! compares the tbf parameters. The tbf numbers follow the reference's float arithmetic,
//! wrap-around past 32 bits included ([`crate::netlink::tc::go_f64_to_u32`]).
//! GC deletes ifbs of this network whose attachment is not in `cni.dev/valid-attachments`; to
//! know an ifb's network we label it with an interface alias at ADD (`cni bandwidth net=… id=…`),
//! so ifbs made by the reference (no alias) or by other networks are never touched.

use super::steps::{self, Undo};
use crate::cni::config::fold_key;
use crate::cni::plugin::{cap, config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::result::Interface;
use crate::cni::{CniResult, Ctx};
use crate::names::ifb_name;
use crate::netlink::consts::{TC_H_INGRESS, TC_H_ROOT};
use crate::netlink::kinds::{LinkKind, LinkSpec};
use crate::netlink::link::Link;
use crate::netlink::socket::{go_context, is_not_found, Netlink};
use crate::netlink::tc::{handle, Tbf};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeSet;

pub const APPLET: Plugin = Plugin {
    name: "bandwidth",
    about: "ingress/egress rate limits with tbf on the host veth and an ifb",
    min_version: Version::new(0, 3, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Meta,
    summary: "Rate-limits the container with tbf: ingress on the host veth, egress through an ifb \
              device. Needs a veth-based interface plugin before it.",
    section: "",
    keys: &[
        k("ingressRate", "int (bit/s)", "", "rate into the container; needs ingressBurst"),
        k("ingressBurst", "int (bits)", "", "burst into the container"),
        k("egressRate", "int (bit/s)", "", "rate out of the container; needs egressBurst"),
        k("egressBurst", "int (bits)", "", "burst out of the container"),
        cap("bandwidth", "object", "the same four keys; used only when the config sets none (a null one counts)"),
    ],
    notes: &[
        "DEL deletes the ifb and, when the host veth is still there, the qdiscs ADD put on it: a root tbf with the \
         configured parameters, an ingress qdisc redirecting to the ifb. Other qdiscs (a clsact, another root \
         qdisc) stay.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "limited",
  "plugins": [
    {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.8.0/24"}]]}},
    {"type": "bandwidth", "ingressRate": 10000000, "ingressBurst": 80000000, "egressRate": 10000000, "egressBurst": 80000000}
  ]
}"#,
    config: Some(config_fields::<Bandwidth>),
};

/// tbf queueing latency the reference uses.
pub const LATENCY_MS: f64 = 25.0;
const IFB_PREFIX: &str = "bwp";
const ALIAS_PREFIX: &str = "cni bandwidth ";

/// One bandwidth setting (bit/s and bits).
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(default)]
pub struct Bandwidth {
    #[serde(rename = "ingressrate")]
    pub ingress_rate: u64,
    #[serde(rename = "ingressburst")]
    pub ingress_burst: u64,
    #[serde(rename = "egressrate")]
    pub egress_rate: u64,
    #[serde(rename = "egressburst")]
    pub egress_burst: u64,
}

impl Bandwidth {
    pub fn is_zero(&self) -> bool {
        self.ingress_rate == 0 && self.ingress_burst == 0 && self.egress_rate == 0 && self.egress_burst == 0
    }
    fn ingress(&self) -> bool {
        self.ingress_rate > 0 && self.ingress_burst > 0
    }
    fn egress(&self) -> bool {
        self.egress_rate > 0 && self.egress_burst > 0
    }
}

const KEYS: [&str; 4] = ["ingressrate", "ingressburst", "egressrate", "egressburst"];

/// The reference's `validateRateAndBurst`.
pub fn validate_rate_and_burst(rate: u64, burst: u64) -> Result<()> {
    if burst == 0 && rate != 0 {
        bail!("if rate is set, burst must also be set");
    }
    if rate == 0 && burst != 0 {
        bail!("if burst is set, rate must also be set");
    }
    if burst / 8 >= u64::from(u32::MAX) {
        bail!("burst cannot be more than 4GB");
    }
    Ok(())
}

/// The effective setting: top-level keys if any is present, else runtimeConfig.bandwidth.
/// A key present with `null` counts (Go allocates the embedded entry for any of its keys, null
/// or not): `"ingressRate": null` makes the all-zero top-level entry win over runtimeConfig.
pub fn load(ctx: &Ctx) -> Result<Option<Bandwidth>> {
    let parse = |v: &serde_json::Value| -> Result<Bandwidth> {
        serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("failed to parse network configuration: {e}"))
    };
    let top = KEYS.iter().any(|k| ctx.get(k).is_some()) || {
        let raw = ctx.raw_conf()?;
        raw.as_object().is_some_and(|o| o.keys().any(|k| KEYS.contains(&fold_key(k).as_str())))
    };
    let bw = if top { Some(parse(&ctx.conf)?) } else { ctx.runtime_config("bandwidth").map(parse).transpose()? };
    if let Some(b) = &bw {
        validate_rate_and_burst(b.ingress_rate, b.ingress_burst)?;
        validate_rate_and_burst(b.egress_rate, b.egress_burst)?;
    }
    Ok(bw)
}

fn alias(network: &str, container_id: &str) -> String {
    format!("{ALIAS_PREFIX}net={network} id={container_id}")
}

fn parse_alias(a: &str) -> Option<(&str, &str)> {
    let rest = a.strip_prefix(ALIAS_PREFIX)?;
    let (net, id) = rest.split_once(' ')?;
    Some((net.strip_prefix("net=")?, id.strip_prefix("id=")?))
}

/// The host-side veth: the peer of CNI_IFNAME, which must be listed in prevResult without a sandbox.
fn host_interface(ctx: &Ctx, prev: &CniResult, host: &mut Netlink) -> Result<Link> {
    if prev.interfaces.is_empty() {
        bail!("no interfaces provided");
    }
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    // the reference's wording (ip.GetVethPeerIfindex's error after "has no veth peer")
    let name = &ctx.ifname;
    let peer = match cont.link_by_name(name)? {
        None => Err(format!("could not look up {name:?}: Link not found")),
        Some(l) if l.kind.as_deref() != Some("veth") => Err(format!("interface {name:?} was not a veth interface")),
        Some(l) => l.link.filter(|&i| i > 0).ok_or_else(|| format!("interface {name:?} has no peer index")),
    };
    let peer = peer.map_err(|why| anyhow::anyhow!("container interface {name} has no veth peer: {why}"))?;
    let link = host.link_by_index(peer)?.with_context(|| format!("veth peer with index {peer} is not in host ns"))?;
    let listed = prev.interfaces.iter().any(|i| i.sandbox.as_deref().unwrap_or("").is_empty() && i.name == link.name);
    if !listed {
        bail!("no veth peer of container interface found in host ns");
    }
    Ok(link)
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let bw = load(ctx)?;
    let prev = ctx.prev_result.clone();
    let bw = match bw {
        Some(b) if !b.is_zero() => b,
        // nothing to shape: pass prevResult through untouched (no qdisc, no ifb)
        _ => return prev.ok_or_else(|| anyhow::anyhow!("must be called as chained plugin")),
    };
    let mut result = prev.ok_or_else(|| anyhow::anyhow!("must be called as chained plugin"))?;
    let mut host = Netlink::new()?;
    let veth = host_interface(ctx, &result, &mut host)?;
    let mut undo = Undo::default();

    if bw.ingress() {
        let tbf = Tbf::from_bits(bw.ingress_rate, bw.ingress_burst, LATENCY_MS);
        // the reference's words for each step (its `create qdisc: …`, `adding link: …`)
        host.qdisc_add_tbf(veth.index, handle(1, 0), TC_H_ROOT, &tbf).map_err(|e| go_context(e, "create qdisc"))?;
        let idx = veth.index;
        undo.push("ingress tbf", move || Netlink::new()?.qdisc_del(idx, handle(1, 0), TC_H_ROOT));
    }
    if bw.egress() {
        let name = ifb_name(&ctx.name, &ctx.container_id);
        // txqueuelen 0, as v1.9.1's CreateIfb (a `LinkAttrs{}` literal with TxQLen 0) and 1.1.1 make it
        let spec = LinkSpec { mtu: Some(veth.mtu), txqlen: Some(0), ..LinkSpec::new(&name, LinkKind::Ifb) };
        host.link_add(&spec).map_err(|e| go_context(e, "adding link"))?;
        let ifb = host.link_by_name(&name)?.with_context(|| format!("ifb {name} vanished"))?;
        let idx = ifb.index;
        undo.push("ifb", move || Netlink::new()?.link_del(idx));
        host.link_set_alias(ifb.index, &alias(&ctx.name, &ctx.container_id))?;
        host.link_set_up(ifb.index, true)?;
        result.interfaces.push(Interface { name: name.clone(), mac: ifb.mac_string(), ..Default::default() });

        host.qdisc_add_ingress(veth.index).map_err(|e| go_context(e, "create ingress qdisc"))?;
        let vidx = veth.index;
        undo.push("ingress qdisc", move || Netlink::new()?.qdisc_del(vidx, handle(0xffff, 0), TC_H_INGRESS));
        host.filter_add_redirect(veth.index, handle(0xffff, 0), 1, ifb.index)
            .map_err(|e| go_context(e, "add filter"))?;
        let tbf = Tbf::from_bits(bw.egress_rate, bw.egress_burst, LATENCY_MS);
        host.qdisc_add_tbf(ifb.index, handle(1, 0), TC_H_ROOT, &tbf)
            .map_err(|e| go_context(e, "create ifb qdisc: create qdisc"))?;
    }
    undo.commit();
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    let bw = load(ctx)?;
    let mut host = Netlink::new()?;
    if let (Some(prev), Some(bw)) = (ctx.prev_result.as_ref(), bw.filter(|b| !b.is_zero())) {
        del_veth_qdiscs(ctx, prev, &bw, &mut host)?;
    }
    let name = ifb_name(&ctx.name, &ctx.container_id);
    let Some(ifb) = host.link_by_name(&name)? else {
        return Ok(());
    };
    match host.link_del(ifb.index) {
        Err(e) if !is_not_found(&e) => Err(e.context(format!("failed to delete {name}"))),
        _ => Ok(()),
    }
}

/// The shaping ADD put on the host veth (the root tbf, the ingress qdisc with its redirect),
/// removed when the attachment outlives this DEL, so that no shaping stays in effect and a new
/// ADD finds the veth as it was (the reference leaves them, and its next ADD then fails on the
/// existing qdisc). Only what this attachment's ADD makes goes: the root tbf `1:` with the
/// configured rate, limit and bucket, and an `ingress` qdisc whose u32 filter redirects to this
/// attachment's ifb (to a link that is gone, once the ifb is), or that is empty while that ifb
/// exists (an ADD killed before the filter). A qdisc someone else put there
/// (which made ADD fail: a clsact shares the ingress qdisc's handle, a root qdisc `1:` the tbf's)
/// stays. Nothing to do when the container, its veth or the qdiscs are gone.
fn del_veth_qdiscs(ctx: &Ctx, prev: &CniResult, bw: &Bandwidth, host: &mut Netlink) -> Result<()> {
    let veth = match host_interface(ctx, prev, host) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("no host veth to unshape: {e:#}");
            return Ok(());
        }
    };
    let qdiscs = host.qdiscs(Some(veth.index))?;
    if bw.ingress() {
        let want = Tbf::from_bits(bw.ingress_rate, bw.ingress_burst, LATENCY_MS);
        let ours = qdiscs.iter().any(|q| {
            q.kind == "tbf"
                && (q.handle, q.parent) == (handle(1, 0), TC_H_ROOT)
                && q.tbf.is_some_and(|have| tbf_mismatch(&have, &want).is_none())
        });
        if ours {
            host.qdisc_del_if_present(veth.index, handle(1, 0), TC_H_ROOT)?;
        }
    }
    if bw.egress() && qdiscs.iter().any(|q| q.kind == "ingress" && q.handle == handle(0xffff, 0)) {
        let ifb = host.link_by_name(&ifb_name(&ctx.name, &ctx.container_id))?.map(|l| l.index);
        let filters = host.filters(veth.index, handle(0xffff, 0))?;
        // an ADD killed between the ingress qdisc and its filter leaves the qdisc empty, after
        // its ifb (made first; a failed ADD deletes it again)
        let mut ours = filters.is_empty() && ifb.is_some();
        for f in filters {
            let Some(&target) = f.redirects.first().filter(|_| f.kind == "u32" && f.prio == 1) else { continue };
            ours |= match ifb {
                Some(index) => target == index,
                None => target == 0 || host.link_by_index(target)?.is_none(),
            };
        }
        if ours {
            host.qdisc_del_if_present(veth.index, handle(0xffff, 0), TC_H_INGRESS)?;
        }
    }
    Ok(())
}

/// The first field in which tbf `have` (read back) differs from `want`, with both values; the
/// kernel stores the bucket in ns and hands it back in ticks, so the buffer may be off by one.
fn tbf_mismatch(have: &Tbf, want: &Tbf) -> Option<(&'static str, u64, u64)> {
    if have.rate != want.rate {
        return Some(("Rate", have.rate, want.rate));
    }
    if have.limit != want.limit {
        return Some(("Limit", u64::from(have.limit), u64::from(want.limit)));
    }
    if have.buffer.abs_diff(want.buffer) > 1 {
        return Some(("Buffer", u64::from(have.buffer), u64::from(want.buffer)));
    }
    None
}

fn check_tbf(host: &mut Netlink, link: &Link, rate: u64, burst: u64) -> Result<()> {
    let want = Tbf::from_bits(rate, burst, LATENCY_MS);
    let qdiscs = host.qdiscs(Some(link.index))?;
    let Some(have) = qdiscs.iter().find(|q| q.kind == "tbf").and_then(|q| q.tbf) else {
        bail!("Failed to find qdisc on {}", link.name);
    };
    if let Some((what, have, want)) = tbf_mismatch(&have, &want) {
        bail!("{what} doesn't match on {} ({have} != {want})", link.name);
    }
    Ok(())
}

/// In the reference's order: the config, prevResult, the host veth (so a container interface
/// that is not a veth fails even with no bandwidth configured), then the tbf parameters.
fn check(ctx: &Ctx) -> Result<()> {
    let bw = load(ctx)?;
    let prev = ctx.read_prev_result()?.ok_or_else(|| anyhow::anyhow!("must be called as a chained plugin"))?;
    let mut host = Netlink::new()?;
    let veth = host_interface(ctx, prev, &mut host)?;
    let Some(bw) = bw.filter(|b| !b.is_zero()) else {
        return Ok(());
    };
    if bw.ingress() {
        check_tbf(&mut host, &veth, bw.ingress_rate, bw.ingress_burst)?;
    }
    if bw.egress() {
        let name = ifb_name(&ctx.name, &ctx.container_id);
        let ifb = host.link_by_name(&name)?.with_context(|| format!("get ifb device: {name} not found"))?;
        check_tbf(&mut host, &ifb, bw.egress_rate, bw.egress_burst)?;
        let redirect = host.qdiscs(Some(veth.index))?.iter().any(|q| q.kind == "ingress");
        if !redirect {
            bail!("no ingress qdisc on {} redirecting to {name}", veth.name);
        }
    }
    Ok(())
}

/// GC (the reference has none): ifbs labelled with this network whose attachment is gone.
/// An absent valid-attachments list removes nothing.
fn gc(ctx: &Ctx) -> Result<()> {
    let Some(valid) = ctx.valid_attachments()? else {
        return Ok(());
    };
    let keep: BTreeSet<String> = valid.into_iter().map(|a| a.container_id).collect();
    let mut host = Netlink::new()?;
    let mut errs = Vec::new();
    for l in host.links()? {
        if l.kind.as_deref() != Some("ifb") || !l.name.starts_with(IFB_PREFIX) {
            continue;
        }
        let Some(d) = host.link_details(l.index)? else { continue };
        let Some((net, cid)) = d.alias.as_deref().and_then(parse_alias) else { continue };
        if net != ctx.name || keep.contains(cid) || ifb_name(net, cid) != l.name {
            continue;
        }
        if let Err(e) = host.link_del(l.index) {
            if !is_not_found(&e) {
                errs.push(format!("{}: {e:#}", l.name));
            }
        }
    }
    if !errs.is_empty() {
        bail!("bandwidth GC: {}", errs.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(conf: serde_json::Value) -> Ctx {
        Ctx::test_add(conf)
    }

    #[test]
    fn validation_like_reference() {
        assert_eq!(validate_rate_and_burst(1, 0).unwrap_err().to_string(), "if rate is set, burst must also be set");
        assert_eq!(validate_rate_and_burst(0, 1).unwrap_err().to_string(), "if burst is set, rate must also be set");
        assert_eq!(
            validate_rate_and_burst(1, u64::from(u32::MAX) * 8).unwrap_err().to_string(),
            "burst cannot be more than 4GB"
        );
        assert!(validate_rate_and_burst(1, u64::from(u32::MAX) * 8 - 1).is_ok());
        assert!(validate_rate_and_burst(0, 0).is_ok());
    }

    #[test]
    fn top_level_keys_win_over_capability() {
        let c = ctx(json!({"name": "n", "egressRate": 8000, "egressBurst": 800,
            "runtimeConfig": {"bandwidth": {"ingressRate": 1, "ingressBurst": 1}}}));
        assert_eq!(load(&c).unwrap(), Some(Bandwidth { egress_rate: 8000, egress_burst: 800, ..Default::default() }));
        let c = ctx(json!({"name": "n", "runtimeConfig": {"bandwidth": {"ingressRate": 16, "ingressBurst": 8}}}));
        assert_eq!(load(&c).unwrap(), Some(Bandwidth { ingress_rate: 16, ingress_burst: 8, ..Default::default() }));
        assert_eq!(load(&ctx(json!({"name": "n"}))).unwrap(), None);
        assert!(load(&ctx(json!({"name": "n", "ingressRate": 5}))).is_err());
        assert!(load(&ctx(json!({"name": "n", "runtimeConfig": {"bandwidth": {"egressBurst": 5}}}))).is_err());
        assert!(load(&ctx(json!({"name": "n", "ingressRate": "5"}))).is_err());
    }

    /// A top-level key written as `null` still makes the (all-zero) top-level entry win, as Go
    /// allocates the embedded entry for it: nothing is shaped, runtimeConfig is not used.
    #[test]
    fn null_top_level_key_wins_over_capability() {
        let rc = json!({"bandwidth": {"ingressRate": 16, "ingressBurst": 8}});
        for key in ["ingressRate", "EGRESSBURST"] {
            let mut conf = json!({"name": "n", "runtimeConfig": rc});
            conf[key] = serde_json::Value::Null;
            assert_eq!(load(&ctx(conf)).unwrap(), Some(Bandwidth::default()), "{key}");
        }
        // a null elsewhere changes nothing
        let c = ctx(json!({"name": "n", "other": null, "runtimeConfig": rc}));
        assert_eq!(load(&c).unwrap(), Some(Bandwidth { ingress_rate: 16, ingress_burst: 8, ..Default::default() }));
    }

    #[test]
    fn ifb_name_and_alias() {
        let n = ifb_name("net", "cid");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        assert_eq!(parse_alias(&alias("net", "c-1")), Some(("net", "c-1")));
        assert_eq!(parse_alias("something else"), None);
    }
}
