//! The veth pair of bridge, ptp and vpc-routed, and the host-side L3 they share.

use super::undo::Undo;
use crate::cni::result::go_quote;
use crate::cni::{CniResult, Ctx};
use crate::netlink::link::VethSpec;
use crate::netlink::socket::{go_words, is_exists, Netlink};
use crate::netlink::Link;
use crate::sys::netns::NetNs;
use crate::sys::sysctl;
use anyhow::{Context, Result};
use ipnet::IpNet;
use std::net::IpAddr;

/// How many random host names to try when one collides (as the reference).
const NAME_TRIES: usize = 10;

/// `veth` + 8 random hex digits, as the reference names host-side veths (and temporary links).
pub use crate::names::random_veth_name as random_name;

/// What the pair looks like: MTU (0 = the kernel's default), container MAC, and the host end's
/// name (`None`: a random `veth…` name, retried on a clash).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pair<'a> {
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub host_name: Option<&'a str>,
}

/// The `mtu` key of a veth plugin, a Go int in the reference: 0 or less leaves the kernel's
/// default (the reference sends no MTU then); more than a u32 holds is an invalid config.
pub fn mtu_key(mtu: i64) -> Result<u32> {
    if mtu <= 0 {
        return Ok(0);
    }
    u32::try_from(mtu).map_err(|_| crate::cni::CniError::config(format!("invalid MTU {mtu}")).into())
}

/// The two ends of a new pair.
pub struct Ends {
    /// the end in the host namespace
    pub host: Link,
    /// CNI_IFNAME in the container
    pub cont: Link,
}

/// ADD step: the pair, created inside the container as CNI_IFNAME with its peer in the host
/// namespace (its undo pushed); the host end gets accept_ra=0. The container end comes from the
/// kernel's echo of the creation; only a kernel that does not echo it (< 6.2) costs a lookup.
pub fn add_pair(
    ctx: &Ctx,
    host: &mut Netlink,
    cont: &mut Netlink,
    ns: &NetNs,
    undo: &mut Undo,
    pair: Pair<'_>,
) -> Result<Ends> {
    let host_ns = NetNs::current()?;
    let (host_name, echoed) = create(cont, &host_ns, &ctx.ifname, pair)?;
    tracing::debug!(host_veth = %host_name, ifname = %ctx.ifname, "veth pair created");
    super::link::undo_delete(undo, ns.path(), &ctx.ifname);
    let host_veth = host.link_by_name(&host_name)?.with_context(|| format!("failed to lookup {host_name:?}"))?;
    let _ = sysctl::set_if("ipv6", &host_name, "accept_ra", "0");
    let cont_link = match echoed {
        Some(l) => l,
        None => cont.link_by_name(&ctx.ifname)?.with_context(|| format!("failed to lookup {:?}", ctx.ifname))?,
    };
    Ok(Ends { host: host_veth, cont: cont_link })
}

/// Create the pair; a random host name is retried when it collides. Returns the host name and
/// the container end as the kernel echoed it.
/// "Exists" is looked into only when the kernel says it: CNI_IFNAME taken in the container is
/// the caller's error, a taken host name is retried. The errors are v1.9.1's (`ip.SetupVeth`),
/// the kernel's errno in Go's words.
fn create(cont: &mut Netlink, host_ns: &NetNs, ifname: &str, pair: Pair<'_>) -> Result<(String, Option<Link>)> {
    let mut last = None;
    for _ in 0..NAME_TRIES {
        let peer = pair.host_name.map_or_else(random_name, str::to_string);
        let spec = VethSpec {
            name: ifname,
            peer_name: &peer,
            mtu: (pair.mtu > 0).then_some(pair.mtu),
            mac: pair.mac,
            peer_ns: Some(host_ns.fd()),
        };
        match cont.veth_add(&spec) {
            Ok(echoed) => return Ok((peer, echoed)),
            Err(e) if is_exists(&e) && cont.link_by_name(ifname)?.is_some() => {
                anyhow::bail!(
                    "container veth name ({}) peer provided ({}) already exists",
                    go_quote(ifname),
                    go_quote(&peer)
                )
            }
            Err(e) if is_exists(&e) && pair.host_name.is_none() => last = Some(e),
            Err(e) => return Err(go_words(e).context("failed to make veth pair")),
        }
    }
    let last = last.map_or_else(|| anyhow::anyhow!("no name tried"), go_words);
    Err(last.context("failed to find a unique veth name"))
}

/// Enable IP forwarding in `host`'s namespace (the current one) for the families present in
/// `result`. The switches are read over rtnetlink (no /proc/sys lookup, see `netlink::netconf`)
/// and written through /proc/sys only when off.
pub fn enable_forwarding(host: &mut Netlink, result: &CniResult) -> Result<()> {
    let v4 = result.ips.iter().any(|i| i.address.addr().is_ipv4());
    let v6 = result.ips.iter().any(|i| i.address.addr().is_ipv6());
    if v4 {
        set_if_needed(host, false, "net.ipv4.ip_forward")?;
    }
    if v6 {
        set_if_needed(host, true, "net.ipv6.conf.all.forwarding")?;
    }
    Ok(())
}

fn set_if_needed(host: &mut Netlink, v6: bool, key: &str) -> Result<()> {
    let on = match host.forwarding(v6) {
        Ok(on) => on,
        Err(e) => {
            tracing::debug!("netconf: {e:#}; reading {key}");
            sysctl::get(key).map(|v| v.trim() == "1").unwrap_or(false)
        }
    };
    if on {
        return Ok(());
    }
    sysctl::set(key, "1").with_context(|| format!("failed to set {key}=1"))
}

/// The host route (/32 or /128) to one address.
pub fn host_route(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_look_like_the_reference() {
        let a = random_name();
        assert_eq!(a.len(), 12, "{a}");
        assert!(a.starts_with("veth") && a[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, random_name());
    }

    #[test]
    fn host_routes_are_full_length() {
        assert_eq!(host_route("198.18.0.7".parse().unwrap()).to_string(), "198.18.0.7/32");
        assert_eq!(host_route("fd00::7".parse().unwrap()).to_string(), "fd00::7/128");
    }
}
