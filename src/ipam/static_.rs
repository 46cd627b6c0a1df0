//! static IPAM: hand out the addresses written in the config (or passed by the runtime).
//!
//! Sources, in the reference's order: `ipam.addresses`; CNI_ARGS `IP` (comma list,
//! appended) and `GATEWAY` (comma list; like the reference's code, a gateway is given to the
//! CNI_ARGS addresses whose subnet contains it); `args.cni.ips` replaces everything;
//! the `ips` capability replaces again. An IPv4-mapped IPv6 address is the IPv4 address (as Go
//! sees it), and each source's malformed entry gets the reference's text. Better than the
//! reference: a gateway of the other family than its address is a config error (code 7).

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

use super::common::{self, RawDns, RawRoute};
use crate::cni::plugin::{acni, arg, cap, config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::result::{go_parse_cidr, Dns, IpConfig, Route};
use crate::cni::{CniError, CniResult, Ctx};

pub const APPLET: Plugin = Plugin {
    name: "static",
    about: "IPAM: fixed addresses from the config",
    min_version: Version::new(0, 1, 0),
    cni_args: Some(&["IP", "GATEWAY"]),
    add,
    del,
    check,
    gc: None,
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Ipam,
    summary: "Returns fixed addresses, routes and DNS from the config; stores nothing.",
    section: "ipam",
    keys: &[
        k("addresses", "list of {address, gateway}", "[]", "CIDR addresses with optional gateways"),
        k("routes", "list of {dst, gw}", "[]", "routes put into the result"),
        k("dns", "object", "", "DNS put into the result"),
        cap("ips", "list of CIDRs", "replaces the addresses (highest priority)"),
        acni("ips", "list of CIDRs", "replaces the addresses"),
        arg("IP", "CIDRs, comma separated", "appended to the addresses"),
        arg("GATEWAY", "IPs, comma separated", "gateways for the CNI_ARGS `IP` addresses in their subnets (not for the configured `addresses`, as in the reference)"),
    ],
    notes: &["Route `mtu`, `advmss` and `priority` are integers as in the reference: 0 is unset, a negative \
         value is printed in the result as given and sets nothing on the route."],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "fixed",
  "type": "macvlan",
  "master": "eth0",
  "ipam": {
    "type": "static",
    "addresses": [{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}"#,
    config: Some(config_fields::<RawStatic>),
};

#[derive(Debug, Default, Deserialize)]
struct RawAddress {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawStatic {
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    addresses: Vec<RawAddress>,
    #[serde(default)]
    dns: RawDns,
}

/// The validated static configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConf {
    /// address (host bits kept, as written) and gateway
    pub addresses: Vec<(IpNet, Option<IpAddr>)>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// Where an address came from: each source has the reference's own error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `ipam.addresses[].address`
    Config,
    /// CNI_ARGS `IP`
    CniArgs,
    /// `args.cni.ips` or the `ips` capability
    Ips,
}

/// An address in CIDR notation (an IPv4-mapped IPv6 one is the IPv4 address, as Go sees it),
/// or the reference's error for its source.
fn parse_cidr(text: &str, source: Source) -> Result<IpNet, CniError> {
    let t = text.trim();
    go_parse_cidr(t).map(common::canonical_net).ok_or_else(|| {
        CniError::config(match source {
            Source::Config => format!("the 'address' field is expected to be in CIDR notation, got: '{text}'"),
            Source::CniArgs => format!("the 'ip' field is expected to be in CIDR notation, got: '{t}'"),
            Source::Ips => format!("an entry in the 'ips' field is NOT in CIDR notation, got: '{text}'"),
        })
    })
}

/// `args.cni.ips` / the `ips` capability, each entry checked as the reference does on import.
fn from_ips(list: &[String]) -> Result<Vec<(String, Option<IpAddr>)>, CniError> {
    list.iter().map(|s| parse_cidr(s, Source::Ips).map(|_| (s.clone(), None))).collect()
}

/// Load and validate the config with all overrides applied.
pub fn load_conf(ctx: &Ctx) -> anyhow::Result<StaticConf> {
    let ipam = match ctx.get("ipam") {
        Some(v) if v.is_object() => v,
        Some(_) => anyhow::bail!("failed to load netconf: 'ipam' must be an object"),
        None => return Err(CniError::config("IPAM config missing 'ipam' key").into()),
    };
    let raw: RawStatic = serde_json::from_value(ipam.clone()).map_err(|e| {
        match crate::cni::config::locate_error::<RawStatic>(ipam) {
            Some(path) => anyhow::anyhow!("failed to load netconf: ipam.{path}: {e}"),
            None => anyhow::anyhow!("failed to load netconf: {e}"),
        }
    })?;

    // (address text, gateway) until everything is known, like the reference
    let mut list: Vec<(String, Option<IpAddr>)> = Vec::new();
    for a in &raw.addresses {
        list.push((a.address.clone().unwrap_or_default(), common::opt_ip("gateway", &a.gateway)?));
    }

    let from_args = list.len();
    if let Some(ips) = ctx.cni_arg("IP").filter(|v| !v.is_empty()) {
        for item in ips.split(',') {
            parse_cidr(item, Source::CniArgs)?;
            list.push((item.trim().to_string(), None));
        }
    }
    if let Some(gws) = ctx.cni_arg("GATEWAY").filter(|v| !v.is_empty()) {
        for item in gws.split(',') {
            let gw: IpAddr = item
                .trim()
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| CniError::config(format!("invalid gateway address: {item}")))?;
            for (text, g) in list.iter_mut().skip(from_args) {
                if parse_cidr(text, Source::CniArgs).is_ok_and(|n| n.trunc().contains(&gw)) {
                    *g = Some(gw);
                }
            }
        }
    }

    let args_ips = common::string_list("args.cni.ips", ctx.args_cni("ips"))?;
    if !args_ips.is_empty() {
        list = from_ips(&args_ips)?;
    }
    let cap_ips = common::string_list("runtimeConfig.ips", ctx.runtime_config("ips"))?;
    if !cap_ips.is_empty() {
        list = from_ips(&cap_ips)?;
    }

    let mut addresses = Vec::with_capacity(list.len());
    for (text, gw) in &list {
        // (the entries of CNI_ARGS and of the ips lists were checked on import)
        let net = parse_cidr(text, Source::Config)?;
        if let Some(gw) = gw {
            if gw.is_ipv4() != net.addr().is_ipv4() {
                return Err(CniError::config(format!(
                    "gateway {gw} is not of the same address family as address {net}"
                ))
                .into());
            }
        }
        addresses.push((net, *gw));
    }
    let v4 = addresses.iter().filter(|(n, _)| n.addr().is_ipv4()).count();
    common::check_per_family(ctx, v4, addresses.len() - v4)?;

    Ok(StaticConf { addresses, routes: common::routes(&raw.routes)?, dns: raw.dns.to_dns() })
}

fn add(ctx: &Ctx) -> anyhow::Result<CniResult> {
    let conf = load_conf(ctx)?;
    Ok(CniResult {
        interfaces: Vec::new(),
        ips: conf
            .addresses
            .iter()
            .map(|(address, gateway)| IpConfig { address: *address, gateway: *gateway, interface: None })
            .collect(),
        routes: conf.routes,
        dns: conf.dns,
    })
}

/// Nothing was allocated, nothing to release.
fn del(_ctx: &Ctx) -> anyhow::Result<()> {
    Ok(())
}

fn check(ctx: &Ctx) -> anyhow::Result<()> {
    let conf = load_conf(ctx)?;
    let prev = ctx.read_prev_result()?.ok_or_else(|| anyhow::anyhow!("Required prevResult missing"))?;
    for (addr, gw) in &conf.addresses {
        if let Some(found) = prev.ips.iter().find(|i| i.address.addr() == addr.addr()) {
            if gw.is_some() && found.gateway != *gw {
                anyhow::bail!("static: Failed to match addr {} on interface {}", found.address.addr(), ctx.ifname);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::host_local::tests::ctx;
    use serde_json::json;

    fn c(ipam: serde_json::Value) -> serde_json::Value {
        json!({"cniversion": "1.0.0", "name": "n", "ipam": ipam})
    }

    fn addrs(r: &CniResult) -> Vec<(String, Option<String>)> {
        r.ips.iter().map(|i| (i.address.to_string(), i.gateway.map(|g| g.to_string()))).collect()
    }

    fn pair(a: &str, g: Option<&str>) -> (String, Option<String>) {
        (a.to_string(), g.map(str::to_string))
    }

    #[test]
    fn config_addresses_routes_dns() {
        let x = ctx(
            c(json!({"addresses": [{"address": "198.18.0.5/24", "gateway": "198.18.0.1"}, {"address": "fd00::5/64"}],
                     "routes": [{"dst": "0.0.0.0/0"}],
                     "dns": {"nameservers": ["198.18.0.53"], "domain": "ex", "search": ["a"], "options": ["o"]}})),
            "c",
            "eth0",
        );
        let r = add(&x).unwrap();
        assert_eq!(addrs(&r), [pair("198.18.0.5/24", Some("198.18.0.1")), pair("fd00::5/64", None)]);
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.dns.domain.as_deref(), Some("ex"));
        assert!(r.interfaces.is_empty() && r.ips.iter().all(|i| i.interface.is_none()));
    }

    #[test]
    fn arg_precedence() {
        let base = c(json!({"addresses": [{"address": "198.18.0.5/24"}]}));
        let mut x = ctx(base.clone(), "c", "eth0");
        x.args = vec![
            ("IP".into(), "198.19.0.4/24, 198.20.0.4/24".into()),
            ("GATEWAY".into(), "198.18.0.9,198.19.0.1".into()),
        ];
        // CNI_ARGS IP appends; GATEWAY only reaches the CNI_ARGS addresses (reference code)
        assert_eq!(
            addrs(&add(&x).unwrap()),
            [pair("198.18.0.5/24", None), pair("198.19.0.4/24", Some("198.19.0.1")), pair("198.20.0.4/24", None)]
        );
        // args.cni.ips replaces all of it
        let mut with_args = base.clone();
        with_args["args"] = json!({"cni": {"ips": ["198.21.0.1/24"]}});
        let mut y = ctx(with_args.clone(), "c", "eth0");
        y.args = x.args.clone();
        assert_eq!(addrs(&add(&y).unwrap()), [pair("198.21.0.1/24", None)]);
        // and the ips capability replaces again
        with_args["runtimeconfig"] = json!({"ips": ["198.22.0.1/24", "198.23.0.1/24"]});
        let z = ctx(with_args, "c", "eth0");
        assert_eq!(addrs(&add(&z).unwrap()), [pair("198.22.0.1/24", None), pair("198.23.0.1/24", None)]);
    }

    #[test]
    fn validation() {
        let cases = [
            (json!({"addresses": [{"address": "198.18.0.5"}]}), "expected to be in CIDR notation"),
            (
                json!({"addresses": [{"address": "bogus"}]}),
                "the 'address' field is expected to be in CIDR notation, got: 'bogus'",
            ),
            (
                json!({"addresses": [{"gateway": "198.18.0.1"}]}),
                "the 'address' field is expected to be in CIDR notation, got: ''",
            ),
            (json!({"addresses": [{"address": "fd00::5/64", "gateway": "198.18.0.1"}]}), "same address family"),
            (json!({"addresses": [{"address": "198.18.0.5/24", "gateway": "nope"}]}), "invalid gateway"),
        ];
        for (ipam, want) in cases {
            let e = CniError::from_anyhow(&add(&ctx(c(ipam.clone()), "c", "eth0")).unwrap_err());
            assert_eq!(e.code, 7, "{ipam}");
            assert!(e.msg.contains(want), "{ipam}: {}", e.msg);
        }
        let mut old =
            ctx(c(json!({"addresses": [{"address": "198.18.0.5/24"}, {"address": "198.18.1.5/24"}]})), "c", "e");
        old.set_version("0.2.0");
        assert!(format!("{:#}", add(&old).unwrap_err()).contains("does not support more than 1 address per family"));
        old.set_version("0.3.0");
        assert_eq!(add(&old).unwrap().ips.len(), 2);
        let mut bad_gw = ctx(c(json!({})), "c", "e");
        bad_gw.args = vec![("IP".into(), "198.18.0.5/24".into()), ("GATEWAY".into(), "x".into())];
        assert_eq!(CniError::from_anyhow(&add(&bad_gw).unwrap_err()).code, 7);
        // no addresses at all is fine (the version conversion decides)
        assert!(add(&ctx(c(json!({})), "c", "e")).unwrap().ips.is_empty());
        del(&ctx(json!({}), "c", "e")).unwrap();
    }

    /// Each source of addresses has the reference's own error text (code 7 here, 999 there).
    #[test]
    fn cidr_errors_name_their_source_as_the_reference() {
        let fail = |x: &Ctx| {
            let e = CniError::from_anyhow(&add(x).unwrap_err());
            assert_eq!(e.code, 7, "{}", e.msg);
            e.msg
        };
        let mut x = ctx(c(json!({})), "c", "eth0");
        x.args = vec![("IP".into(), "198.19.0.4/24, 198.18.3.5 ".into())];
        assert_eq!(fail(&x), "the 'ip' field is expected to be in CIDR notation, got: '198.18.3.5'");
        x.args = vec![("IP".into(), "bogus".into())];
        assert_eq!(fail(&x), "the 'ip' field is expected to be in CIDR notation, got: 'bogus'");
        for key in ["args", "runtimeconfig"] {
            let mut conf = c(json!({"addresses": [{"address": "198.18.0.5/24"}]}));
            let ips = json!({"ips": ["198.18.0.6/24", "198.18.3.5"]});
            conf[key] = if key == "args" { json!({"cni": ips}) } else { ips };
            let x = ctx(conf, "c", "eth0");
            assert_eq!(fail(&x), "an entry in the 'ips' field is NOT in CIDR notation, got: '198.18.3.5'", "{key}");
        }
    }

    /// Go compares an IPv4-mapped IPv6 address as the IPv4 one: CNI_ARGS GATEWAY reaches it, it
    /// counts as IPv4 and takes an IPv4 gateway, and it prints as IPv4 with the mask's last 32 bits.
    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let mut x = ctx(c(json!({})), "c", "eth0");
        x.args = vec![("IP".into(), "::ffff:198.18.3.5/120".into()), ("GATEWAY".into(), "198.18.3.1".into())];
        let r = add(&x).unwrap();
        assert_eq!(addrs(&r), [pair("198.18.3.5/24", Some("198.18.3.1"))]);
        let x = ctx(
            c(
                json!({"addresses": [{"address": "::ffff:198.18.3.5/120", "gateway": "198.18.3.1"}, {"address": "fd00::5/64"}]}),
            ),
            "c",
            "eth0",
        );
        let mut x = x;
        x.set_version("0.2.0"); // one address per family: the mapped one is the IPv4 one
        assert_eq!(addrs(&add(&x).unwrap()), [pair("198.18.3.5/24", Some("198.18.3.1")), pair("fd00::5/64", None)]);
    }

    /// Route `mtu`, `advmss` and `priority` are Go ints in v1.9.1's types.Route: a negative one is
    /// accepted and printed as given (0 stays unset); past 32 bits is still refused.
    #[test]
    fn negative_route_mtu_and_priority_are_printed_as_given() {
        let routes = json!([{"dst": "0.0.0.0/0", "mtu": -5, "advmss": -7, "priority": -1}, {"dst": "::/0", "mtu": 0}]);
        let r = add(&ctx(c(json!({"routes": routes})), "c", "eth0")).unwrap();
        let printed: serde_json::Value = serde_json::from_str(&r.to_json("1.0.0").unwrap()).unwrap();
        assert_eq!(
            printed["routes"],
            json!([{"dst": "0.0.0.0/0", "mtu": -5, "advmss": -7, "priority": -1}, {"dst": "::/0"}])
        );
        let big = json!([{"dst": "0.0.0.0/0", "priority": 4_294_967_296u64}]);
        let e = CniError::from_anyhow(&add(&ctx(c(json!({"routes": big})), "c", "eth0")).unwrap_err());
        assert_eq!(e.code, 7, "{}", e.msg);
    }

    #[test]
    fn check_compares_gateways_with_prev_result() {
        let conf = c(json!({"addresses": [{"address": "198.18.0.5/24", "gateway": "198.18.0.1"}]}));
        let mut x = ctx(conf.clone(), "c", "eth0");
        assert!(format!("{:#}", check(&x).unwrap_err()).contains("Required prevResult missing"));
        let mut prev = add(&x).unwrap();
        x.prev_result = Some(prev.clone());
        check(&x).unwrap();
        prev.ips[0].gateway = Some("198.18.0.254".parse().unwrap());
        x.prev_result = Some(prev.clone());
        assert!(format!("{:#}", check(&x).unwrap_err()).contains("Failed to match addr 198.18.0.5 on interface eth0"));
        // an address missing from prevResult is not an error (reference behaviour)
        prev.ips.clear();
        x.prev_result = Some(prev);
        check(&x).unwrap();
    }
}
