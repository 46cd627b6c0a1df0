//! Normalisation before comparing two runs: random or kernel-assigned values (MACs, veth host names,
//! ifindex numbers, netns ids, link-local addresses, timers, per-world paths) become placeholders;
//! JSON key order is irrelevant (serde_json maps are sorted); the 1.x `"dns": {}` that Debian 1.1.1
//! prints and the newest library omits (reference-features.md §1.8) is dropped; arrays whose order
//! the kernel does not define are sorted.

use super::state::Snapshot;
use super::world::World;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    /// literal substitutions, applied longest first (per-world paths and names)
    replace: Vec<(String, String)>,
    /// MACs that are meaningful (configured by the test, all-zero, broadcast…) and stay as they are
    keep_macs: Vec<String>,
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

impl Normalizer {
    /// Substitutions for a world's paths and netns names, so twin worlds compare equal.
    pub fn for_world(w: &World) -> Normalizer {
        let mut n = Normalizer::default();
        for (i, c) in w.containers.iter().enumerate() {
            n.replace.push((c.path_str(), format!("<netns{i}>")));
            n.replace.push((c.name.clone(), format!("<ns{i}>")));
        }
        n.replace.push((w.host.path_str(), "<hostnetns>".into()));
        n.replace.push((w.host.name.clone(), "<hostns>".into()));
        n.replace.push((w.data_dir.to_string_lossy().into_owned(), "<datadir>".into()));
        n.replace.push((w.bin_dir.to_string_lossy().into_owned(), "<bindir>".into()));
        n.replace.push((w.tmp.to_string_lossy().into_owned(), "<tmp>".into()));
        n.replace.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        n.keep_macs = ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:80:c2:00:00:00"].map(String::from).to_vec();
        n
    }

    /// Keep this MAC verbatim (e.g. one the test asked for).
    pub fn keep_mac(mut self, mac: &str) -> Normalizer {
        self.keep_macs.push(mac.to_ascii_lowercase());
        self
    }

