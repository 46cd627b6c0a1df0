//! The CNI_* environment, read and validated exactly as the reference skel does
//! (checklist §1.2 steps 1, 2 and 8; CNI_ARGS per §1.6).

use super::config::is_valid_id;
use super::error::CniError;
use super::result::go_quote_list;
use super::Command;
use std::path::PathBuf;

/// The raw CNI_* variables of one invocation (empty string = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub netns_override: String,
}

/// Which verbs require a variable.
fn required(var: &str, cmd: &str) -> bool {
    match var {
        "CNI_COMMAND" => true,
        "CNI_CONTAINERID" | "CNI_IFNAME" => matches!(cmd, "ADD" | "CHECK" | "DEL"),
        "CNI_NETNS" => matches!(cmd, "ADD" | "CHECK"),
        "CNI_PATH" => matches!(cmd, "ADD" | "CHECK" | "DEL" | "GC" | "STATUS"),
        _ => false,
    }
}

/// Read the environment like the Go skel: variables are visited in a fixed order; a present,
/// required value failing validation is reported at once, missing required ones are collected
/// and reported together (code 4). `Ok(None)` means CNI_COMMAND is empty: print the about text.
pub fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Env>, CniError> {
    let val = |k: &str| get(k).unwrap_or_default();
    let command = val("CNI_COMMAND");
    let cmd = command.as_str();
    let mut env = Env { command: command.clone(), ..Default::default() };
    let mut missing: Vec<&str> = Vec::new();
    if command.is_empty() {
        missing.push("CNI_COMMAND");
    }
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "CNI_NETNS_OVERRIDE"] {
        let v = val(var);
        let req = required(var, cmd);
        if v.is_empty() {
            if req {
                missing.push(var);
            }
        } else if req {
            match var {
                "CNI_CONTAINERID" => validate_container_id(&v)?,
                "CNI_IFNAME" => validate_ifname_for(cmd, &v)?,
                _ => {}
            }
        }
        match var {
            "CNI_CONTAINERID" => env.container_id = v,
            "CNI_NETNS" => env.netns = v,
            "CNI_IFNAME" => env.ifname = v,
            "CNI_ARGS" => env.args = v,
            "CNI_PATH" => env.path = v,
            _ => env.netns_override = v,
        }
    }
    if command.is_empty() {
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(CniError::env(format!("required env variables [{}] missing", missing.join(","))));
    }
    Ok(Some(env))
}

/// The verb named by CNI_COMMAND (case-sensitive, as the reference).
pub fn parse_command(s: &str) -> Option<Command> {
    Some(match s {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "GC" => Command::Gc,
        "STATUS" => Command::Status,
        "VERSION" => Command::Version,
        _ => return None,
    })
}

/// CNI_CONTAINERID: missing is code 3 (Go utils), bad characters code 4 with the id as details.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(super::code::UNKNOWN_CONTAINER, "missing containerID"));
    }
    if !is_valid_id(id) {
        return Err(CniError::env("invalid characters in containerID").with_details(id));
    }
    Ok(())
}

/// CNI_IFNAME as the reference's `ValidateInterfaceName` checks it (1–15 bytes, not `.`/`..`, no
/// `/`, `:` or whitespace rune as Go's `unicode.IsSpace` sees it, which is Rust's
/// `char::is_whitespace`), and no `%`: the kernel reads a new link's name with a `%` as a
/// template (`b%d` becomes `b0`), so the interface would get another name than the one asked
/// for, and the plugin would neither find it nor delete it (the reference accepts it and leaks
/// the links).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    validate_ifname_as_reference(name)?;
    if name.contains('%') {
        return Err(CniError::env("interface name contains %")
            .with_details("the kernel expands % in a new interface's name (a name template)"));
    }
    Ok(())
}

/// CNI_IFNAME for `command`: [`validate_ifname`], except on DEL, which takes what the reference
/// takes. A name with `%` cannot name an attachment that an ADD made (ours refuses it, the
/// reference's fails), and DEL must succeed when there is nothing to remove: it finds no such
/// link and releases what IPAM holds for the name (a reservation the reference's host-local made).
pub fn validate_ifname_for(command: &str, name: &str) -> Result<(), CniError> {
    if command == "DEL" {
        validate_ifname_as_reference(name)
    } else {
        validate_ifname(name)
    }
}

/// The reference's `ValidateInterfaceName`, exactly (code 4, its messages).
pub fn validate_ifname_as_reference(name: &str) -> Result<(), CniError> {
    name_rules(name, |n| n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()))
}

