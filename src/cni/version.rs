//! Spec versions: the [`Version`] type, the versions cni-multi speaks, the VERSION reply and the
//! skel's version gates.

use super::error::{code, CniError};
use super::plugin::Plugin;
use super::result::{go_escape, go_quote, go_quote_list};
use super::Command;

/// A spec version `major.minor.micro`, parsed once (Go's rules: `""` is 0.1.0, missing parts
/// are 0) and compared as numbers. Prints as `major.minor.micro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: i64,
    pub minor: i64,
    pub micro: i64,
}

impl Version {
    pub const fn new(major: i64, minor: i64, micro: i64) -> Version {
        Version { major, minor, micro }
    }

    /// Parse `X[.Y[.Z]]` like the Go library (`""` is 0.1.0). Error texts follow Go's.
    pub fn parse(v: &str) -> Result<Version, String> {
        if v.is_empty() {
            return Ok(Version::new(0, 1, 0));
        }
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() >= 4 {
            return Err(format!("invalid version {}: too many parts", go_quote(v)));
        }
        let num = |what: &str, p: &str| -> Result<i64, String> {
            p.parse::<i64>().map_err(|e| {
                let why = match e.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => "value out of range",
                    _ => "invalid syntax",
                };
                format!(
                    "failed to convert {what} version part {}: strconv.Atoi: parsing {}: {why}",
                    go_quote(p),
                    go_quote(p)
                )
            })
        };
        let major = num("major", parts.first().copied().unwrap_or(""))?;
        let minor = match parts.get(1) {
            Some(p) => num("minor", p)?,
            None => 0,
        };
        let micro = match parts.get(2) {
            Some(p) => num("micro", p)?,
            None => 0,
        };
        Ok(Version::new(major, minor, micro))
    }

    /// `text >= self` for a version text; an unparseable text is not.
    pub fn reached_by(self, text: &str) -> bool {
        Version::parse(text).is_ok_and(|v| v >= self)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        Version::parse(s)
    }
}

/// Every spec version cni-multi speaks, oldest first.
pub const SUPPORTED: &[Version] = &[
    Version::new(0, 1, 0),
    Version::new(0, 2, 0),
    Version::new(0, 3, 0),
    Version::new(0, 3, 1),
    Version::new(0, 4, 0),
    Version::new(1, 0, 0),
    Version::new(1, 1, 0),
];

/// The library's current version (printed by VERSION whatever the input says).
pub const CURRENT: Version = Version::new(1, 1, 0);

/// The first version with CHECK.
pub const WITH_CHECK: Version = Version::new(0, 4, 0);
/// The first version with GC and STATUS.
pub const WITH_GC: Version = Version::new(1, 1, 0);

/// Whether `text` is exactly one of the [`SUPPORTED`] versions as printed ("0.4" is not).
pub fn is_supported(text: &str) -> bool {
    SUPPORTED.iter().any(|v| v.to_string() == text)
}

/// The supported versions joined by `sep`.
pub fn join(versions: &[Version], sep: &str) -> String {
    versions.iter().map(Version::to_string).collect::<Vec<_>>().join(sep)
}

/// The versions a plugin supports: every supported version from its `min_version` up.
pub fn supported_by(plugin: &Plugin) -> Vec<Version> {
    SUPPORTED.iter().copied().filter(|v| *v >= plugin.min_version).collect()
}

/// The VERSION reply: compact JSON plus a trailing newline.
pub fn version_reply(plugin: &Plugin) -> String {
    let mut s = String::from("{\"cniVersion\":");
    go_escape(&CURRENT.to_string(), &mut s);
    s.push_str(",\"supportedVersions\":[");
    for (i, v) in supported_by(plugin).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        go_escape(&v.to_string(), &mut s);
    }
    s.push_str("]}\n");
    s
}

/// The "about" text printed on stderr when CNI_COMMAND is empty.
pub fn about_text(plugin: &Plugin) -> String {
    format!(
        "CNI {} plugin cni-multi v{}\nCNI protocol versions supported: {}\n",
        plugin.name,
        env!("CARGO_PKG_VERSION"),
        join(&supported_by(plugin), ", ")
    )
}

/// Exact membership, as the Go Reconciler checks it.
pub fn check_compatible(config_version: &str, supported: &[Version]) -> Result<(), CniError> {
    // one of them, and printed as the config has it ("0.4.00" is not "0.4.0")
    let hit = Version::parse(config_version).ok().filter(|v| supported.contains(v));
    if hit.is_some_and(|v| v.to_string() == config_version) {
        return Ok(());
    }
    let texts: Vec<String> = supported.iter().map(Version::to_string).collect();
    Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(format!(
        "config is {}, plugin supports {}",
        go_quote(config_version),
        go_quote_list(&texts)
    )))
}

