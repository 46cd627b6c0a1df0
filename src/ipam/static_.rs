//! static IPAM: hand out the addresses written in the config (or passed by the runtime).
//!
//! Sources, in the reference's order: `ipam.addresses`; CNI_ARGS `IP` (comma list,
//! appended) and `GATEWAY` (comma list; like the reference's code, a gateway is given to the
//! CNI_ARGS addresses whose subnet contains it); `args.cni.ips` replaces everything;
//! the `ips` capability replaces again. Better than the reference: a gateway of the other
//! family than its address is a config error (code 7).

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

use super::common::{self, RawDns, RawRoute};
use crate::cni::plugin::{acni, arg, cap, config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::result::{Dns, IpConfig, Route};
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
        arg("GATEWAY", "IPs, comma separated", "gateways for the addresses in their subnets"),
    ],
    notes: &[],
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

fn parse_cidr(s: &str) -> Result<IpNet, CniError> {
    let s = s.trim();
    s.parse::<IpNet>().map_err(|_| {
        if s.parse::<IpAddr>().is_ok() {
            CniError::config(format!("the 'address' field is expected to be in CIDR notation, got: '{s}'"))
        } else {
            CniError::config(format!("invalid CIDR {s}"))
        }
    })
}

fn from_strings(list: &[String]) -> Vec<(String, Option<IpAddr>)> {
    list.iter().map(|s| (s.clone(), None)).collect()
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
            parse_cidr(item)?;
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
                if parse_cidr(text).is_ok_and(|n| n.trunc().contains(&gw)) {
                    *g = Some(gw);
                }
            }
        }
    }

    let args_ips = common::string_list("args.cni.ips", ctx.args_cni("ips"))?;
    if !args_ips.is_empty() {
        list = from_strings(&args_ips);
    }
    let cap_ips = common::string_list("runtimeConfig.ips", ctx.runtime_config("ips"))?;
    if !cap_ips.is_empty() {
        list = from_strings(&cap_ips);
    }

    let mut addresses = Vec::with_capacity(list.len());
    for (text, gw) in &list {
        let net = parse_cidr(text)?;
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
    let prev = ctx.prev_result.as_ref().ok_or_else(|| anyhow::anyhow!("Required prevResult missing"))?;
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
            (json!({"addresses": [{"address": "bogus"}]}), "invalid CIDR bogus"),
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
