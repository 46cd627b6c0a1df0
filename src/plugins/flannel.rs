//! flannel: turn the node's flannel lease (`subnet.env`) into a delegate config — `bridge` with
//! host-local over the node's subnet by default — save it, and run the delegate (as
//! flannel-io/cni-plugin does). DEL runs the delegate's DEL from the saved config and removes it.

use crate::cni::plugin::{k, Doc, Kind, Plugin, Version};
use crate::cni::{config, delegate, CniError, CniResult, Command, Ctx};
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const APPLET: Plugin = Plugin {
    name: "flannel",
    about: "flannel: delegate (bridge + host-local by default) configured from flannel's subnet.env",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: None,
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    // it makes the container's interface (through its delegate) and reads no prevResult
    kind: Kind::Interface,
    summary: "Reads the node's subnet from flannel's subnet.env, builds a delegate config (bridge \
              and host-local over the node subnet by default) and runs it; DEL runs the saved \
              delegate config.",
    section: "",
    keys: &[
        k(
            "subnetFile",
            "string",
            "\"/run/flannel/subnet.env\"",
            "FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ",
        ),
        k("dataDir", "string", "\"/var/lib/cni/flannel\"", "where each container's delegate config is saved"),
        k(
            "delegate",
            "object",
            "{\"type\": \"bridge\"}",
            "keys passed to the delegate plugin (they win over flannel's)",
        ),
    ],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "cbr0",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#,
    config: None,
};

pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

/// What flanneld wrote into subnet.env.
#[derive(Debug, Default, PartialEq)]
pub struct SubnetEnv {
    pub networks: Vec<IpNet>,
    pub subnet: Option<IpNet>,
    pub ip6_networks: Vec<IpNet>,
    pub ip6_subnet: Option<IpNet>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

fn parse_cidr(key: &str, s: &str) -> Result<IpNet> {
    s.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|e| anyhow!("invalid {key} {s:?}: {e}"))
}

/// Parse subnet.env text (`KEY=VALUE` lines; unknown keys ignored). Network addresses are
/// truncated to their prefix (`198.18.5.1/24` → `198.18.5.0/24`), as Go's ParseCIDR does.
pub fn parse_subnet_env(text: &str, file: &str) -> Result<SubnetEnv> {
    let mut se = SubnetEnv::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k.trim() {
            "FLANNEL_NETWORK" => {
                for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                    se.networks.push(parse_cidr(k, part)?);
                }
            }
            "FLANNEL_SUBNET" => se.subnet = Some(parse_cidr(k, v)?),
            "FLANNEL_IPV6_NETWORK" => {
                for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                    se.ip6_networks.push(parse_cidr(k, part)?);
                }
            }
            "FLANNEL_IPV6_SUBNET" => se.ip6_subnet = Some(parse_cidr(k, v)?),
            "FLANNEL_MTU" => {
                se.mtu = Some(v.trim().parse::<u32>().map_err(|e| anyhow!("invalid FLANNEL_MTU {v:?}: {e}"))?)
            }
            "FLANNEL_IPMASQ" => se.ipmasq = Some(v.trim() == "true"),
            _ => {}
        }
    }
    let mut missing: Vec<&str> = Vec::new();
    if se.networks.is_empty() && se.ip6_networks.is_empty() {
        missing.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
    }
    if se.subnet.is_none() && se.ip6_subnet.is_none() {
        missing.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
    }
    if se.mtu.is_none() {
        missing.push("FLANNEL_MTU");
    }
    if se.ipmasq.is_none() {
        missing.push("FLANNEL_IPMASQ");
    }
    if !missing.is_empty() {
        bail!("{file} is missing {}", missing.join(", "));
    }
    Ok(se)
}

/// A top-level key of the raw config, matched case-insensitively (last spelling wins), as Go
/// decodes flannel's NetConf struct; the values themselves keep their key case.
fn key<'a>(raw: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    raw.iter().filter(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_null()).map(|(_, v)| v).next_back()
}

