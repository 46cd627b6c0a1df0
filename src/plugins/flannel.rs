//! flannel: turn the node's flannel lease (`subnet.env`) into a delegate config — `bridge` with
//! host-local over the node's subnet by default — save it, and run the delegate (as
//! flannel-io/cni-plugin does). DEL runs the delegate's DEL from the saved config and removes it.
//!
//! The config, `subnet.env`, the saved delegate config and the errors follow flannel-io/cni-plugin
//! (flannel.go, flannel_linux.go; containernetworking/cni v1.2.3): the config is decoded as Go's
//! encoding/json decodes its NetConf, the delegate config is written as Go's `json.Marshal` writes
//! the map (sorted keys, numbers as float64, `<>&` escaped), so what the delegate reads and what is
//! saved are the reference's bytes. Where we differ, docs/differences.md says so.

use crate::cni::config::{self, fold_key, kind};
use crate::cni::plugin::{k, Doc, Kind, Plugin, Version};
use crate::cni::result::{fmt_ip, fmt_net, go_escape, go_parse_cidr, go_quote};
use crate::cni::{delegate, CniError, CniResult, Command, Ctx};
use crate::sys::go_errno;
use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
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
            "flanneld's lease: FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_NETWORK, FLANNEL_IPV6_SUBNET \
             (a network and a subnet of either family), FLANNEL_MTU, FLANNEL_IPMASQ",
        ),
        k("dataDir", "string", "\"/var/lib/cni/flannel\"", "where each container's delegate config is saved"),
        k(
            "delegate",
            "object",
            "{\"type\": \"bridge\"}",
            "keys passed to the delegate plugin (they win over flannel's); no `name` or `ipam` in it",
        ),
        k(
            "ipam",
            "object",
            "{\"type\": \"host-local\"}",
            "the delegate's IPAM: its keys are kept, `ranges` is one range set per subnet of subnet.env \
             and `routes` its routes plus one per cluster network",
        ),
    ],
    notes: &["`runtimeConfig` is handed to the delegate. CHECK runs the delegate's CHECK on the saved config."],
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

// ---- subnet.env ---------------------------------------------------------------------------------

