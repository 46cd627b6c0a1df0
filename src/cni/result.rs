//! One internal result type (shaped like spec 1.1.0) and its conversion to/from every
//! spec version. Printing follows the reference byte for byte (see checklist §1.8).

use super::config::fold;
use super::error::{code, CniError};
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// lower-case colon-separated MAC as the reference prints it
    pub mac: Option<String>,
    /// a Go `int` in the reference's result: any int64 (a prevResult's negative value is echoed)
    pub mtu: Option<i64>,
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// address with its prefix length (host bits kept), e.g. 198.18.0.2/24
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// index into `interfaces`. The reference's is a Go `*int`: any int64, echoed as given (its
    /// loopback passes `-1` on). It is kept here as the int64's two's-complement bits, so a
    /// negative value is an index of 2^63 or more that names no interface: every lookup
    /// (`interfaces.get(i)`) finds none, and [`IpConfig::interface_go`] gives the value back.
    pub interface: Option<usize>,
}

/// A result route. `mtu`, `advmss` and `priority` are Go `int`s in the reference's types.Route:
/// printed as given, negative ones included (0 is unset, omitempty); what reaches the kernel is
/// the applying plugin's business (a value that is not positive sets nothing, as there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<i64>,
    pub advmss: Option<i64>,
    pub priority: Option<i64>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl IpConfig {
    /// `interface` as the Go int it was (negative values included), for printing.
    pub fn interface_go(&self) -> Option<i64> {
        self.interface.map(go_int_of_index)
    }
}

/// An `ips[].interface` Go int stored as an index (see [`IpConfig::interface`]): the same 64 bits.
fn index_of_go_int(n: i64) -> usize {
    n as usize
}

/// The Go int an index stands for (the inverse of [`index_of_go_int`]).
fn go_int_of_index(i: usize) -> i64 {
    i as i64
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().unwrap_or("").is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The three result shapes of the spec history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 0.1.0, 0.2.0: `ip4` / `ip6`
    V02,
    /// 0.3.0, 0.3.1, 0.4.0: `ips[]` with `version`
    V04,
    /// 1.0.0, 1.1.0
    V1,
}

/// Which result shape a spec version uses; `None` for versions we do not know.
pub fn shape_of(version: &str) -> Option<Shape> {
    match version {
        "0.1.0" | "0.2.0" => Some(Shape::V02),
        "0.3.0" | "0.3.1" | "0.4.0" => Some(Shape::V04),
        "1.0.0" | "1.1.0" => Some(Shape::V1),
        _ => None,
    }
}

fn decode_err(msg: impl Into<String>) -> CniError {
    CniError::new(code::DECODE, msg)
}

impl CniResult {
    /// Parse a result of any spec version. Object keys match case-insensitively (as Go does);
    /// a result without `cniVersion` is read as `version` (libcni's fix-up for old results
    /// and for `prevResult`).
    pub fn from_json(v: &Value, version: &str) -> Result<CniResult, CniError> {
        let folded = fold(v);
        let m = folded.as_object().ok_or_else(|| decode_err("result is not a JSON object"))?;
        let ver = match m.get("cniversion") {
            None => version.to_string(),
            Some(Value::String(s)) if s.is_empty() => version.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(decode_err("result cniVersion is not a string")),
        };
        match shape_of(&ver) {
            Some(Shape::V02) => parse_02(m),
            Some(Shape::V04) => parse_rich(m, false),
            Some(Shape::V1) => parse_rich(m, true),
            None => Err(decode_err(format!("unsupported CNI result version {}", go_quote(&ver)))),
        }
    }

    /// Parse raw bytes (e.g. a delegated plugin's stdout) the Go way, then as [`from_json`].
    pub fn from_slice(bytes: &[u8], version: &str) -> Result<CniResult, CniError> {
        let v = super::config::parse_folded(bytes).map_err(|e| decode_err(format!("failed to parse result: {e}")))?;
        Self::from_json(&v, version)
    }

