//! Network configuration on stdin, read the way the Go plugins read it.
//!
//! Go's encoding/json matches object keys to struct fields case-insensitively, lets the last
//! spelling of a key win and leaves defaults in place for `null`. We get the same semantics
//! once, for every plugin, by parsing stdin into a `serde_json::Value` whose object keys are
//! lower-cased at every level and whose `null` members are dropped. A key given twice (in any
//! spelling) is decoded into the same place, as Go decodes it into the same field: two objects
//! merge (recursively, the later value winning per key), anything else is replaced by the later
//! value (Go replaces scalars and slices). Plugins then decode from that value with lower-case
//! serde names.

use super::error::{code, CniError};
use super::{CniResult, Ctx};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Deepest object/array nesting accepted on stdin (real configs stay below 10).
pub const MAX_DEPTH: usize = 64;

/// The default `cniVersion` when a config has none (Go library behaviour).
pub const DEFAULT_VERSION: &str = "0.1.0";

/// Fold one object key the way Go's case-insensitive field matching sees it.
pub fn fold_key(k: &str) -> String {
    if k.bytes().all(|b| !b.is_ascii_uppercase() && b.is_ascii()) {
        return k.to_string();
    }
    // U+017F (long s) folds to 's' in Go's matching; to_lowercase keeps it.
    k.to_lowercase().replace('\u{17f}', "s")
}

/// Parse bytes into a folded value (see the module docs). Errors are serde_json's.
pub fn parse_folded(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Folder { depth: 0, fold: true }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parse bytes keeping the original key case (nulls kept too), with the same depth limit.
/// For map-valued keys whose keys are data (sysctl names, annotations).
pub fn parse_raw(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Folder { depth: 0, fold: false }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Fold an already-parsed value (keys lower-cased at every level, nulls dropped).
/// When two spellings collide, they are merged as [`merge_insert`] does, in the map's order.
pub fn fold(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if !v.is_null() {
                    merge_insert(&mut out, fold_key(k), fold(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(fold).collect()),
        other => other.clone(),
    }
}

/// Put `v` under `key` the way Go's decoder fills a field that was already filled: when both the
/// value there and `v` are objects they merge (recursively; the later value wins per key), else
/// `v` replaces what was there (Go replaces scalars and decodes a slice afresh).
pub fn merge_insert(map: &mut Map<String, Value>, key: String, v: Value) {
    match v {
        Value::Object(new) => match map.get_mut(&key) {
            Some(Value::Object(old)) => {
                for (k, x) in new {
                    merge_insert(old, k, x);
                }
            }
            _ => {
                map.insert(key, Value::Object(new));
            }
        },
        other => {
            map.insert(key, other);
        }
    }
}

struct Folder {
    depth: usize,
    fold: bool,
}

impl<'de> DeserializeSeed<'de> for Folder {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Folder {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json reads the integer `-0` as the float -0.0, which an integer field refuses;
        // Go decodes `-0` into an int as 0 (and the reference's plugins take it), so a negative
        // zero is the integer 0 here (`-0.0` too, which Go would refuse for an int: lenient)
        if v == 0.0 && v.is_sign_negative() {
            return Ok(Value::from(0u64));
        }
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Folder { depth: self.depth + 1, fold: self.fold })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Folder { depth: self.depth + 1, fold: self.fold })?;
            if !self.fold {
                out.insert(k, v);
            } else if !v.is_null() {
                merge_insert(&mut out, fold_key(&k), v);
            }
        }
        Ok(Value::Object(out))
    }
}

/// Container ids and network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (also file-path safe).
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphanumeric() => {
            b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        }
        _ => false,
    }
}

/// The skel's `validateConfig`: stdin must decode and carry a valid `name`.
/// Returns the name.
pub fn validate_name(conf: &Value) -> Result<String, CniError> {
    let name = match conf {
        Value::Null => None,
        Value::Object(m) => match m.get("name") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(CniError::new(
                    code::DECODE,
                    format!(
                        "error unmarshall network config: json: cannot unmarshal {} into Go struct field .name of type string",
                        kind(other)
                    ),
                ))
            }
        },
        other => {
            return Err(CniError::new(
                code::DECODE,
                format!(
                    "error unmarshall network config: json: cannot unmarshal {} into Go value of type struct {{ Name string \"json:\\\"name\\\"\" }}",
                    kind(other)
                ),
            ))
        }
    };
    let name = name.unwrap_or("");
    if name.is_empty() {
        return Err(CniError::config("missing network name"));
    }
    if !is_valid_id(name) {
        return Err(CniError::config("invalid characters found in network name").with_details(name));
    }
    Ok(name.to_string())
}

