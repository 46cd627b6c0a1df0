//! `cni-multi tool validate`: check a configuration list and every plugin config in it without
//! touching the kernel, reporting each problem with its JSON path.

use crate::cni::config::{self, is_valid_id, kind};
use crate::cni::result::go_parse_cidr;
use crate::cni::{delegate, version};
use crate::ipam::range::{Range, RangeSet, RawRange};
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;

/// One finding: where (`$.plugins[1].ipam.ranges[0][0].subnet`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub msg: String,
}

struct V<'a> {
    out: Vec<Problem>,
    cni_path: &'a [PathBuf],
}

impl V<'_> {
    fn bad(&mut self, path: &str, msg: impl Into<String>) {
        self.out.push(Problem { path: path.to_string(), msg: msg.into() });
    }

    /// A plugin or IPAM type is known when it is one of our applets or a file on CNI_PATH.
    fn known_type(&self, t: &str) -> bool {
        crate::applets::find(t).is_some() || delegate::find_in_path(t, self.cni_path).is_ok()
    }

    fn version_ok(&mut self, path: &str, v: &Value) -> Option<String> {
        let Some(s) = v.as_str() else {
            self.bad(path, format!("must be a string, not {}", kind(v)));
            return None;
        };
        if !version::is_supported(s) {
            let all = version::join(version::SUPPORTED, ", ");
            self.bad(path, format!("unsupported CNI version {s:?} (supported: {all})"));
            return None;
        }
        Some(s.to_string())
    }

    fn cidr(&mut self, path: &str, v: Option<&Value>) -> Option<IpNet> {
        let v = v?;
        match v.as_str().map(go_parse_cidr) {
            Some(Some(n)) => Some(n),
            Some(None) => {
                self.bad(path, format!("invalid CIDR {}", v));
                None
            }
            None => {
                self.bad(path, format!("must be a CIDR string, not {}", kind(v)));
                None
            }
        }
    }

    fn ip(&mut self, path: &str, v: Option<&Value>) -> Option<IpAddr> {
        let v = v?;
        match v.as_str().map(|s| s.parse::<IpAddr>()) {
            Some(Ok(ip)) => Some(ip),
            _ => {
                self.bad(path, format!("invalid IP address {}", v));
                None
            }
        }
    }

    fn ipam(&mut self, base: &str, ipam: &Value) {
        let Some(m) = ipam.as_object() else {
            self.bad(base, format!("must be an object, not {}", kind(ipam)));
            return;
        };
        match m.get("type").and_then(|t| t.as_str()) {
            None | Some("") => self.bad(&format!("{base}.type"), "missing IPAM type"),
            Some(t) if !self.known_type(t) => self.bad(&format!("{base}.type"), format!("unknown IPAM plugin {t:?}")),
            _ => {}
        }
        // the range sets host-local would build, with their paths, for the overlap check
        let mut sets: Vec<(String, RangeSet)> = Vec::new();
        if m.get("subnet").is_some_and(|v| v.as_str().is_none_or(|s| !s.trim().is_empty())) {
            // the legacy single range: subnet, rangeStart, rangeEnd and gateway beside `type`
            let p = format!("{base}.subnet");
            if let Some((_, r)) = self.range(&p, ipam) {
                sets.push((p, RangeSet(vec![r])));
            }
        }
        if let Some(ranges) = m.get("ranges") {
            match ranges.as_array() {
                None => self.bad(&format!("{base}.ranges"), "must be an array of range sets"),
                Some(list) => {
                    for (i, set) in list.iter().enumerate() {
                        let sp = format!("{base}.ranges[{i}]");
                        let Some(rs) = set.as_array() else {
                            self.bad(&sp, "must be an array of ranges");
                            continue;
                        };
                        let raws: Vec<Option<RawRange>> = rs
                            .iter()
                            .enumerate()
                            .map(|(j, r)| self.range(&format!("{sp}[{j}]"), r).map(|(raw, _)| raw))
                            .collect();
                        // set-level rules (empty, mixed families, overlaps inside the set) once
                        // every range of it is valid
                        if let Some(raws) = raws.into_iter().collect::<Option<Vec<RawRange>>>() {
                            match RangeSet::from_raw(&raws) {
                                Ok(set) => sets.push((sp, set)),
                                Err(e) => self.bad(&sp, e),
                            }
                        }
                    }
                }
            }
        }
        for (i, (pa, a)) in sets.iter().enumerate() {
            for (pb, b) in sets.iter().skip(i + 1) {
                if a.overlaps(b) {
                    let msg = format!("range set {a} overlaps {pb} ({b})");
                    self.bad(pa, msg);
                }
            }
        }
        if let Some(routes) = m.get("routes").and_then(|r| r.as_array()) {
            for (i, r) in routes.iter().enumerate() {
                let dst = self.cidr(&format!("{base}.routes[{i}].dst"), r.get("dst"));
                if r.get("dst").is_none() {
                    self.bad(&format!("{base}.routes[{i}].dst"), "missing route destination");
                }
                let gw = self.ip(&format!("{base}.routes[{i}].gw"), r.get("gw"));
                if let (Some(d), Some(g)) = (dst, gw) {
                    if d.addr().is_ipv4() != g.is_ipv4() {
                        self.bad(&format!("{base}.routes[{i}].gw"), format!("gateway {g} is not in the family of {d}"));
                    }
                }
            }
        }
        if let Some(addrs) = m.get("addresses").and_then(|a| a.as_array()) {
            for (i, a) in addrs.iter().enumerate() {
                let n = self.cidr(&format!("{base}.addresses[{i}].address"), a.get("address"));
                let g = self.ip(&format!("{base}.addresses[{i}].gateway"), a.get("gateway"));
                if let (Some(n), Some(g)) = (n, g) {
                    if n.addr().is_ipv4() != g.is_ipv4() {
                        self.bad(
                            &format!("{base}.addresses[{i}].gateway"),
                            format!("gateway {g} is not in the family of {n}"),
                        );
                    }
                }
            }
        }
    }

    /// One range (`r` a range object, or the IPAM object for the legacy single range), read and
    /// checked by host-local's own code ([`Range::from_raw`]): what host-local refuses on every
    /// ADD is a problem here.
    fn range(&mut self, p: &str, r: &Value) -> Option<(RawRange, Range)> {
        if !r.is_object() {
            self.bad(p, format!("must be an object, not {}", kind(r)));
            return None;
        }
        // keys as host-local reads them: case-insensitive
        let raw: RawRange = match config::decode(&config::fold(r)) {
            Ok(raw) => raw,
            Err(e) => {
                self.bad(p, format!("{e:#}"));
                return None;
            }
        };
        match Range::from_raw(&raw) {
            Ok(range) => Some((raw, range)),
            Err(e) => {
                self.bad(p, e);
                None
            }
        }
    }

    fn plugin(&mut self, i: usize, p: &Value, list_version: Option<&str>, seen: &mut Vec<(String, usize)>) {
        let base = format!("$.plugins[{i}]");
        let Some(m) = p.as_object() else {
            self.bad(&base, format!("must be an object, not {}", kind(p)));
            return;
        };
        let ty = match m.get("type") {
            None => {
                self.bad(&format!("{base}.type"), "missing plugin type");
                None
            }
            Some(Value::String(t)) if t.is_empty() || t.contains('/') => {
                self.bad(&format!("{base}.type"), format!("invalid plugin type {t:?}"));
                None
            }
            Some(Value::String(t)) => Some(t.clone()),
            Some(other) => {
                self.bad(&format!("{base}.type"), format!("must be a string, not {}", kind(other)));
                None
            }
        };
        if let Some(t) = &ty {
            if !self.known_type(t) {
                self.bad(&format!("{base}.type"), format!("unknown plugin {t:?} (not built in and not on CNI_PATH)"));
            }
            if let Some((_, j)) = seen.iter().find(|(s, _)| s == t) {
                self.bad(&format!("{base}.type"), format!("duplicate plugin type {t:?} (also $.plugins[{j}])"));
            }
            seen.push((t.clone(), i));
            if let (Some(applet), Some(v)) = (crate::applets::find(t), list_version) {
                if version::Version::parse(v).is_ok_and(|v| v < applet.min_version) {
                    self.bad(
                        &base,
                        format!("plugin {t} needs cniVersion {} or newer, the list has {v}", applet.min_version),
                    );
                }
            }
        }
        for k in m.keys() {
            if k == "runtimeConfig" || k == "args" || k.starts_with("cni.dev/") || k == "prevResult" {
                self.bad(&format!("{base}.{k}"), "reserved key: the runtime generates it, it must not be in a file");
            }
        }
        if let Some(v) = m.get("cniVersion") {
            if let Some(pv) = self.version_ok(&format!("{base}.cniVersion"), v) {
                if list_version.is_some_and(|lv| lv != pv) {
                    self.bad(
                        &format!("{base}.cniVersion"),
                        format!("{pv} differs from the list's version (the list's wins)"),
                    );
                }
            }
        }
        if let Some(ipam) = m.get("ipam") {
            if ipam.as_object().is_some_and(|o| !o.is_empty()) {
                self.ipam(&format!("{base}.ipam"), ipam);
            }
        }
    }
}