    /// The result printed for spec `version` exactly as the reference prints it:
    /// 4-space indent, no trailing newline.
    pub fn to_json(&self, version: &str) -> Result<String, CniError> {
        let j = match shape_of(version) {
            Some(Shape::V1) => self.json_1(version),
            Some(Shape::V04) => self.json_04(version),
            Some(Shape::V02) => self.json_02(version)?,
            None => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    format!("no converter for CNI result version 1.1.0 to {version}"),
                ))
            }
        };
        // a result prints in well under 1 KiB: one buffer, no regrowth
        let mut out = String::with_capacity(1024);
        write_pretty(&j, &mut out, 0);
        Ok(out)
    }

    /// A result that is the prevResult passed on unchanged (a chained plugin's, loopback's with a
    /// prevResult) printed for `version`: as [`CniResult::to_json`], except that at 0.1.0/0.2.0
    /// one without addresses prints as the reference prints a prevResult already of that version
    /// (never converted, so without the "no valid IP addresses" error): `cniVersion` and `dns`.
    pub fn to_json_passed_on(&self, version: &str) -> Result<String, CniError> {
        if shape_of(version) == Some(Shape::V02) && self.ips.is_empty() {
            let j = J::O(vec![("cniVersion", J::s(version)), ("dns", dns_struct_order(&self.dns))]);
            let mut out = String::new();
            write_pretty(&j, &mut out, 0);
            return Ok(out);
        }
        self.to_json(version)
    }

    /// 1.x printing: the newest Go library goes through a generic map, so every object's
    /// keys come out sorted; an empty `dns` is omitted.
    fn json_1(&self, version: &str) -> J {
        let mut top: Vec<(&'static str, J)> = vec![("cniVersion", J::s(version))];
        if !self.dns.is_empty() {
            let d = &self.dns;
            let mut o = Vec::new();
            if let Some(dom) = d.domain.as_deref().filter(|s| !s.is_empty()) {
                o.push(("domain", J::s(dom)));
            }
            push_list(&mut o, "nameservers", &d.nameservers);
            push_list(&mut o, "options", &d.options);
            push_list(&mut o, "search", &d.search);
            top.push(("dns", J::O(o)));
        }
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = Vec::new();
                    push_opt_str(&mut o, "mac", &i.mac);
                    if let Some(mtu) = i.mtu.filter(|n| *n != 0) {
                        o.push(("mtu", J::I(mtu)));
                    }
                    o.push(("name", J::s(&i.name)));
                    push_opt_str(&mut o, "pciID", &i.pci_id);
                    push_opt_str(&mut o, "sandbox", &i.sandbox);
                    push_opt_str(&mut o, "socketPath", &i.socket_path);
                    J::O(o)
                })
                .collect();
            top.push(("interfaces", J::A(list)));
        }
        if !self.ips.is_empty() {
            let list = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = vec![("address", J::S(fmt_net(&ip.address)))];
                    if let Some(gw) = ip.gateway {
                        o.push(("gateway", J::S(fmt_ip(&gw))));
                    }
                    if let Some(i) = ip.interface_go() {
                        o.push(("interface", J::I(i)));
                    }
                    J::O(o)
                })
                .collect();
            top.push(("ips", J::A(list)));
        }
        if !self.routes.is_empty() {
            let list = self
                .routes
                .iter()
                .map(|r| {
                    let mut o = Vec::new();
                    push_nonzero_int(&mut o, "advmss", r.advmss);
                    o.push(("dst", J::S(fmt_net(&r.dst))));
                    if let Some(gw) = r.gw {
                        o.push(("gw", J::S(fmt_ip(&gw))));
                    }
                    push_nonzero_int(&mut o, "mtu", r.mtu);
                    push_nonzero_int(&mut o, "priority", r.priority);
                    if let Some(s) = r.scope {
                        o.push(("scope", J::N(u64::from(s))));
                    }
                    if let Some(t) = r.table {
                        o.push(("table", J::N(u64::from(t))));
                    }
                    J::O(o)
                })
                .collect();
            top.push(("routes", J::A(list)));
        }
        J::O(top)
    }

    /// 0.3.x/0.4.0 printing: Go struct order, `version` in every ip, `dns` always present.
    fn json_04(&self, version: &str) -> J {
        let mut top: Vec<(&'static str, J)> = vec![("cniVersion", J::s(version))];
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = vec![("name", J::s(&i.name))];
                    push_opt_str(&mut o, "mac", &i.mac);
                    push_opt_str(&mut o, "sandbox", &i.sandbox);
                    J::O(o)
                })
                .collect();
            top.push(("interfaces", J::A(list)));
        }
        if !self.ips.is_empty() {
            let list = self
                .ips
                .iter()
                .map(|ip| {
                    let fam = if is_v4(&ip.address.addr()) { "4" } else { "6" };
                    let mut o = vec![("version", J::s(fam))];
                    if let Some(i) = ip.interface_go() {
                        o.push(("interface", J::I(i)));
                    }
                    o.push(("address", J::S(fmt_net(&ip.address))));
                    if let Some(gw) = ip.gateway {
                        o.push(("gateway", J::S(fmt_ip(&gw))));
                    }
                    J::O(o)
                })
                .collect();
            top.push(("ips", J::A(list)));
        }
        if !self.routes.is_empty() {
            top.push(("routes", J::A(self.routes.iter().map(route_struct_order).collect())));
        }
        top.push(("dns", dns_struct_order(&self.dns)));
        J::O(top)
    }

    /// 0.1.0/0.2.0 printing: the first v4 and first v6 address, routes split by family.
    fn json_02(&self, version: &str) -> Result<J, CniError> {
        let ip4 = self.ips.iter().find(|ip| is_v4(&ip.address.addr()));
        let ip6 = self.ips.iter().find(|ip| !is_v4(&ip.address.addr()));
        if ip4.is_none() && ip6.is_none() {
            // a result without addresses (an L2-only attachment) has no 0.1.0/0.2.0 form: the
            // config asks for a version that cannot express it, which the spec calls invalid
            // network config (7); the reference's conversion error is a plain one (999)
            return Err(CniError::config("cannot convert: no valid IP addresses"));
        }
        let ipn = |ip: &IpConfig, v4: bool| {
            let mut o = vec![("ip", J::S(fmt_net(&ip.address)))];
            if let Some(gw) = ip.gateway {
                o.push(("gateway", J::S(fmt_ip(&gw))));
            }
            let routes: Vec<J> = self
                .routes
                .iter()
                .filter(|r| is_v4(&r.dst.addr()) == v4)
                .map(|r| {
                    let mut ro = vec![("dst", J::S(fmt_net(&r.dst)))];
                    if let Some(gw) = r.gw {
                        ro.push(("gw", J::S(fmt_ip(&gw))));
                    }
                    J::O(ro)
                })
                .collect();
            if !routes.is_empty() {
                o.push(("routes", J::A(routes)));
            }
            J::O(o)
        };
        let mut top: Vec<(&'static str, J)> = vec![("cniVersion", J::s(version))];
        if let Some(ip) = ip4 {
            top.push(("ip4", ipn(ip, true)));
        }
        if let Some(ip) = ip6 {
            top.push(("ip6", ipn(ip, false)));
        }
        top.push(("dns", dns_struct_order(&self.dns)));
        Ok(J::O(top))
    }
}

