//! ipMasq of the veth plugins (bridge, ptp): masquerade the container's addresses.

use super::gc::GcErrors;
use super::undo::Undo;
use crate::cni::{Attachment, CniResult, Ctx};
use crate::firewall::ipmasq::{self, MasqSpec};
use anyhow::{Context, Result};
use ipnet::IpNet;

/// ADD step: masquerade the result's addresses (its undo pushed).
pub fn setup(ctx: &Ctx, backend: Option<&str>, result: &CniResult, undo: &mut Undo) -> Result<()> {
    let ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
    // v1.9.1's SetupIPMasqForNetworks: a backend it does not know fails in its own words
    if let Some(b) = backend {
        crate::firewall::BackendKind::parse(b)
            .map_err(|_| anyhow::anyhow!("unknown ipmasq backend {}", crate::cni::result::go_quote(b)))?;
    }
    let spec = MasqSpec { network: &ctx.name, container_id: &ctx.container_id, ifname: &ctx.ifname, ips: &ips };
    ipmasq::ensure(backend, &spec).context("failed to set up IP masquerading")?;
    tracing::debug!("IP masquerading set up");
    let (net, cid, ifname) = (ctx.name.clone(), ctx.container_id.clone(), ctx.ifname.clone());
    undo.push("ipMasq", move || {
        ipmasq::remove(&MasqSpec { network: &net, container_id: &cid, ifname: &ifname, ips: &ips })
    });
    Ok(())
}

/// GC step: masquerade rules of this network's attachments not in `valid`.
pub fn gc(ctx: &Ctx, valid: &[Attachment], errors: &mut GcErrors) {
    errors.note("ipMasq", ipmasq::gc(&ctx.name, valid));
}
