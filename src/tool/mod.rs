//! `cni-multi tool` — cnitool with libcni built in (also run when the binary is called `cnitool`).
//!
//! ```text
//! cni-multi tool add|check|del NETWORK NETNS [-i IFNAME]
//! cni-multi tool gc NETWORK [NETNS] [--keep CONTAINERID/IFNAME]...
//! cni-multi tool status NETWORK [NETNS]
//! cni-multi tool validate FILE|NETWORK
//! ```
//! Environment as cnitool: NETCONFPATH (default /etc/cni/net.d), CNI_PATH (default /opt/cni/bin),
//! CNI_ARGS, CAP_ARGS (JSON object), CNI_IFNAME (default eth0); plus CNI_CACHE_DIR (default
//! /var/lib/cni) for the result cache.

pub mod cache;
pub mod conf;

pub mod run;
pub mod validate;

use crate::cni::{env, CniError};
use run::{Runtime, Tool};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_NETCONFPATH: &str = "/etc/cni/net.d";
pub const DEFAULT_CNI_PATH: &str = "/opt/cni/bin";

fn usage() -> String {
    "Usage: cni-multi tool add|check|del NETWORK NETNS [-i IFNAME]\n       \
     cni-multi tool gc NETWORK [NETNS] [--keep CONTAINERID/IFNAME]...\n       \
     cni-multi tool status NETWORK [NETNS]\n       \
     cni-multi tool validate FILE|NETWORK\n\n\
     Environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH (default /opt/cni/bin), CNI_ARGS,\n\
     CAP_ARGS (JSON object of capability arguments), CNI_IFNAME (default eth0),\n\
     CNI_CACHE_DIR (result cache, default /var/lib/cni).\n\
     Also runs as `cnitool` (argv[0]).\n"
        .to_string()
}

/// Parsed command line.
#[derive(Debug, Default, PartialEq)]
struct Cmd {
    verb: String,
    network: String,
    netns: Option<String>,
    ifname: Option<String>,
    keep: Vec<(String, String)>,
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let mut it = args.iter();
    let mut pos: Vec<String> = Vec::new();
    let mut c = Cmd::default();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-i" | "--ifname" => c.ifname = Some(it.next().ok_or("-i needs an interface name")?.clone()),
            "--keep" => {
                let v = it.next().ok_or("--keep needs CONTAINERID/IFNAME")?;
                let (id, ifn) = v.split_once('/').ok_or("--keep needs CONTAINERID/IFNAME")?;
                c.keep.push((id.to_string(), ifn.to_string()));
            }
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown flag {s}")),
            s => pos.push(s.to_string()),
        }
    }
    let mut p = pos.into_iter();
    c.verb = p.next().ok_or("missing command")?;
    c.network = p.next().ok_or("missing network name")?;
    c.netns = p.next();
    if p.next().is_some() {
        return Err("too many arguments".into());
    }
    Ok(c)
}

fn getenv(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Entry point for `cni-multi tool ARGS…` and for argv[0] `cnitool` (`args` excludes the program name).
pub fn main(args: &[String]) -> i32 {
    crate::logging::init(&getenv);
    if args.is_empty() || matches!(args.first().map(String::as_str), Some("-h" | "--help" | "help")) {
        let _ = std::io::stderr().write_all(usage().as_bytes());
        return if args.is_empty() { 2 } else { 0 };
    }
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cni-multi tool: {e}\n{}", usage());
            return 2;
        }
    };
    let confdir = PathBuf::from(getenv("NETCONFPATH").filter(|s| !s.is_empty()).unwrap_or(DEFAULT_NETCONFPATH.into()));
    let cni_path = env::split_path(&getenv("CNI_PATH").unwrap_or_else(|| DEFAULT_CNI_PATH.into()));
    if cmd.verb == "validate" {
        return validate_main(&cmd.network, &confdir, &cni_path);
    }
    let cache_dir =
        PathBuf::from(getenv("CNI_CACHE_DIR").filter(|s| !s.is_empty()).unwrap_or(cache::DEFAULT_CACHE_DIR.into()));
    let tool = Tool::new(cni_path, cache_dir);
    let mut out = std::io::stdout().lock();
    match run_verb(&tool, &cmd, &confdir) {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cni-multi tool: {}", e.msg);
            let _ = out.write_all(e.to_json().as_bytes());
            let _ = out.flush();
            1
        }
    }
}

