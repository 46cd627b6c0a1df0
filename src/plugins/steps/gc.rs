//! GC steps: each runs even when an earlier one failed; the failures are reported together.

use crate::cni::config::Attachment;
use crate::cni::{CniError, Ctx};
use anyhow::Result;

/// The failures of a GC that runs every step and reports them together at the end.
#[derive(Default)]
pub struct GcErrors(Vec<String>);

impl GcErrors {
    /// Remember the failure of step `what`, if it failed.
    pub fn note<T>(&mut self, what: &str, r: Result<T>) {
        if let Err(e) = r {
            self.0.push(format!("{what}: {e:#}"));
        }
    }
    /// `GC failed: what: error; …` when any step failed.
    pub fn finish(self) -> Result<()> {
        if !self.0.is_empty() {
            anyhow::bail!("GC failed: {}", self.0.join("; "));
        }
        Ok(())
    }
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
}