fn route_struct_order(r: &Route) -> J {
    let mut o = vec![("dst", J::S(fmt_net(&r.dst)))];
    if let Some(gw) = r.gw {
        o.push(("gw", J::S(fmt_ip(&gw))));
    }
    push_nonzero_int(&mut o, "mtu", r.mtu);
    push_nonzero_int(&mut o, "advmss", r.advmss);
    push_nonzero_int(&mut o, "priority", r.priority);
    if let Some(t) = r.table {
        o.push(("table", J::N(u64::from(t))));
    }
    if let Some(s) = r.scope {
        o.push(("scope", J::N(u64::from(s))));
    }
    J::O(o)
}

fn dns_struct_order(d: &Dns) -> J {
    let mut o = Vec::new();
    push_list(&mut o, "nameservers", &d.nameservers);
    if let Some(dom) = d.domain.as_deref().filter(|s| !s.is_empty()) {
        o.push(("domain", J::s(dom)));
    }
    push_list(&mut o, "search", &d.search);
    push_list(&mut o, "options", &d.options);
    J::O(o)
}

fn push_list(o: &mut Vec<(&'static str, J)>, key: &'static str, list: &[String]) {
    if !list.is_empty() {
        o.push((key, J::A(list.iter().map(|s| J::s(s)).collect())));
    }
}

fn push_opt_str(o: &mut Vec<(&'static str, J)>, key: &'static str, v: &Option<String>) {
    if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
        o.push((key, J::s(s)));
    }
}

/// [`push_nonzero`] of a Go `int` that may be negative.
fn push_nonzero_int(o: &mut Vec<(&'static str, J)>, key: &'static str, v: Option<i64>) {
    if let Some(n) = v.filter(|n| *n != 0) {
        o.push((key, J::I(n)));
    }
}

// ---------------------------------------------------------------------------------------
// parsing (keys are already folded to lower case)

fn parse_02(m: &Map<String, Value>) -> Result<CniResult, CniError> {
    let mut r = CniResult { dns: parse_dns(m.get("dns"))?, ..Default::default() };
    for key in ["ip4", "ip6"] {
        let Some(v) = m.get(key) else { continue };
        let o = v.as_object().ok_or_else(|| decode_err(format!("{key} is not an object")))?;
        let address = req_net(o, "ip", key)?;
        let gateway = opt_ip(o, "gateway", key)?;
        r.ips.push(IpConfig { address, gateway, interface: None });
        for (i, rv) in opt_array(o, "routes", key)?.iter().enumerate() {
            let what = format!("{key}.routes[{i}]");
            let ro = rv.as_object().ok_or_else(|| decode_err(format!("{what} is not an object")))?;
            r.routes.push(Route::new(req_net(ro, "dst", &what)?, opt_ip(ro, "gw", &what)?));
        }
    }
    Ok(r)
}

fn parse_rich(m: &Map<String, Value>, v1: bool) -> Result<CniResult, CniError> {
    let mut r = CniResult { dns: parse_dns(m.get("dns"))?, ..Default::default() };
    for (i, v) in opt_array(m, "interfaces", "result")?.iter().enumerate() {
        let what = format!("interfaces[{i}]");
        let o = v.as_object().ok_or_else(|| decode_err(format!("{what} is not an object")))?;
        let mut intf = Interface {
            name: opt_str(o, "name", &what)?.unwrap_or_default(),
            mac: opt_str(o, "mac", &what)?.filter(|s| !s.is_empty()),
            sandbox: opt_str(o, "sandbox", &what)?.filter(|s| !s.is_empty()),
            ..Default::default()
        };
        if v1 {
            intf.mtu = opt_go_int(o, "mtu", &what)?.filter(|n| *n != 0);
            intf.socket_path = opt_str(o, "socketpath", &what)?.filter(|s| !s.is_empty());
            intf.pci_id = opt_str(o, "pciid", &what)?.filter(|s| !s.is_empty());
        }
        r.interfaces.push(intf);
    }
    for (i, v) in opt_array(m, "ips", "result")?.iter().enumerate() {
        let what = format!("ips[{i}]");
        let o = v.as_object().ok_or_else(|| decode_err(format!("{what} is not an object")))?;
        let interface = opt_go_int(o, "interface", &what)?.map(index_of_go_int);
        r.ips.push(IpConfig {
            address: req_net(o, "address", &what)?,
            gateway: opt_ip(o, "gateway", &what)?,
            interface,
        });
    }
    for (i, v) in opt_array(m, "routes", "result")?.iter().enumerate() {
        r.routes.push(parse_route(v, &format!("routes[{i}]"))?);
    }
    Ok(r)
}

/// One route object (any version; keys already folded).
pub(crate) fn parse_route(v: &Value, what: &str) -> Result<Route, CniError> {
    let o = v.as_object().ok_or_else(|| decode_err(format!("{what} is not an object")))?;
    let scope = match opt_u32(o, "scope", what)? {
        None => None,
        Some(s) => Some(u8::try_from(s).map_err(|_| decode_err(format!("{what}.scope out of range")))?),
    };
    Ok(Route {
        dst: req_net(o, "dst", what)?,
        gw: opt_ip(o, "gw", what)?,
        mtu: opt_go_int(o, "mtu", what)?.filter(|n| *n != 0),
        advmss: opt_go_int(o, "advmss", what)?.filter(|n| *n != 0),
        priority: opt_go_int(o, "priority", what)?.filter(|n| *n != 0),
        table: opt_u32(o, "table", what)?,
        scope,
    })
}

fn parse_dns(v: Option<&Value>) -> Result<Dns, CniError> {
    let Some(v) = v else { return Ok(Dns::default()) };
    let o = v.as_object().ok_or_else(|| decode_err("dns is not an object"))?;
    Ok(Dns {
        nameservers: str_list(o, "nameservers", "dns")?,
        domain: opt_str(o, "domain", "dns")?.filter(|s| !s.is_empty()),
        search: str_list(o, "search", "dns")?,
        options: str_list(o, "options", "dns")?,
    })
}

fn opt_array<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a [Value], CniError> {
    match o.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(_) => Err(decode_err(format!("{what}.{key} is not an array"))),
    }
}

fn opt_str(o: &Map<String, Value>, key: &str, what: &str) -> Result<Option<String>, CniError> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(decode_err(format!("{what}.{key} is not a string"))),
    }
}

