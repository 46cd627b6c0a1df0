//! Supported spec versions, the VERSION reply and the skel's version gates.

use super::error::{code, CniError};
use super::result::{go_escape, go_quote, go_quote_list};
use super::Command;
use crate::applets::Applet;

/// Every spec version cni-multi speaks, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The library's current version (printed by VERSION whatever the input says).
pub const CURRENT: &str = "1.1.0";

/// Parse `X[.Y[.Z]]` like the Go library (`""` is 0.1.0). Error texts follow Go's.
pub fn parse(v: &str) -> Result<(i64, i64, i64), String> {
    if v.is_empty() {
        return Ok((0, 1, 0));
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
    Ok((major, minor, micro))
}

/// `a >= b` as Go's `version.GreaterThanOrEqualTo`.
pub fn gte(a: &str, b: &str) -> Result<bool, String> {
    Ok(parse(a)? >= parse(b)?)
}

/// The versions an applet supports: every supported version from its `min_version` up.
pub fn supported_by(applet: &Applet) -> Vec<&'static str> {
    SUPPORTED.iter().copied().filter(|v| gte(v, applet.min_version).unwrap_or(true)).collect()
}

/// The VERSION reply: compact JSON plus a trailing newline.
pub fn version_reply(applet: &Applet) -> String {
    let mut s = String::from("{\"cniVersion\":");
    go_escape(CURRENT, &mut s);
    s.push_str(",\"supportedVersions\":[");
    for (i, v) in supported_by(applet).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        go_escape(v, &mut s);
    }
    s.push_str("]}\n");
    s
}

/// The "about" text printed on stderr when CNI_COMMAND is empty.
pub fn about_text(applet: &Applet) -> String {
    format!(
        "CNI {} plugin cni-multi v{}\nCNI protocol versions supported: {}\n",
        applet.name,
        env!("CARGO_PKG_VERSION"),
        supported_by(applet).join(", ")
    )
}

/// Exact membership, as the Go Reconciler checks it.
pub fn check_compatible(config_version: &str, supported: &[&str]) -> Result<(), CniError> {
    if supported.contains(&config_version) {
        return Ok(());
    }
    Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(format!(
        "config is {}, plugin supports {}",
        go_quote(config_version),
        go_quote_list(supported)
    )))
}

/// The skel's per-verb version gate: ADD/DEL need an exactly supported version; CHECK needs
/// >= 0.4.0, GC and STATUS >= 1.1.0, each with a plugin version at least as new.
pub fn gate(command: Command, config_version: &str, supported: &[&str]) -> Result<(), CniError> {
    let floor = match command {
        Command::Check => "0.4.0",
        Command::Gc | Command::Status => "1.1.0",
        _ => return check_compatible(config_version, supported),
    };
    let verb = command.as_str();
    let decode = |e: String| CniError::new(code::DECODE, e);
    if !gte(config_version, floor).map_err(decode)? {
        return Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("config version does not allow {verb}")));
    }
    for plugin_version in supported {
        if gte(plugin_version, config_version).map_err(decode)? {
            return check_compatible(config_version, supported);
        }
    }
    Err(CniError::new(code::INCOMPATIBLE_VERSION, format!("plugin version does not allow {verb}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applet(min: &'static str) -> Applet {
        fn add(_: &crate::cni::Ctx) -> anyhow::Result<crate::cni::CniResult> {
            Ok(Default::default())
        }
        fn verb(_: &crate::cni::Ctx) -> anyhow::Result<()> {
            Ok(())
        }
        Applet {
            name: "t",
            about: "t",
            min_version: min,
            cni_args: None,
            add,
            del: verb,
            check: verb,
            gc: None,
            status: None,
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
        assert_eq!(supported_by(&applet("0.4.0")), ["0.4.0", "1.0.0", "1.1.0"]);
        assert!(about_text(&applet("0.1.0")).ends_with("supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"));
    }

    #[test]
    fn parse_like_go() {
        assert_eq!(parse("").unwrap(), (0, 1, 0));
        assert_eq!(parse("1").unwrap(), (1, 0, 0));
        assert_eq!(parse("0.4").unwrap(), (0, 4, 0));
        assert_eq!(parse("1.2.3.4").unwrap_err(), "invalid version \"1.2.3.4\": too many parts");
        assert_eq!(
            parse("a.1").unwrap_err(),
            "failed to convert major version part \"a\": strconv.Atoi: parsing \"a\": invalid syntax"
        );
        assert!(parse("1.0.99999999999999999999").unwrap_err().ends_with("value out of range"));
        assert!(gte("1.10.0", "1.9.0").unwrap());
        assert!(!gte("0.3.1", "0.4.0").unwrap());
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
        assert!(gate(Command::Add, "0.2.0", &["0.3.0", "1.0.0"]).is_err());
    }
}
