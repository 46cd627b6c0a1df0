//! The plugin descriptor: what the protocol layer needs to know about one plugin (its verbs,
//! the versions and CNI_ARGS keys it accepts, its subcommands) and its user documentation.
//!
//! Every plugin file declares one `pub const APPLET: Plugin` and the `pub const DOC: Doc` it
//! points at; `src/applets.rs` lists them, `src/docs.rs` renders the docs.

pub use super::version::Version;
use super::{CniResult, Ctx};

pub type AddFn = fn(&Ctx) -> anyhow::Result<CniResult>;
pub type VerbFn = fn(&Ctx) -> anyhow::Result<()>;
/// The entry point of a subcommand, given the words after it; returns the exit status.
pub type SubMain = fn(&[String]) -> i32;
/// Finds a plugin of this binary by name (the registry, for in-process delegation).
pub type Lookup = fn(&str) -> Option<&'static Plugin>;

/// One plugin of the multicall binary.
pub struct Plugin {
    pub name: &'static str,
    pub about: &'static str,
    /// the lowest cniVersion the plugin accepts (bandwidth 0.3.0, vrf 0.3.1, firewall 0.4.0)
    pub min_version: Version,
    /// CNI_ARGS keys this plugin parses; `None` = the plugin ignores CNI_ARGS entirely.
    /// With `Some`, any other key is an error unless `IgnoreUnknown=1|true`.
    pub cni_args: Option<&'static [&'static str]>,
    pub add: AddFn,
    pub del: VerbFn,
    pub check: VerbFn,
    /// `None`: the verb succeeds silently (as the reference skel does)
    pub gc: Option<VerbFn>,
    pub status: Option<VerbFn>,
    /// Long-running or setup commands besides the CNI verbs (`dhcp daemon ...`).
    pub subcommands: &'static [Subcommand],
    pub doc: &'static Doc,
}

/// `cni-multi <plugin> <word> ...` runs `main` with the words after `word`.
pub struct Subcommand {
    pub word: &'static str,
    pub main: SubMain,
}

/// A registry with no plugins: delegation always executes the plugin found on CNI_PATH.
pub fn no_plugins(_: &str) -> Option<&'static Plugin> {
    None
}

/// Where a plugin sits in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// creates or moves the container's interface
    Interface,
    /// allocates addresses for an interface plugin (`ipam.type`)
    Ipam,
    /// chained after an interface plugin; works on its `prevResult`
    Meta,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Interface => "interface plugin",
            Kind::Ipam => "IPAM plugin (used as `ipam.type`)",
            Kind::Meta => "chained (meta) plugin: needs a prevResult",
        }
    }
}

/// Where a setting comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// a key of the plugin's config (or of its `ipam` object for IPAM plugins)
    Conf,
    /// a capability: `runtimeConfig.<name>`, filled by the runtime when the config lists it
    Capability,
    /// a `CNI_ARGS` key (`K=V;K=V`)
    CniArg,
    /// a key of `args.cni` in the config
    ArgsCni,
}

/// One documented setting.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub ty: &'static str,
    /// "" = no default (unset)
    pub default: &'static str,
    pub meaning: &'static str,
    pub source: Source,
}

/// A config key.
pub const fn k(name: &'static str, ty: &'static str, default: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default, meaning, source: Source::Conf }
}
/// A capability (`runtimeConfig.<name>`).
pub const fn cap(name: &'static str, ty: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default: "", meaning, source: Source::Capability }
}
/// A CNI_ARGS key.
pub const fn arg(name: &'static str, ty: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default: "", meaning, source: Source::CniArg }
}
/// An `args.cni` key.
pub const fn acni(name: &'static str, ty: &'static str, meaning: &'static str) -> Key {
    Key { name, ty, default: "", meaning, source: Source::ArgsCni }
}

/// The user documentation of one plugin.
#[derive(Debug)]
pub struct Doc {
    pub kind: Kind,
    /// one paragraph: what it does
    pub summary: &'static str,
    /// "" = keys at the top level of the plugin's config; "ipam" = keys inside its `ipam` object
    pub section: &'static str,
    pub keys: &'static [Key],
    /// extra facts: behaviour worth knowing, subcommands
    pub notes: &'static [&'static str],
    /// a complete network config (or conflist) using the plugin
    pub example: &'static str,
}

/// Keys every plugin reads, whatever its type.
pub static COMMON_KEYS: &[Key] = &[
    k("cniVersion", "string", "", "spec version of the config and of the printed result: 0.1.0 to 1.1.0"),
    k("name", "string", "", "network name (required); used in IPAM store paths and firewall comments"),
    k("type", "string", "", "the applet to run"),
    k(
        "log",
        "string (path)",
        "",
        "append this invocation's log lines to this file instead of stderr (CNI_MULTI_LOG_FILE wins)",
    ),
    k("prevResult", "object", "", "the previous plugin's result in a chain (set by the runtime)"),
    k("runtimeConfig", "object", "", "capability values from the runtime (see each plugin)"),
    k("args", "object", "", "`args.cni` values (see each plugin)"),
];

/// The spec's `ipam` key, as interface plugins document it.
pub const IPAM_KEY: Key =
    k("ipam", "object", "", "IPAM config: `type` names the IPAM applet (host-local, static, dhcp)");
/// The spec's `dns` key, as interface plugins document it.
pub const DNS_KEY: Key = k("dns", "object", "", "`nameservers`, `domain`, `search`, `options` for the result");