/// Validate a configuration list (already in list form).
pub fn validate_list(list: &Value, cni_path: &[PathBuf]) -> Vec<Problem> {
    let mut v = V { out: Vec::new(), cni_path };
    let Some(m) = list.as_object() else {
        v.bad("$", format!("a configuration list must be an object, not {}", kind(list)));
        return v.out;
    };
    match m.get("name") {
        None => v.bad("$.name", "missing network name"),
        Some(Value::String(n)) if !is_valid_id(n) => v.bad("$.name", format!("invalid network name {n:?}")),
        Some(Value::String(_)) => {}
        Some(other) => v.bad("$.name", format!("must be a string, not {}", kind(other))),
    }
    let mut list_version = match m.get("cniVersion") {
        None => None,
        Some(x) => v.version_ok("$.cniVersion", x),
    };
    if let Some(vs) = m.get("cniVersions") {
        match vs.as_array() {
            None => v.bad("$.cniVersions", "must be an array of strings"),
            Some(a) => {
                for (i, x) in a.iter().enumerate() {
                    if let Some(s) = v.version_ok(&format!("$.cniVersions[{i}]"), x) {
                        if list_version
                            .as_deref()
                            .is_none_or(|l| version::Version::parse(l).is_ok_and(|l| l.reached_by(&s)))
                        {
                            list_version = Some(s);
                        }
                    }
                }
            }
        }
    }
    if list_version.is_none() && m.get("cniVersion").is_none() && m.get("cniVersions").is_none() {
        v.bad("$.cniVersion", "missing cniVersion (treated as 0.1.0, which has no lists)");
    }
    for key in ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"] {
        match m.get(key) {
            None | Some(Value::Bool(_)) => {}
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {}
            Some(other) => v.bad(&format!("$.{key}"), format!("must be a boolean, not {other}")),
        }
    }
    match m.get("plugins") {
        None => v.bad("$.plugins", "missing plugins"),
        Some(Value::Array(a)) if a.is_empty() => v.bad("$.plugins", "no plugins in list"),
        Some(Value::Array(a)) => {
            let mut seen = Vec::new();
            for (i, p) in a.iter().enumerate() {
                v.plugin(i, p, list_version.as_deref(), &mut seen);
            }
        }
        Some(other) => v.bad("$.plugins", format!("must be an array, not {}", kind(other))),
    }
    v.out
}

