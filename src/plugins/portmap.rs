//! portmap: host ports forwarded to the container (checklist §2.15) on the firewall layer.
//!
//! ADD (chained; needs prevResult): with no `portMappings` the result passes through and no
//! netfilter state is touched at all (no table, no chain, no exec). Otherwise the first IPv4 and
//! first IPv6 address of CNI_IFNAME get DNAT rules (only for traffic addressed to the host
//! itself: `fib daddr type local` / `-m addrtype --dst-type LOCAL`), hairpin and localhost
//! masquerading with `snat` (default true), `route_localnet=1` on the host interface routing to
//! the container, and a flush of UDP conntrack entries of the mapped host ports.
//!
//! Backend: the env override, else `backend` ("iptables"/"nftables"), else options that only
//! one backend has decide (`externalSetMarkChain`, iptables-syntax conditions ⇒ iptables;
//! nft-syntax conditions ⇒ nftables; `markMasqBit` is no backend's own, as in v1.9.1), else the
//! reference's default: iptables when an `iptables` binary on PATH works, else nftables over
//! netlink. An option of the other backend than the chosen one is an error (code 7), as the
//! reference. Config errors of ADD say "failed to parse config: …", as the reference's.
//!
//! A container may have several attachments with mappings (interfaces, networks): each ADD,
//! CHECK and DEL acts on this attachment's rules alone, told from the others' by the container
//! addresses they map to (the rules' comments hold only the container id, or the network and
//! container id, as the reference's).
//!
//! DEL (nothing without `portMappings`, as the reference) validates no config value and chooses
//! no backend: it removes the attachment's nftables rules, and its iptables rules when iptables
//! state can exist on this node (checked without exec: the iptables-nft `nat` tables, or legacy
//! `ip_tables_names`); without a prevResult everything of the container. GC removes iptables DN
//! chains of this network whose container is gone (nftables rules carry only the container id,
//! so they cannot be attributed to a network and are left to DEL).

