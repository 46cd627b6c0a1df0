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
/// the namespace this plugin runs in (a stale path once let a plugin take down the host's `lo`;
/// [`Ctx::refuse_own_netns`] is the rule, CNI_NETNS_OVERRIDE its exception).
pub fn open(ctx: &Ctx) -> Result<NetNs> {
    let path = ctx.require_netns()?;
    let ns = NetNs::open(path).map_err(|e| CniError::new(code::INVALID_NETNS, e.to_string()))?;
    ctx.refuse_own_netns(ns.is_current()?)?;
    Ok(ns)
}

/// DEL flavour: no netns given or the path is gone ⇒ `Gone`; other failures are errors.
pub fn open_for_del(ctx: &Ctx) -> Result<NsOrGone> {
    let Some(path) = ctx.netns.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(NsOrGone::Gone);
    };
    match NetNs::open(path) {
        Ok(ns) => {
            ctx.refuse_own_netns(ns.is_current()?)?;
            Ok(NsOrGone::Ns(ns))
        }
        Err(NsError::NotExist(_)) => Ok(NsOrGone::Gone),
        Err(e) => Err(CniError::new(code::INVALID_NETNS, e.to_string()).into()),
    }
}

/// Reopen a namespace by path inside an undo step (where the typed CNI error is not needed).
pub fn reopen(path: &str) -> Result<NetNs> {
    NetNs::open(path).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Command;

    #[test]
    fn own_namespace_is_refused_unless_overridden() {
        let mut ctx = Ctx { netns: Some("/proc/self/ns/net".into()), ..Ctx::new(Command::Add) };
        let e = CniError::from_anyhow(&open(&ctx).unwrap_err());
        assert_eq!(
            (e.code, e.msg.as_str()),
            (code::INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same")
        );
        let e = CniError::from_anyhow(&open_for_del(&ctx).err().unwrap());
        assert_eq!(e.code, code::INVALID_NETNS);
        ctx.netns_override = true;
        assert!(open(&ctx).is_ok());
        // DEL: no netns, or one that is gone, is nothing to do
        ctx.netns = None;
        assert!(matches!(open_for_del(&ctx).unwrap(), NsOrGone::Gone));
        ctx.netns = Some("/run/netns/cni-multi-steps-never-created".into());
        assert!(matches!(open_for_del(&ctx).unwrap(), NsOrGone::Gone));
    }
}