    /// Normalise free text (plugin stdout, error messages, ip output strings).
    pub fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (from, to) in &self.replace {
            if !from.is_empty() {
                s = s.replace(from.as_str(), to);
            }
        }
        let s = self.macs(&s);
        let s = veth_names(&s);
        link_locals(&s)
    }

    fn macs(&self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        let mut last = 0;
        while i + 17 <= b.len() {
            let cand = &b[i..i + 17];
            let shape = (0..17).all(|k| if k % 3 == 2 { cand[k] == b':' } else { is_hex(cand[k]) });
            let before_ok = i == 0 || !(is_hex(b[i - 1]) || b[i - 1] == b':');
            let after_ok = i + 17 == b.len() || !(is_hex(b[i + 17]) || b[i + 17] == b':');
            if shape && before_ok && after_ok {
                let mac = s[i..i + 17].to_ascii_lowercase();
                out.push_str(&s[last..i]);
                if self.keep_macs.contains(&mac) {
                    out.push_str(&mac);
                } else {
                    out.push_str("<mac>");
                }
                i += 17;
                last = i;
            } else {
                i += 1;
            }
        }
        out.push_str(&s[last..]);
        out
    }

    /// Normalise every string (and object key) inside a JSON value.
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(o) => {
                let mut m = Map::new();
                for (k, x) in o {
                    m.insert(self.text(k), self.value(x));
                }
                Value::Object(m)
            }
            other => other.clone(),
        }
    }

    /// A plugin result (stdout) as a comparable value: parsed, normalised, 1.x empty `dns` dropped.
    pub fn result(&self, stdout: &str) -> Value {
        let mut v: Value = match serde_json::from_str(stdout) {
            Ok(v) => v,
            Err(_) => return Value::String(self.text(stdout)),
        };
        let is_1x = v.get("cniVersion").and_then(|c| c.as_str()).is_some_and(|c| c.starts_with("1."));
        if is_1x {
            if let Some(o) = v.as_object_mut() {
                if o.get("dns").is_some_and(|d| d.as_object().is_some_and(|m| m.is_empty())) {
                    o.remove("dns");
                }
            }
        }
        self.value(&v)
    }

    /// A snapshot as a comparable value.
    pub fn snapshot(&self, s: &Snapshot) -> Value {
        let mut v = s.to_value();
        if let Some(host) = v.get_mut("host") {
            self.ns_state(host);
        }
        if let Some(Value::Array(cs)) = v.get_mut("containers") {
            for c in cs.iter_mut().filter(|c| !c.is_null()) {
                self.ns_state(c);
            }
        }
        if let Some(Value::Object(store)) = v.get_mut("store") {
            for (name, f) in store.iter_mut() {
                let base = name.rsplit('/').next().unwrap_or(name);
                if base == "lock" {
                    // created by the reference's mutex library with an odd mode (0750); only existence matters
                    f["mode"] = Value::String("<lock>".into());
                } else if !name.ends_with('/') && f["mode"] == "644" {
                    // Debian 1.1.1 writes IPAM files 0644, newest upstream (and cni-multi) 0600 (§0, §2.11)
                    f["mode"] = Value::String("600".into());
                }
            }
        }
        self.value(&v)
    }

    fn ns_state(&self, ns: &mut Value) {
        // links: kernel-assigned numbers out, timers out, sorted by name
        if let Some(Value::Array(links)) = ns.get_mut("links") {
            for l in links.iter_mut() {
                if let Some(o) = l.as_object_mut() {
                    o.remove("ifindex");
                    for k in ["link_index", "link_netnsid"] {
                        if o.contains_key(k) {
                            o.insert(k.to_string(), Value::String("<n>".into()));
                        }
                    }
                }
                for sub in ["info_data", "info_slave_data"] {
                    if let Some(Value::Object(d)) = l.get_mut("linkinfo").and_then(|li| li.get_mut(sub)) {
                        // timers tick; STP ids embed the bridge MAC printed without zero padding
                        d.retain(|k, _| {
                            !k.ends_with("_timer") && !k.ends_with("_id") && !k.starts_with("designated_root")
                        });
                    }
                }
                // A bridge's carrier follows its ports through linkwatch, which defers non-urgent
                // events up to a second: its operstate races with the snapshot. Ports are compared.
                if l["linkinfo"]["info_kind"] == "bridge" {
                    if let Some(o) = l.as_object_mut() {
                        o.remove("operstate");
                        if let Some(Value::Array(f)) = o.get_mut("flags") {
                            f.retain(|x| x != "NO-CARRIER" && x != "LOWER_UP");
                        }
                    }
                }
            }
            self.sort_by_name(links);
        }
        self.key_by(ns, "links", |l| l["ifname"].as_str().unwrap_or_default().to_string());
        // addresses: only name + addresses, link-local v6 dropped (derived from random MACs, and
        // their appearance races with the snapshot)
        if let Some(Value::Array(links)) = ns.get_mut("addrs") {
            let mut reduced: Vec<Value> = links
                .iter()
                .map(|l| {
                    let mut infos: Vec<Value> = l["addr_info"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|a| !a["local"].as_str().is_some_and(|x| x.starts_with("fe80:")))
                        .cloned()
                        .collect();
                    self.sort_by_text(&mut infos);
                    serde_json::json!({"ifname": l["ifname"], "addr_info": infos})
                })
                .collect();
            self.sort_by_name(&mut reduced);
            *links = reduced;
        }
        self.key_by(ns, "addrs", |l| l["ifname"].as_str().unwrap_or_default().to_string());
        if let Some(Value::Array(routes)) = ns.get_mut("routes") {
            routes.retain(|r| {
                let dst = r["dst"].as_str().unwrap_or_default();
                !(dst.starts_with("fe80:") && dst != "fe80::/64" && dst != "fe80::")
            });
            for r in routes.iter_mut() {
                if let Some(o) = r.as_object_mut() {
                    o.remove("expires");
                    // "linkdown" mirrors a carrier that races with the snapshot (see above)
                    if let Some(Value::Array(f)) = o.get_mut("flags") {
                        f.retain(|x| x != "linkdown");
                    }
                }
            }
            self.sort_by_text(routes);
        }
        self.key_by(ns, "routes", |r| {
            let f = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            format!("{} {} dev {} table {}", f("type"), f("dst"), f("dev"), f("table"))
        });
    }

    /// Turn the (sorted) array `ns[field]` into an object keyed by `key` (normalised), so a diff
    /// names the link or route that differs instead of shifting positions.
    fn key_by(&self, ns: &mut Value, field: &str, key: impl Fn(&Value) -> String) {
        let Some(Value::Array(items)) = ns.get(field) else { return };
        let mut m = Map::new();
        for item in items {
            let base = self.text(&key(item));
            let mut k = base.clone();
            let mut n = 1;
            while m.contains_key(&k) {
                n += 1;
                k = format!("{base} #{n}");
            }
            m.insert(k, item.clone());
        }
        ns[field] = Value::Object(m);
    }

    fn sort_by_name(&self, a: &mut [Value]) {
        a.sort_by_cached_key(|x| (self.text(x["ifname"].as_str().unwrap_or_default()), self.text(&x.to_string())));
    }

    fn sort_by_text(&self, a: &mut [Value]) {
        a.sort_by_cached_key(|x| self.text(&x.to_string()));
    }
}