fn runtime_from_env(netns: &str, ifname_flag: Option<&str>) -> Result<Runtime, CniError> {
    let mut rt =
        Runtime { netns: run::abs_path(netns).map_err(|e| CniError::internal(e.to_string()))?, ..Default::default() };
    rt.container_id = crate::names::cnitool_container_id(&rt.netns);
    rt.ifname = ifname_flag.map(String::from).or_else(|| getenv("CNI_IFNAME")).unwrap_or_else(|| "eth0".into());
    if let Some(raw) = getenv("CNI_ARGS").filter(|s| !s.is_empty()) {
        rt.args = parse_cni_args(&raw)?;
    }
    if let Some(raw) = getenv("CAP_ARGS").filter(|s| !s.is_empty()) {
        let v: Value =
            serde_json::from_str(&raw).map_err(|e| CniError::internal(format!("failed to parse CAP_ARGS: {e}")))?;
        rt.cap_args = match v {
            Value::Object(m) => m,
            _ => return Err(CniError::internal("CAP_ARGS must be a JSON object")),
        };
    }
    Ok(rt)
}

/// cnitool's CNI_ARGS parser: `K=V;K=V`, exactly one `=` per pair, no empty key or value.
pub fn parse_cni_args(raw: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in raw.split(';') {
        let kv: Vec<&str> = pair.split('=').collect();
        match kv.as_slice() {
            [k, v] if !k.is_empty() && !v.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => return Err(CniError::internal(format!("invalid CNI_ARGS pair {pair:?}"))),
        }
    }
    Ok(out)
}

fn run_verb(tool: &Tool, cmd: &Cmd, confdir: &Path) -> Result<String, CniError> {
    let list = conf::find_network(confdir, &cmd.network).map_err(|e| CniError::internal(format!("{e:#}")))?;
    let need_netns =
        || cmd.netns.as_deref().ok_or_else(|| CniError::env(format!("{} needs a NETNS argument", cmd.verb)));
    match cmd.verb.as_str() {
        "add" => {
            let rt = runtime_from_env(need_netns()?, cmd.ifname.as_deref())?;
            match tool.add(&list, &rt)? {
                Some(r) => r.to_json(&list.version),
                None => Ok(String::new()),
            }
        }
        "del" => {
            let rt = runtime_from_env(need_netns()?, cmd.ifname.as_deref())?;
            tool.del(&list, &rt).map(|_| String::new())
        }
        "check" => {
            let rt = runtime_from_env(need_netns()?, cmd.ifname.as_deref())?;
            tool.check(&list, &rt).map(|_| String::new())
        }
        "gc" => {
            let keep = (!cmd.keep.is_empty()).then_some(cmd.keep.as_slice());
            tool.gc(&list, keep).map(|_| String::new())
        }
        "status" => tool.status(&list).map(|_| String::new()),
        other => Err(CniError::env(format!("unknown command {other:?}; use add, check, del, gc, status or validate"))),
    }
}

/// Validate a file, or the network of that name in NETCONFPATH. One line per problem:
/// `FILE: $.json.path: message`. Exit 0 when clean, 1 otherwise.
fn validate_main(target: &str, confdir: &Path, cni_path: &[PathBuf]) -> i32 {
    let (label, problems) = if Path::new(target).is_file() {
        match std::fs::read(target) {
            Ok(b) => (target.to_string(), validate::validate_bytes(&b, cni_path)),
            Err(e) => {
                (target.to_string(), vec![validate::Problem { path: "$".into(), msg: format!("cannot read: {e}") }])
            }
        }
    } else {
        match conf::find_network(confdir, target) {
            Ok(list) => {
                // the list as loaded (sibling-directory plugins included)
                let mut v: Map<String, Value> = serde_json::from_slice(&list.bytes).unwrap_or_default();
                v.insert(
                    "plugins".into(),
                    Value::Array(list.plugins.iter().map(|p| Value::Object(p.raw.clone())).collect()),
                );
                (format!("network {target}"), validate::validate_list(&Value::Object(v), cni_path))
            }
            Err(e) => {
                (format!("network {target}"), vec![validate::Problem { path: "$".into(), msg: format!("{e:#}") }])
            }
        }
    };
    let mut out = String::new();
    for p in &problems {
        out.push_str(&format!("{label}: {}: {}\n", p.path, p.msg));
    }
    if problems.is_empty() {
        out.push_str(&format!("{label}: OK\n"));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    i32::from(!problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_line() {
        let c = parse(&s(&["add", "net", "/run/netns/x", "-i", "net1"])).unwrap();
        assert_eq!(
            (c.verb.as_str(), c.network.as_str(), c.netns.as_deref(), c.ifname.as_deref()),
            ("add", "net", Some("/run/netns/x"), Some("net1"))
        );
        let c = parse(&s(&["gc", "net", "--keep", "c1/eth0"])).unwrap();
        assert_eq!(c.keep, vec![("c1".to_string(), "eth0".to_string())]);
        assert!(parse(&s(&["add"])).is_err());
        assert!(parse(&s(&["add", "n", "ns", "extra"])).is_err());
        assert!(parse(&s(&["add", "n", "--bogus"])).is_err());
        assert_eq!(parse_cni_args("A=1;B=2").unwrap(), vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        for bad in ["A", "A=", "=1", "A=1=2", "A=1;"] {
            assert!(parse_cni_args(bad).is_err(), "{bad}");
        }
    }
}
