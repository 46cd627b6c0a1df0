//! libcni's result cache (checklist §1.11): `<cacheDir>/results/<network>-<containerID>-<ifname>`,
//! directory 0700, file 0600, one compact JSON object of kind `cniCacheV1` (fields in libcni's order),
//! the legacy "just the result" format accepted on read.

use crate::cni::CniResult;
use crate::digest;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const KIND_V1: &str = "cniCacheV1";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// One cache file, field order as libcni writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CachedInfo {
    #[serde(default)]
    pub kind: String,
    #[serde(rename = "containerId", default)]
    pub container_id: String,
    /// base64 of the raw conflist bytes
    #[serde(default)]
    pub config: String,
    #[serde(rename = "ifName", default)]
    pub if_name: String,
    #[serde(rename = "networkName", default)]
    pub network_name: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub netns: String,
    #[serde(rename = "cniArgs", skip_serializing_if = "Vec::is_empty", default)]
    pub cni_args: Vec<[String; 2]>,
    #[serde(rename = "capabilityArgs", skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub capability_args: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<Value>,
}

impl CachedInfo {
    pub fn config_bytes(&self) -> Option<Vec<u8>> {
        digest::base64_decode(&self.config)
    }
}

pub fn results_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("results")
}

pub fn file_path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    results_dir(cache_dir).join(format!("{network}-{container_id}-{ifname}"))
}

/// Write the cache entry after a successful ADD of the whole list.
pub fn write(cache_dir: &Path, info: &CachedInfo) -> Result<PathBuf> {
    let dir = results_dir(cache_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;
    let path = file_path(cache_dir, &info.network_name, &info.container_id, &info.if_name);
    let data = serde_json::to_vec(info)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    f.write_all(&data).and_then(|_| f.sync_all()).with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// Remove a cache entry; a missing file is fine.
pub fn remove(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> Result<()> {
    let p = file_path(cache_dir, network, container_id, ifname);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("failed to remove {}: {e}", p.display())),
    }
}

/// The cached result converted to `version`: `Ok(None)` when there is no readable file (libcni
/// ignores read errors); an error when the content cannot be used.
pub fn cached_result(
    cache_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
    version: &str,
) -> Result<Option<CniResult>> {
    let p = file_path(cache_dir, network, container_id, ifname);
    let Ok(bytes) = std::fs::read(&p) else { return Ok(None) };
    let raw = match serde_json::from_slice::<CachedInfo>(&bytes) {
        Ok(info) if info.kind == KIND_V1 => match info.result {
            Some(r) => r,
            None => return Ok(None),
        },
        // legacy: the file is the result itself
        _ => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| anyhow!("failed to parse cached result {}: {e}", p.display()))?,
    };
    let own_version = raw.get("cniVersion").and_then(|v| v.as_str()).unwrap_or(version).to_string();
    let r =
        CniResult::from_json(&raw, &own_version).map_err(|e| anyhow!("failed to parse cached result: {}", e.msg))?;
    // convert to the list's version (a lossy down-conversion can fail, e.g. no IPs for 0.2.0)
    let text = r
        .to_json(version)
        .map_err(|e| anyhow!("failed to convert cached result to config version {version:?}: {}", e.msg))?;
    let back = CniResult::from_slice(text.as_bytes(), version).map_err(|e| anyhow!("{}", e.msg))?;
    Ok(Some(back))
}

/// Every valid `cniCacheV1` entry (non-empty ifName and networkName), optionally for one container.
pub fn attachments(cache_dir: &Path, container_id: Option<&str>) -> Vec<CachedInfo> {
    let Ok(rd) = std::fs::read_dir(results_dir(cache_dir)) else { return Vec::new() };
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        let Ok(bytes) = std::fs::read(&p) else { continue };
        let Ok(info) = serde_json::from_slice::<CachedInfo>(&bytes) else { continue };
        if info.kind != KIND_V1 || info.if_name.is_empty() || info.network_name.is_empty() {
            continue;
        }
        if container_id.is_some_and(|c| c != info.container_id) {
            continue;
        }
        out.push(info);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let d = std::env::temp_dir().join(format!("cni-multi-toolcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let info = CachedInfo {
            kind: KIND_V1.into(),
            container_id: "c1".into(),
            config: digest::base64_encode(b"{\"name\":\"n\"}"),
            if_name: "eth0".into(),
            network_name: "n".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![["K".into(), "V".into()]],
            capability_args: serde_json::Map::new(),
            result: Some(serde_json::json!({"cniVersion":"1.0.0","ips":[{"address":"198.18.0.2/24"}]})),
        };
        let p = write(&d, &info).unwrap();
        assert_eq!(p, d.join("results/n-c1-eth0"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(r#"{"kind":"cniCacheV1","containerId":"c1","config":"eyJuYW1lIjoibiJ9","ifName":"eth0","networkName":"n","netns":"/run/netns/x","cniArgs":[["K","V"]],"result":{"#), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(d.join("results")).unwrap().permissions().mode() & 0o777, 0o700);
        let r = cached_result(&d, "n", "c1", "eth0", "0.4.0").unwrap().unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(attachments(&d, None).len(), 1);
        assert_eq!(attachments(&d, Some("other")).len(), 0);
        // legacy format
        std::fs::write(
            d.join("results/n-c2-eth0"),
            br#"{"cniVersion":"0.3.1","ips":[{"version":"4","address":"198.18.0.3/24"}]}"#,
        )
        .unwrap();
        assert_eq!(cached_result(&d, "n", "c2", "eth0", "1.0.0").unwrap().unwrap().ips.len(), 1);
        assert_eq!(attachments(&d, None).len(), 1, "legacy entries are not attachments");
        remove(&d, "n", "c1", "eth0").unwrap();
        remove(&d, "n", "c1", "eth0").unwrap();
        assert!(cached_result(&d, "n", "c1", "eth0", "1.0.0").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }
}
