//! Running a list's plugin chain the way libcni does (checklist §1.3, §1.4, §1.10, §1.11):
//! `name`/`cniVersion` injected into every plugin, runtimeConfig for declared capabilities,
//! prevResult threaded on ADD and taken from the cache on DEL/CHECK, DEL in reverse order,
//! GC synthesising DELs for stale cached attachments before sending GC.
//!
//! Plugins are found on CNI_PATH and run through `cni::delegate` — in-process when the binary
//! found is this executable (results byte-identical to the exec path), as a process otherwise.

use super::cache::{self, CachedInfo};
use super::conf::{NetworkList, PluginConf};
use crate::cni::{config, delegate, env, version, CniError, CniResult, Command, Ctx};
use crate::digest;
use anyhow::anyhow;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One attachment's runtime values (libcni's RuntimeConf).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runtime {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS pairs, in order
    pub args: Vec<(String, String)>,
    /// capability arguments (CAP_ARGS)
    pub cap_args: Map<String, Value>,
}

/// The runtime side: where plugins live and where results are cached.
#[derive(Debug, Clone)]
pub struct Tool {
    pub path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// the executable counted as "this binary" for in-process runs
    pub self_exe: PathBuf,
}

fn internal(e: anyhow::Error) -> CniError {
    CniError::from_anyhow(&e)
}

impl Tool {
    pub fn new(path: Vec<PathBuf>, cache_dir: PathBuf) -> Tool {
        Tool { path, cache_dir, self_exe: PathBuf::from("/proc/self/exe") }
    }

    /// The stdin a plugin gets: its object + `name`, `cniVersion`, optional `prevResult`,
    /// `runtimeConfig` for declared capabilities the runtime supplied, and `extra` keys.
    /// Serialised compactly with sorted keys, as libcni's map round trip does.
    pub fn plugin_stdin(
        list: &NetworkList,
        plugin: &PluginConf,
        prev: Option<&CniResult>,
        rt: Option<&Runtime>,
        extra: &[(&str, Value)],
    ) -> Result<Vec<u8>, CniError> {
        let mut m = plugin.raw.clone();
        m.insert("name".into(), Value::String(list.name.clone()));
        m.insert("cniVersion".into(), Value::String(list.version.clone()));
        if let Some(p) = prev {
            let text = p.to_json(&list.version)?;
            let v: Value = serde_json::from_str(&text).map_err(|e| CniError::internal(e.to_string()))?;
            m.insert("prevResult".into(), v);
        }
        if let Some(rt) = rt {
            let mut rc = Map::new();
            for cap in plugin.capabilities() {
                if let Some(v) = rt.cap_args.get(&cap) {
                    rc.insert(cap, v.clone());
                }
            }
            if !rc.is_empty() {
                m.insert("runtimeConfig".into(), Value::Object(rc));
            }
        }
        for (k, v) in extra {
            m.insert((*k).to_string(), v.clone());
        }
        serde_json::to_vec(&Value::Object(m)).map_err(|e| CniError::internal(e.to_string()))
    }