/// The config's `cniVersion` ("0.1.0" when absent or empty), as the Go ConfigDecoder reads it.
pub fn config_version(conf: &Value) -> Result<String, CniError> {
    match conf.get("cniversion") {
        None => Ok(DEFAULT_VERSION.to_string()),
        Some(Value::String(s)) if s.is_empty() => Ok(DEFAULT_VERSION.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(CniError::new(
            code::DECODE,
            format!(
                "decoding version from network config: json: cannot unmarshal {} into Go struct field .cniVersion of type string",
                kind(other)
            ),
        )),
    }
}

/// The common keys every reference plugin decodes into Go's `types.NetConf` (IPAM plugins:
/// only `ipam`), checked for their JSON types as that decoding checks them: `ipam` an object
/// whose `type` is a string; and for the others also `type` a string, `capabilities` an object
/// of booleans, `dns` an object with `domain` a string and `nameservers`, `search`, `options`
/// arrays of strings. A wrong type is code 999, "failed to load netconf: <key>: ...", as the
/// reference's decoding fails; plugins that read these keys leniently (`ctx.ipam_type()`) then
/// never take a mistyped value for an absent one.
pub fn check_common_types(conf: &Value, ipam_only: bool) -> Result<(), CniError> {
    let bad = |path: &str, want: &str, got: &Value| {
        CniError::internal(format!("failed to load netconf: {path}: expected {want}, got {}", kind(got)))
    };
    let string = |path: &str, v: Option<&Value>| match v {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(bad(path, "a string", other)),
    };
    let strings = |path: &str, v: Option<&Value>| match v {
        None => Ok(()),
        Some(Value::Array(items)) => items.iter().enumerate().try_for_each(|(i, x)| match x {
            Value::String(_) | Value::Null => Ok(()),
            other => Err(bad(&format!("{path}[{i}]"), "a string", other)),
        }),
        Some(other) => Err(bad(path, "an array of strings", other)),
    };
    if let Some(ipam) = conf.get("ipam") {
        if !ipam.is_object() {
            return Err(bad("ipam", "an object", ipam));
        }
        string("ipam.type", ipam.get("type"))?;
    }
    if ipam_only {
        return Ok(());
    }
    string("type", conf.get("type"))?;
    match conf.get("capabilities") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if !v.is_boolean() {
                    return Err(bad(&format!("capabilities.{k}"), "a boolean", v));
                }
            }
        }
        Some(other) => return Err(bad("capabilities", "an object", other)),
    }
    match conf.get("dns") {
        None => Ok(()),
        Some(dns @ Value::Object(_)) => {
            string("dns.domain", dns.get("domain"))?;
            for k in ["nameservers", "search", "options"] {
                strings(&format!("dns.{k}"), dns.get(k))?;
            }
            Ok(())
        }
        Some(other) => Err(bad("dns", "an object", other)),
    }
}

/// `prevResult` of a folded config, parsed with the config's version when it has none.
pub fn prev_result(conf: &Value, version: &str) -> Result<Option<CniResult>, CniError> {
    match conf.get("prevresult") {
        None => Ok(None),
        Some(v) => CniResult::from_json(v, version)
            .map(Some)
            .map_err(|e| CniError::internal(format!("could not parse prevResult: {}", e.msg))),
    }
}

/// Decode a (folded) config value into `T`; the error names the path of the offending key,
/// in the reference's "failed to load netconf" wording. Used by `Ctx::plugin_conf` and for
/// sub-objects such as `ipam`.
pub fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| match locate_error::<T>(v) {
        Some(path) => anyhow::anyhow!("failed to load netconf: {path}: {e}"),
        None => anyhow::anyhow!("failed to load netconf: {e}"),
    })
}