struct Conf {
    subnet_file: String,
    data_dir: PathBuf,
    delegate: Map<String, Value>,
    ipam: Map<String, Value>,
    version: Option<String>,
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let raw = ctx.raw_conf()?;
    let raw = raw.as_object().ok_or_else(|| anyhow!("failed to load netconf: not an object"))?;
    let string = |name: &str, default: &str| -> Result<String> {
        match key(raw, name) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) if s.is_empty() => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => bail!("failed to load netconf: {name} must be a string, not {}", config::kind(other)),
        }
    };
    let object = |name: &str| -> Result<Option<Map<String, Value>>> {
        match key(raw, name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(other) => bail!("failed to load netconf: {name} must be an object, not {}", config::kind(other)),
        }
    };
    let mut delegate = object("delegate")?.unwrap_or_default();
    if let Some(t) = delegate.get("type") {
        if !t.is_string() {
            return Err(CniError::config("'delegate' dictionary, if present, must have (string) 'type' field").into());
        }
    }
    if delegate.contains_key("name") {
        return Err(
            CniError::config("'delegate' dictionary must not have 'name' field, it'll be set by flannel").into()
        );
    }
    if delegate.contains_key("ipam") {
        return Err(
            CniError::config("'delegate' dictionary must not have 'ipam' field, it'll be set by flannel").into()
        );
    }
    if let Some(rc) = object("runtimeConfig")? {
        delegate.insert("runtimeConfig".into(), Value::Object(rc));
    }
    let version = match key(raw, "cniVersion") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Ok(Conf {
        subnet_file: string("subnetFile", DEFAULT_SUBNET_FILE)?,
        data_dir: PathBuf::from(string("dataDir", DEFAULT_DATA_DIR)?),
        delegate,
        ipam: object("ipam")?.unwrap_or_default(),
        version,
    })
}

/// Build the delegate's config from the flannel config and the node's lease.
fn build_delegate(ctx: &Ctx, conf: &Conf, env: &SubnetEnv) -> Result<Map<String, Value>> {
    let mut d = conf.delegate.clone();
    d.insert("name".into(), Value::String(ctx.name.clone()));
    d.entry("type").or_insert_with(|| Value::String("bridge".into()));
    if !d.contains_key("ipMasq") {
        // flannel masquerades itself when FLANNEL_IPMASQ is true; otherwise the delegate should
        d.insert("ipMasq".into(), Value::Bool(!env.ipmasq.unwrap_or(false)));
    }
    if !d.contains_key("mtu") {
        d.insert("mtu".into(), Value::from(env.mtu.unwrap_or(0)));
    }
    if d.get("type").and_then(|t| t.as_str()) == Some("bridge") && !d.contains_key("isGateway") {
        d.insert("isGateway".into(), Value::Bool(true));
    }
    if let Some(v) = &conf.version {
        d.insert("cniVersion".into(), Value::String(v.clone()));
    }
    let mut ipam = conf.ipam.clone();
    ipam.entry("type").or_insert_with(|| Value::String("host-local".into()));
    let mut ranges = Vec::new();
    for sn in [env.subnet, env.ip6_subnet].into_iter().flatten() {
        ranges.push(serde_json::json!([{ "subnet": sn.to_string() }]));
    }
    ipam.insert("ranges".into(), Value::Array(ranges));
    let mut routes = match ipam.get("routes") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => bail!("failed to read ipam.routes: must be an array, not {}", config::kind(other)),
    };
    for nw in env.networks.iter().chain(env.ip6_networks.iter()) {
        routes.push(serde_json::json!({ "dst": nw.to_string() }));
    }
    ipam.insert("routes".into(), Value::Array(routes));
    d.insert("ipam".into(), Value::Object(ipam));
    Ok(d)
}

fn saved_path(data_dir: &Path, container_id: &str) -> PathBuf {
    data_dir.join(container_id)
}

fn save(data_dir: &Path, container_id: &str, bytes: &[u8]) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let p = saved_path(data_dir, container_id);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("failed to write {}", p.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("failed to write {}", p.display()))
}

/// A context for running the delegate on `bytes` (same env, new stdin).
fn delegate_ctx(ctx: &Ctx, command: Command, bytes: Vec<u8>) -> Result<Ctx> {
    let conf = config::parse_folded(&bytes).map_err(|e| anyhow!("failed to parse the delegate config: {e}"))?;
    let version = config::config_version(&conf)?;
    let prev_result = config::prev_result(&conf, &version).ok().flatten();
    Ok(Ctx { command, stdin: bytes, conf, version, prev_result, ..ctx.clone() })
}

fn delegate_type(m: &Map<String, Value>) -> Result<String> {
    m.get("type")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(String::from)
        .ok_or_else(|| anyhow!("delegate config has no type"))
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    let text = std::fs::read_to_string(&conf.subnet_file)
        .with_context(|| format!("failed to load flannel 'subnet.env' file: {}", conf.subnet_file))?;
    let env = parse_subnet_env(&text, &conf.subnet_file)
        .with_context(|| format!("failed to load flannel 'subnet.env' file: {}", conf.subnet_file))?;
    let d = build_delegate(ctx, &conf, &env)?;
    let bytes = serde_json::to_vec(&Value::Object(d.clone()))?;
    tracing::debug!("flannel delegate config: {}", String::from_utf8_lossy(&bytes));
    save(&conf.data_dir, &ctx.container_id, &bytes)?;
    let ty = delegate_type(&d)?;
    let dctx = delegate_ctx(ctx, Command::Add, bytes)?;
    let r = delegate::delegate(&dctx, &ty, Command::Add).context("failed to delegate add")?;
    r.ok_or_else(|| anyhow!("delegate {ty} returned no result"))
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let p = saved_path(&conf.data_dir, &ctx.container_id);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        // already gone: nothing left to undo
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("failed to read {}: {e}", p.display()),
    };
    let saved: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("failed to parse netconf: {e}"))?;
    let ty = delegate_type(&saved)?;
    let dctx = delegate_ctx(ctx, Command::Del, bytes)?;
    delegate::delegate(&dctx, &ty, Command::Del)?;
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("failed to remove {}: {e}", p.display())),
    }
}

