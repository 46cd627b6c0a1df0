//! Network configuration lists as libcni loads them (checklist §1.4): `*.conflist` files in lexical
//! order, then single-plugin `*.conf`/`*.json` files up-converted to a one-plugin list; `cniVersions`
//! selection; string-or-bool flags; plugins from the sibling `<dir>/<name>/*.conf` directory.

use crate::cni::config::{is_valid_id, kind};
use crate::cni::version;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One plugin of a list: its object exactly as written (keys keep their case) and its `type`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub ty: String,
    pub raw: Map<String, Value>,
}

impl PluginConf {
    pub fn from_value(v: &Value) -> Result<PluginConf> {
        let raw = v.as_object().ok_or_else(|| anyhow!("plugin config must be an object, not {}", kind(v)))?.clone();
        // Go decodes `type` into a struct field: the match is case-insensitive, the last spelling wins
        let ty = raw
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("type"))
            .filter_map(|(_, v)| v.as_str())
            .next_back()
            .unwrap_or("")
            .to_string();
        if ty.is_empty() {
            bail!("error parsing configuration: missing 'type'");
        }
        Ok(PluginConf { ty, raw })
    }

    /// The capabilities this plugin declares `true`.
    pub fn capabilities(&self) -> Vec<String> {
        let caps = self.raw.iter().filter(|(k, _)| k.eq_ignore_ascii_case("capabilities")).map(|(_, v)| v).next_back();
        match caps.and_then(|c| c.as_object()) {
            Some(m) => m.iter().filter(|(_, v)| v.as_bool() == Some(true)).map(|(k, _)| k.clone()).collect(),
            None => Vec::new(),
        }
    }
}

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined: bool,
    pub plugins: Vec<PluginConf>,
    /// the raw bytes the list came from (what libcni caches, base64-encoded)
    pub bytes: Vec<u8>,
}

fn flag(m: &Map<String, Value>, key: &str) -> Result<bool> {
    match m.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(Value::String(s)) => bail!("error parsing configuration list: invalid value {s:?} for {key}"),
        Some(other) => bail!("error parsing configuration list: invalid type for {key}: {}", kind(other)),
    }
}

/// Pick the list's version: `cniVersions` ∪ {`cniVersion`} minus versions newer than ours, highest wins.
fn select_version(m: &Map<String, Value>) -> Result<String> {
    let mut v = match m.get("cniVersion") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => bail!("error parsing configuration list: invalid cniVersion type {}", kind(other)),
    };
    if let Some(raw) = m.get("cniVersions") {
        let list = raw
            .as_array()
            .ok_or_else(|| anyhow!("error parsing configuration list: invalid type for cniVersions: {}", kind(raw)))?;
        let mut vs: Vec<(version::Version, String)> = Vec::new();
        let mut candidates: Vec<String> = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let s = item.as_str().ok_or_else(|| {
                anyhow!("error parsing configuration list: invalid type for cniVersions index {i}: {}", kind(item))
            })?;
            candidates.push(s.to_string());
        }
        if !v.is_empty() {
            candidates.push(v.clone());
        }
        let current = version::CURRENT;
        for s in candidates {
            let p = version::Version::parse(&s)
                .map_err(|e| anyhow!("error parsing configuration list: invalid cniVersions entry {s}: {e}"))?;
            if p <= current {
                vs.push((p, s));
            }
        }
        vs.sort();
        if let Some(last) = vs.pop() {
            v = last.1;
        }
    }
    Ok(v)
}