    /// Run one plugin with `command`.
    pub fn invoke(
        &self,
        list: &NetworkList,
        plugin: &PluginConf,
        command: Command,
        rt: Option<&Runtime>,
        stdin: Vec<u8>,
    ) -> Result<Option<CniResult>, CniError> {
        let conf = config::parse_folded(&stdin)
            .map_err(|e| CniError::new(crate::cni::code::DECODE, format!("error building plugin config: {e}")))?;
        let version = config::config_version(&conf)?;
        let prev_result = match config::prev_result(&conf, &version) {
            Ok(r) => r,
            Err(_) if command == Command::Del => None,
            Err(e) => return Err(e),
        };
        let empty = Runtime::default();
        let rt = rt.unwrap_or(&empty);
        let ctx = Ctx {
            command,
            container_id: rt.container_id.clone(),
            netns: Some(rt.netns.clone()).filter(|s| !s.is_empty()),
            ifname: rt.ifname.clone(),
            args: Vec::new(),
            raw_args: rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";"),
            path: self.path.clone(),
            stdin,
            conf,
            spec: version.parse().ok(),
            version,
            name: list.name.clone(),
            prev_result,
            plugins: crate::applets::find,
            // the tool's own environment, as an exec'd plugin would inherit it
            netns_override: crate::cni::env::is_true(&std::env::var("CNI_NETNS_OVERRIDE").unwrap_or_default()),
        };
        tracing::debug!("tool: {} {} ({})", command.as_str(), plugin.ty, list.name);
        delegate::delegate_with(&ctx, &plugin.ty, command, &self.self_exe, crate::applets::find).map_err(internal)
    }

    /// The runtime's values, as the plugins check them for `command` (a `%` in the ifname only
    /// passes on DEL, see [`env::validate_ifname_for`]).
    fn validate_rt(list: &NetworkList, rt: &Runtime, command: Command) -> Result<(), CniError> {
        if rt.container_id.is_empty() {
            return Err(CniError::new(crate::cni::code::UNKNOWN_CONTAINER, "missing containerID"));
        }
        env::validate_container_id(&rt.container_id)?;
        super::conf::check_name(&list.name).map_err(|e| CniError::config(e.to_string()))?;
        env::validate_ifname_for(command.as_str(), &rt.ifname)
    }

    /// ADD: every plugin in order, each given the previous result; the final result is cached.
    pub fn add(&self, list: &NetworkList, rt: &Runtime) -> Result<Option<CniResult>, CniError> {
        Self::validate_rt(list, rt, Command::Add)?;
        let mut prev: Option<CniResult> = None;
        for plugin in &list.plugins {
            let stdin = Self::plugin_stdin(list, plugin, prev.as_ref(), Some(rt), &[])?;
            let r = self.invoke(list, plugin, Command::Add, Some(rt), stdin)?;
            if r.is_some() {
                prev = r;
            }
        }
        let result = match &prev {
            Some(r) => {
                let text = r.to_json(&list.version)?;
                Some(serde_json::from_str::<Value>(&text).map_err(|e| CniError::internal(e.to_string()))?)
            }
            None => None,
        };
        let info = CachedInfo {
            kind: cache::KIND_V1.into(),
            container_id: rt.container_id.clone(),
            config: digest::base64_encode(&list.bytes),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt.args.iter().map(|(k, v)| [k.clone(), v.clone()]).collect(),
            capability_args: rt.cap_args.clone(),
            result,
        };
        cache::write(&self.cache_dir, &info)
            .map_err(|e| CniError::internal(format!("failed to set network {:?} cached result: {e:#}", list.name)))?;
        Ok(prev)
    }

    /// DEL: plugins in reverse order with the cached result as prevResult (list version ≥ 0.4.0);
    /// an unusable cache entry is dropped and DEL goes on without it; the entry is removed at the end.
    pub fn del(&self, list: &NetworkList, rt: &Runtime) -> Result<(), CniError> {
        Self::validate_rt(list, rt, Command::Del)?;
        let with_prev = version::Version::parse(&list.version).map_err(CniError::internal)? >= version::WITH_CHECK;
        let mut prev = None;
        if with_prev {
            match cache::cached_result(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname, &list.version) {
                Ok(r) => prev = r,
                Err(e) => {
                    tracing::warn!("dropping unusable cached result: {e:#}");
                    let _ = cache::remove(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname);
                }
            }
        }
        for plugin in list.plugins.iter().rev() {
            let stdin = Self::plugin_stdin(list, plugin, prev.as_ref(), Some(rt), &[])?;
            self.invoke(list, plugin, Command::Del, Some(rt), stdin)?;
        }
        let _ = cache::remove(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname);
        Ok(())
    }

    /// CHECK: needs list version ≥ 0.4.0; `disableCheck` succeeds at once; plugins in order.
    pub fn check(&self, list: &NetworkList, rt: &Runtime) -> Result<(), CniError> {
        Self::validate_rt(list, rt, Command::Check)?;
        if version::Version::parse(&list.version).map_err(CniError::internal)? < version::WITH_CHECK {
            return Err(CniError::internal(format!(
                "configuration version {:?} does not support the CHECK command",
                list.version
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        let prev = cache::cached_result(&self.cache_dir, &list.name, &rt.container_id, &rt.ifname, &list.version)
            .map_err(|e| CniError::internal(format!("failed to get network {:?} cached result: {e:#}", list.name)))?;
        for plugin in &list.plugins {
            let stdin = Self::plugin_stdin(list, plugin, prev.as_ref(), Some(rt), &[])?;
            self.invoke(list, plugin, Command::Check, Some(rt), stdin)?;
        }
        Ok(())
    }

    /// GC: DEL every cached attachment of this network that is not in `valid` (`None` = the
    /// runtime passed no list, so every cached attachment is stale, as with cnitool), then, for
    /// list version ≥ 1.1.0, GC to every plugin. Errors are collected, not fatal.
    pub fn gc(&self, list: &NetworkList, valid: Option<&[(String, String)]>) -> Result<(), CniError> {
        if list.disable_gc {
            return Ok(());
        }
        let mut errs: Vec<String> = Vec::new();
        for att in cache::attachments(&self.cache_dir, None) {
            if att.network_name != list.name {
                continue;
            }
            let key = (att.container_id.clone(), att.if_name.clone());
            if valid.is_some_and(|v| v.contains(&key)) {
                continue;
            }
            let rt = Runtime {
                container_id: att.container_id.clone(),
                netns: att.netns.clone(),
                ifname: att.if_name.clone(),
                args: att.cni_args.iter().map(|[k, v]| (k.clone(), v.clone())).collect(),
                cap_args: att.capability_args.clone(),
            };
            if let Err(e) = self.del(list, &rt) {
                errs.push(format!("failed to delete stale attachment {} {}: {}", rt.container_id, rt.ifname, e.msg));
            }
        }
        if version::WITH_GC.reached_by(&list.version) {
            let mut extra: Vec<(&str, Value)> = Vec::new();
            if let Some(v) = valid {
                let arr: Vec<Value> =
                    v.iter().map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i})).collect();
                extra.push(("cni.dev/valid-attachments", Value::Array(arr.clone())));
                extra.push(("cni.dev/attachments", Value::Array(arr)));
            }
            for plugin in &list.plugins {
                let res = Self::plugin_stdin(list, plugin, None, None, &extra)
                    .and_then(|stdin| self.invoke(list, plugin, Command::Gc, None, stdin));
                if let Err(e) = res {
                    errs.push(format!("failed to GC plugin {}: {}", plugin.ty, e.msg));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(CniError::internal(errs.join("\n")))
        }
    }

    /// STATUS: list version ≥ 1.1.0 only; plugins in order, first error wins.
    pub fn status(&self, list: &NetworkList) -> Result<(), CniError> {
        if !version::WITH_GC.reached_by(&list.version) {
            return Ok(());
        }
        for plugin in &list.plugins {
            let stdin = Self::plugin_stdin(list, plugin, None, None, &[])?;
            self.invoke(list, plugin, Command::Status, None, stdin)?;
        }
        Ok(())
    }
}

/// `filepath.Abs` without symlink resolution.
pub fn abs_path(p: &str) -> anyhow::Result<String> {
    let path = Path::new(p);
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| anyhow!("failed to get the working directory: {e}"))?.join(path)
    };
    // lexical clean of `.` and `..`
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in full.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s),
            _ => {}
        }
    }
    let mut out = PathBuf::from("/");
    for s in parts {
        out.push(s);
    }
    Ok(out.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnitool_container_id() {
        assert_eq!(abs_path("/a/./b/../c").unwrap(), "/a/c");
    }

    #[test]
    fn stdin_injection_sorted_with_runtime_config() {
        let list = super::super::conf::list_from_bytes(
            br#"{"name":"net","cniVersion":"1.0.0","plugins":[{"type":"portmap","capabilities":{"portMappings":true,"mac":false},"zz":1,"name":"ignored"}]}"#,
        )
        .unwrap();
        let mut rt = Runtime { container_id: "c".into(), ifname: "eth0".into(), ..Default::default() };
        rt.cap_args.insert("portMappings".into(), serde_json::json!([{"hostPort": 8080}]));
        rt.cap_args.insert("mac".into(), serde_json::json!("c2:11:22:33:44:55"));
        let prev = CniResult {
            ips: vec![crate::cni::result::IpConfig {
                address: "198.18.0.2/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..Default::default()
        };
        let s = String::from_utf8(Tool::plugin_stdin(&list, &list.plugins[0], Some(&prev), Some(&rt), &[]).unwrap())
            .unwrap();
        assert_eq!(
            s,
            r#"{"capabilities":{"mac":false,"portMappings":true},"cniVersion":"1.0.0","name":"net","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"198.18.0.2/24"}]},"runtimeConfig":{"portMappings":[{"hostPort":8080}]},"type":"portmap","zz":1}"#
        );
    }
}
