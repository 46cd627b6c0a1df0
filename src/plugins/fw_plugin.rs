//! firewall (applet `firewall`): accept rules for the container's addresses and the bridge
//! ingress policy (checklist §2.17), on the firewall layer (`crate::firewall::fwplugin`).
//!
//! Backends: `iptables` (the reference's layout: CNI-FORWARD, the admin chain, the
//! CNI-ISOLATION-STAGE-1/2 chains) and `nftables` (table `inet cni_firewall`, which the
//! reference does not have). `backend` picks one; unset ⇒ the env override, else nftables when
//! the kernel has it. `firewalld` (`crate::firewall::firewalld`, over D-Bus): the addresses
//! become sources of zone `firewalldZone`; chosen by that key, or when no key is set and
//! firewalld owns its bus name (the env override still wins). With an `ingressPolicy` other
//! than open, the isolation rules come from the iptables/nftables choice as well.
//!
//! ADD (chained, needs prevResult): per-IP accepts (`dst IP ct established,related`, `src IP`),
//! plus the isolation rules of the bridge (prevResult interface 0) for `ingressPolicy`
//! `same-bridge` / `isolated`. DEL removes the per-IP rules (isolation rules and chains stay, as
//! the reference); on nftables they are found by the container id, so DEL works without
//! prevResult. CHECK verifies chains, jumps and per-IP rules. No GC: the rules carry the
//! container id but not the network, so they cannot be attributed to one network's attachments.

use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall::firewalld;
use crate::firewall::fwplugin::{self, FirewallSpec, IngressPolicy};
use crate::firewall::BackendKind;
use anyhow::Result;
use serde::Deserialize;

pub const APPLET: Plugin = Plugin {
    name: "firewall",
    about: "accept rules for container addresses and bridge ingress isolation (iptables or nftables)",
    min_version: Version::new(0, 4, 0),
    cni_args: None,
    add,
    del,
    check,
    gc: None,
    status: None,
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Meta,
    summary: "Lets the container's traffic through the host's forward filter (iptables/nftables accept \
              rules, or firewalld zone sources), and optionally isolates bridges from each other.",
    section: "",
    keys: &[
        k(
            "backend",
            "\"iptables\", \"nftables\" or \"firewalld\"",
            "auto",
            "firewall backend; auto = firewalld when it owns `org.fedoraproject.FirewallD1` on the system \
             D-Bus, else the iptables/nftables choice",
        ),
        k("iptablesAdminChainName", "string", "\"CNI-ADMIN\"", "user-owned chain jumped to first, never changed"),
        k(
            "firewalldZone",
            "string",
            "\"trusted\"",
            "firewalld zone whose sources the container addresses become (firewalld backend)",
        ),
        k("ingressPolicy", "string", "\"open\"", "open, same-bridge or isolated"),
    ],
    notes: &["firewalld backend: spoken over D-Bus directly (no firewall-cmd), on the bus named by \
             `DBUS_SYSTEM_BUS_ADDRESS` (default `unix:path=/var/run/dbus/system_bus_socket`). ADD calls \
             `addSource(zone, \"IP/32\")` (`/128` for IPv6) per address, CHECK `querySource`, DEL `removeSource`; \
             DEL succeeds when the source or firewalld is already gone. See docs/guides/firewalld.md."],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "guarded",
  "plugins": [
    {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.10.0/24"}]]}},
    {"type": "firewall", "ingressPolicy": "same-bridge"}
  ]
}"#,
    config: Some(config_fields::<RawConf>),
};

pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawConf {
    backend: Option<String>,
    #[serde(rename = "iptablesadminchainname")]
    admin_chain: Option<String>,
    #[serde(rename = "firewalldzone")]
    firewalld_zone: Option<String>,
    #[serde(rename = "ingresspolicy")]
    ingress_policy: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Conf {
    pub backend: BackendKind,
    pub admin_chain: String,
    pub ingress_policy: IngressPolicy,
    /// The firewalld zone when the firewalld backend is used.
    pub firewalld: Option<String>,
}

/// Parse; `env_backend` is the node override, `probe` answers "kernel has nf_tables".
pub fn load_with(ctx: &Ctx, env_backend: Option<&str>, probe: impl FnOnce() -> bool) -> Result<Conf> {
    let raw: RawConf = ctx.plugin_conf()?;
    let configured = raw.backend.as_deref().filter(|b| !b.is_empty());
    let firewalld = firewalld::selected(env_backend, configured, firewalld::running)
        .then(|| firewalld::zone_or_default(raw.firewalld_zone.as_deref()));
    let configured = configured.filter(|b| *b != "firewalld");
    let backend = BackendKind::choose_with(env_backend.filter(|e| !e.is_empty()), configured, probe)
        .map_err(|e| CniError::config(format!("{e:#}")))?;
    let ingress_policy = IngressPolicy::parse(raw.ingress_policy.as_deref().unwrap_or(""))
        .map_err(|e| CniError::config(format!("{e:#}")))?;
    Ok(Conf {
        backend,
        admin_chain: raw.admin_chain.filter(|c| !c.is_empty()).unwrap_or_else(|| DEFAULT_ADMIN_CHAIN.into()),
        ingress_policy,
        firewalld,
    })
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let env = std::env::var(crate::firewall::ENV_BACKEND).ok();
    load_with(ctx, env.as_deref(), crate::firewall::nft_available)
}

/// What the layer needs: every prevResult IP, the bridge = interface 0 (for the ingress policy).
pub fn spec(ctx: &Ctx, conf: &Conf, prev: Option<&CniResult>) -> FirewallSpec {
    FirewallSpec {
        container_id: ctx.container_id.clone(),
        ips: prev.map(|p| p.ips.iter().map(|i| i.address).collect()).unwrap_or_default(),
        admin_chain: conf.admin_chain.clone(),
        ingress_policy: conf.ingress_policy,
        bridge: prev.and_then(|p| p.interfaces.first()).map(|i| i.name.clone()).filter(|n| !n.is_empty()),
    }
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    let prev = ctx.prev_result.clone().ok_or_else(|| anyhow::anyhow!("missing prevResult from earlier plugin"))?;
    let s = spec(ctx, &conf, Some(&prev));
    if conf.ingress_policy != IngressPolicy::Open && s.bridge.is_none() {
        anyhow::bail!("ingressPolicy needs the bridge as the first interface of prevResult");
    }
    if let Some(zone) = &conf.firewalld {
        firewalld::add(zone, &s.ips)?;
        if conf.ingress_policy == IngressPolicy::Open {
            return Ok(prev);
        }
    }
    match conf.backend {
        BackendKind::Iptables => fwplugin::iptables_add(&s),
        BackendKind::Nftables => fwplugin::nft_add(&s),
    }
    .inspect_err(|_| {
        let _ = conf.firewalld.as_ref().map(|zone| firewalld::remove(zone, &s.ips));
    })?;
    Ok(prev)
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let s = spec(ctx, &conf, ctx.prev_result.as_ref());
    if let Some(zone) = &conf.firewalld {
        firewalld::remove(zone, &s.ips)?;
        if conf.ingress_policy == IngressPolicy::Open {
            return Ok(());
        }
    }
    match conf.backend {
        // iptables rules carry no id: they are found by address, so they need prevResult
        BackendKind::Iptables if s.ips.is_empty() => Ok(()),
        BackendKind::Iptables => fwplugin::iptables_del(&s),
        BackendKind::Nftables => fwplugin::nft_del(&ctx.container_id),
    }
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let prev = ctx.prev_result.as_ref().ok_or_else(|| anyhow::anyhow!("missing prevResult from earlier plugin"))?;
    let s = spec(ctx, &conf, Some(prev));
    if let Some(zone) = &conf.firewalld {
        firewalld::check(zone, &s.ips)?;
        if conf.ingress_policy == IngressPolicy::Open {
            return Ok(());
        }
    }
    match conf.backend {
        BackendKind::Iptables => fwplugin::iptables_check(&s),
        BackendKind::Nftables => fwplugin::nft_check(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::Command;
    use serde_json::json;

    fn ctx(conf: serde_json::Value) -> Ctx {
        let stdin = serde_json::to_vec(&conf).unwrap();
        Ctx { conf: crate::cni::config::parse_folded(&stdin).unwrap(), stdin, ..Ctx::new(Command::Add) }
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = load_with(&ctx(json!({"name": "n"})), None, || true).unwrap();
        assert_eq!(
            (c.backend, c.admin_chain.as_str(), c.ingress_policy),
            (BackendKind::Nftables, "CNI-ADMIN", IngressPolicy::Open)
        );
        let c = load_with(&ctx(json!({"iptablesAdminChainName": "MY", "ingressPolicy": "isolated"})), None, || true)
            .unwrap();
        assert_eq!((c.admin_chain.as_str(), c.ingress_policy), ("MY", IngressPolicy::Isolated));
        assert_eq!(load_with(&ctx(json!({})), None, || false).unwrap().backend, BackendKind::Iptables);
        assert_eq!(
            load_with(&ctx(json!({"backend": "nftables"})), Some("iptables"), || true).unwrap().backend,
            BackendKind::Iptables
        );
        let c = load_with(&ctx(json!({"backend": "firewalld", "firewalldZone": "internal"})), None, || true).unwrap();
        assert_eq!(c.firewalld.as_deref(), Some("internal"));
        let c = load_with(&ctx(json!({"backend": "firewalld"})), Some("iptables"), || true).unwrap();
        assert_eq!((c.firewalld, c.backend), (None, BackendKind::Iptables));
        assert!(load_with(&ctx(json!({"ingressPolicy": "bogus"})), None, || true).is_err());
        assert!(load_with(&ctx(json!({"backend": "ebtables"})), None, || true).is_err());
    }
}
