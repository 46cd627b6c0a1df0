//! GC steps: each runs even when an earlier one failed; the failures are reported together.

use crate::cni::config::Attachment;
use crate::cni::{CniError, Ctx};
use anyhow::Result;

/// The failures of a GC that runs every step and reports them together at the end.
#[derive(Default)]
pub struct GcErrors(Vec<(String, u32)>);

impl GcErrors {
    /// Remember the failure of step `what`, if it failed, with its CNI code.
    pub fn note<T>(&mut self, what: &str, r: Result<T>) {
        if let Err(e) = r {
            self.0.push((format!("{what}: {e:#}"), CniError::from_anyhow(&e).code));
        }
    }
    /// `GC failed: what: error; …` when any step failed, with the first failure's code (a
    /// delegate's error keeps its code, as the reference passes a delegate's typed error on).
    pub fn finish(self) -> Result<()> {
        if let Some(&(_, code)) = self.0.first() {
            let msgs: Vec<&str> = self.0.iter().map(|(m, _)| m.as_str()).collect();
            return Err(CniError::new(code, format!("GC failed: {}", msgs.join("; "))).into());
        }
        Ok(())
    }
}

/// The plugin's own config for GC, which needs none of its keys to collect: `None` (logged)
/// when a key does not decode, so a mistyped key stops nothing.
pub fn plugin_conf<T: serde::de::DeserializeOwned>(ctx: &Ctx) -> Option<T> {
    ctx.plugin_conf().map_err(|e| tracing::warn!("GC goes on with the config's defaults: {e:#}")).ok()
}

/// The first GC step of a plugin with an IPAM: validate `cni.dev/valid-attachments` (a
/// malformed list fails the whole GC with its code, before anything is released), then IPAM GC
/// when the config names an IPAM type. Returns the list for the plugin's own steps (None: the
/// runtime sent none, attachments unknown).
pub fn ipam(ctx: &Ctx, errors: &mut GcErrors) -> Result<Option<Vec<Attachment>>, CniError> {
    let valid = ctx.valid_attachments()?;
    errors.note("ipam", super::ipam::gc_if_set(ctx));
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_is_reported_together() {
        let mut e = GcErrors::default();
        e.note("a", Ok(()));
        GcErrors::default().finish().unwrap();
        e.note::<()>("b", Err(anyhow::anyhow!("x")));
        e.note::<()>("c", Err(anyhow::anyhow!("y")));
        assert_eq!(e.finish().unwrap_err().to_string(), "GC failed: b: x; c: y");
    }

    #[test]
    fn the_first_failures_code_is_kept() {
        let mut e = GcErrors::default();
        e.note::<()>("ipam", Err(CniError::try_again("cannot reach the dhcp daemon").into()));
        e.note::<()>("ipMasq", Err(anyhow::anyhow!("y")));
        let err = CniError::from_anyhow(&e.finish().unwrap_err());
        assert_eq!((err.code, err.msg.as_str()), (11, "GC failed: ipam: cannot reach the dhcp daemon; ipMasq: y"));
    }
}