/// A name from the config (or prevResult) that the kernel gets as a link's name: the kernel's
/// `dev_valid_name` (1–15 bytes, not `.`/`..`, no `/`, `:` or a byte that the kernel's Latin-1
/// `isspace` (lib/ctype.c) calls space: `\t \n \v \f \r`, space and 0xA0, so `"b\u{2028}"` and
/// `"b\u{85}"` are fine but `"b\u{a0}"` and `"bà"` (C3 A0) are not), and no `%` (a template the
/// kernel expands). The messages are [`validate_ifname`]'s; callers say which key is wrong.
pub fn validate_link_name(name: &str) -> Result<(), CniError> {
    // lib/ctype.c: _S is set for 9-13, 32 and 160 only
    let kernel_space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0);
    name_rules(name, |n| n.bytes().any(|b| b == b'/' || b == b':' || kernel_space(b)))?;
    if name.contains('%') {
        return Err(CniError::env("interface name contains %")
            .with_details("the kernel expands % in a new interface's name (a name template)"));
    }
    Ok(())
}

/// The rules both name checks share, in the reference's order and words (code 4): not empty, at
/// most 15 bytes, not `.` or `..`, and nothing `forbidden` finds (`/`, `:`, whitespace).
fn name_rules(name: &str, forbidden: impl Fn(&str) -> bool) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::env("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(CniError::env("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(CniError::env("interface name is . or .."));
    }
    if forbidden(name) {
        return Err(CniError::env("interface name contains / or : or whitespace characters"));
    }
    Ok(())
}

/// CNI_ARGS for a plugin that declares its keys: the Go library's `LoadArgs` rules.
/// Every pair must split on `=` into exactly two parts (so values with `=` are rejected);
/// keys are case-sensitive; unknown keys fail unless `IgnoreUnknown` is `1`/`true`.
/// Errors are plain (code 999), with the reference's texts.
pub fn parse_args_strict(raw: &str, known: &[&str]) -> Result<Vec<(String, String)>, CniError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let mut pairs = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    let mut ignore_unknown = false;
    for pair in raw.split(';') {
        let kv: Vec<&str> = pair.split('=').collect();
        let (k, v) = match kv.as_slice() {
            [k, v] => (*k, *v),
            _ => return Err(CniError::internal(format!("ARGS: invalid pair {}", super::result::go_quote(pair)))),
        };
        if k == "IgnoreUnknown" {
            ignore_unknown = match v.to_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                other => {
                    return Err(CniError::internal(format!(
                        "ARGS: error parsing value of pair {}: boolean unmarshal error: invalid input {other}",
                        super::result::go_quote(pair)
                    )))
                }
            };
        } else if !known.contains(&k) {
            unknown.push(pair);
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(CniError::internal(format!("ARGS: unknown args {}", go_quote_list(&unknown))));
    }
    Ok(pairs)
}

