//! The CNI protocol: environment, configuration, results, versions, errors, delegation.
//! No kernel code lives here.
//!
//! For plugin authors:
//! - Describe your plugin with a [`Plugin`] (verbs, versions, CNI_ARGS keys, subcommands) and its
//!   [`plugin::Doc`]; `src/applets.rs` lists it.
//! - `io::run(plugin, io)` does the whole skel dance (env, stdin, version gates, CNI_ARGS against
//!   `Plugin::cni_args`, own-netns refusal, prevResult) and calls your verb with a [`Ctx`].
//! - Read config with `ctx.plugin_conf::<T>()` (lower-case serde names), `ctx.get("key")`,
//!   `ctx.runtime_config("cap")`, `ctx.args_cni("key")`, `ctx.cni_arg("KEY")`; use
//!   `ctx.raw_conf()` when map keys are data whose case matters (sysctl names).
//! - `ctx.prev_result` is already parsed; where the protocol layer lets a malformed one pass
//!   (an interface plugin's ADD, every CHECK), an applet that reads it calls
//!   `ctx.read_prev_result()`.
//!   `ctx.valid_attachments()` for GC.
//! - Return a [`CniError`] (via `.into()`) to choose the code; any other error is 999.
//! - IPAM: `delegate::ipam_add(ctx)` / `ipam_del` / `ipam_check` / `ipam_status` / `ipam_gc`
//!   (in-process when CNI_PATH resolves to this binary and `ctx.plugins` knows the type).
//!
//! This layer imports nothing above it (a test in this module checks it).

pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod io;
pub mod plugin;
pub mod result;
pub mod version;

pub use config::Attachment;
pub use error::{code, CniError};
pub use plugin::{Lookup, Plugin};
pub use result::CniResult;
pub use version::Version;

use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// The CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// One validated plugin invocation: environment + stdin, parsed once by the protocol layer
/// and handed to a plugin's verb function.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub command: Command,
    /// CNI_CONTAINERID (validated; empty only for GC/STATUS/VERSION)
    pub container_id: String,
    /// CNI_NETNS as given (may be empty on DEL)
    pub netns: Option<String>,
    /// CNI_IFNAME (validated; empty only for GC/STATUS/VERSION)
    pub ifname: String,
    /// CNI_ARGS parsed into pairs, in order
    pub args: Vec<(String, String)>,
    /// CNI_ARGS verbatim (passed on to delegated plugins)
    pub raw_args: String,
    /// CNI_PATH split on ':' ([`env::split_path`]: empty entries kept, never searched)
    pub path: Vec<PathBuf>,
    /// raw stdin bytes, passed unchanged to delegated plugins
    pub stdin: Vec<u8>,
    /// stdin parsed the Go way: object keys lower-cased, a repeated key merged as Go decodes it
    /// (objects merge, other values are replaced by the later one), nulls dropped
    pub conf: serde_json::Value,
    /// `cniVersion` of the config ("0.1.0" when absent), as written: results echo this text and
    /// the version gate compares it exactly
    pub version: String,
    /// `version` parsed once ([`Ctx::set_version`]); None when it does not parse, which the
    /// version gate refuses before any verb runs
    pub spec: Option<Version>,
    /// network `name`
    pub name: String,
    /// `prevResult`, parsed with `version` and converted to the internal result. `None` also
    /// when it does not parse and the protocol layer let that pass (see
    /// [`Ctx::read_prev_result`]): in chained plugins' ADD it fails first; a CHECK that reads
    /// it goes through [`Ctx::read_prev_result`].
    pub prev_result: Option<CniResult>,
    /// The plugins of this binary: delegation to one of them runs in-process when CNI_PATH
    /// resolves to this executable. [`plugin::no_plugins`] always executes the delegate.
    pub plugins: Lookup,
    /// CNI_NETNS_OVERRIDE is true: CNI_NETNS may be the plugin's own namespace
    pub netns_override: bool,
}

impl Ctx {
    /// An empty invocation for `command` (config `{}`, version "0.1.0"); handy in tests:
    /// `Ctx { ifname: "eth0".into(), ..Ctx::new(Command::Add) }`.
    pub fn new(command: Command) -> Ctx {
        Ctx {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: Vec::new(),
            raw_args: String::new(),
            path: Vec::new(),
            stdin: b"{}".to_vec(),
            conf: serde_json::Value::Object(serde_json::Map::new()),
            version: config::DEFAULT_VERSION.to_string(),
            spec: config::DEFAULT_VERSION.parse().ok(),
            name: String::new(),
            prev_result: None,
            plugins: plugin::no_plugins,
            netns_override: false,
        }
    }
    /// Set `cniVersion`: the text and its parsed form together.
    pub fn set_version(&mut self, text: &str) {
        self.version = text.to_string();
        self.spec = text.parse().ok();
    }

