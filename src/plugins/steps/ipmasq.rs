//! ipMasq of the veth plugins (bridge, ptp): masquerade the container's addresses.

use super::gc::GcErrors;
use super::undo::Undo;
use crate::cni::{Attachment, CniResult, Ctx};
use anyhow::{Context, Result};
use ipnet::IpNet;

/// ADD step: masquerade the result's addresses (its undo pushed).
pub fn setup(ctx: &Ctx, backend: Option<&str>, result: &CniResult, undo: &mut Undo) -> Result<()> {
    let ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
    crate::firewall::setup_ipmasq(backend, &ctx.name, &ctx.container_id, &ctx.ifname, &ips)
        .context("failed to set up IP masquerading")?;
    tracing::debug!("IP masquerading set up");
    let (net, cid, ifname) = (ctx.name.clone(), ctx.container_id.clone(), ctx.ifname.clone());
    undo.push("ipMasq", move || crate::firewall::teardown_ipmasq(&net, &cid, &ifname, &ips));
    Ok(())
}

/// GC step: masquerade rules of this network's attachments not in `valid`.
pub fn gc(ctx: &Ctx, valid: &[Attachment], errors: &mut GcErrors) {
    errors.note("ipMasq", crate::firewall::gc_ipmasq(&ctx.name, valid));
}