/// CNI_ARGS for a plugin that ignores it (or parses loosely, like dhcp): every `K=V` pair,
/// split on the first `=`; pairs without `=` or with an empty key are skipped.
pub fn parse_args_lenient(raw: &str) -> Vec<(String, String)> {
    raw.split(';')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// CNI_PATH split on `:` as Go's `filepath.SplitList` splits it: an empty CNI_PATH is no entry,
/// empty entries are kept (`":::"` is four). They are shown in "failed to find plugin" errors as
/// the reference shows them, but never searched (see `delegate::find_in_path`): Go's lookup
/// takes an empty entry for the working directory, which is not a place to run plugins from.
pub fn split_path(raw: &str) -> Vec<PathBuf> {
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(':').map(PathBuf::from).collect()
}

/// `1` or `true` (any case).
pub fn is_true(s: &str) -> bool {
    s == "1" || s.eq_ignore_ascii_case("true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<Env>, CniError> {
        let m: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        read(&|k| m.get(k).cloned())
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn with(over: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<(&str, &str)> =
            FULL.iter().filter(|(k, _)| !over.iter().any(|(o, _)| o == k)).copied().collect();
        v.extend(over.iter().copied());
        v
    }

    #[test]
    fn missing_vars_listed_in_order() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing")
        );
        let e = env(&[("CNI_COMMAND", "DEL")]).unwrap_err();
        assert_eq!(e.msg, "required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing");
        let e = env(&[("CNI_COMMAND", "GC")]).unwrap_err();
        assert_eq!(e.msg, "required env variables [CNI_PATH] missing");
        assert!(env(&[("CNI_COMMAND", "VERSION")]).unwrap().is_some());
        assert!(env(&[("CNI_COMMAND", "BOGUS")]).unwrap().is_some());
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("CNI_CONTAINERID", "x")]).unwrap(), None);
        let ok = env(FULL).unwrap().unwrap();
        assert_eq!((ok.container_id.as_str(), ok.ifname.as_str()), ("c1", "eth0"));
    }

    #[test]
    fn validation_wins_over_missing() {
        // the bad ifname is reported although CNI_NETNS (earlier) is missing
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "a/b")]).unwrap_err();
        assert_eq!(e.msg, "interface name contains / or : or whitespace characters");
        let e = env(&with(&[("CNI_CONTAINERID", "../x")])).unwrap_err();
        assert_eq!((e.code, e.msg.as_str(), e.details.as_str()), (4, "invalid characters in containerID", "../x"));
        // not validated for verbs that do not require them
        assert!(env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x"), ("CNI_IFNAME", "a b c d e f g h i j")]).is_ok());
    }

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        let e = validate_ifname("abcdefghijklmnop").unwrap_err();
        assert_eq!((e.code, e.details.as_str()), (4, "interface name should be less than 16 characters"));
        for bad in [".", "..", "a:b", "a b", "a\tb", "a\u{a0}b", "é/"] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
        // 8 two-byte chars = 16 bytes: too long
        assert!(validate_ifname("éééééééé").is_err());
        // Go's unicode.IsSpace on runes, as the reference: Unicode spaces are refused
        for bad in ["b\u{2028}", "b\u{85}", "b\u{3000}", "b\u{1680}"] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
        assert!(validate_ifname("bà").is_ok());
    }

    #[test]
    fn ifname_with_a_name_template_is_refused_except_on_del() {
        for bad in ["b%d", "%", "eth%"] {
            let e = validate_ifname(bad).unwrap_err();
            assert_eq!((e.code, e.msg.as_str()), (4, "interface name contains %"), "{bad}");
            for cmd in ["ADD", "CHECK"] {
                assert_eq!(validate_ifname_for(cmd, bad).unwrap_err().code, 4, "{cmd} {bad}");
            }
            assert!(validate_ifname_for("DEL", bad).is_ok(), "DEL {bad}");
        }
        // through the environment: ADD and CHECK refuse it, DEL takes it
        for (cmd, ok) in [("ADD", false), ("CHECK", false), ("DEL", true)] {
            let r = env(&with(&[("CNI_COMMAND", cmd), ("CNI_IFNAME", "b%d")]));
            assert_eq!(r.is_ok(), ok, "{cmd}: {r:?}");
        }
        // DEL still refuses what the reference refuses
        assert_eq!(validate_ifname_for("DEL", "a/b").unwrap_err().code, 4);
    }

    #[test]
    fn link_names_follow_the_kernel_byte_rules() {
        // dev_valid_name tests bytes with the kernel's Latin-1 isspace: only 9-13, 32 and 0xA0
        for ok in ["cni0", "b\u{2028}", "b\u{85}", "b\u{3000}", "é", "abcdefghijklmno"] {
            assert!(validate_link_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "br/0", "br:0", "br 0", "b\t", "b\u{b}", "b\u{a0}", "bà", "b%d", "abcdefghijklmnop"]
        {
            assert_eq!(validate_link_name(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }

    #[test]
    fn cni_args_like_go() {
        let known = &["IP", "MAC"];
        assert_eq!(parse_args_strict("IP=198.18.0.4;MAC=aa", known).unwrap().len(), 2);
        assert_eq!(parse_args_strict("", known).unwrap(), vec![]);
        assert_eq!(parse_args_strict("IP=a=b", known).unwrap_err().msg, "ARGS: invalid pair \"IP=a=b\"");
        assert_eq!(parse_args_strict("IP=1;", known).unwrap_err().msg, "ARGS: invalid pair \"\"");
        let e = parse_args_strict("IP=1;K8S_POD_NAME=p;X=y", known).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (999, "ARGS: unknown args [\"K8S_POD_NAME=p\" \"X=y\"]"));
        // IgnoreUnknown anywhere in the list, any case of true/1
        assert_eq!(parse_args_strict("X=y;IgnoreUnknown=TRUE", known).unwrap().len(), 2);
        assert!(parse_args_strict("IgnoreUnknown=1;X=y", known).is_ok());
        assert!(parse_args_strict("IgnoreUnknown=0;X=y", known).is_err());
        assert_eq!(
            parse_args_strict("IgnoreUnknown=yes", known).unwrap_err().msg,
            "ARGS: error parsing value of pair \"IgnoreUnknown=yes\": boolean unmarshal error: invalid input yes"
        );
        // keys are case-sensitive
        assert!(parse_args_strict("ip=1", known).is_err());
        assert_eq!(
            parse_args_lenient("A=1;;B=x=y;noeq;=v"),
            vec![("A".to_string(), "1".to_string()), ("B".to_string(), "x=y".to_string())]
        );
        assert_eq!(split_path("/a::/b"), vec![PathBuf::from("/a"), PathBuf::new(), PathBuf::from("/b")]);
        assert_eq!(split_path(":::").len(), 4);
        assert!(split_path("").is_empty());
        assert!(is_true("True") && is_true("1") && !is_true("yes"));
    }
}