/// What flanneld wrote into subnet.env (networks and subnets truncated to their prefix).
#[derive(Debug, Default, PartialEq)]
pub struct SubnetEnv {
    pub networks: Vec<IpNet>,
    pub subnet: Option<IpNet>,
    pub ip6_networks: Vec<IpNet>,
    pub ip6_subnet: Option<IpNet>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

/// The longest line Go's `bufio.Scanner` reads (its 64 KiB buffer holds the line and its `\n`).
const MAX_LINE: usize = 64 * 1024 - 1;

fn cidr(s: &str) -> Result<IpNet, String> {
    go_parse_cidr(s).map(|n| n.trunc()).ok_or_else(|| format!("invalid CIDR address: {s}"))
}

/// A comma-separated FLANNEL_(IPV6_)NETWORK value: every item a CIDR, repeats dropped.
fn cidr_list(v: &str) -> Result<Vec<IpNet>, String> {
    let mut out: Vec<IpNet> = Vec::new();
    for item in v.split(',') {
        let n = cidr(item)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseUint(s, 10, 32)`: decimal digits only (no sign, no space), at most 2³²−1.
fn go_parse_u32(s: &str) -> Result<u32, String> {
    let fail = |why: &str| format!("strconv.ParseUint: parsing {}: {why}", go_quote(s));
    if s.is_empty() {
        return Err(fail("invalid syntax"));
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return Err(fail("invalid syntax"));
        }
        n = n * 10 + u64::from(b - b'0');
        if n > u64::from(u32::MAX) {
            return Err(fail("value out of range"));
        }
    }
    u32::try_from(n).map_err(|_| fail("value out of range"))
}

/// Parse subnet.env as flannel's `loadFlannelSubnetEnv` does: lines split at the first `=`, the
/// key compared exactly (no trimming), values parsed strictly (`net.ParseCIDR`,
/// `strconv.ParseUint`), `FLANNEL_IPMASQ` true only for exactly `true`, a repeated key replacing
/// the earlier line, a repeated network in one list dropped; `\r\n` line ends as `\n`. The error
/// texts are Go's. Where the reference crashes (a known key without `=`), this is an error.
pub fn parse_subnet_env(r: impl BufRead, file: &str) -> Result<SubnetEnv, String> {
    let mut se = SubnetEnv::default();
    let mut r = r;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 2)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("read {file}: {}", go_errno(&e)))?;
        if n == 0 {
            break;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if line.len() > MAX_LINE {
            return Err("bufio.Scanner: token too long".into());
        }
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (&*line, None),
        };
        let known = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"];
        if value.is_none() && (known.contains(&key) || key == "FLANNEL_MTU" || key == "FLANNEL_IPMASQ") {
            return Err(format!("{file}: {key} has no '=' and no value"));
        }
        let v = value.unwrap_or_default();
        match key {
            "FLANNEL_NETWORK" => se.networks = cidr_list(v)?,
            "FLANNEL_SUBNET" => se.subnet = Some(cidr(v)?),
            "FLANNEL_IPV6_NETWORK" => se.ip6_networks = cidr_list(v)?,
            "FLANNEL_IPV6_SUBNET" => se.ip6_subnet = Some(cidr(v)?),
            "FLANNEL_MTU" => se.mtu = Some(go_parse_u32(v)?),
            "FLANNEL_IPMASQ" => se.ipmasq = Some(v == "true"),
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
        return Err(format!("{file} is missing {}", missing.join(", ")));
    }
    Ok(se)
}

fn load_subnet_env(file: &str) -> Result<SubnetEnv, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("open {file}: {}", go_errno(&e)))?;
    parse_subnet_env(std::io::BufReader::new(f), file)
}

// ---- the config, as Go decodes flannel's NetConf -----------------------------------------------

/// flannel's NetConf as `loadFlannelNetConf` decodes it with Go's encoding/json: the members of
/// the config object in document order, each matched to a field without regard to case (repeats
/// included: the protocol layer's folded config would lower-case the delegate's own keys and merge
/// nested objects, where Go keeps the keys and merges only the field's map). A string field takes
/// the last non-null value; a map field (`ipam`, `delegate`, `runtimeConfig`, `prevResult`) merges
/// the objects given for it key by key, the later winning, and `null` resets it. A member of the
/// wrong JSON type is remembered (the first, in Go's words) and decoding goes on.
#[derive(Debug)]
struct NetConf {
    cni_version: String,
    subnet_file: String,
    data_dir: String,
    ipam: Option<Map<String, Value>>,
    delegate: Option<Map<String, Value>>,
    runtime_config: Option<Map<String, Value>>,
    prev_result: Option<Map<String, Value>>,
    /// the first member of the wrong type: "json: cannot unmarshal …"
    type_error: Option<String>,
    /// the last `dataDir` had the wrong type: no saved config can be found
    data_dir_mistyped: bool,
}

/// The members of the top-level object in document order, repeats kept (values parsed as
/// `Value`: inside them a repeated key keeps its last value, as Go's map decoding does).
fn members(stdin: &[u8]) -> Result<Vec<(String, Value)>> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                out.push((k, map.next_value::<Value>()?));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let m = serde::Deserializer::deserialize_map(&mut de, Members).and_then(|m| de.end().map(|_| m));
    m.map_err(|e| anyhow!("failed to load netconf: {e}"))
}

impl NetConf {
    fn decode(stdin: &[u8]) -> Result<NetConf> {
        let mut n = NetConf {
            cni_version: String::new(),
            subnet_file: DEFAULT_SUBNET_FILE.to_string(),
            data_dir: DEFAULT_DATA_DIR.to_string(),
            ipam: None,
            delegate: None,
            runtime_config: None,
            prev_result: None,
            type_error: None,
            data_dir_mistyped: false,
        };
        for (key, v) in members(stdin)? {
            let err = &mut n.type_error;
            match fold_key(&key).as_str() {
                "cniversion" => _ = set_string(&mut n.cni_version, "cniVersion", v, err),
                "subnetfile" => _ = set_string(&mut n.subnet_file, "subnetFile", v, err),
                // the last non-null value decides where DEL looks
                "datadir" if !v.is_null() => n.data_dir_mistyped = !set_string(&mut n.data_dir, "dataDir", v, err),
                "ipam" => merge_map(&mut n.ipam, "ipam", v, err),
                "delegate" => merge_map(&mut n.delegate, "delegate", v, err),
                "runtimeconfig" => merge_map(&mut n.runtime_config, "runtimeConfig", v, err),
                "prevresult" => merge_map(&mut n.prev_result, "prevResult", v, err),
                _ => {}
            }
        }
        Ok(n)
    }

    /// ADD's view: a type error fails it (the reference's wording).
    fn for_add(stdin: &[u8]) -> Result<NetConf> {
        let n = NetConf::decode(stdin)?;
        match &n.type_error {
            Some(e) => bail!("loadFlannelNetConf failed: failed to load netconf: {e}"),
            None => Ok(n),
        }
    }

    /// The saved delegate config's path; `None` when no ADD can have saved one with this config
    /// (`dataDir` mistyped or empty: ADD refuses both).
    fn saved_path(&self, container_id: &str) -> Option<PathBuf> {
        (!self.data_dir_mistyped && !self.data_dir.is_empty()).then(|| Path::new(&self.data_dir).join(container_id))
    }

    fn data_dir_why(&self) -> &'static str {
        if self.data_dir_mistyped {
            "not a string"
        } else {
            "empty"
        }
    }

    /// The delegate object checked as cmdAdd checks it, with `runtimeConfig` put in.
    fn checked_delegate(&self) -> Result<Map<String, Value>> {
        let mut d = self.delegate.clone().unwrap_or_default();
        if d.get("type").is_some_and(|t| !t.is_string()) {
            return Err(CniError::config("'delegate' dictionary, if present, must have (string) 'type' field").into());
        }
        for key in ["name", "ipam"] {
            if d.contains_key(key) {
                return Err(CniError::config(format!(
                    "'delegate' dictionary must not have '{key}' field, it'll be set by flannel"
                ))
                .into());
            }
        }
        if let Some(rc) = &self.runtime_config {
            d.insert("runtimeConfig".into(), Value::Object(rc.clone()));
        }
        Ok(d)
    }
}

fn type_error(err: &mut Option<String>, field: &str, v: &Value, go_type: &str) {
    err.get_or_insert_with(|| {
        format!("json: cannot unmarshal {} into Go struct field NetConf.{field} of type {go_type}", kind(v))
    });
}

/// A Go string field: null leaves it, a string sets it. False when `v` has the wrong type.
fn set_string(slot: &mut String, field: &str, v: Value, err: &mut Option<String>) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => {
            *slot = s;
            true
        }
        other => {
            type_error(err, field, &other, "string");
            false
        }
    }
}

/// A Go `map[string]interface{}` field: null resets it, an object is merged into it.
fn merge_map(slot: &mut Option<Map<String, Value>>, field: &str, v: Value, err: &mut Option<String>) {
    match v {
        Value::Null => *slot = None,
        Value::Object(m) => slot.get_or_insert_with(Map::new).extend(m),
        other => type_error(err, field, &other, "map[string]interface {}"),
    }
}

// ---- the delegate config ----------------------------------------------------------------------

/// A value as Go's `json.Marshal` writes it.
#[derive(Debug, Clone)]
enum Go {
    /// decoded from JSON into an `interface{}`: objects print with sorted keys, numbers as float64
    Any(Value),
    /// a map built here (sorted keys)
    Map(BTreeMap<String, Go>),
    /// a struct: its fields in declaration order
    Struct(Vec<(&'static str, Go)>),
    List(Vec<Go>),
    Int(i64),
}

/// Go's `json.Marshal` text of `g` (compact).
fn marshal(g: &Go) -> String {
    let mut out = String::new();
    write_go(g, &mut out);
    out
}

fn write_go(g: &Go, out: &mut String) {
    match g {
        Go::Any(v) => write_any(v, out),
        Go::Map(m) => write_object(m.iter(), out, write_go),
        Go::Struct(fields) => write_object(fields.iter().map(|(k, v)| (*k, v)), out, write_go),
        Go::List(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go(it, out);
            }
            out.push(']');
        }
        Go::Int(n) => out.push_str(&n.to_string()),
    }
}

fn write_object<'a, K: AsRef<str>, V: 'a>(
    items: impl Iterator<Item = (K, &'a V)>,
    out: &mut String,
    write: fn(&V, &mut String),
) {
    out.push('{');
    for (i, (k, v)) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_escape(k.as_ref(), out);
        out.push(':');
        write(v, out);
    }
    out.push('}');
}

fn write_any(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => go_escape(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_any(it, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            // Go sorts map keys bytewise (so does String's Ord)
            let mut members: Vec<(&String, &Value)> = m.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            write_object(members.into_iter(), out, write_any);
        }
    }
}

/// A float64 as Go's encoding/json prints it: the shortest text that reads back the same, in
/// `%f` form, or `%e` form below 1e-6 and from 1e21 on (`1e+21`, `1.5e-7`).
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// One route of `ipam.routes`, decoded into Go's `types.Route` (containernetworking/cni v1.2.3).
#[derive(Debug, Default, PartialEq)]
struct GoRoute {
    dst: Option<IpNet>,
    gw: Option<IpAddr>,
    mtu: i64,
    advmss: i64,
    priority: i64,
    table: Option<i64>,
    scope: Option<i64>,
}

impl GoRoute {
    /// `types.Route.MarshalJSON`: the fields in order, `omitempty` as declared.
    fn to_go(&self) -> Go {
        let mut f: Vec<(&'static str, Go)> = Vec::new();
        let dst = self.dst.as_ref().map(fmt_net).unwrap_or_else(|| "<nil>".into());
        f.push(("dst", Go::Any(Value::String(dst))));
        if let Some(gw) = &self.gw {
            f.push(("gw", Go::Any(Value::String(fmt_ip(gw)))));
        }
        for (name, n) in [("mtu", self.mtu), ("advmss", self.advmss), ("priority", self.priority)] {
            if n != 0 {
                f.push((name, Go::Int(n)));
            }
        }
        for (name, n) in [("table", self.table), ("scope", self.scope)] {
            if let Some(n) = n {
                f.push((name, Go::Int(n)));
            }
        }
        Go::Struct(f)
    }
}

/// Decode one element of `ipam.routes` as Go does after re-marshalling the map: its keys in
/// sorted order, matched without regard to case. Errors of `dst` and of a `gw` string stop at
/// once; a field of the wrong JSON type is reported after the element (Go's saved error).
fn decode_route(v: &Value) -> Result<GoRoute, String> {
    let m = match v {
        Value::Object(m) => m.clone(),
        // Go decodes null into a zero route, whose dst is "<nil>" (refused below)
        Value::Null => Map::new(),
        other => return Err(format!("json: cannot unmarshal {} into Go value of type types.route", kind(other))),
    };
    let mut r = GoRoute::default();
    let mut soft: Option<String> = None;
    let wrong = |field: &str, val: String, ty: &str| {
        format!("json: cannot unmarshal {val} into Go struct field route.{field} of type {ty}")
    };
    let mut members: Vec<(&String, &Value)> = m.iter().collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    for (key, x) in members {
        let field = fold_key(key);
        match field.as_str() {
            "dst" => {
                let s = match x {
                    Value::String(s) => s.as_str(),
                    Value::Null => "",
                    other => return Err(wrong("dst", kind(other).into(), "string")),
                };
                r.dst = Some(go_parse_cidr(s).ok_or_else(|| format!("invalid CIDR address: {s}"))?);
            }
            "gw" => match x {
                Value::Null => r.gw = None,
                Value::String(s) if s.is_empty() => r.gw = None,
                Value::String(s) => r.gw = Some(s.parse().map_err(|_| format!("invalid IP address: {s}"))?),
                other => {
                    soft.get_or_insert_with(|| wrong("gw", kind(other).into(), "net.IP"));
                }
            },
            "mtu" | "advmss" | "priority" | "table" | "scope" => {
                let n = match x {
                    Value::Null => None,
                    Value::Number(n) => {
                        let text = go_float(n.as_f64().unwrap_or(0.0));
                        match text.parse::<i64>() {
                            Ok(n) => Some(n),
                            Err(_) => {
                                soft.get_or_insert_with(|| wrong(&field, format!("number {text}"), "int"));
                                continue;
                            }
                        }
                    }
                    other => {
                        soft.get_or_insert_with(|| wrong(&field, kind(other).into(), "int"));
                        continue;
                    }
                };
                match field.as_str() {
                    "mtu" => r.mtu = n.unwrap_or(r.mtu),
                    "advmss" => r.advmss = n.unwrap_or(r.advmss),
                    "priority" => r.priority = n.unwrap_or(r.priority),
                    "table" => r.table = n,
                    _ => r.scope = n,
                }
            }
            _ => {}
        }
    }
    match soft {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// `getIPAMRoutes`: the top-level `ipam.routes` as `[]types.Route`. A route without `dst` is
/// refused here (the reference passes `"dst": "<nil>"` on, and the delegate fails later).
fn ipam_routes(ipam: Option<&Map<String, Value>>) -> Result<Vec<GoRoute>, String> {
    let fail = |e: String| format!("failed to parse ipam.routes: {e}");
    match ipam.and_then(|m| m.get("routes")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, it) in items.iter().enumerate() {
                let r = decode_route(it).map_err(fail)?;
                if r.dst.is_none() {
                    return Err(fail(format!("route {i} has no dst")));
                }
                out.push(r);
            }
            Ok(out)
        }
        Some(other) => Err(fail(format!("json: cannot unmarshal {} into Go value of type []types.Route", kind(other)))),
    }
}

/// `getDelegateIPAM`: the top-level `ipam` (type `host-local` unless given), `ranges` from the
/// subnets, `routes` its own routes and one per cluster network.
fn delegate_ipam(ipam: Option<&Map<String, Value>>, env: &SubnetEnv) -> Result<BTreeMap<String, Go>, String> {
    let mut out: BTreeMap<String, Go> =
        ipam.cloned().unwrap_or_default().into_iter().map(|(k, v)| (k, Go::Any(v))).collect();
    out.entry("type".into()).or_insert_with(|| Go::Any(Value::String("host-local".into())));
    let ranges: Vec<Value> = [env.subnet, env.ip6_subnet]
        .into_iter()
        .flatten()
        .map(|sn| serde_json::json!([{ "subnet": fmt_net(&sn) }]))
        .collect();
    out.insert("ranges".into(), Go::Any(Value::Array(ranges)));
    let mut routes = ipam_routes(ipam).map_err(|e| format!("failed to read IPAM routes: {e}"))?;
    for nw in env.networks.iter().chain(env.ip6_networks.iter()) {
        routes.push(GoRoute { dst: Some(*nw), ..Default::default() });
    }
    out.insert("routes".into(), Go::List(routes.iter().map(GoRoute::to_go).collect()));
    Ok(out)
}

/// `doCmdAdd`'s delegate config: the checked `delegate` object, `name` the network's, `type`
/// `bridge` unless given, `ipMasq` = !FLANNEL_IPMASQ and `mtu` = FLANNEL_MTU unless given,
/// `isGateway` true for bridge unless given, the config's `cniVersion`, the IPAM above.
fn build_delegate(name: &str, n: &NetConf, env: &SubnetEnv) -> Result<BTreeMap<String, Go>> {
    let mut d = n.checked_delegate()?;
    d.insert("name".into(), Value::String(name.to_string()));
    d.entry("type").or_insert_with(|| Value::String("bridge".into()));
    if !d.contains_key("ipMasq") {
        // flannel masquerades itself when FLANNEL_IPMASQ is true; otherwise the delegate should
        d.insert("ipMasq".into(), Value::Bool(!env.ipmasq.unwrap_or(false)));
    }
    if !d.contains_key("mtu") {
        d.insert("mtu".into(), Value::from(env.mtu.unwrap_or(0)));
    }
    if d.get("type").and_then(Value::as_str) == Some("bridge") && !d.contains_key("isGateway") {
        d.insert("isGateway".into(), Value::Bool(true));
    }
    if !n.cni_version.is_empty() {
        d.insert("cniVersion".into(), Value::String(n.cni_version.clone()));
    }
    let ipam = delegate_ipam(n.ipam.as_ref(), env)
        .map_err(|e| CniError::config(format!("failed to assemble Delegate IPAM: {e}")))?;
    let mut out: BTreeMap<String, Go> = d.into_iter().map(|(k, v)| (k, Go::Any(v))).collect();
    out.insert("ipam".into(), Go::Map(ipam));
    Ok(out)
}

// ---- the saved delegate config ----------------------------------------------------------------

/// `saveScratchNetConf`: `dataDir` (0700) and the file (0600), written and synced; Go's errors.
fn save(data_dir: &str, container_id: &str, bytes: &[u8]) -> Result<()> {
    if data_dir.is_empty() {
        // Go's os.MkdirAll("") (std's create_dir_all would take "" for "nothing to do")
        bail!("mkdir : no such file or directory");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| anyhow!("mkdir {data_dir}: {}", go_errno(&e)))?;
    let p = Path::new(data_dir).join(container_id);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .map_err(|e| anyhow!("open {}: {}", p.display(), go_errno(&e)))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| anyhow!("write {}: {}", p.display(), go_errno(&e)))
}

/// A saved delegate config, read for DEL or CHECK.
enum Saved {
    /// no file: nothing to undo
    Gone,
    /// it does not decode as Go's `types.NetConf` (the reason)
    Unreadable(String),
    /// the config (original keys) and its `type` ("" when none)
    Conf(Map<String, Value>, String),
}

fn read_saved(p: &Path) -> Result<Saved> {
    let bytes = match std::fs::read(p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::Gone),
        Err(e) => bail!("read {}: {}", p.display(), go_errno(&e)),
    };
    let raw = match config::parse_raw(&bytes) {
        Ok(Value::Object(m)) => m,
        Ok(other) => return Ok(Saved::Unreadable(format!("not an object but {}", kind(&other)))),
        Err(e) => return Ok(Saved::Unreadable(e.to_string())),
    };
    // the keys Go's types.NetConf decodes, with their types
    let folded = config::fold(&Value::Object(raw.clone()));
    let wrong = |key: &str| folded.get(key).is_some_and(|v| !v.is_string());
    if let Some(key) = ["cniversion", "name"].into_iter().find(|k| wrong(k)) {
        return Ok(Saved::Unreadable(format!("{key} is not a string")));
    }
    if folded.get("prevresult").is_some_and(|v| !v.is_object()) {
        return Ok(Saved::Unreadable("prevResult is not an object".into()));
    }
    if let Err(e) = config::check_common_types(&folded, false) {
        return Ok(Saved::Unreadable(e.msg));
    }
    let ty = folded.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(Saved::Conf(raw, ty))
}

/// A context for running the delegate on `bytes` (same env, new stdin).
fn delegate_ctx(ctx: &Ctx, command: Command, bytes: Vec<u8>) -> Result<Ctx> {
    let conf = config::parse_folded(&bytes).map_err(|e| anyhow!("failed to parse the delegate config: {e}"))?;
    let version = config::config_version(&conf)?;
    let prev_result = config::prev_result(&conf, &version).ok().flatten();
    Ok(Ctx { command, stdin: bytes, conf, version, prev_result, ..ctx.clone() })
}

// ---- the verbs --------------------------------------------------------------------------------

fn add(ctx: &Ctx) -> Result<CniResult> {
    let n = NetConf::for_add(&ctx.stdin)?;
    let env = load_subnet_env(&n.subnet_file).map_err(|e| anyhow!("loadFlannelSubnetEnv failed: {e}"))?;
    let d = build_delegate(&ctx.name, &n, &env)?;
    let ty = match d.get("type") {
        Some(Go::Any(Value::String(t))) => t.clone(),
        _ => bail!("the delegate config has no type"),
    };
    let bytes = marshal(&Go::Map(d)).into_bytes();
    tracing::debug!("flannel delegate config: {}", String::from_utf8_lossy(&bytes));
    save(&n.data_dir, &ctx.container_id, &bytes)?;
    let dctx = delegate_ctx(ctx, Command::Add, bytes)?;
    let r = delegate::delegate(&dctx, &ty, Command::Add).map_err(|e| e.context("failed to delegate add"))?;
    r.ok_or_else(|| anyhow!("delegate {ty} returned no result"))
}

/// DEL reads only `dataDir` (as the reference's cmdDel, which runs none of ADD's checks): no saved
/// file, or one that does not decode, is success (the latter kept and logged, as the reference);
/// otherwise the delegate's DEL runs on it (numbers and escapes as Go writes them) and the file is
/// removed once that succeeded (kept for a retry when it failed; removed when it names no type,
/// which no retry can mend).
fn del(ctx: &Ctx) -> Result<()> {
    let n = NetConf::decode(&ctx.stdin)?;
    let Some(p) = n.saved_path(&ctx.container_id) else {
        // ADD refuses such a config, so it saved nothing
        tracing::warn!("dataDir is {}: nothing to delete", n.data_dir_why());
        return Ok(());
    };
    let (saved, ty) = match read_saved(&p)? {
        Saved::Gone => return Ok(()),
        Saved::Unreadable(why) => {
            // the reference: the interface stays until the node reboots
            tracing::warn!("failed to parse netconf {}: {why}; keeping it", p.display());
            return Ok(());
        }
        Saved::Conf(m, ty) => (m, ty),
    };
    if ty.is_empty() {
        remove(&p)?;
        bail!("no plugin name provided");
    }
    let dctx = delegate_ctx(ctx, Command::Del, marshal(&Go::Any(Value::Object(saved))).into_bytes())?;
    delegate::delegate(&dctx, &ty, Command::Del)?;
    remove(&p)
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("remove {}: {}", p.display(), go_errno(&e))),
    }
}

/// CHECK (flannel-io/cni-plugin does nothing here): the delegate's CHECK on the saved config,
/// with our prevResult.
fn check(ctx: &Ctx) -> Result<()> {
    let n = NetConf::decode(&ctx.stdin)?;
    let p = match n.saved_path(&ctx.container_id) {
        Some(p) => p,
        None => bail!("no saved delegate config: dataDir is {}", n.data_dir_why()),
    };
    let (mut saved, ty) = match read_saved(&p)? {
        Saved::Gone => bail!("no saved delegate config {}", p.display()),
        Saved::Unreadable(why) => bail!("failed to parse netconf {}: {why}", p.display()),
        Saved::Conf(m, ty) if !ty.is_empty() => (m, ty),
        Saved::Conf(..) => bail!("no plugin name provided"),
    };
    if let Some(prev) = &n.prev_result {
        saved.insert("prevResult".into(), Value::Object(prev.clone()));
    }
    let dctx = delegate_ctx(ctx, Command::Check, marshal(&Go::Any(Value::Object(saved))).into_bytes())?;
    delegate::delegate(&dctx, &ty, Command::Check).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENV: &str =
        "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    fn env(text: &str) -> Result<SubnetEnv, String> {
        parse_subnet_env(text.as_bytes(), "/f")
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_env() {
        let se = env(ENV).unwrap();
        assert_eq!(se.networks, vec![net("198.18.0.0/16")]);
        assert_eq!(se.subnet, Some(net("198.18.5.0/24")));
        assert_eq!((se.mtu, se.ipmasq), (Some(1450), Some(true)));
        let v6 = env(
            "FLANNEL_IPV6_NETWORK=fd00:10::/56,fd00:20::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\nOTHER=x\n",
        )
        .unwrap();
        assert_eq!(v6.ip6_networks, vec![net("fd00:10::/56"), net("fd00:20::/56")]);
        assert_eq!(v6.ip6_subnet, Some(net("fd00:10:0:5::/64")));
        assert_eq!(
            env("FLANNEL_MTU=1\n").unwrap_err(),
            "/f is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_IPMASQ"
        );
        assert_eq!(env("FLANNEL_SUBNET=bad\n").unwrap_err(), "invalid CIDR address: bad");
    }

    /// Each case as flannel-io/cni-plugin's loadFlannelSubnetEnv reads it (checked against a
    /// reference binary built from its source): Ok((networks, mtu, ipmasq)) or the error text.
    #[test]
    fn subnet_env_is_read_as_strictly_as_the_reference() {
        type Want = Result<(Vec<&'static str>, u32, bool), &'static str>;
        let base = "FLANNEL_SUBNET=198.18.5.1/24\n";
        let cases: &[(&str, Want)] = &[
            // FLANNEL_IPMASQ is true only for exactly "true" (a trailing space makes it false)
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true \n", Ok((vec!["198.18.0.0/16"], 1450, false))),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=True\n", Ok((vec!["198.18.0.0/16"], 1450, false))),
            // CRLF line ends: bufio.ScanLines drops the \r (also on a last line without \n)
            ("FLANNEL_NETWORK=198.18.0.0/16\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=true\r", Ok((vec!["198.18.0.0/16"], 1450, true))),
            // strconv.ParseUint(s, 10, 32)
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=+1450\nFLANNEL_IPMASQ=true\n", Err("strconv.ParseUint: parsing \"+1450\": invalid syntax")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU= 1450\nFLANNEL_IPMASQ=true\n", Err("strconv.ParseUint: parsing \" 1450\": invalid syntax")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=\nFLANNEL_IPMASQ=true\n", Err("strconv.ParseUint: parsing \"\": invalid syntax")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=99999999999\nFLANNEL_IPMASQ=true\n", Err("strconv.ParseUint: parsing \"99999999999\": value out of range")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=4294967296\nFLANNEL_IPMASQ=true\n", Err("strconv.ParseUint: parsing \"4294967296\": value out of range")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=04294967295\nFLANNEL_IPMASQ=true\n", Ok((vec!["198.18.0.0/16"], u32::MAX, true))),
            // keys are compared as written: these lines are not FLANNEL_MTU
            ("FLANNEL_NETWORK=198.18.0.0/16\n FLANNEL_MTU=1450\nFLANNEL_MTU =1450\nflannel_mtu=1\nFLANNEL_IPMASQ=true\n", Err("/f is missing FLANNEL_MTU")),
            // net.ParseCIDR on each item: no empty item, no space, no sign; leading zeros in the prefix are fine
            ("FLANNEL_NETWORK=198.18.0.0/16,,198.19.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("invalid CIDR address: ")),
            ("FLANNEL_NETWORK=198.18.0.0/16,\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("invalid CIDR address: ")),
            ("FLANNEL_NETWORK=198.18.0.0/16, 198.19.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("invalid CIDR address:  198.19.0.0/16")),
            ("FLANNEL_NETWORK=198.18.0.0/+16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("invalid CIDR address: 198.18.0.0/+16")),
            ("FLANNEL_NETWORK=198.18.0.0/33\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("invalid CIDR address: 198.18.0.0/33")),
            ("FLANNEL_NETWORK=198.018.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("invalid CIDR address: 198.018.0.0/16")),
            ("FLANNEL_NETWORK=198.18.0.0/016\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Ok((vec!["198.18.0.0/16"], 1450, true))),
            // a network given twice is one route; a repeated line replaces the earlier one
            ("FLANNEL_NETWORK=198.18.0.0/16,198.19.0.0/16,198.18.1.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Ok((vec!["198.18.0.0/16", "198.19.0.0/16"], 1450, true))),
            ("FLANNEL_NETWORK=198.20.0.0/16\nFLANNEL_NETWORK=198.18.0.0/16,198.18.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Ok((vec!["198.18.0.0/16"], 1450, true))),
            // the reference panics (index out of range) on a known key without '='; we refuse it
            ("FLANNEL_NETWORK\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", Err("/f: FLANNEL_NETWORK has no '=' and no value")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ\n", Err("/f: FLANNEL_IPMASQ has no '=' and no value")),
            ("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\nJUNK\n", Ok((vec!["198.18.0.0/16"], 1450, true))),
        ];
        for (text, want) in cases {
            let got = env(&format!("{base}{text}")).map(|se| {
                (se.networks.iter().map(|n| n.to_string()).collect::<Vec<_>>(), se.mtu.unwrap(), se.ipmasq.unwrap())
            });
            let want = want.clone().map(|(n, m, i)| (n.iter().map(|s| s.to_string()).collect::<Vec<_>>(), m, i));
            assert_eq!(got, want.map_err(String::from), "{text:?}");
        }
    }

    #[test]
    fn subnet_env_line_longer_than_go_scanner_reads_is_an_error() {
        let fits = format!("{ENV}X={}\n", "a".repeat(MAX_LINE - 2));
        assert!(env(&fits).is_ok());
        for tail in ["\n", "", "\r\n"] {
            let long = format!("{ENV}X={}{tail}", "a".repeat(MAX_LINE - 1));
            assert_eq!(env(&long).unwrap_err(), "bufio.Scanner: token too long", "{tail:?}");
        }
        // an error on an earlier line comes first, as the reference reads line by line
        let first = format!("FLANNEL_MTU=x\nX={}\n", "a".repeat(MAX_LINE));
        assert_eq!(env(&first).unwrap_err(), "strconv.ParseUint: parsing \"x\": invalid syntax");
    }

    #[test]
    fn go_float_prints_as_go_json() {
        for (f, want) in [
            (1400.0, "1400"),
            (1e3, "1000"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (1.5e-10, "1.5e-10"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (-1.25e22, "-1.25e+22"),
            (123456789012345678901.0, "123456789012345680000"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(go_float(f), want, "{f:e}");
        }
        // integers decode as float64 too: beyond 2^53 they round as Go's do
        assert_eq!(marshal(&Go::Any(json!(12345678901234567891u64))), "12345678901234567000");
    }

    #[test]
    fn marshal_is_go_json_marshal() {
        let v = json!({"b": [1.0, 2.5, null, true], "a<": "x<y>&z\u{2028}\"\n", "A": {"z": 1e3, "m": {}}});
        assert_eq!(
            marshal(&Go::Any(v)),
            r#"{"A":{"m":{},"z":1000},"a\u003c":"x\u003cy\u003e\u0026z\u2028\"\n","b":[1,2.5,null,true]}"#
        );
        let r = GoRoute {
            dst: Some(net("198.19.0.5/16")),
            gw: Some("198.18.5.1".parse().unwrap()),
            mtu: 1400,
            table: Some(0),
            ..Default::default()
        };
        // a struct keeps its field order
        assert_eq!(marshal(&r.to_go()), r#"{"dst":"198.19.0.5/16","gw":"198.18.5.1","mtu":1400,"table":0}"#);
    }

    #[test]
    fn ipam_routes_decode_as_go_types_route() {
        let routes = |v: Value| ipam_routes(v.as_object());
        // unknown keys dropped, keys matched without case (sorted: "Dst" before "dst", so dst
        // wins), host bits kept, numbers re-marshalled before they are decoded into ints
        let r =
            routes(json!({"routes": [{"dst": "198.19.0.5/16", "Dst": "198.20.0.0/16", "foo": 1, "GW": "198.18.5.1",
            "MTU": 1400.0, "advmss": 1e3, "priority": -1, "table": 0, "scope": null}]}))
            .unwrap();
        assert_eq!(
            r,
            vec![GoRoute {
                dst: Some(net("198.19.0.5/16")),
                gw: Some("198.18.5.1".parse().unwrap()),
                mtu: 1400,
                advmss: 1000,
                priority: -1,
                table: Some(0),
                scope: None,
            }]
        );
        assert_eq!(
            marshal(&r[0].to_go()),
            r#"{"dst":"198.19.0.5/16","gw":"198.18.5.1","mtu":1400,"advmss":1000,"priority":-1,"table":0}"#
        );
        // IPv4-mapped addresses print as IPv4 (Go's net.IP and IPNet String)
        let r = routes(json!({"routes": [{"dst": "::ffff:198.19.0.0/112", "gw": "::ffff:1.2.3.4"}]})).unwrap();
        assert_eq!(marshal(&r[0].to_go()), r#"{"dst":"198.19.0.0/16","gw":"1.2.3.4"}"#);
        // no routes
        for v in [json!({}), json!({"routes": null}), json!({"routes": []})] {
            assert_eq!(routes(v.clone()).unwrap(), vec![], "{v}");
        }
        assert_eq!(ipam_routes(None).unwrap(), vec![]);
        let p = "failed to parse ipam.routes: ";
        for (v, want) in [
            (json!({"dst": "bogus"}), "invalid CIDR address: bogus"),
            (json!({"dst": null}), "invalid CIDR address: "),
            (json!({"dst": 5}), "json: cannot unmarshal number into Go struct field route.dst of type string"),
            (json!({"dst": "198.19.0.0/16", "gw": "x"}), "invalid IP address: x"),
            (
                json!({"dst": "198.19.0.0/16", "gw": 5}),
                "json: cannot unmarshal number into Go struct field route.gw of type net.IP",
            ),
            (
                json!({"dst": "198.19.0.0/16", "mtu": 1.5}),
                "json: cannot unmarshal number 1.5 into Go struct field route.mtu of type int",
            ),
            (
                json!({"dst": "198.19.0.0/16", "mtu": "x"}),
                "json: cannot unmarshal string into Go struct field route.mtu of type int",
            ),
            (
                json!({"dst": "198.19.0.0/16", "table": 1e21}),
                "json: cannot unmarshal number 1e+21 into Go struct field route.table of type int",
            ),
            (
                json!({"dst": "198.19.0.0/16", "priority": 9223372036854775807u64}),
                "json: cannot unmarshal number 9223372036854776000 into Go struct field route.priority of type int",
            ),
            // a saved (soft) error waits for the element's end; a hard one comes first
            (json!({"advmss": "x", "dst": "198.19.0.0/16", "gw": "bad"}), "invalid IP address: bad"),
            (
                json!({"advmss": "x", "mtu": true, "dst": "198.19.0.0/16"}),
                "json: cannot unmarshal string into Go struct field route.advmss of type int",
            ),
            // the reference sends "dst": "<nil>" on, for the delegate to fail on
            (json!({"gw": "198.18.5.1"}), "route 0 has no dst"),
            (Value::Null, "route 0 has no dst"),
            (json!(5), "json: cannot unmarshal number into Go value of type types.route"),
            (json!("198.19.0.0/16"), "json: cannot unmarshal string into Go value of type types.route"),
        ] {
            assert_eq!(routes(json!({"routes": [v.clone()]})).unwrap_err(), format!("{p}{want}"), "{v}");
        }
        assert_eq!(
            routes(json!({"routes": {"dst": "198.19.0.0/16"}})).unwrap_err(),
            format!("{p}json: cannot unmarshal object into Go value of type []types.Route")
        );
    }

    fn netconf(conf: &str) -> NetConf {
        NetConf::decode(conf.as_bytes()).unwrap()
    }

    fn delegate_of(conf: &str, se: &SubnetEnv) -> Result<Value> {
        let d = build_delegate("cbr0", &netconf(conf), se)?;
        Ok(serde_json::from_str(&marshal(&Go::Map(d))).unwrap())
    }

    #[test]
    fn delegate_defaults_and_passthrough() {
        let se = env(ENV).unwrap();
        let d = delegate_of(
            r#"{"name":"cbr0","cniVersion":"0.3.1","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#,
            &se,
        )
        .unwrap();
        assert_eq!(
            d,
            json!({
                "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge", "mtu": 1450, "ipMasq": false,
                "isGateway": true, "hairpinMode": true, "isDefaultGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.5.0/24"}]], "routes": [{"dst": "198.18.0.0/16"}]}
            })
        );
        // delegate values win (null ones too: present is present); ipam extras and routes are kept
        let d = delegate_of(
            r#"{"name":"cbr0","type":"flannel","ipam":{"routes":[{"dst":"198.19.0.0/16"}],"dataDir":"/d","type":null},"delegate":{"type":"ptp","mtu":1400,"ipMasq":null},"runtimeConfig":{"ips":["198.18.5.9"]}}"#,
            &se,
        )
        .unwrap();
        assert_eq!(d["type"], "ptp");
        assert_eq!(d["mtu"], 1400);
        assert_eq!(d["ipMasq"], Value::Null);
        assert!(d.get("isGateway").is_none());
        assert!(d.get("cniVersion").is_none());
        assert_eq!(d["runtimeConfig"], json!({"ips": ["198.18.5.9"]}));
        assert_eq!(d["ipam"]["routes"], json!([{"dst": "198.19.0.0/16"}, {"dst": "198.18.0.0/16"}]));
        assert_eq!(d["ipam"]["dataDir"], "/d");
        assert_eq!(d["ipam"]["type"], Value::Null);
        // both families: one range set each, v4 routes before v6
        let dual = env("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n").unwrap();
        let d = delegate_of(r#"{"name":"cbr0","type":"flannel"}"#, &dual).unwrap();
        assert_eq!(d["ipam"]["ranges"], json!([[{"subnet": "198.18.5.0/24"}], [{"subnet": "fd00:10:0:5::/64"}]]));
        assert_eq!(d["ipam"]["routes"], json!([{"dst": "198.18.0.0/16"}, {"dst": "fd00:10::/56"}]));
        assert_eq!(d["ipMasq"], true);
    }

    #[test]
    fn delegate_mistakes_are_code_7_with_the_references_words() {
        let se = env(ENV).unwrap();
        for (conf, want) in [
            (r#"{"delegate":{"name":"x"}}"#, "'delegate' dictionary must not have 'name' field, it'll be set by flannel"),
            (r#"{"delegate":{"ipam":{}}}"#, "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"),
            (r#"{"delegate":{"type":1}}"#, "'delegate' dictionary, if present, must have (string) 'type' field"),
            (r#"{"delegate":{"type":null}}"#, "'delegate' dictionary, if present, must have (string) 'type' field"),
            (
                r#"{"ipam":{"routes":[{"dst":"bogus"}]}}"#,
                "failed to assemble Delegate IPAM: failed to read IPAM routes: failed to parse ipam.routes: invalid CIDR address: bogus",
            ),
        ] {
            let e = CniError::from_anyhow(&delegate_of(conf, &se).unwrap_err());
            assert_eq!((e.code, e.msg.as_str()), (7, want), "{conf}");
        }
    }

    /// Go decodes repeated members into the same field: maps merge (later keys win, null
    /// resets), strings take the last non-null value; the delegate's own keys keep their case.
    #[test]
    fn netconf_members_decode_as_go_does() {
        let n = netconf(
            r#"{"delegate":{"type":"rec","x":{"a":1}},"Delegate":{"x":{"b":2},"hairpinMode":true},"RuntimeConfig":{"a":1},"runtimeConfig":{"b":2},
                "subnetFile":"/a","SUBNETFILE":null,"dataDir":"/d1","datadir":"/d2","ipam":{"type":"x"},"ipam":null}"#,
        );
        assert_eq!(
            Value::Object(n.delegate.clone().unwrap()),
            json!({"type": "rec", "x": {"b": 2}, "hairpinMode": true})
        );
        assert_eq!(Value::Object(n.runtime_config.clone().unwrap()), json!({"a": 1, "b": 2}));
        assert_eq!((n.subnet_file.as_str(), n.data_dir.as_str()), ("/a", "/d2"));
        assert!(n.ipam.is_none());
        assert!(n.type_error.is_none());
        let n = netconf(r#"{"delegate":{"type":"rec"},"delegate":null,"delegate":{"z":1}}"#);
        assert_eq!(Value::Object(n.delegate.unwrap()), json!({"z": 1}));
        // defaults; an empty string is kept (ADD then fails on it, as the reference)
        let n = netconf(r#"{"subnetFile":"","dataDir":""}"#);
        assert_eq!((n.subnet_file.as_str(), n.data_dir.as_str()), ("", ""));
        assert_eq!(n.saved_path("c1"), None);
        let n = netconf("{}");
        assert_eq!((n.subnet_file.as_str(), n.data_dir.as_str()), (DEFAULT_SUBNET_FILE, DEFAULT_DATA_DIR));
        // the first member of the wrong type, in Go's words; decoding goes on
        let n = netconf(r#"{"subnetFile":5,"delegate":[],"dataDir":"/d"}"#);
        assert_eq!(
            n.type_error.as_deref(),
            Some("json: cannot unmarshal number into Go struct field NetConf.subnetFile of type string")
        );
        assert_eq!(n.saved_path("c1"), Some(PathBuf::from("/d/c1")));
        let n = netconf(r#"{"dataDir":true,"prevResult":"x"}"#);
        assert_eq!(
            n.type_error.as_deref(),
            Some("json: cannot unmarshal bool into Go struct field NetConf.dataDir of type string")
        );
        assert_eq!(n.saved_path("c1"), None);
        let n = netconf(r#"{"prevResult":"x"}"#);
        assert_eq!(
            n.type_error.as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field NetConf.prevResult of type map[string]interface {}"
            )
        );
    }
}
