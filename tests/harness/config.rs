//! Test network configs: per-test address blocks and testdata loading with placeholders.
//!
//! Placeholders a testdata file may use (all are plain text substitutions):
//! `__V4A__`/`__V4B__` → a 3-octet prefix such as `198.18.7` (write `__V4A__.0/24`, `__V4A__.1`);
//! `__V6A__`/`__V6B__` → a /64 prefix without `::`, such as `fd00:cafe:0:7`
//! (write `__V6A__::/64`, `__V6A__::1`); `__BRIDGE__`; `__DATADIR__`; `__NAME__`; `__TMP__`.
//! `cniVersion` is set by the test.

use super::world::World;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

static BLOCK: AtomicU32 = AtomicU32::new(0);

/// Address blocks for one test: two IPv4 /24s from 198.18.0.0/15 and two IPv6 /64s from
/// fd00:cafe::/48, distinct from every other test in this process.
#[derive(Debug, Clone)]
pub struct Subnets {
    pub v4a: String,
    pub v4b: String,
    pub v6a: String,
    pub v6b: String,
}

impl Subnets {
    pub fn alloc() -> Subnets {
        let n = BLOCK.fetch_add(1, Ordering::SeqCst);
        // 512 /24s in 198.18.0.0/15, two per test: wraps after 256 tests (each test has its own
        // netnses and dataDir anyway, so a wrap could never make two tests collide on the host)
        let a = (2 * n) % 512;
        let b = a + 1;
        let v4 = |i: u32| format!("198.{}.{}", 18 + i / 256, i % 256);
        let v6 = |i: u32| format!("fd00:cafe:0:{i:x}");
        Subnets { v4a: v4(a), v4b: v4(b), v6a: v6(a), v6b: v6(b) }
    }

    /// `<v4a>.<host>`
    pub fn ip4(&self, host: u32) -> String {
        format!("{}.{host}", self.v4a)
    }
    /// `<v6a>::<host hex>`
    pub fn ip6(&self, host: u32) -> String {
        format!("{}::{host:x}", self.v6a)
    }
    pub fn net4(&self) -> String {
        format!("{}.0/24", self.v4a)
    }
    pub fn net6(&self) -> String {
        format!("{}::/64", self.v6a)
    }
}

pub fn testdata_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The placeholder values for a world.
pub fn vars(w: &World, s: &Subnets, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("__V4A__", s.v4a.clone()),
        ("__V4B__", s.v4b.clone()),
        ("__V6A__", s.v6a.clone()),
        ("__V6B__", s.v6b.clone()),
        ("__BRIDGE__", "cmbr0".to_string()),
        ("__DATADIR__", w.data_dir.to_string_lossy().into_owned()),
        ("__TMP__", w.tmp.to_string_lossy().into_owned()),
        ("__NAME__", name.to_string()),
    ]
}

/// Load `testdata/<file>`, fill the placeholders, set `cniVersion`.
pub fn load(file: &str, vars: &[(&str, String)], version: &str) -> Value {
    let path = testdata_dir().join(file);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (k, v) in vars {
        text = text.replace(k, v);
    }
    assert!(!text.contains("__"), "unfilled placeholder in {file}: {text}");
    let mut v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    v["cniVersion"] = Value::String(version.to_string());
    v
}

/// Does the testdata file exist (table sanity)?
pub fn exists(file: &str) -> bool {
    testdata_dir().join(file).is_file()
}

/// The network name of a config.
pub fn net_name(conf: &Value) -> String {
    conf["name"].as_str().unwrap_or_default().to_string()
}

/// Compare dotted versions numerically: `version_ge("0.4.0", "0.3.1")`.
pub fn version_ge(a: &str, b: &str) -> bool {
    let p = |v: &str| v.split('.').map(|x| x.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    p(a) >= p(b)
}

/// A dual-stack ptp network (v4 + v6 from `s`, default routes, dataDir of `w`), with `mtu` if
/// given; also the prevResult-producing first plugin of the meta-plugin chains.
pub fn ptp_conf(w: &World, s: &Subnets, name: &str, mtu: Option<u32>) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "ptp",
        "ipam": {
            "type": "host-local",
            "dataDir": w.data_dir,
            "ranges": [[{"subnet": s.net4()}], [{"subnet": s.net6()}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        }
    });
    if let Some(m) = mtu {
        c["mtu"] = json!(m);
    }
    c
}

/// A bridge network with the gateway on `bridge`, host-local in the world's dataDir with one range
/// set per subnet and a default route: the prevResult-producing first plugin of the chains.
pub fn bridge_conf(w: &World, name: &str, bridge: &str, subnets: &[&str]) -> Value {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": ranges, "routes": [{"dst": "0.0.0.0/0"}]}
    })
}