/// Parse a conflist's bytes (no sibling-directory plugins yet).
pub fn list_from_bytes(bytes: &[u8]) -> Result<NetworkList> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("error parsing configuration list: {e}"))?;
    let m = v.as_object().ok_or_else(|| anyhow!("error parsing configuration list: not a JSON object"))?;
    let name = match m.get("name") {
        None => bail!("error parsing configuration list: no name"),
        Some(Value::String(s)) => s.clone(),
        Some(other) => bail!("error parsing configuration list: invalid name type {}", kind(other)),
    };
    let version = select_version(m)?;
    let disable_check = flag(m, "disableCheck")?;
    let disable_gc = flag(m, "disableGC")?;
    let load_only_inlined = flag(m, "loadOnlyInlinedPlugins")?;
    let mut plugins = Vec::new();
    match m.get("plugins") {
        None if load_only_inlined => bail!("error parsing configuration list: no plugins in list"),
        None => {}
        Some(Value::Array(a)) if a.is_empty() => bail!("error parsing configuration list: no plugins in list"),
        Some(Value::Array(a)) => {
            for (i, p) in a.iter().enumerate() {
                plugins.push(PluginConf::from_value(p).with_context(|| format!("failed to parse plugin config {i}"))?);
            }
        }
        Some(other) => bail!("error parsing configuration list: invalid plugins type {}", kind(other)),
    }
    Ok(NetworkList { name, version, disable_check, disable_gc, load_only_inlined, plugins, bytes: bytes.to_vec() })
}

/// Up-convert a single-plugin config to a list, as libcni does: a new list object
/// `{"cniVersion", "name", "plugins": [conf]}` serialised compactly with sorted keys.
pub fn list_from_conf_bytes(bytes: &[u8]) -> Result<NetworkList> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("error parsing configuration: {e}"))?;
    let plugin = PluginConf::from_value(&v)?;
    let get = |k: &str| plugin.raw.iter().filter(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v).next_back();
    let name = get("name").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let ver = get("cniVersion").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut list = Map::new();
    list.insert("cniVersion".into(), Value::String(ver));
    list.insert("name".into(), Value::String(name));
    list.insert("plugins".into(), Value::Array(vec![v]));
    let b = serde_json::to_vec(&Value::Object(list))?;
    list_from_bytes(&b)
}

/// Files in `dir` with one of `exts`, sorted; a missing directory is an empty list.
fn conf_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("failed to read {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let p = ent.path();
        if p.is_dir() {
            continue;
        }
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if exts.contains(&ext) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Load a conflist file (with its sibling-directory plugins unless `loadOnlyInlinedPlugins`).
pub fn list_from_file(path: &Path) -> Result<NetworkList> {
    let bytes = std::fs::read(path).with_context(|| format!("error reading {}", path.display()))?;
    let mut list = list_from_bytes(&bytes).with_context(|| format!("in {}", path.display()))?;
    if !list.load_only_inlined {
        let dir = path.parent().unwrap_or(Path::new(".")).join(&list.name);
        for f in conf_files(&dir, &["conf"])? {
            let b = std::fs::read(&f).with_context(|| format!("error reading {}", f.display()))?;
            let v: Value =
                serde_json::from_slice(&b).map_err(|e| anyhow!("error parsing configuration {}: {e}", f.display()))?;
            list.plugins.push(PluginConf::from_value(&v).with_context(|| format!("in {}", f.display()))?);
        }
    }
    if list.plugins.is_empty() {
        bail!("error parsing configuration list {}: no plugin configs found", path.display());
    }
    Ok(list)
}

/// Load any config file: `.conflist` as a list, anything else as a single plugin, up-converted.
pub fn load_file(path: &Path) -> Result<NetworkList> {
    if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
        return list_from_file(path);
    }
    let bytes = std::fs::read(path).with_context(|| format!("error reading {}", path.display()))?;
    list_from_conf_bytes(&bytes).with_context(|| format!("in {}", path.display()))
}

/// Find network `name` in `dir` the way libcni's LoadNetworkConf does.
pub fn find_network(dir: &Path, name: &str) -> Result<NetworkList> {
    let lists = conf_files(dir, &["conflist"])?;
    for f in &lists {
        let l = list_from_file(f)?;
        if l.name == name {
            return Ok(l);
        }
    }
    let singles = conf_files(dir, &["conf", "json"])?;
    if singles.is_empty() && lists.is_empty() {
        bail!("no net configurations found in {}", dir.display());
    }
    for f in &singles {
        let bytes = std::fs::read(f).with_context(|| format!("error reading {}", f.display()))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| anyhow!("error parsing {}: {e}", f.display()))?;
        if v.get("name").and_then(|n| n.as_str()) == Some(name) {
            return list_from_conf_bytes(&bytes).with_context(|| format!("in {}", f.display()));
        }
    }
    bail!("no net configuration with name {name:?} in {}", dir.display())
}