/// The key path (`ipam.ranges`) of the value that makes decoding `v` into `T` fail, found by
/// removing one key at a time (an absent key takes its default): only run on the error path,
/// so error messages can say which key is wrong. `None` when no single key is to blame.
pub fn locate_error<T: serde::de::DeserializeOwned>(v: &Value) -> Option<String> {
    // the walk is the same for every `T`: only the trial decode is not (one copy of the walk)
    locate_error_with(v, &|trial| serde_json::from_value::<T>(trial).is_ok())
}

fn locate_error_with(v: &Value, decodes: &dyn Fn(Value) -> bool) -> Option<String> {
    fn walk(root: &Value, path: &mut Vec<String>, depth: usize, decodes: &dyn Fn(Value) -> bool) -> Option<String> {
        let mut cur = root;
        for p in path.iter() {
            cur = cur.get(p)?;
        }
        let keys: Vec<String> = cur.as_object()?.keys().take(MAX_LOCATE_KEYS).cloned().collect();
        for k in keys {
            let mut trial = root.clone();
            let mut node = &mut trial;
            for p in path.iter() {
                node = node.get_mut(p)?;
            }
            node.as_object_mut()?.remove(&k);
            if decodes(trial) {
                path.push(k);
                let deeper = if depth < 4 { walk(root, path, depth + 1, decodes) } else { None };
                return deeper.or_else(|| Some(path.join(".")));
            }
        }
        None
    }
    // each trial clones the config: only for configs of a sane size (a hostile 16 MiB object
    // with a million keys must not turn an error message into minutes of CPU)
    if serde_json::to_vec(v).map_or(true, |b| b.len() > MAX_LOCATE_BYTES) {
        return None;
    }
    walk(v, &mut Vec::new(), 0, decodes)
}

/// Bounds of [`locate_error`]'s search.
const MAX_LOCATE_KEYS: usize = 128;
const MAX_LOCATE_BYTES: usize = 64 << 10;

/// JSON type name for messages (Go's wording).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One attachment of a network (`CNI_CONTAINERID` + `CNI_IFNAME` of an ADD), as GC's
/// `cni.dev/valid-attachments` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

