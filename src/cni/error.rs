//! CNI error object and the one mapping from internal errors to spec codes.

use std::fmt;
use std::sync::RwLock;

/// A test for errors of the layers below the protocol that are transient (a netlink dump the
/// kernel kept interrupting, EAGAIN): such a failure is code 11, "try again later". This layer
/// cannot name those layers' error types, so the binary's entry registers the test once
/// ([`add_transient_test`]); without one, every untyped error is code 999.
pub type TransientTest = fn(&(dyn std::error::Error + 'static)) -> bool;
static TRANSIENT: RwLock<Vec<TransientTest>> = RwLock::new(Vec::new());

/// Register a test that [`CniError::from_anyhow`] applies to untyped errors.
pub fn add_transient_test(test: TransientTest) {
    if let Ok(mut tests) = TRANSIENT.write() {
        tests.push(test);
    }
}

fn is_transient(e: &(dyn std::error::Error + 'static)) -> bool {
    TRANSIENT.read().is_ok_and(|tests| tests.iter().any(|t| t(e)))
}

/// Error codes from the CNI specification (and the Go library's conventions).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const INVALID_NETNS: u32 = 8;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    pub const INTERNAL: u32 = 999;
}

/// A CNI error as printed on stdout: `{"code": N, "msg": "...", "details": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN, msg)
    }

    /// Map any error to a CNI error: a `CniError` anywhere in the chain keeps its code
    /// (context added above it is prepended to its message); an error the registered
    /// [`TransientTest`] calls transient is code 11; anything else is code 999.
    pub fn from_anyhow(err: &anyhow::Error) -> CniError {
        let found = err.chain().find_map(|e| e.downcast_ref::<CniError>()).cloned();
        let full = format!("{err:#}");
        match found {
            Some(mut c) => {
                if full != c.to_string() && !full.is_empty() {
                    // keep outer context, without repeating the inner message twice
                    c.msg = full.strip_suffix(&format!(": {}", c)).map(|s| format!("{s}: {}", c.msg)).unwrap_or(c.msg);
                }
                c
            }
            None if err.chain().any(is_transient) => CniError::try_again(full),
            None => CniError::internal(full),
        }
    }

    /// The reference's error printing: 4-space indented, `details` omitted when empty,
    /// no `cniVersion`, no trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\n    \"code\": ");
        s.push_str(&self.code.to_string());
        s.push_str(",\n    \"msg\": ");
        s.push_str(&json_string(&self.msg));
        if !self.details.is_empty() {
            s.push_str(",\n    \"details\": ");
            s.push_str(&json_string(&self.details));
        }
        s.push_str("\n}");
        s
    }
}

/// Strings are escaped as Go's encoding/json does (`<>&` as `\u003c`…), for byte-compatibility.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    super::result::go_escape(s, &mut out);
    out
}

impl CniError {
    /// Parse an error object printed by a plugin (`code`, `msg`, `details`; keys any case).
    pub fn from_json(v: &serde_json::Value) -> Option<CniError> {
        let folded = super::config::fold(v);
        let m = folded.as_object()?;
        let code = m.get("code").map_or(Some(0), |c| c.as_u64().and_then(|c| u32::try_from(c).ok()))?;
        let text = |k: &str| m.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        Some(CniError { code, msg: text("msg"), details: text("details") })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_reference() {
        let e = CniError::new(7, "bad \"x\"");
        assert_eq!(e.to_json(), "{\n    \"code\": 7,\n    \"msg\": \"bad \\\"x\\\"\"\n}");
        let e = e.with_details("d");
        assert!(e.to_json().ends_with("\"details\": \"d\"\n}"));
        let e = CniError::new(999, "a<b");
        assert_eq!(e.to_json(), "{\n    \"code\": 999,\n    \"msg\": \"a\\u003cb\"\n}");
        let back = CniError::from_json(&serde_json::from_str(&e.to_json()).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn anyhow_keeps_code_and_context() {
        let inner: anyhow::Error = CniError::config("subnet missing").into();
        let e = inner.context("ipam");
        let c = CniError::from_anyhow(&e);
        assert_eq!(c.code, 7);
        assert_eq!(c.msg, "ipam: subnet missing");
        let plain = anyhow::anyhow!("boom").context("outer");
        assert_eq!(CniError::from_anyhow(&plain).code, 999);
        assert_eq!(CniError::from_anyhow(&plain).msg, "outer: boom");
    }

    /// A lower layer's error type, unknown to this layer, that the registered test calls transient.
    #[derive(Debug)]
    struct Busy;
    impl fmt::Display for Busy {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("table kept changing")
        }
    }
    impl std::error::Error for Busy {}
    fn busy_is_transient(e: &(dyn std::error::Error + 'static)) -> bool {
        e.downcast_ref::<Busy>().is_some()
    }

    #[test]
    fn registered_transient_errors_are_try_again() {
        add_transient_test(busy_is_transient);
        let e = anyhow::Error::new(Busy).context("failed to list links");
        let c = CniError::from_anyhow(&e);
        assert_eq!((c.code, c.msg.as_str()), (code::TRY_AGAIN, "failed to list links: table kept changing"));
        // other untyped errors stay 999, typed ones keep their code
        assert_eq!(CniError::from_anyhow(&anyhow::anyhow!("boom")).code, code::INTERNAL);
        let typed = anyhow::Error::new(CniError::config("bad")).context(Busy);
        assert_eq!(CniError::from_anyhow(&typed).code, code::INVALID_CONFIG);
    }
}