/// The network name must be a valid id (file-path safe).
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("missing network name");
    }
    if !is_valid_id(name) {
        bail!("invalid characters found in network name {name:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_flags() {
        let l = list_from_bytes(
            br#"{"name":"n","cniVersion":"0.4.0","cniVersions":["1.0.0","9.9.9","0.3.1"],"disableCheck":"TRUE","disableGC":false,"plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert_eq!(l.version, "1.0.0");
        assert!(l.disable_check && !l.disable_gc);
        assert!(list_from_bytes(br#"{"name":"n","disableCheck":"yes","plugins":[{"type":"a"}]}"#).is_err());
        assert!(list_from_bytes(br#"{"name":"n","plugins":[]}"#).is_err());
        assert!(list_from_bytes(br#"{"plugins":[{"type":"a"}]}"#).is_err());
        assert!(list_from_bytes(br#"{"name":"n","plugins":[{"ipam":{}}]}"#).is_err());
        assert!(list_from_bytes(br#"{"name":"n","loadOnlyInlinedPlugins":true}"#).is_err());
        assert!(list_from_bytes(br#"{"name":"n","cniVersions":[1],"plugins":[{"type":"a"}]}"#).is_err());
        let l = list_from_bytes(br#"{"name":"n","plugins":[{"Type":"ptp","capabilities":{"mac":true,"ips":false}}]}"#)
            .unwrap();
        assert_eq!(l.plugins[0].ty, "ptp");
        assert_eq!(l.plugins[0].capabilities(), vec!["mac".to_string()]);
    }

    #[test]
    fn conf_up_conversion_is_compact_and_sorted() {
        let l = list_from_conf_bytes(br#"{"type":"bridge","name":"x","cniVersion":"0.3.1"}"#).unwrap();
        assert_eq!(
            String::from_utf8(l.bytes.clone()).unwrap(),
            r#"{"cniVersion":"0.3.1","name":"x","plugins":[{"cniVersion":"0.3.1","name":"x","type":"bridge"}]}"#
        );
        assert_eq!((l.name.as_str(), l.version.as_str(), l.plugins.len()), ("x", "0.3.1", 1));
    }

    #[test]
    fn discovery_order_and_sibling_dir() {
        let d = std::env::temp_dir().join(format!("cni-multi-toolconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("net1")).unwrap();
        std::fs::write(
            d.join("20-b.conflist"),
            br#"{"name":"net1","cniVersion":"1.0.0","plugins":[{"type":"second"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.conflist"),
            br#"{"name":"net1","cniVersion":"1.0.0","plugins":[{"type":"first"}]}"#,
        )
        .unwrap();
        std::fs::write(d.join("net1/extra.conf"), br#"{"type":"tuning"}"#).unwrap();
        std::fs::write(d.join("05-single.conf"), br#"{"name":"single","type":"loopback","cniVersion":"0.4.0"}"#)
            .unwrap();
        let l = find_network(&d, "net1").unwrap();
        assert_eq!(l.plugins.iter().map(|p| p.ty.as_str()).collect::<Vec<_>>(), ["first", "tuning"]);
        let s = find_network(&d, "single").unwrap();
        assert_eq!((s.plugins[0].ty.as_str(), s.version.as_str()), ("loopback", "0.4.0"));
        assert!(find_network(&d, "nope").unwrap_err().to_string().contains("no net configuration with name"));
        let _ = std::fs::remove_dir_all(&d);
        assert!(find_network(&d, "x").unwrap_err().to_string().contains("no net configurations found"));
    }
}