/// CHECK (flannel-io/cni-plugin does nothing here): the delegate's CHECK on the saved config,
/// with our prevResult.
fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let p = saved_path(&conf.data_dir, &ctx.container_id);
    let bytes = std::fs::read(&p).with_context(|| format!("no saved delegate config {}", p.display()))?;
    let mut saved: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("failed to parse netconf: {e}"))?;
    let raw = ctx.raw_conf()?;
    if let Some(prev) = raw.as_object().and_then(|m| key(m, "prevResult")) {
        saved.insert("prevResult".into(), prev.clone());
    }
    let ty = delegate_type(&saved)?;
    let dctx = delegate_ctx(ctx, Command::Check, serde_json::to_vec(&Value::Object(saved))?)?;
    delegate::delegate(&dctx, &ty, Command::Check).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str =
        "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn subnet_env() {
        let se = parse_subnet_env(ENV, "f").unwrap();
        assert_eq!(se.networks, vec!["198.18.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(se.subnet, Some("198.18.5.0/24".parse().unwrap()));
        assert_eq!((se.mtu, se.ipmasq), (Some(1450), Some(true)));
        let v6 = parse_subnet_env(
            "FLANNEL_IPV6_NETWORK=fd00:10::/56,fd00:20::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\nOTHER=x\n",
            "f",
        )
        .unwrap();
        assert_eq!(v6.ip6_networks.len(), 2);
        assert_eq!(v6.ip6_subnet, Some("fd00:10:0:5::/64".parse().unwrap()));
        let e = parse_subnet_env("FLANNEL_MTU=1\n", "/x").unwrap_err().to_string();
        assert_eq!(
            e,
            "/x is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_IPMASQ"
        );
        assert!(parse_subnet_env("FLANNEL_SUBNET=bad\n", "f").is_err());
    }

    fn ctx_for(conf: &str) -> Ctx {
        Ctx {
            stdin: conf.as_bytes().to_vec(),
            conf: config::parse_folded(conf.as_bytes()).unwrap(),
            name: "cbr0".into(),
            container_id: "c1".into(),
            ..Ctx::new(Command::Add)
        }
    }

    #[test]
    fn delegate_defaults_and_passthrough() {
        let se = parse_subnet_env(ENV, "f").unwrap();
        let ctx = ctx_for(
            r#"{"name":"cbr0","cniVersion":"0.3.1","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#,
        );
        let d = build_delegate(&ctx, &load(&ctx).unwrap(), &se).unwrap();
        assert_eq!(
            Value::Object(d),
            serde_json::json!({
                "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge", "mtu": 1450, "ipMasq": false,
                "isGateway": true, "hairpinMode": true, "isDefaultGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.5.0/24"}]], "routes": [{"dst": "198.18.0.0/16"}]}
            })
        );
        // delegate values win; ipam extras and routes are kept
        let ctx = ctx_for(
            r#"{"name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":"198.19.0.0/16"}],"dataDir":"/d"},"delegate":{"type":"ptp","mtu":1400,"ipMasq":true},"runtimeConfig":{"ips":["198.18.5.9"]}}"#,
        );
        let d = build_delegate(&ctx, &load(&ctx).unwrap(), &se).unwrap();
        assert_eq!(d["type"], "ptp");
        assert_eq!(d["mtu"], 1400);
        assert_eq!(d["ipMasq"], true);
        assert!(d.get("isGateway").is_none());
        assert!(d.get("cniVersion").is_none());
        assert_eq!(d["runtimeConfig"], serde_json::json!({"ips": ["198.18.5.9"]}));
        assert_eq!(d["ipam"]["routes"], serde_json::json!([{"dst": "198.19.0.0/16"}, {"dst": "198.18.0.0/16"}]));
        assert_eq!(d["ipam"]["dataDir"], "/d");
        for bad in [r#"{"delegate":{"name":"x"}}"#, r#"{"delegate":{"ipam":{}}}"#, r#"{"delegate":{"type":1}}"#] {
            assert!(load(&ctx_for(bad)).is_err(), "{bad}");
        }
    }
}