/// Validate raw file bytes: a conflist, or a single plugin config (checked as its one-plugin list).
pub fn validate_bytes(bytes: &[u8], cni_path: &[PathBuf]) -> Vec<Problem> {
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return vec![Problem { path: "$".into(), msg: format!("not valid JSON: {e}") }],
    };
    if v.get("plugins").is_some() || v.get("type").is_none() {
        return validate_list(&v, cni_path);
    }
    let mut list = serde_json::Map::new();
    for k in ["name", "cniVersion"] {
        if let Some(x) = v.get(k) {
            list.insert(k.into(), x.clone());
        }
    }
    list.insert("plugins".into(), Value::Array(vec![v]));
    validate_list(&Value::Object(list), cni_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(bytes: &str) -> Vec<String> {
        validate_bytes(bytes.as_bytes(), &[]).into_iter().map(|p| format!("{}: {}", p.path, p.msg)).collect()
    }

    #[test]
    fn clean_list_has_no_problems() {
        let ok = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local",
            "ranges":[[{"subnet":"198.18.0.0/24","gateway":"198.18.0.1"}],[{"subnet":"fd00::/64"}]],
            "routes":[{"dst":"0.0.0.0/0"}]}},{"type":"loopback"}]}"#;
        assert_eq!(paths(ok), Vec::<String>::new());
    }

    /// What host-local refuses on every ADD is a problem, in host-local's words (its own range
    /// reading and rules), never "OK".
    #[test]
    fn ranges_host_local_refuses_are_problems() {
        let list = |ipam: &str| {
            format!(
                r#"{{"cniVersion":"1.0.0","name":"n","plugins":[{{"type":"bridge","ipam":{{"type":"host-local",{ipam}}}}}]}}"#
            )
        };
        let cases = [
            (
                r#""ranges":[[{"subnet":"198.18.4.7/24"}]]"#,
                "$.plugins[0].ipam.ranges[0][0]: Network has host bits set. For a subnet mask of length 24 the network address is 198.18.4.0",
            ),
            (r#""subnet":"fd00::5/64""#, "$.plugins[0].ipam.subnet: Network has host bits set."),
            (r#""ranges":[[{"Subnet":"198.18.4.0/31"}]]"#, "$.plugins[0].ipam.ranges[0][0]: Network 198.18.4.0/31 too small"),
            (
                r#""ranges":[[{"subnet":"198.18.4.0/24","rangeStart":"198.18.4.9","rangeEnd":"198.18.4.3"}]]"#,
                "$.plugins[0].ipam.ranges[0][0]: RangeStart 198.18.4.9 is after RangeEnd 198.18.4.3",
            ),
            (
                r#""ranges":[[{"subnet":"198.18.4.0/24","gateway":"fd00::1"}]]"#,
                "$.plugins[0].ipam.ranges[0][0]: gateway fd00::1 is IPv6 but subnet 198.18.4.0/24 is IPv4",
            ),
            (r#""ranges":[[{"subnet":5}]]"#, "$.plugins[0].ipam.ranges[0][0]: failed to load netconf: subnet: invalid type"),
            (
                r#""ranges":[[{"subnet":"198.18.4.0/24"},{"subnet":"fd00::/64"}]]"#,
                "$.plugins[0].ipam.ranges[0]: mixed address families",
            ),
            (r#""ranges":[[]]"#, "$.plugins[0].ipam.ranges[0]: empty range set"),
        ];
        for (ipam, want) in cases {
            let p = paths(&list(ipam));
            assert!(p.iter().any(|l| l.starts_with(want)), "{ipam}: {p:#?}");
        }
        // what host-local takes is clean: an empty legacy subnet, keys in any case
        assert_eq!(
            paths(&list(r#""subnet":"","ranges":[[{"SUBNET":"198.18.4.0/24","RangeStart":"198.18.4.9"}]]"#)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_problem_has_its_path() {
        let bad = r#"{"cniVersion":"9.0.0","name":"n","plugins":[
            {"type":"nosuchplugin"},
            {"type":"bridge","runtimeConfig":{},"ipam":{"type":"host-local","ranges":[
                [{"subnet":"198.18.0.0/16"}],[{"subnet":"198.18.4.0/24","rangeStart":"198.19.0.1"}],[{"subnet":"198.18.300.0/24"}],
                [{"subnet":"198.18.0.128/25"}]],
                "routes":[{"dst":"0.0.0.0/0","gw":"fd00::1"}]}},
            {"type":"bridge"}]}"#;
        let p = paths(bad);
        let has = |prefix: &str| p.iter().any(|l| l.starts_with(prefix));
        assert!(has("$.cniVersion: unsupported CNI version"), "{p:#?}");
        assert!(has("$.plugins[0].type: unknown plugin \"nosuchplugin\""), "{p:#?}");
        assert!(has("$.plugins[1].runtimeConfig: reserved key"), "{p:#?}");
        assert!(
            has("$.plugins[1].ipam.ranges[0]: range set 198.18.0.1-198.18.255.254 overlaps $.plugins[1].ipam.ranges[3] "),
            "{p:#?}"
        );
        assert!(has("$.plugins[1].ipam.ranges[1][0]: RangeStart 198.19.0.1 not in network 198.18.4.0/24"), "{p:#?}");
        assert!(has("$.plugins[1].ipam.ranges[2][0]: invalid CIDR"), "{p:#?}");
        assert!(has("$.plugins[1].ipam.routes[0].gw: gateway fd00::1"), "{p:#?}");
        assert!(has("$.plugins[2].type: duplicate plugin type \"bridge\" (also $.plugins[1])"), "{p:#?}");
        assert_eq!(paths("{"), vec!["$: not valid JSON: EOF while parsing an object at line 1 column 1".to_string()]);
        assert!(paths(r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"ipam":{}}]}"#)[0]
            .starts_with("$.plugins[0].type: missing"));
        // a single-plugin .conf is checked as its one-plugin list
        assert!(paths(r#"{"name":"x","cniVersion":"1.0.0","type":"ptp","ipam":{"type":"host-local","subnet":"bad"}}"#)
            .iter()
            .any(|l| l.starts_with("$.plugins[0].ipam.subnet: invalid CIDR")));
    }
}