use crate::cni::plugin::{cap, config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall::portmap::{self as pm, BackendHints, PortMapping, PortmapSpec};
use crate::firewall::{conntrack, BackendKind, ENV_BACKEND};
use crate::netlink::socket::Netlink;
use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

pub const APPLET: Plugin = Plugin {
    name: "portmap",
    about: "host port forwarding (DNAT) with hairpin and localhost access",
    min_version: Version::new(0, 1, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: Some(gc),
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Meta,
    summary: "Forwards host ports to the container (DNAT), with masquerading for hairpin and \
              localhost traffic.",
    section: "",
    keys: &[
        k("backend", "\"nftables\" or \"iptables\"", "auto", "firewall backend"),
        k("snat", "bool", "true", "masquerade hairpin and localhost traffic"),
        k("masqAll", "bool", "false", "masquerade forwarded traffic from any source"),
        k("markMasqBit", "int 0-31", "13", "mark bit for masquerading (iptables)"),
        k("externalSetMarkChain", "string", "", "use this chain to set the mark (iptables)"),
        k("conditionsV4", "list of strings", "", "extra match expressions for IPv4 rules: iptables arguments, or nft syntax (the forms in guides/meta-plugins.md)"),
        k("conditionsV6", "list of strings", "", "extra match expressions for IPv6 rules (as conditionsV4)"),
        cap("portMappings", "list", "`{hostPort, containerPort, protocol, hostIP}` entries"),
    ],
    notes: &[],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "web",
  "plugins": [
    {"type": "bridge", "isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.9.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#,
    config: Some(config_fields::<RawConf>),
};

pub const DEFAULT_MARK_BIT: u32 = 13;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawConf {
    snat: Option<bool>,
    #[serde(rename = "masqall")]
    masq_all: bool,
    #[serde(rename = "markmasqbit")]
    mark_masq_bit: Option<i64>,
    #[serde(rename = "externalsetmarkchain")]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsv4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsv6")]
    conditions_v6: Option<Vec<String>>,
    backend: Option<String>,
    #[serde(rename = "runtimeconfig")]
    runtime_config: RuntimeConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RuntimeConfig {
    #[serde(rename = "portmappings")]
    port_mappings: Vec<RawMapping>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawMapping {
    #[serde(rename = "hostport")]
    host_port: i64,
    #[serde(rename = "containerport")]
    container_port: i64,
    protocol: String,
    #[serde(rename = "hostip")]
    host_ip: String,
}

/// The validated configuration (the backend is chosen apart: [`load_with`]; DEL chooses none).
#[derive(Debug, Clone)]
pub struct Conf {
    pub mappings: Vec<PortMapping>,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_masq_bit: u32,
    pub external_set_mark_chain: Option<String>,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
    /// `backend` as configured.
    backend_key: Option<String>,
    /// `externalSetMarkChain` is present (even empty: an iptables-only option, as the reference).
    external_set_mark_chain_key: bool,
}

fn config_err(msg: impl Into<String>) -> anyhow::Error {
    CniError::config(msg).into()
}

/// Parse and validate for ADD and CHECK, as the reference's `parseConfig` (code 7), and more:
/// ports above 65535, a `hostIP` that is no address and an empty `externalSetMarkChain` are
/// refused too (the reference takes them; docs/differences.md). No backend is chosen. DEL does
/// not parse ([`del`]).
pub fn parse(ctx: &Ctx) -> Result<Conf> {
    let raw: RawConf = ctx.plugin_conf()?;
    if raw.mark_masq_bit.is_some() && raw.external_set_mark_chain.is_some() {
        return Err(config_err("Cannot specify externalSetMarkChain and markMasqBit"));
    }
    // "" names no chain (the reference's iptables refuses it, after making its chains)
    if raw.external_set_mark_chain.as_deref() == Some("") {
        return Err(config_err("externalSetMarkChain must not be empty"));
    }
    let bit = raw.mark_masq_bit.unwrap_or(i64::from(DEFAULT_MARK_BIT));
    if !(0..=31).contains(&bit) {
        return Err(config_err("MasqMarkBit must be between 0 and 31"));
    }
    let mut mappings = Vec::new();
    for m in &raw.runtime_config.port_mappings {
        let host_port = u16::try_from(m.host_port)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| config_err(format!("Invalid host port number: {}", m.host_port)))?;
        let container_port = u16::try_from(m.container_port)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| config_err(format!("Invalid container port number: {}", m.container_port)))?;
        let host_ip = match m.host_ip.as_str() {
            "" => None,
            s => Some(s.parse::<IpAddr>().map_err(|_| config_err(format!("Invalid host IP {s:?}")))?),
        };
        mappings.push(PortMapping { host_port, container_port, protocol: m.protocol.clone(), host_ip });
    }
    Ok(Conf {
        mappings,
        snat: raw.snat.unwrap_or(true),
        masq_all: raw.masq_all,
        mark_masq_bit: u32::try_from(bit).unwrap_or(DEFAULT_MARK_BIT),
        external_set_mark_chain_key: raw.external_set_mark_chain.is_some(),
        external_set_mark_chain: raw.external_set_mark_chain,
        conditions_v4: raw.conditions_v4.unwrap_or_default(),
        conditions_v6: raw.conditions_v6.unwrap_or_default(),
        backend_key: raw.backend,
    })
}

/// [`parse`], then the backend; `default` is the backend when nothing decides it (the
/// reference's rule, [`crate::firewall::default_backend`], outside tests).
pub fn load_with(
    ctx: &Ctx,
    env_backend: Option<&str>,
    default: impl FnOnce() -> BackendKind,
) -> Result<(Conf, BackendKind)> {
    let conf = parse(ctx)?;
    let hints = BackendHints {
        external_set_mark_chain: conf.external_set_mark_chain_key,
        conditions_v4: &conf.conditions_v4,
        conditions_v6: &conf.conditions_v6,
    };
    let backend = pm::choose(env_backend, conf.backend_key.as_deref(), &hints, default)?;
    Ok((conf, backend))
}

fn load(ctx: &Ctx) -> Result<(Conf, BackendKind)> {
    let env = std::env::var(ENV_BACKEND).ok();
    load_with(ctx, env.as_deref(), crate::firewall::default_backend)
}

/// The reference's ADD and DEL say so in front of every config error (its CHECK does not).
const PARSE_ERR: &str = "failed to parse config";

/// The first IPv4 and first IPv6 address of CNI_IFNAME in prevResult (IPs without an interface
/// index count; an index to a host-side or other interface does not).
pub fn container_ips(ctx: &Ctx, prev: &CniResult) -> (Option<IpNet>, Option<IpNet>) {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &prev.ips {
        if let Some(i) = ip.interface {
            if let Some(itf) = prev.interfaces.get(i) {
                if itf.name != ctx.ifname || itf.sandbox.as_deref().unwrap_or("").is_empty() {
                    continue;
                }
            }
        }
        let slot = if ip.address.addr().is_ipv4() { &mut v4 } else { &mut v6 };
        if slot.is_none() {
            *slot = Some(ip.address);
        }
    }
    (v4, v6)
}

fn spec(ctx: &Ctx, c: &Conf, ip: IpNet) -> PortmapSpec {
    PortmapSpec {
        network: ctx.name.clone(),
        container_id: ctx.container_id.clone(),
        container_ip: ip,
        mappings: c.mappings.clone(),
        snat: c.snat,
        masq_all: c.masq_all,
        mark_masq_bit: c.mark_masq_bit,
        external_set_mark_chain: c.external_set_mark_chain.clone(),
        conditions: if ip.addr().is_ipv4() { c.conditions_v4.clone() } else { c.conditions_v6.clone() },
    }
}

/// The host interface the kernel routes `ip` through (its own lookup: rules, tables, metrics),
/// as the reference's `getRoutableHostIF` (`netlink.RouteGet`); None when there is no route.
fn routable_host_if(nl: &mut Netlink, ip: IpAddr) -> Result<Option<String>> {
    let oif = match nl.route_get(ip) {
        Ok(route) => route.and_then(|r| r.oif),
        Err(e) => {
            tracing::debug!("portmap: no route to {ip}: {e:#}");
            None
        }
    };
    match oif {
        Some(i) => Ok(nl.link_by_index(i)?.map(|l| l.name)),
        None => Ok(None),
    }
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let (conf, backend) = load(ctx).context(PARSE_ERR)?;
    let prev = ctx.prev_result.clone().ok_or_else(|| anyhow::anyhow!("must be called as chained plugin"))?;
    if conf.mappings.is_empty() {
        return Ok(prev);
    }
    let (v4, v6) = container_ips(ctx, &prev);
    let specs: Vec<_> = [v4, v6].into_iter().flatten().map(|ip| spec(ctx, &conf, ip)).collect();
    pm::ensure_all(backend, &specs)?;
    if conf.snat {
        if let Some(ip) = v4 {
            let mut nl = Netlink::new()?;
            if let Some(dev) = routable_host_if(&mut nl, ip.addr())? {
                crate::sys::sysctl::set_if("ipv4", &dev, "route_localnet", "1")
                    .with_context(|| format!("failed to set route_localnet on {dev}"))?;
            }
        }
    }
    // stale UDP flows would keep going to a previous backend of the same host port
    for m in conf.mappings.iter().filter(|m| pm::protocol_name(&m.protocol.to_ascii_lowercase()) == "udp") {
        for (is_v6, present) in [(false, v4.is_some()), (true, v6.is_some())] {
            if present {
                if let Err(e) = conntrack::delete_by_dport(is_v6, 17, m.host_port) {
                    tracing::warn!("portmap: flushing UDP conntrack entries for port {}: {e:#}", m.host_port);
                }
            }
        }
    }
    Ok(prev)
}

/// DEL tears down both backends (`firewall::portmap::remove`) and needs nothing of the config
/// but whether there are mappings (none: nothing to do, as the reference): no mapping value, no
/// option is validated (a config ADD refuses is still removed) and no backend is chosen (no
/// probe runs). With a prevResult the attachment's rules go (its addresses tell them from the
/// container's other attachments'), without it everything of the container.
fn del(ctx: &Ctx) -> Result<()> {
    let mappings = ctx.runtime_config("portmappings");
    if mappings.is_none_or(|m| m.is_null() || m.as_array().is_some_and(Vec::is_empty)) {
        return Ok(());
    }
    let ips: Option<Vec<IpAddr>> = ctx.prev_result.as_ref().map(|prev| {
        let (v4, v6) = container_ips(ctx, prev);
        [v4, v6].into_iter().flatten().map(|n| n.addr()).collect()
    });
    pm::remove(&ctx.name, &ctx.container_id, ips.as_deref())
}

fn check(ctx: &Ctx) -> Result<()> {
    let (conf, backend) = load(ctx)?;
    let prev = ctx.read_prev_result()?.ok_or_else(|| anyhow::anyhow!("Required prevResult missing"))?;
    if conf.mappings.is_empty() {
        return Ok(());
    }
    let (v4, v6) = container_ips(ctx, prev);
    for ip in [v4, v6].into_iter().flatten() {
        pm::check(backend, &spec(ctx, &conf, ip)).with_context(|| format!("portmap CHECK for {}", ip.addr()))?;
    }
    Ok(())
}

/// GC (the reference has none): the façade's, for this network's attachments.
fn gc(ctx: &Ctx) -> Result<()> {
    let Some(valid) = ctx.valid_attachments()? else {
        return Ok(());
    };
    pm::gc(&ctx.name, &valid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::{Interface, IpConfig};
    use serde_json::json;

    fn ctx(conf: serde_json::Value) -> Ctx {
        Ctx { ifname: "eth0".into(), ..Ctx::test_add(conf) }
    }
    fn pm(v: serde_json::Value) -> serde_json::Value {
        json!({"name": "n", "type": "portmap", "runtimeConfig": {"portMappings": v}})
    }

    #[test]
    fn mappings_validated() {
        let c = load_with(&ctx(pm(json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]))), None, || {
            BackendKind::Nftables
        })
        .unwrap();
        assert_eq!(c.0.mappings.len(), 1);
        assert!(c.0.snat && !c.0.masq_all && c.0.mark_masq_bit == 13 && c.1 == BackendKind::Nftables);
        let e = parse(&ctx(pm(json!([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]))));
        assert_eq!(e.unwrap_err().to_string(), "Invalid host port number: 0");
        let e = parse(&ctx(pm(json!([{"hostPort": 1, "containerPort": 65536, "protocol": "tcp"}]))));
        assert_eq!(e.unwrap_err().to_string(), "Invalid container port number: 65536");
        assert!(parse(&ctx(pm(json!([{"hostPort": 1, "containerPort": 1, "hostIP": "nope"}])))).is_err());
        // protocol numbers are kept as written (the façade maps them)
        let c = parse(&ctx(pm(json!([{"hostPort": 1, "containerPort": 1, "protocol": "17"}])))).unwrap();
        assert_eq!((c.mappings[0].protocol.as_str(), pm::protocol_name(&c.mappings[0].protocol)), ("17", "udp"));
    }

    #[test]
    fn backend_choice_and_conflicts() {
        let choose = |c: &serde_json::Value, default: BackendKind| load_with(&ctx(c.clone()), None, || default);
        // markMasqBit is no backend's own option (v1.9.1's validateBackend): the default decides,
        // and it goes with an explicit nftables (which has no use for it)
        let mut c = pm(json!([]));
        c["markMasqBit"] = json!(5);
        assert_eq!(choose(&c, BackendKind::Nftables).unwrap().1, BackendKind::Nftables);
        assert_eq!(choose(&c, BackendKind::Iptables).unwrap().1, BackendKind::Iptables);
        c["backend"] = json!("nftables");
        assert_eq!(choose(&c, BackendKind::Iptables).unwrap().1, BackendKind::Nftables);
        c["externalSetMarkChain"] = json!("X");
        c["backend"] = json!("iptables");
        assert!(choose(&c, BackendKind::Nftables).unwrap_err().to_string().contains("Cannot specify"));
        let mut c = pm(json!([]));
        c["markMasqBit"] = json!(32);
        assert!(choose(&c, BackendKind::Iptables).is_err());
        let mut c = pm(json!([]));
        c["externalSetMarkChain"] = json!("X");
        assert_eq!(choose(&c, BackendKind::Nftables).unwrap().1, BackendKind::Iptables);
        c["backend"] = json!("nftables");
        assert!(choose(&c, BackendKind::Nftables).is_err());
        assert!(parse(&ctx(c)).is_ok(), "DEL parses without choosing a backend");
        let mut c = pm(json!([]));
        c["conditionsV4"] = json!(["-s", "198.18.0.0/15"]);
        assert_eq!(choose(&c, BackendKind::Nftables).unwrap().1, BackendKind::Iptables);
        c["conditionsV4"] = json!(["ip saddr 198.18.0.0/15"]);
        assert_eq!(choose(&c, BackendKind::Iptables).unwrap().1, BackendKind::Nftables);
        c["backend"] = json!("iptables");
        assert!(choose(&c, BackendKind::Nftables).is_err());
        // [""] names no backend (the reference's detectBackendOfConditions)
        c["conditionsV4"] = json!([""]);
        c["backend"] = json!(null);
        assert_eq!(choose(&c, BackendKind::Iptables).unwrap().1, BackendKind::Iptables);
        assert_eq!(choose(&c, BackendKind::Nftables).unwrap().1, BackendKind::Nftables);
        assert_eq!(
            load_with(&ctx(pm(json!([]))), Some("iptables"), || BackendKind::Nftables).unwrap().1,
            BackendKind::Iptables
        );
    }

    /// v1.9.1's messages for a `backend` it does not know (`""` too), after its check for
    /// iptables-only options; an empty `externalSetMarkChain` is refused (code 7).
    #[test]
    fn unknown_backend_and_empty_external_chain() {
        let err = |c: serde_json::Value| {
            let e = load_with(&ctx(c), None, || BackendKind::Iptables).unwrap_err();
            (e.downcast_ref::<CniError>().map(|c| c.code), e.to_string())
        };
        let mut c = pm(json!([]));
        c["backend"] = json!("bogus");
        assert_eq!(err(c.clone()), (Some(7), r#"unrecognized backend "bogus""#.to_string()));
        c["backend"] = json!("");
        assert_eq!(err(c.clone()), (Some(7), r#"unrecognized backend """#.to_string()));
        c["externalSetMarkChain"] = json!("X");
        assert_eq!(
            err(c.clone()).1,
            " backend was requested but configuration contains iptables-specific options [externalSetMarkChain]"
        );
        let mut c = pm(json!([]));
        c["externalSetMarkChain"] = json!("");
        assert_eq!(err(c), (Some(7), "externalSetMarkChain must not be empty".to_string()));
        // the env override still wins over a key it would refuse
        let mut c = pm(json!([]));
        c["backend"] = json!("bogus");
        assert_eq!(load_with(&ctx(c), Some("nftables"), || BackendKind::Iptables).unwrap().1, BackendKind::Nftables);
    }

    #[test]
    fn container_ips_first_per_family_of_the_sandboxed_iface() {
        let mut c = ctx(json!({}));
        c.ifname = "eth0".into();
        let prev = CniResult {
            interfaces: vec![
                Interface { name: "veth0".into(), ..Default::default() },
                Interface { name: "eth0".into(), sandbox: Some("/x".into()), ..Default::default() },
            ],
            ips: vec![
                IpConfig { address: "198.18.9.1/24".parse().unwrap(), gateway: None, interface: Some(0) },
                IpConfig { address: "198.18.0.2/24".parse().unwrap(), gateway: None, interface: Some(1) },
                IpConfig { address: "198.18.0.3/24".parse().unwrap(), gateway: None, interface: Some(1) },
                IpConfig { address: "fd00::2/64".parse().unwrap(), gateway: None, interface: None },
            ],
            ..Default::default()
        };
        let (v4, v6) = container_ips(&c, &prev);
        assert_eq!(v4.unwrap().to_string(), "198.18.0.2/24");
        assert_eq!(v6.unwrap().to_string(), "fd00::2/64");
    }

    /// A negative or out-of-range `interface` (a Go int the reference accepts) names no interface:
    /// the address counts as the container's, as the reference's `intIdx >= 0 && intIdx < len`
    /// test has it, and nothing panics.
    #[test]
    fn container_ips_with_a_negative_or_out_of_range_interface_index() {
        let mut c = ctx(json!({}));
        c.ifname = "eth0".into();
        let prev = CniResult::from_json(
            &json!({"cniVersion": "1.0.0", "interfaces": [{"name": "veth0"}],
                    "ips": [{"address": "198.18.0.7/24", "interface": -1}, {"address": "fd00::7/64", "interface": 5}]}),
            "1.0.0",
        )
        .unwrap();
        let (v4, v6) = container_ips(&c, &prev);
        assert_eq!(v4.unwrap().to_string(), "198.18.0.7/24");
        assert_eq!(v6.unwrap().to_string(), "fd00::7/64");
    }
}