fn opt_u32(o: &Map<String, Value>, key: &str, what: &str) -> Result<Option<u32>, CniError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| decode_err(format!("{what}.{key} is not a valid unsigned integer"))),
    }
}

/// A Go `int` field: an integer in the int64 range (negative ones included); a fraction or a
/// number beyond int64 is refused, as Go's decoder refuses it for an int.
fn opt_go_int(o: &Map<String, Value>, key: &str, what: &str) -> Result<Option<i64>, CniError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| decode_err(format!("{what}.{key}: cannot unmarshal {} into a Go int", short_json(v)))),
    }
}

/// A JSON value for a message, cut short.
fn short_json(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or_default()),
        None => text,
    }
}

fn str_list(o: &Map<String, Value>, key: &str, what: &str) -> Result<Vec<String>, CniError> {
    opt_array(o, key, what)?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| decode_err(format!("{what}.{key} holds a non-string"))))
        .collect()
}

fn req_net(o: &Map<String, Value>, key: &str, what: &str) -> Result<IpNet, CniError> {
    let s = opt_str(o, key, what)?.ok_or_else(|| decode_err(format!("{what}.{key} is missing")))?;
    go_parse_cidr(&s).ok_or_else(|| decode_err(format!("{what}.{key}: invalid CIDR address: {s}")))
}

/// Go's `net.IP` text decoding: an empty string is "no address".
fn opt_ip(o: &Map<String, Value>, key: &str, what: &str) -> Result<Option<IpAddr>, CniError> {
    match opt_str(o, key, what)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            s.parse::<IpAddr>().map(Some).map_err(|_| decode_err(format!("{what}.{key}: invalid IP address: {s}")))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Go-compatible address formatting

/// IPv4, or an IPv4-mapped IPv6 address (Go treats both as IPv4).
pub fn is_v4(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
    }
}

/// `net.IP.String()`: IPv4-mapped addresses print dotted.
pub fn fmt_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => a.to_string(),
        },
        IpAddr::V4(a) => a.to_string(),
    }
}

/// `net.IPNet.String()` with the host bits kept.
pub fn fmt_net(n: &IpNet) -> String {
    match n {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) => format!("{}/{}", v4, v6.prefix_len().saturating_sub(96)),
            None => format!("{}/{}", v6.addr(), v6.prefix_len()),
        },
        IpNet::V4(v4) => format!("{}/{}", v4.addr(), v4.prefix_len()),
    }
}