/// `veth` + 8 lowercase hex (the reference's random host-side names) → `veth<id>`.
fn veth_names(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i + 12 <= b.len() {
        let hit = &b[i..i + 4] == b"veth"
            && b[i + 4..i + 12].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            && (i + 12 == b.len() || !b[i + 12].is_ascii_alphanumeric())
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if hit {
            out.push_str(&s[last..i]);
            out.push_str("veth<id>");
            i += 12;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[last..]);
    out
}

/// `fe80::<interface id>` → `fe80::<ll>` (the bare `fe80::` and the `fe80::/64` prefix stay).
fn link_locals(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("fe80::") {
        out.push_str(&rest[..pos + 6]);
        rest = &rest[pos + 6..];
        let end = rest.find(|c: char| !(c.is_ascii_hexdigit() || c == ':')).unwrap_or(rest.len());
        if end > 0 {
            out.push_str("<ll>");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Structural difference of two JSON values: one line per differing leaf, with its path.
pub fn diff(left: &Value, right: &Value) -> Vec<String> {
    let mut out = vec![];
    diff_at("", left, right, &mut out);
    out
}

fn diff_at(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff_at(&p, l, r, out),
                    (Some(l), None) => out.push(format!("{p}: only on the left: {l}")),
                    (None, Some(r)) => out.push(format!("{p}: only on the right: {r}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(l), Some(r)) => diff_at(&p, l, r, out),
                    (Some(l), None) => out.push(format!("{p}: only on the left: {l}")),
                    (None, Some(r)) => out.push(format!("{p}: only on the right: {r}")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{path}: {a} != {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizer_masks_random_values_only() {
        let n = Normalizer::default().keep_mac("0a:58:c6:12:00:05");
        assert_eq!(n.text("mac 96:83:75:b8:5a:d0 kept 0a:58:c6:12:00:05"), "mac <mac> kept 0a:58:c6:12:00:05");
        assert_eq!(n.text("8000.96:83:75:b8:5a:d0"), "8000.<mac>");
        // IPv6 addresses are not MACs
        assert_eq!(n.text("fd00:cafe:0:5::2"), "fd00:cafe:0:5::2");
        assert_eq!(n.text("dev veth8aa4f56c up"), "dev veth<id> up");
        assert_eq!(n.text("veth8aa4f56cx"), "veth8aa4f56cx");
        assert_eq!(n.text("fe80::c0bf:34ff:fe0b:a0fc fe80::/64 fe80::"), "fe80::<ll> fe80::/64 fe80::");
    }

    #[test]
    fn diff_reports_paths() {
        let a = serde_json::json!({"a": [1, 2], "b": {"c": "x"}});
        let b = serde_json::json!({"a": [1, 3], "b": {"d": "x"}});
        let d = diff(&a, &b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("/a[1]"));
    }

    #[test]
    fn empty_dns_dropped_only_for_1x() {
        let n = Normalizer::default();
        let r = n.result(r#"{"cniVersion":"1.0.0","dns":{}}"#);
        assert!(r.get("dns").is_none());
        let r = n.result(r#"{"cniVersion":"0.4.0","dns":{}}"#);
        assert!(r.get("dns").is_some());
    }
}
