//! Opening the container's network namespace.

use crate::cni::{code, CniError, Ctx};
use crate::sys::netns::{NetNs, NsError};
use anyhow::Result;

/// Outcome of opening CNI_NETNS on the DEL path, where a vanished namespace is success.
pub enum NsOrGone {
    Ns(NetNs),
    Gone,
}

/// Open CNI_NETNS for container-side work (ADD/CHECK): it must be a network namespace and must not be
/// the namespace this plugin runs in (a stale path once let a plugin take down the host's `lo`).
pub fn open(ctx: &Ctx) -> Result<NetNs> {
    let path = ctx.require_netns()?;
    let ns = NetNs::open(path).map_err(|e| CniError::new(code::INVALID_NETNS, e.to_string()))?;
    refuse_own(&ns)?;
    Ok(ns)
}

/// DEL flavour: no netns given or the path is gone ⇒ `Gone`; other failures are errors.
pub fn open_for_del(ctx: &Ctx) -> Result<NsOrGone> {
    let Some(path) = ctx.netns.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(NsOrGone::Gone);
    };
    match NetNs::open(path) {
        Ok(ns) => {
            refuse_own(&ns)?;
            Ok(NsOrGone::Ns(ns))
        }
        Err(NsError::NotExist(_)) => Ok(NsOrGone::Gone),
        Err(e) => Err(CniError::new(code::INVALID_NETNS, e.to_string()).into()),
    }
}

fn refuse_own(ns: &NetNs) -> Result<()> {
    if ns.is_current()? && std::env::var("CNI_NETNS_OVERRIDE").map(|v| v != "1" && v != "true").unwrap_or(true) {
        return Err(CniError::new(
            code::INVALID_NETNS,
            format!("netns {:?} is the plugin's own namespace: refusing to change it", ns.path()),
        )
        .into());
    }
    Ok(())
}

/// Reopen a namespace by path inside an undo step (where the typed CNI error is not needed).
pub fn reopen(path: &str) -> Result<NetNs> {
    NetNs::open(path).map_err(|e| anyhow::anyhow!("{e}"))
}
