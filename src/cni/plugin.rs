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
    /// The type the plugin reads its documented config keys into (the `ipam` object's type for
    /// IPAM plugins); a test checks every documented key is one of its fields. `None`: no keys.
    pub config: Option<ConfigFields>,
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

/// The serde field names of the struct at `path` inside the config type `T` (`[]`: `T` itself;
/// `["ipam"]`: the type of its `ipam` field), read from the type's `Deserialize` impl without a
/// value. Errors when the path leaves the structs (a field that is not there, a map, a
/// hand-written `Deserialize`).
pub type ConfigFields = fn(&[&str]) -> Result<Vec<&'static str>, String>;

/// A [`ConfigFields`] for `T`: `Doc { config: Some(config_fields::<Conf>), .. }`.
///
/// Only the docs drift test (a unit test) reads the fields, so only test builds walk the type:
/// the walk instantiates every plugin's `Deserialize` a second time, about 26 KiB of the release
/// binary that nothing in it would run. Elsewhere it answers with an error.
pub fn config_fields<T: serde::de::DeserializeOwned>(path: &[&str]) -> Result<Vec<&'static str>, String> {
    #[cfg(test)]
    return match T::deserialize(probe::Probe { path }) {
        Err(probe::Error::Fields(f)) => Ok(f.to_vec()),
        Err(probe::Error::Other(e)) => Err(e),
        Ok(_) => Err("the type deserialized from nothing".to_string()),
    };
    #[cfg(not(test))]
    {
        let _ = path;
        Err("config fields are read in test builds only".to_string())
    }
}

/// A deserializer that answers a struct's request with the struct's field list (as an error),
/// walking down `path` first.
#[cfg(test)]
mod probe {
    use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

    #[derive(Debug)]
    pub enum Error {
        Fields(&'static [&'static str]),
        Other(String),
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Error::Fields(x) => write!(f, "fields {x:?}"),
                Error::Other(e) => f.write_str(e),
            }
        }
    }

    impl std::error::Error for Error {}

    impl de::Error for Error {
        fn custom<T: std::fmt::Display>(msg: T) -> Self {
            Error::Other(msg.to_string())
        }
    }

    pub struct Probe<'p> {
        pub path: &'p [&'p str],
    }

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::Other(format!("not a struct at {:?}", self.path)))
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_some(self)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.path.split_first() {
                None => Err(Error::Fields(fields)),
                Some((key, rest)) => visitor.visit_map(One { key: Some(key), rest }),
            }
        }

        fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::Other(format!("no such field: {:?}", self.path)))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
            unit_struct seq tuple tuple_struct map enum identifier
        }
    }

    /// A map with the single key `key`, whose value is probed at `rest`.
    struct One<'p> {
        key: Option<&'p str>,
        rest: &'p [&'p str],
    }

    impl<'de> MapAccess<'de> for One<'_> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
            match self.key {
                Some(k) => seed.deserialize(k.into_deserializer()).map(Some),
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let rest = self.rest;
            let key = self.key.take().unwrap_or_default();
            seed.deserialize(Probe { path: rest }).map_err(|e| match e {
                Error::Other(m) if m.starts_with("no such field") => Error::Other(format!("no such field: {key}")),
                e => e,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "rangestart")]
        range_start: String,
        gateway: Option<String>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(default)]
    struct Outer {
        #[serde(rename = "isgateway")]
        is_gateway: bool,
        ipam: Option<Inner>,
        boxed: Box<Inner>,
        raw: serde_json::Value,
    }

    impl Default for Outer {
        fn default() -> Self {
            Outer {
                is_gateway: false,
                ipam: None,
                boxed: Box::new(Inner { range_start: String::new(), gateway: None }),
                raw: serde_json::Value::Null,
            }
        }
    }

    #[test]
    fn config_fields_reads_serde_names() {
        assert_eq!(config_fields::<Outer>(&[]).unwrap(), ["isgateway", "ipam", "boxed", "raw"]);
        assert_eq!(config_fields::<Outer>(&["ipam"]).unwrap(), ["rangestart", "gateway"]);
        assert_eq!(config_fields::<Outer>(&["boxed"]).unwrap(), ["rangestart", "gateway"]);
        assert_eq!(config_fields::<Outer>(&["nope"]).unwrap_err(), "no such field: nope");
        assert!(config_fields::<Outer>(&["raw"]).unwrap_err().starts_with("not a struct"));
        assert!(config_fields::<serde_json::Value>(&[]).is_err());
    }
}