    /// Decode the (folded) config into a plugin's config struct. Struct fields must use
    /// lower-case serde names (`#[serde(rename = "isgateway")]`). A type mismatch is a
    /// plain error (code 999), like the reference.
    /// `ipam`, when present, must be an object (the reference's `types.IPAM` struct); the error
    /// names the key whose value is wrong. On DEL and GC, which must not fail on a config that
    /// ADD refused, an `ipam` that is no object names no IPAM plugin to call: it is decoded as
    /// absent (and [`Ctx::ipam_type`] is `None`), so the rest of the attachment is still removed.
    pub fn plugin_conf<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        if let Some(ipam) = self.conf.get("ipam").filter(|v| !v.is_object()) {
            if matches!(self.command, Command::Del | Command::Gc) {
                let mut without = self.conf.clone();
                if let Some(m) = without.as_object_mut() {
                    m.remove("ipam");
                }
                return config::decode(&without);
            }
            anyhow::bail!("failed to load netconf: ipam: expected an object, got {}", config::kind(ipam));
        }
        config::decode(&self.conf)
    }

    /// A key of the folded config (give it lower-case).
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.conf.get(key)
    }

    /// `runtimeConfig.<capability>` (lower-case capability name).
    pub fn runtime_config(&self, capability: &str) -> Option<&serde_json::Value> {
        self.conf.get("runtimeconfig").and_then(|r| r.get(capability))
    }

    /// `args.cni.<key>` (lower-case key).
    pub fn args_cni(&self, key: &str) -> Option<&serde_json::Value> {
        self.conf.get("args").and_then(|a| a.get("cni")).and_then(|c| c.get(key))
    }

    /// A CNI_ARGS value (keys are case-sensitive, as in the reference).
    pub fn cni_arg(&self, key: &str) -> Option<&str> {
        self.args.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `prevResult` for an applet that reads it on a verb where the protocol layer ignores one
    /// that does not parse (CHECK; an interface plugin's ADD: loopback passes it on, ipvlan
    /// takes its master and addresses from it): the parse error (code 999), as the reference's
    /// `version.ParsePrevResult` fails, instead of acting as if there were none.
    pub fn read_prev_result(&self) -> Result<Option<&CniResult>, CniError> {
        if self.prev_result.is_none() && self.conf.get("prevresult").is_some() {
            config::prev_result(&self.conf, &self.version)?;
        }
        Ok(self.prev_result.as_ref())
    }

    /// `ipam.type`, when set and non-empty.
    pub fn ipam_type(&self) -> Option<&str> {
        self.conf.get("ipam").and_then(|i| i.get("type")).and_then(|t| t.as_str()).filter(|t| !t.is_empty())
    }

    /// The one own-namespace rule: a CNI_NETNS that is the plugin's own namespace (`is_own`) is
    /// refused with the reference's error (code 8), unless CNI_NETNS_OVERRIDE allows it. Used by
    /// the protocol layer for ADD/DEL and by every plugin step that opens the namespace.
    pub fn refuse_own_netns(&self, is_own: bool) -> Result<(), CniError> {
        if is_own && !self.netns_override {
            return Err(CniError::new(
                code::INVALID_NETNS,
                "plugin's netns and netns from CNI_NETNS should not be the same",
            ));
        }
        Ok(())
    }

    /// CNI_NETNS, erroring with code 4 when it is required and missing.
    pub fn require_netns(&self) -> Result<&str, CniError> {
        self.netns
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CniError::env("required env variables [CNI_NETNS] missing"))
    }
}

#[cfg(test)]
impl Ctx {
    /// A unit test's ADD context for the config `conf`: stdin is its JSON, `conf` folded as the
    /// protocol layer folds it.
    pub fn test_add(conf: serde_json::Value) -> Ctx {
        let stdin = serde_json::to_vec(&conf).unwrap_or_default();
        Ctx { conf: config::parse_folded(&stdin).unwrap_or_default(), stdin, ..Ctx::new(Command::Add) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_conf_takes_a_non_object_ipam_as_absent_on_del_and_gc_only() {
        #[derive(serde::Deserialize, Debug)]
        struct C {
            mtu: i64,
            ipam: Option<serde_json::Value>,
        }
        for command in [Command::Add, Command::Check, Command::Status, Command::Del, Command::Gc] {
            let ctx = Ctx {
                conf: config::parse_folded(br#"{"mtu": 1400, "ipam": "host-local"}"#).unwrap(),
                ..Ctx::new(command)
            };
            let r = ctx.plugin_conf::<C>();
            if matches!(command, Command::Del | Command::Gc) {
                let c = r.unwrap();
                assert_eq!((c.mtu, c.ipam), (1400, None), "{command:?}");
                assert_eq!(ctx.ipam_type(), None);
            } else {
                let e = r.unwrap_err().to_string();
                assert_eq!(e, "failed to load netconf: ipam: expected an object, got string", "{command:?}");
            }
        }
    }
}

#[cfg(test)]
mod layering {
    /// The protocol layer imports nothing above it: no file of src/cni/ names a module of the
    /// kernel, firewall, IPAM or plugin layers, nor the binary's table, CLI, docs or logging.
    #[test]
    fn cni_imports_nothing_above_it() {
        const ABOVE: &[&str] = &[
            "applets", "plugins", "ipam", "firewall", "netlink", "sys", "cli", "docs", "logging", "tool", "install",
            "fuzzing", "digest",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cni");
        let mut offenders = Vec::new();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            seen += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                for m in ABOVE {
                    for prefix in ["crate::", "cni_multi::"] {
                        if line.contains(&format!("{prefix}{m}::")) || line.contains(&format!("{prefix}{m};")) {
                            offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(seen >= 9, "read only {seen} files of {}", dir.display());
        assert!(offenders.is_empty(), "src/cni/ must not import the layers above it:\n{}", offenders.join("\n"));
    }
}
