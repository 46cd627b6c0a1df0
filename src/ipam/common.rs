//! Config pieces shared by the IPAM plugins: routes, DNS, version checks, address lists.

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

use crate::cni::result::{Dns, Route};
use crate::cni::CniError;

/// A route as written in `ipam.routes` (the Go `types.Route`, keys lower-cased).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRoute {
    #[serde(default)]
    pub dst: Option<String>,
    #[serde(default)]
    pub gw: Option<String>,
    #[serde(default)]
    pub mtu: Option<i64>,
    #[serde(default)]
    pub advmss: Option<i64>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub table: Option<i64>,
    #[serde(default)]
    pub scope: Option<i64>,
}

/// `ipam.dns` (the Go `types.DNS`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawDns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl RawDns {
    pub fn to_dns(&self) -> Dns {
        Dns {
            nameservers: self.nameservers.clone(),
            domain: self.domain.clone().filter(|d| !d.is_empty()),
            search: self.search.clone(),
            options: self.options.clone(),
        }
    }
}

/// An IPv4-mapped IPv6 network as Go sees it: the IPv4 address, with the last 32 bits of the
/// mask (so `::ffff:198.18.3.5/120` is `198.18.3.5/24`, a prefix under 96 is /0). Others as given.
pub fn canonical_net(n: IpNet) -> IpNet {
    match n {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len().saturating_sub(96)).map(IpNet::V4).unwrap_or(n),
            None => n,
        },
        IpNet::V4(_) => n,
    }
}

/// Parse an optional IP where `""` means unset (Go's `net.IP`), canonicalised.
pub fn opt_ip(what: &str, v: &Option<String>) -> Result<Option<IpAddr>, CniError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|ip| Some(ip.to_canonical()))
            .map_err(|_| CniError::config(format!("invalid {what} address {s:?}"))),
    }
}

fn opt_num<T: TryFrom<i64>>(what: &str, v: Option<i64>) -> Result<Option<T>, CniError> {
    match v {
        None => Ok(None),
        Some(n) => T::try_from(n).map(Some).map_err(|_| CniError::config(format!("route {what} {n} out of range"))),
    }
}

/// A Go `int` route field (`mtu`, `advmss`, `priority`): 0 is unset (omitempty), a negative
/// value is kept as the reference's types.Route keeps it (printed in the result, never put in
/// the kernel); above 32 bits no kernel field holds it, so it is refused.
fn go_int(what: &str, v: Option<i64>) -> Result<Option<i64>, CniError> {
    match v {
        None | Some(0) => Ok(None),
        Some(n) if n > i64::from(u32::MAX) => Err(CniError::config(format!("route {what} {n} out of range"))),
        Some(n) => Ok(Some(n)),
    }
}

impl RawRoute {
    /// Validate into a result route. `dst` keeps host bits as written (like Go's
    /// `types.ParseCIDR`); `mtu`/`advmss`/`priority` see [`go_int`].
    pub fn to_route(&self) -> Result<Route, CniError> {
        let dst_text = self.dst.as_deref().map(str::trim).unwrap_or("");
        let dst = crate::cni::result::go_parse_cidr(dst_text)
            .ok_or_else(|| CniError::config(format!("invalid route dst {dst_text:?}: not a CIDR")))?;
        let gw = opt_ip("route gw", &self.gw)?;
        Ok(Route {
            dst,
            gw,
            mtu: go_int("mtu", self.mtu)?,
            advmss: go_int("advmss", self.advmss)?,
            priority: go_int("priority", self.priority)?,
            table: opt_num("table", self.table)?,
            scope: opt_num("scope", self.scope)?,
        })
    }
}

pub fn routes(raw: &[RawRoute]) -> Result<Vec<Route>, CniError> {
    raw.iter().map(RawRoute::to_route).collect()
}

/// The rule shared by host-local and static: more than one address per family needs a
/// result format with `ips[]` (cniVersion >= 0.3.0).
pub fn check_per_family(ctx: &crate::cni::Ctx, v4: usize, v6: usize) -> Result<(), CniError> {
    if (v4 > 1 || v6 > 1) && ctx.spec.is_none_or(|v| v < crate::cni::Version::new(0, 3, 0)) {
        let version = &ctx.version;
        return Err(CniError::config(format!("CNI version {version} does not support more than 1 address per family")));
    }
    Ok(())
}

/// A JSON list of strings (for `args.cni.ips` and the `ips` capability).
pub fn string_list(what: &str, v: Option<&serde_json::Value>) -> anyhow::Result<Vec<String>> {
    match v {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
            .map_err(|e| anyhow::anyhow!("failed to load netconf: {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        // the comparison itself is tested with cni::Version (cni/version.rs)
        let at = |v: &str| {
            let mut c = crate::cni::Ctx::new(crate::cni::Command::Add);
            c.set_version(v);
            c
        };
        assert!(check_per_family(&at("0.10.0"), 2, 2).is_ok());
        assert!(check_per_family(&at("bogus"), 2, 0).is_err());
        assert!(check_per_family(&at("0.2.0"), 1, 1).is_ok());
        assert_eq!(check_per_family(&at("0.2.0"), 2, 0).unwrap_err().code, 7);
        assert!(check_per_family(&at("0.3.1"), 2, 2).is_ok());
    }

    #[test]
    fn route_parsing() {
        let r: RawRoute =
            serde_json::from_str(r#"{"dst":"198.18.5.1/16","gw":"198.18.0.1","mtu":0,"table":0}"#).unwrap();
        let r = r.to_route().unwrap();
        assert_eq!(r.dst.to_string(), "198.18.5.1/16");
        assert_eq!(r.gw, Some("198.18.0.1".parse().unwrap()));
        assert_eq!((r.mtu, r.table), (None, Some(0)));
        let r: RawRoute = serde_json::from_str(r#"{"dst":"0.0.0.0/0","gw":""}"#).unwrap();
        assert_eq!(r.to_route().unwrap().gw, None);
        let bad: RawRoute = serde_json::from_str(r#"{"dst":"nope"}"#).unwrap();
        assert_eq!(bad.to_route().unwrap_err().code, 7);
        let bad: RawRoute = serde_json::from_str(r#"{"dst":"0.0.0.0/0","scope":999}"#).unwrap();
        assert_eq!(bad.to_route().unwrap_err().code, 7);
    }
}