// ---------------------------------------------------------------------------------------
// A tiny ordered JSON tree and Go's `json.MarshalIndent(v, "", "    ")` printer.

/// Ordered JSON node: objects keep the key order they were built with.
#[derive(Debug, Clone)]
pub enum J {
    S(String),
    N(u64),
    /// a signed number (a Go `int`)
    I(i64),
    A(Vec<J>),
    O(Vec<(&'static str, J)>),
}

impl J {
    fn s(v: &str) -> J {
        J::S(v.to_string())
    }
}

/// Pretty-print like Go's MarshalIndent with a 4-space indent (no trailing newline).
pub fn write_pretty(j: &J, out: &mut String, level: usize) {
    match j {
        J::S(s) => go_escape(s, out),
        J::N(n) => push_display(out, n),
        J::I(n) => push_display(out, n),
        J::A(items) if items.is_empty() => out.push_str("[]"),
        J::O(items) if items.is_empty() => out.push_str("{}"),
        J::A(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                write_pretty(it, out, level + 1);
            }
            newline(out, level);
            out.push(']');
        }
        J::O(items) => {
            out.push('{');
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, level + 1);
                go_escape(k, out);
                out.push_str(": ");
                write_pretty(v, out, level + 1);
            }
            newline(out, level);
            out.push('}');
        }
    }
}

/// Append `v`'s `Display` form (no temporary string).
fn push_display(out: &mut String, v: &impl std::fmt::Display) {
    use std::fmt::Write;
    let _ = write!(out, "{v}");
}

fn newline(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("    ");
    }
}

/// Go's `net.ParseCIDR` (what every CIDR in a config or result goes through in the reference),
/// host bits kept: an address without zone, `/`, a decimal prefix length of digits only
/// (leading zeros allowed: `198.18.0.0/016` is a /16) that fits the address; an IPv4-mapped IPv6
/// address takes an IPv6 prefix. The `ipnet` parser takes at most two (IPv4) or three digits.
pub fn go_parse_cidr(s: &str) -> Option<IpNet> {
    let (addr, prefix) = s.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = prefix.bytes().try_fold(0u32, |n, b| Some(n * 10 + u32::from(b - b'0')).filter(|n| *n < 0xFF_FFFF))?;
    IpNet::new(ip, u8::try_from(n).ok()?).ok()
}

