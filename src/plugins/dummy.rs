//! dummy: a dummy link named CNI_IFNAME created directly in the container, addressed by IPAM
//! (checklist §2.9).

use super::steps::{self, Undo};
use crate::cni::plugin::{k, Doc, Kind, Plugin, Version};
use crate::cni::{delegate, CniError, CniResult, Ctx};
use crate::netlink::socket::go_context;
use crate::netlink::{LinkKind, LinkSpec, Netlink};
use anyhow::{bail, Context, Result};

pub const APPLET: Plugin = Plugin {
    name: "dummy",
    about: "dummy interface in the container, addressed by IPAM",
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
    summary: "A dummy interface named CNI_IFNAME in the container, with addresses from IPAM.",
    section: "",
    keys: &[k("ipam", "object", "", "required")],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "dummynet",
  "type": "dummy",
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.3.0/24"}]]}
}"#,
    config: None,
};

fn require_ipam(ctx: &Ctx) -> Result<()> {
    if ctx.ipam_type().is_none() {
        return Err(CniError::config("dummy interface requires an IPAM configuration").into());
    }
    Ok(())
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    require_ipam(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // no txqueuelen: the kernel's default, as v1.9.1's NewLinkAttrs leaves it; a CNI_IFNAME the
    // container already has is the kernel's EEXIST, `failed to create dummy: file exists`, and
    // stays (the undo below is pushed only for a link this ADD made)
    cont.link_add(&LinkSpec::new(&ctx.ifname, LinkKind::Dummy)).map_err(|e| go_context(e, "failed to create dummy"))?;
    steps::link::undo_delete(&mut undo, ns.path(), &ctx.ifname);
    let link = cont.link_by_name(&ctx.ifname)?.with_context(|| format!("failed to refetch {:?}", ctx.ifname))?;

    // the IPAM result keeps its DNS (dummy does not override it)
    let mut result = steps::ipam::add(ctx, &mut undo)?;
    result.interfaces = vec![steps::link::container_iface(ctx, &link)];
    steps::ipam::configure_iface(&ns, &mut cont, &ctx.ifname, 0, &result)?;
    undo.commit();
    Ok(result)
}

fn del(ctx: &Ctx) -> Result<()> {
    steps::ipam::del_if_set(ctx)?;
    steps::link::delete(ctx)?;
    Ok(())
}

fn check(ctx: &Ctx) -> Result<()> {
    require_ipam(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    delegate::ipam_check(ctx)?;
    let prev = steps::check::require_prev_of(ctx, "dummy: ")?;
    let (idx, want) = steps::check::prev_iface(ctx, prev)?;
    let Some(link) = cont.link_by_name(&ctx.ifname)? else {
        bail!("Container Interface name in prevResult: {} not found", ctx.ifname)
    };
    steps::check::link_kind(&link, &ctx.ifname, "dummy")?;
    steps::check::link_mac(&link, want)?;
    if !link.is_up() {
        bail!("Interface {} is down", ctx.ifname);
    }
    steps::check::addrs(&mut cont, &ctx.ifname, idx, prev)
}

/// GC: the dummy link dies with its netns, so only IPAM holds state: GC is passed on to it.
fn gc(ctx: &Ctx) -> Result<()> {
    steps::ipam::gc_if_set(ctx)
}

fn status(ctx: &Ctx) -> Result<()> {
    delegate::ipam_status(ctx)
}