/// The skel's per-verb version gate: ADD/DEL need an exactly supported version; CHECK needs
/// >= 0.4.0, GC and STATUS >= 1.1.0, each with a plugin version at least as new.
pub fn gate(command: Command, config_version: &str, supported: &[Version]) -> Result<(), CniError> {
    let floor = match command {
        Command::Check => WITH_CHECK,
        Command::Gc | Command::Status => WITH_GC,
        _ => return check_compatible(config_version, supported),
    };
    let verb = command.as_str();
    let config = Version::parse(config_version).map_err(|e| CniError::new(code::DECODE, e))?;
    if config < floor {
        return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("config version does not allow {verb}")));
    }
    if supported.iter().any(|plugin_version| *plugin_version >= config) {
        return check_compatible(config_version, supported);
    }
    Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("plugin version does not allow {verb}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applet(min: &'static str) -> Plugin {
        fn add(_: &crate::cni::Ctx) -> anyhow::Result<crate::cni::CniResult> {
            Ok(Default::default())
        }
        fn verb(_: &crate::cni::Ctx) -> anyhow::Result<()> {
            Ok(())
        }
        const DOC: crate::cni::plugin::Doc = crate::cni::plugin::Doc {
            kind: crate::cni::plugin::Kind::Meta,
            summary: "",
            section: "",
            keys: &[],
            notes: &[],
            example: "{}",
            config: None,
        };
        Plugin {
            name: "t",
            about: "t",
            min_version: Version::parse(min).unwrap(),
            cni_args: None,
            add,
            del: verb,
            check: verb,
            gc: None,
            status: None,
            subcommands: &[],
            doc: &DOC,
        }
    }

    #[test]
    fn version_reply_is_compact_with_newline() {
        assert_eq!(
            version_reply(&applet("0.1.0")),
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
        assert_eq!(
            version_reply(&applet("0.3.0")),
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
        assert_eq!(join(&supported_by(&applet("0.4.0")), " "), "0.4.0 1.0.0 1.1.0");
        assert!(about_text(&applet("0.1.0")).ends_with("supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"));
    }

    #[test]
    fn parse_like_go() {
        let parse = Version::parse;
        assert_eq!(parse("").unwrap(), Version::new(0, 1, 0));
        assert_eq!(parse("1").unwrap(), Version::new(1, 0, 0));
        assert_eq!(parse("0.4").unwrap(), Version::new(0, 4, 0));
        assert_eq!(parse("1.2.3.4").unwrap_err(), "invalid version \"1.2.3.4\": too many parts");
        assert_eq!(
            parse("a.1").unwrap_err(),
            "failed to convert major version part \"a\": strconv.Atoi: parsing \"a\": invalid syntax"
        );
        assert!(parse("1.0.99999999999999999999").unwrap_err().ends_with("value out of range"));
        assert!(parse("1.10.0").unwrap() >= parse("1.9.0").unwrap());
        assert!(parse("0.3.1").unwrap() < parse("0.4.0").unwrap());
        assert_eq!(parse("0.10.0").unwrap().to_string(), "0.10.0");
        // (moved from ipam/common.rs) an unparseable version reaches nothing
        let v030 = Version::new(0, 3, 0);
        assert!(v030.reached_by("0.3.0") && v030.reached_by("1.0.0") && v030.reached_by("0.10.0"));
        assert!(!v030.reached_by("0.2.0") && !v030.reached_by("bogus"));
        assert!(is_supported("0.4.0") && !is_supported("0.4"));
    }

    #[test]
    fn gates() {
        let all = SUPPORTED;
        let e = gate(Command::Add, "9.9.9", all).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (1, "incompatible CNI versions"));
        assert_eq!(
            e.details,
            "config is \"9.9.9\", plugin supports [\"0.1.0\" \"0.2.0\" \"0.3.0\" \"0.3.1\" \"0.4.0\" \"1.0.0\" \"1.1.0\"]"
        );
        assert!(gate(Command::Del, "0.2.0", all).is_ok());
        assert_eq!(gate(Command::Check, "0.3.1", all).unwrap_err().msg, "config version does not allow CHECK");
        assert!(gate(Command::Check, "0.4.0", all).is_ok());
        assert_eq!(gate(Command::Check, "9.0.0", all).unwrap_err().msg, "plugin version does not allow CHECK");
        assert_eq!(gate(Command::Check, "0.4", all).unwrap_err().msg, "incompatible CNI versions");
        assert_eq!(gate(Command::Check, "x", all).unwrap_err().code, 6);
        assert_eq!(gate(Command::Gc, "1.0.0", all).unwrap_err().msg, "config version does not allow GC");
        assert_eq!(gate(Command::Status, "1.0.0", all).unwrap_err().msg, "config version does not allow STATUS");
        assert!(gate(Command::Status, "1.1.0", all).is_ok());
        assert!(gate(Command::Add, "0.2.0", &[Version::new(0, 3, 0), Version::new(1, 0, 0)]).is_err());
    }
}