impl Ctx {
    /// GC's list of attachments to keep: `cni.dev/valid-attachments`, else the legacy
    /// `cni.dev/attachments`. `Ok(None)` when neither key is present — which is NOT the same
    /// as an empty list (cnitool sends no list; decide per plugin what absent means).
    ///
    /// Errors: a list that does not decode (not an array, an entry that is not an object, a
    /// field that is not a string) is code 6, "failed to decode content", as the reference's
    /// JSON decoding fails; an entry without its `containerID` or `ifname` (both required by the
    /// spec) is code 7, invalid config: honouring it would release what it meant to keep.
    pub fn valid_attachments(&self) -> Result<Option<Vec<Attachment>>, CniError> {
        let v = match self.conf.get("cni.dev/valid-attachments").or_else(|| self.conf.get("cni.dev/attachments")) {
            None => return Ok(None),
            Some(v) => v,
        };
        let bad = |m: String| CniError::new(code::DECODE, format!("cni.dev/valid-attachments: {m}"));
        let list = v.as_array().ok_or_else(|| bad(format!("expected an array, got {}", kind(v))))?;
        let mut out = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let o = item.as_object().ok_or_else(|| bad(format!("entry {i} is not an object")))?;
            let get = |k: &str| match o.get(k) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("entry {i}: {k} must be a string, not {}", kind(other)))),
            };
            let (container_id, ifname) = (get("containerid")?, get("ifname")?);
            if container_id.is_empty() || ifname.is_empty() {
                return Err(CniError::config(format!(
                    "cni.dev/valid-attachments entry {i} needs a containerID and an ifname"
                )));
            }
            out.push(Attachment { container_id, ifname });
        }
        Ok(Some(out))
    }

    /// stdin parsed with its original key case (use for map-valued keys whose keys are data,
    /// e.g. tuning's sysctl names). Nulls are kept.
    pub fn raw_conf(&self) -> anyhow::Result<Value> {
        parse_raw(&self.stdin).map_err(|e| anyhow::anyhow!("error unmarshall network config: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Command;
    use serde_json::json;

    #[test]
    fn fold_lowercases_last_spelling_wins_nulls_dropped() {
        let v = parse_folded(br#"{"MTU": 1400, "mtu": 1500, "Name": "a", "NAME": null, "IPAM": {"Type": "x", "SubNet": "s"}, "L": [{"A": 1}, null]}"#).unwrap();
        assert_eq!(v, json!({"mtu": 1500, "name": "a", "ipam": {"type": "x", "subnet": "s"}, "l": [{"a": 1}, null]}));
        let v = parse_folded(br#"{"mtu": 1500, "MTU": 1400}"#).unwrap();
        assert_eq!(v["mtu"], 1400);
        // null does not undo an earlier value
        let v = parse_folded(br#"{"mtu": 1500, "MTU": null}"#).unwrap();
        assert_eq!(v["mtu"], 1500);
        assert_eq!(fold_key("\u{212a}ey"), "key");
        assert_eq!(fold_key("ſubnet"), "subnet");
    }

    #[test]
    fn repeated_keys_merge_objects_like_go() {
        // Go decodes a repeated key into the same struct field: objects merge, later fields win
        let v = parse_folded(
            br#"{"ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.4.0/24"}]], "dataDir": "/a"},
                 "IPAM": {"dataDir": "/tmp/x"},
                 "dns": {"nameservers": ["198.18.0.53"]}, "DNS": {"domain": "example.test"}}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.4.0/24"}]], "datadir": "/tmp/x"},
                   "dns": {"nameservers": ["198.18.0.53"], "domain": "example.test"}})
        );
        // recursively, and for the same spelling too
        let v = parse_folded(br#"{"a": {"b": {"c": 1, "d": 2}}, "a": {"B": {"D": 3, "e": 4}}}"#).unwrap();
        assert_eq!(v, json!({"a": {"b": {"c": 1, "d": 3, "e": 4}}}));
        // arrays and scalars are replaced (Go decodes a slice afresh), also by an object and back
        let v = parse_folded(br#"{"l": [1, 2], "L": [3], "o": {"x": 1}, "O": 5, "p": 5, "P": {"y": 1}}"#).unwrap();
        assert_eq!(v, json!({"l": [3], "o": 5, "p": {"y": 1}}));
        // a null member of the later object changes nothing
        let v = parse_folded(br#"{"ipam": {"type": "static"}, "IPAM": {"type": null}}"#).unwrap();
        assert_eq!(v["ipam"]["type"], "static");
        // `fold` of an already-parsed value merges the same way
        let raw = parse_raw(br#"{"Dns": {"domain": "d"}, "DNS": {"search": ["s"]}}"#).unwrap();
        assert_eq!(fold(&raw), json!({"dns": {"domain": "d", "search": ["s"]}}));
    }

    #[test]
    fn negative_zero_is_the_integer_zero_as_in_go() {
        #[derive(serde::Deserialize)]
        struct C {
            mtu: i64,
            n: u32,
            f: f64,
        }
        for text in [&br#"{"mtu": -0, "n": -0, "f": -0}"#[..], br#"{"MTU": -0.0, "n": -0e3, "f": -0.0}"#] {
            let v = parse_folded(text).unwrap();
            assert_eq!(v, json!({"mtu": 0, "n": 0, "f": 0}), "{}", String::from_utf8_lossy(text));
            let c: C = decode(&v).unwrap();
            assert_eq!((c.mtu, c.n, c.f), (0, 0, 0.0));
        }
        // raw parsing too; a positive 0.0 stays a float (Go refuses it for an int as well)
        assert_eq!(parse_raw(br#"{"a": [-0]}"#).unwrap(), json!({"a": [0]}));
        assert!(parse_folded(br#"{"mtu": 0.0}"#).unwrap()["mtu"].is_f64());
    }

    #[test]
    fn raw_keeps_case() {
        let v = parse_raw(br#"{"Sysctl": {"net.ipv4.conf.ETH0.forwarding": "1"}, "x": null}"#).unwrap();
        assert_eq!(v, json!({"Sysctl": {"net.ipv4.conf.ETH0.forwarding": "1"}, "x": null}));
    }

    #[test]
    fn depth_and_garbage_are_clean_errors() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse_folded(deep.as_bytes()).unwrap_err().to_string().contains("nesting"));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_folded(ok.as_bytes()).is_ok());
        let huge = "[".repeat(1 << 20);
        assert!(parse_folded(huge.as_bytes()).is_err());
        for bad in [&b""[..], b"{", b"{} x", b"\xff", b"{\"a\": \"\xff\"}", b"nul"] {
            assert!(parse_folded(bad).is_err());
        }
    }

    #[test]
    fn name_validation() {
        assert_eq!(validate_name(&json!({"name": "net-1_a.b"})).unwrap(), "net-1_a.b");
        assert_eq!(validate_name(&json!({})).unwrap_err().msg, "missing network name");
        assert_eq!(validate_name(&Value::Null).unwrap_err().code, 7);
        for bad in ["../x", ".x", "a/b", "a b", "-a", "é"] {
            let e = validate_name(&json!({ "name": bad })).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str(), e.details.as_str()),
                (7, "invalid characters found in network name", bad)
            );
        }
        assert_eq!(validate_name(&json!({"name": 3})).unwrap_err().code, 6);
        assert_eq!(validate_name(&json!([])).unwrap_err().code, 6);
    }

    #[test]
    fn version_default_and_prev_result() {
        assert_eq!(config_version(&json!({})).unwrap(), "0.1.0");
        assert_eq!(config_version(&json!({"cniversion": ""})).unwrap(), "0.1.0");
        assert_eq!(config_version(&json!({"cniversion": "1.0.0"})).unwrap(), "1.0.0");
        assert_eq!(config_version(&json!({"cniversion": 1})).unwrap_err().code, 6);
        let conf = parse_folded(br#"{"prevResult": {"IPs": [{"address": "198.18.0.2/24"}]}}"#).unwrap();
        let r = prev_result(&conf, "1.0.0").unwrap().unwrap();
        assert_eq!(r.ips.len(), 1);
        // version 0.4.0 shape, version taken from the config
        let r = prev_result(&conf, "0.4.0").unwrap().unwrap();
        assert_eq!(r.ips.len(), 1);
        let bad = parse_folded(br#"{"prevResult": {"ips": 1}}"#).unwrap();
        let e = prev_result(&bad, "1.0.0").unwrap_err();
        assert_eq!(e.code, 999);
        assert!(e.msg.starts_with("could not parse prevResult: "));
        assert!(prev_result(&json!({}), "1.0.0").unwrap().is_none());
    }

    #[test]
    fn valid_attachments_absent_empty_and_legacy() {
        let mut ctx = Ctx::new(Command::Gc);
        assert_eq!(ctx.valid_attachments().unwrap(), None);
        ctx.conf = parse_folded(br#"{"cni.dev/valid-attachments": []}"#).unwrap();
        assert_eq!(ctx.valid_attachments().unwrap(), Some(vec![]));
        ctx.conf = parse_folded(br#"{"cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]}"#).unwrap();
        let att = |c: &str, i: &str| Attachment { container_id: c.into(), ifname: i.into() };
        assert_eq!(ctx.valid_attachments().unwrap(), Some(vec![att("c1", "eth0")]));
        ctx.conf = parse_folded(
            br#"{"cni.dev/attachments": [], "cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "net1"}]}"#,
        )
        .unwrap();
        assert_eq!(ctx.valid_attachments().unwrap(), Some(vec![att("c2", "net1")]));
        ctx.conf = parse_folded(br#"{"cni.dev/valid-attachments": [{"containerID": 5}]}"#).unwrap();
        assert_eq!(ctx.valid_attachments().unwrap_err().code, code::DECODE);
        ctx.conf = parse_folded(br#"{"cni.dev/valid-attachments": {}}"#).unwrap();
        assert_eq!(ctx.valid_attachments().unwrap_err().code, code::DECODE);
        ctx.conf = parse_folded(br#"{"cni.dev/valid-attachments": [5]}"#).unwrap();
        assert_eq!(ctx.valid_attachments().unwrap_err().code, code::DECODE);
        // both fields are required: an entry without one would release what it meant to keep
        for entry in [r#"{"containerID": "c2"}"#, r#"{"ifname": "eth0"}"#, r#"{"containerID": "", "ifname": "eth0"}"#] {
            ctx.conf = parse_folded(format!(r#"{{"cni.dev/valid-attachments": [{entry}]}}"#).as_bytes()).unwrap();
            assert_eq!(ctx.valid_attachments().unwrap_err().code, code::INVALID_CONFIG, "{entry}");
        }
    }
}