/// Go's `%v` of a `net.IPNet` value (not a pointer, so not its `String()`): `{IP MASK}`, the mask
/// in hex, 4 bytes for IPv4 (`{198.19.0.5 ffff0000}`), host bits kept, as the reference's route
/// errors print a result's `dst`.
pub fn go_ipnet_value(n: &IpNet) -> String {
    let mask: String = match n.netmask() {
        IpAddr::V4(m) => m.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(m) => m.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    format!("{{{} {mask}}}", n.addr())
}

/// A JSON string literal as Go's encoding/json writes it (HTML-safe escaping of `<>&`,
/// U+2028/U+2029 escaped, `\b \f \n \r \t` short forms, other controls as `\u00xx`).
pub fn go_escape(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    // the usual string (a name, an address, a MAC) needs no escape: copied whole
    let plain = |b: &u8| !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&' | 0..=0x1f | 0x80..);
    if s.as_bytes().iter().all(plain) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[(b >> 4) & 0xf]));
                out.push(char::from(HEX[b & 0xf]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `%q` / `strconv.Quote` for a string (used in reference error messages).
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if !go_printable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint` for the runes `go_quote` meets (it escapes the others): not a control
/// character, not a space or separator other than U+0020 (U+00A0, U+2028, U+3000, ...), not a
/// format character (soft hyphen, zero-width and bidi controls, BOM, ...), not private use or a
/// noncharacter. (Unassigned code points, which Go escapes too, are printed as they are: std has
/// no Unicode category table.)
fn go_printable(c: char) -> bool {
    let n = c as u32;
    let separator = matches!(n, 0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029 | 0x202f | 0x205f | 0x3000);
    let format = matches!(
        n,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    );
    let private_or_non = matches!(n, 0xe000..=0xf8ff | 0xf0000..=0x10ffff | 0xfdd0..=0xfdef) || (n & 0xfffe) == 0xfffe;
    !(c.is_control() || separator || format || private_or_non)
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| go_quote(s.as_ref())).collect();
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The result of the oracle's host-local run with two ranges (checklist §1.8 example).
    fn two_family() -> CniResult {
        CniResult {
            interfaces: vec![],
            ips: vec![
                IpConfig { address: net("198.18.0.2/24"), gateway: Some(ip("198.18.0.1")), interface: None },
                IpConfig { address: net("fd00::2/64"), gateway: Some(ip("fd00::1")), interface: None },
            ],
            routes: vec![Route::new(net("0.0.0.0/0"), None), Route::new(net("fd01::/64"), Some(ip("fd00::9")))],
            dns: Dns::default(),
        }
    }

    /// A result using every field.
    fn full() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "br0".into(),
                    mac: Some("0a:58:c6:12:00:01".into()),
                    mtu: Some(1400),
                    sandbox: None,
                    socket_path: Some("/run/x.sock".into()),
                    pci_id: Some("0000:00:01.0".into()),
                },
                Interface { name: "eth0".into(), sandbox: Some("/run/netns/a".into()), ..Default::default() },
            ],
            ips: vec![IpConfig { address: net("198.18.0.2/24"), gateway: Some(ip("198.18.0.1")), interface: Some(1) }],
            routes: vec![Route {
                dst: net("198.19.0.0/16"),
                gw: Some(ip("198.18.0.1")),
                mtu: Some(1300),
                advmss: Some(1200),
                priority: Some(5),
                table: Some(100),
                scope: Some(0),
            }],
            dns: Dns {
                nameservers: vec!["198.18.0.53".into()],
                domain: Some("example.test".into()),
                search: vec!["a.test".into()],
                options: vec!["ndots:2".into()],
            },
        }
    }

    #[test]
    fn prints_1x_sorted_and_omits_empty_dns() {
        let want = r#"{
    "cniVersion": "1.0.0",
    "ips": [
        {
            "address": "198.18.0.2/24",
            "gateway": "198.18.0.1"
        },
        {
            "address": "fd00::2/64",
            "gateway": "fd00::1"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0"
        },
        {
            "dst": "fd01::/64",
            "gw": "fd00::9"
        }
    ]
}"#;
        assert_eq!(two_family().to_json("1.0.0").unwrap(), want);
        assert_eq!(two_family().to_json("1.1.0").unwrap(), want.replace("1.0.0", "1.1.0"));
    }

    #[test]
    fn prints_1x_every_field_sorted() {
        let want = r#"{
    "cniVersion": "1.1.0",
    "dns": {
        "domain": "example.test",
        "nameservers": [
            "198.18.0.53"
        ],
        "options": [
            "ndots:2"
        ],
        "search": [
            "a.test"
        ]
    },
    "interfaces": [
        {
            "mac": "0a:58:c6:12:00:01",
            "mtu": 1400,
            "name": "br0",
            "pciID": "0000:00:01.0",
            "socketPath": "/run/x.sock"
        },
        {
            "name": "eth0",
            "sandbox": "/run/netns/a"
        }
    ],
    "ips": [
        {
            "address": "198.18.0.2/24",
            "gateway": "198.18.0.1",
            "interface": 1
        }
    ],
    "routes": [
        {
            "advmss": 1200,
            "dst": "198.19.0.0/16",
            "gw": "198.18.0.1",
            "mtu": 1300,
            "priority": 5,
            "scope": 0,
            "table": 100
        }
    ]
}"#;
        assert_eq!(full().to_json("1.1.0").unwrap(), want);
    }

    #[test]
    fn prints_04_struct_order_with_version_and_dns() {
        // byte-identical to the Debian oracle (host-local, cniVersion 0.3.1)
        let want = r#"{
    "cniVersion": "0.3.1",
    "ips": [
        {
            "version": "4",
            "address": "198.18.0.2/24",
            "gateway": "198.18.0.1"
        },
        {
            "version": "6",
            "address": "fd00::2/64",
            "gateway": "fd00::1"
        }
    ],
    "routes": [
        {
            "dst": "0.0.0.0/0"
        },
        {
            "dst": "fd01::/64",
            "gw": "fd00::9"
        }
    ],
    "dns": {}
}"#;
        assert_eq!(two_family().to_json("0.3.1").unwrap(), want);
        let want_full = r#"{
    "cniVersion": "0.4.0",
    "interfaces": [
        {
            "name": "br0",
            "mac": "0a:58:c6:12:00:01"
        },
        {
            "name": "eth0",
            "sandbox": "/run/netns/a"
        }
    ],
    "ips": [
        {
            "version": "4",
            "interface": 1,
            "address": "198.18.0.2/24",
            "gateway": "198.18.0.1"
        }
    ],
    "routes": [
        {
            "dst": "198.19.0.0/16",
            "gw": "198.18.0.1",
            "mtu": 1300,
            "advmss": 1200,
            "priority": 5,
            "table": 100,
            "scope": 0
        }
    ],
    "dns": {
        "nameservers": [
            "198.18.0.53"
        ],
        "domain": "example.test",
        "search": [
            "a.test"
        ],
        "options": [
            "ndots:2"
        ]
    }
}"#;
        assert_eq!(full().to_json("0.4.0").unwrap(), want_full);
    }

    #[test]
    fn prints_02_split_by_family() {
        // byte-identical to the Debian oracle (host-local, cniVersion 0.2.0)
        let want = r#"{
    "cniVersion": "0.2.0",
    "ip4": {
        "ip": "198.18.0.2/24",
        "gateway": "198.18.0.1",
        "routes": [
            {
                "dst": "0.0.0.0/0"
            }
        ]
    },
    "ip6": {
        "ip": "fd00::2/64",
        "gateway": "fd00::1",
        "routes": [
            {
                "dst": "fd01::/64",
                "gw": "fd00::9"
            }
        ]
    },
    "dns": {}
}"#;
        assert_eq!(two_family().to_json("0.2.0").unwrap(), want);
        assert_eq!(two_family().to_json("0.1.0").unwrap(), want.replace("0.2.0", "0.1.0"));
        // v4 only: the v6 route has no ip6 to live under and is dropped; extra route fields dropped
        let want_full = r#"{
    "cniVersion": "0.2.0",
    "ip4": {
        "ip": "198.18.0.2/24",
        "gateway": "198.18.0.1",
        "routes": [
            {
                "dst": "198.19.0.0/16",
                "gw": "198.18.0.1"
            }
        ]
    },
    "dns": {
        "nameservers": [
            "198.18.0.53"
        ],
        "domain": "example.test",
        "search": [
            "a.test"
        ],
        "options": [
            "ndots:2"
        ]
    }
}"#;
        assert_eq!(full().to_json("0.2.0").unwrap(), want_full);
    }

    #[test]
    fn down_to_02_without_ips_is_an_error() {
        let r =
            CniResult { interfaces: vec![Interface { name: "lo".into(), ..Default::default() }], ..Default::default() };
        let e = r.to_json("0.2.0").unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(e.msg, "cannot convert: no valid IP addresses");
        assert!(r.to_json("0.4.0").is_ok());
        assert_eq!(r.to_json("1.0.0").unwrap(), "{\n    \"cniVersion\": \"1.0.0\",\n    \"interfaces\": [\n        {\n            \"name\": \"lo\"\n        }\n    ]\n}");
        assert!(r.to_json("9.9.9").is_err());
    }

    /// A prevResult passed on at 0.1.0/0.2.0 without addresses prints as the reference's
    /// unconverted one (`cniVersion` and `dns`), where our own address-less result cannot.
    #[test]
    fn passed_on_02_without_ips_prints_version_and_dns() {
        let r = CniResult::default();
        assert!(r.to_json("0.2.0").is_err());
        assert_eq!(r.to_json_passed_on("0.2.0").unwrap(), "{\n    \"cniVersion\": \"0.2.0\",\n    \"dns\": {}\n}");
        assert_eq!(r.to_json_passed_on("1.0.0").unwrap(), r.to_json("1.0.0").unwrap());
        let two = two_family();
        assert_eq!(two.to_json_passed_on("0.2.0").unwrap(), two.to_json("0.2.0").unwrap());
    }

    #[test]
    fn parses_every_version_and_round_trips() {
        for v in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            let printed = two_family().to_json(v).unwrap();
            let back = CniResult::from_slice(printed.as_bytes(), "1.0.0").unwrap();
            assert_eq!(back, two_family(), "version {v}");
        }
        let printed = full().to_json("1.1.0").unwrap();
        assert_eq!(CniResult::from_slice(printed.as_bytes(), "1.1.0").unwrap(), full());
        // 0.4.0 drops the 1.1-only interface fields
        let printed = full().to_json("0.4.0").unwrap();
        let back = CniResult::from_slice(printed.as_bytes(), "1.1.0").unwrap();
        assert_eq!(back.interfaces[0].mtu, None);
        assert_eq!(back.interfaces[0].pci_id, None);
        assert_eq!(back.routes, full().routes);
    }

    #[test]
    fn parse_is_case_insensitive_and_defaults_version() {
        let v = json!({"IPS": [{"Address": "198.18.0.9/24", "GATEWAY": ""}], "Routes": [{"DST": "0.0.0.0/0", "GW": "198.18.0.1"}]});
        // no cniVersion: read with the given one (1.x shape)
        let r = CniResult::from_json(&v, "1.0.0").unwrap();
        assert_eq!(r.ips[0].address, net("198.18.0.9/24"));
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(r.routes[0].gw, Some(ip("198.18.0.1")));
        // no cniVersion with an old config version: 0.2 shape, ips ignored
        let v02 = json!({"IP4": {"IP": "198.18.0.9/24"}});
        let r = CniResult::from_json(&v02, "0.2.0").unwrap();
        assert_eq!(r.ips.len(), 1);
        // the result's own cniVersion wins over the default
        let v02b =
            json!({"cniVersion": "0.1.0", "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]}});
        let r = CniResult::from_json(&v02b, "1.0.0").unwrap();
        assert_eq!(r.ips[0].address, net("fd00::5/64"));
        assert_eq!(r.routes[0].gw, Some(ip("fd00::1")));
    }

    #[test]
    fn parse_errors_are_clean() {
        for bad in [
            json!([]),
            json!({"cniVersion": 1}),
            json!({"cniVersion": "7.0.0"}),
            json!({"cniVersion": "1.0.0", "ips": {}}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "198.18.0.1"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "198.18.0.1/24", "interface": 18446744073709551615u64}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "198.18.0.1/24", "interface": 1.5}]}),
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mtu": 9223372036854775808u64}]}),
            json!({"cniVersion": "1.0.0", "routes": [{"gw": "198.18.0.1"}]}),
            json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "mtu": "1500"}]}),
            json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "scope": 256}]}),
            json!({"cniVersion": "1.0.0", "dns": {"nameservers": [1]}}),
            json!({"cniVersion": "0.2.0", "ip4": {"gateway": "198.18.0.1"}}),
        ] {
            let e = CniResult::from_json(&bad, "1.0.0").unwrap_err();
            assert_eq!(e.code, code::DECODE, "{bad}");
        }
    }

    /// `ips[].interface` and `interfaces[].mtu` are Go ints: any int64 is read and printed back
    /// as given (the reference's loopback echoes `-1`), a number beyond int64 is refused as Go
    /// refuses it; a negative index names no interface.
    #[test]
    fn go_ipnet_value_prints_the_struct_with_host_bits_and_a_hex_mask() {
        let n = |s: &str| go_parse_cidr(s).unwrap();
        assert_eq!(go_ipnet_value(&n("198.19.0.5/16")), "{198.19.0.5 ffff0000}");
        assert_eq!(go_ipnet_value(&n("0.0.0.0/0")), "{0.0.0.0 00000000}");
        assert_eq!(go_ipnet_value(&n("fd00::5/64")), "{fd00::5 ffffffffffffffff0000000000000000}");
    }

    #[test]
    fn go_int_fields_take_the_int64_range_and_echo_negatives() {
        let v = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mtu": -5}, {"name": "big", "mtu": 9223372036854775807i64}],
            "ips": [{"address": "198.18.0.2/24", "interface": -1},
                    {"address": "198.18.0.3/24", "interface": -9223372036854775808i64},
                    {"address": "198.18.0.4/24", "interface": 9223372036854775807i64},
                    {"address": "198.18.0.5/24", "interface": 1}]});
        let r = CniResult::from_json(&v, "1.0.0").unwrap();
        assert_eq!(r.interfaces[0].mtu, Some(-5));
        let idx: Vec<Option<i64>> = r.ips.iter().map(IpConfig::interface_go).collect();
        assert_eq!(idx, [Some(-1), Some(i64::MIN), Some(i64::MAX), Some(1)]);
        // a negative or out-of-range index looks nothing up
        assert!(r.ips.iter().take(3).all(|ip| ip.interface.and_then(|i| r.interfaces.get(i)).is_none()));
        assert_eq!(r.ips[3].interface.and_then(|i| r.interfaces.get(i)).map(|x| x.name.as_str()), Some("big"));
        let printed: Value = serde_json::from_str(&r.to_json("1.0.0").unwrap()).unwrap();
        assert_eq!(printed["interfaces"], v["interfaces"]);
        assert_eq!(printed["ips"], v["ips"]);
        let printed: Value = serde_json::from_str(&r.to_json("0.4.0").unwrap()).unwrap();
        assert_eq!(printed["ips"][0]["interface"], -1);
    }

    #[test]
    fn go_parse_cidr_takes_go_s_prefix_digits() {
        let p = |s: &str| go_parse_cidr(s).map(|n| n.to_string());
        assert_eq!(p("198.18.0.5/016").as_deref(), Some("198.18.0.5/16"), "host bits kept, zeros read");
        assert_eq!(p("fd00::1/000064").as_deref(), Some("fd00::1/64"));
        assert_eq!(p("::ffff:198.18.0.1/120").as_deref(), Some("::ffff:198.18.0.1/120"));
        for bad in ["198.18.0.0/33", "198.18.0.0/", "198.18.0.0/+8", "198.18.0.0/ 8", "198.18.0.0", "fd00::%eth0/64"] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert_eq!(p(&format!("198.18.0.0/{}", "0".repeat(40))).as_deref(), Some("198.18.0.0/0"));
    }

    #[test]
    fn go_formatting_details() {
        assert_eq!(fmt_net(&net("::ffff:198.18.0.1/120")), "198.18.0.1/24");
        assert_eq!(fmt_ip(&ip("::ffff:198.18.0.1")), "198.18.0.1");
        assert_eq!(fmt_ip(&ip("fd00:0:0:0:0:0:0:1")), "fd00::1");
        let mut s = String::new();
        go_escape("a<b>&\"\\\n\u{1}\u{8}\u{2028}é", &mut s);
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\b\u2028é""#);
        assert_eq!(go_quote("a\"b\u{1}"), r#""a\"b\x01""#);
        // strconv.Quote escapes what unicode.IsPrint refuses: controls, spaces other than ' ',
        // separators, format characters
        assert_eq!(go_quote("b\u{2028}"), r#""b\u2028""#);
        assert_eq!(go_quote("b\u{85} \u{a0}\u{3000}"), r#""b\u0085 \u00a0\u3000""#);
        assert_eq!(go_quote("\u{200b}\u{feff}\u{e0001}"), r#""\u200b\ufeff\U000e0001""#);
        assert_eq!(go_quote("bà€😀"), r#""bà€😀""#);
        assert_eq!(go_quote_list(&["0.1.0", "1.0.0"]), r#"["0.1.0" "1.0.0"]"#);
    }
}
