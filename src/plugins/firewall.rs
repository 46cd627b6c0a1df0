//! firewall (applet `firewall`): accept rules for the container's addresses and the bridge
//! ingress policy (checklist §2.17), on the firewall layer's façade (`crate::firewall::filter`).
//!
//! Backends: `iptables` (the reference's layout: CNI-FORWARD, the admin chain, the
//! CNI-ISOLATION-STAGE-1/2 chains) and `nftables` (table `inet cni_firewall`, which the
//! reference does not have), chosen by the façade ([`crate::firewall::filter::choose`]): the env
//! override wins, then `backend`; unset ⇒ the reference's default: iptables when an `iptables`
//! binary on PATH works, else nftables over netlink. The reference's `firewalld` backend (D-Bus)
//! is **not supported** yet: asking for it is an error (code 2); `firewalldZone` is accepted and
//! ignored.
//!
//! ADD (chained, needs prevResult): per-IP accepts (`dst IP ct established,related`, `src IP`),
//! plus the isolation rules of the bridge (prevResult interface 0) for `ingressPolicy`
//! `same-bridge` / `isolated`. DEL removes the per-IP rules (isolation rules and chains stay, as
//! the reference); on nftables they are found by the container id, so DEL works without
//! prevResult. CHECK verifies chains, jumps and per-IP rules. No GC: the rules carry the
//! container id but not the network, so they cannot be attributed to one network's attachments.

use crate::applets::Applet;
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall::filter::{self, Backend, FirewallSpec, IngressPolicy};
use crate::firewall::BackendKind;
use anyhow::Result;
use serde::Deserialize;

pub const APPLET: Applet = Applet {
    name: "firewall",
    about: "accept rules for container addresses and bridge ingress isolation (iptables or nftables)",
    min_version: "0.4.0",
    cni_args: None,
    add,
    del,
    check,
    gc: None,
    status: None,
};

pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawConf {
    backend: Option<String>,
    #[serde(rename = "iptablesadminchainname")]
    admin_chain: Option<String>,
    #[serde(rename = "firewalldzone")]
    _firewalld_zone: Option<String>,
    #[serde(rename = "ingresspolicy")]
    ingress_policy: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Conf {
    pub backend: Backend,
    pub admin_chain: String,
    pub ingress_policy: IngressPolicy,
}

/// Parse; `env_backend` is the node override, `default` the backend when neither it nor the
/// config decides (the reference's rule, [`crate::firewall::default_backend`], outside tests).
pub fn load_with(ctx: &Ctx, env_backend: Option<&str>, default: impl FnOnce() -> BackendKind) -> Result<Conf> {
    let raw: RawConf = ctx.plugin_conf()?;
    let backend = filter::choose(env_backend, raw.backend.as_deref(), default)?;
    let ingress_policy = IngressPolicy::parse(raw.ingress_policy.as_deref().unwrap_or(""))
        .map_err(|e| CniError::config(format!("{e:#}")))?;
    Ok(Conf {
        backend,
        admin_chain: raw.admin_chain.filter(|c| !c.is_empty()).unwrap_or_else(|| DEFAULT_ADMIN_CHAIN.into()),
        ingress_policy,
    })
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let env = std::env::var(crate::firewall::ENV_BACKEND).ok();
    load_with(ctx, env.as_deref(), crate::firewall::default_backend)
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
    filter::ensure(conf.backend, &spec(ctx, &conf, Some(&prev)))?;
    Ok(prev)
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    filter::remove(conf.backend, &spec(ctx, &conf, ctx.prev_result.as_ref()))
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let prev = ctx.prev_result.as_ref().ok_or_else(|| anyhow::anyhow!("missing prevResult from earlier plugin"))?;
    filter::check(conf.backend, &spec(ctx, &conf, Some(prev)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::code;
    use crate::cni::Command;
    use serde_json::json;

    fn ctx(conf: serde_json::Value) -> Ctx {
        let stdin = serde_json::to_vec(&conf).unwrap();
        Ctx { conf: crate::cni::config::parse_folded(&stdin).unwrap(), stdin, ..Ctx::new(Command::Add) }
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = load_with(&ctx(json!({"name": "n"})), None, || BackendKind::Nftables).unwrap();
        assert_eq!(
            (c.backend, c.admin_chain.as_str(), c.ingress_policy),
            (Backend::Nftables, "CNI-ADMIN", IngressPolicy::Open)
        );
        let c = load_with(&ctx(json!({"iptablesAdminChainName": "MY", "ingressPolicy": "isolated"})), None, || {
            BackendKind::Nftables
        })
        .unwrap();
        assert_eq!((c.admin_chain.as_str(), c.ingress_policy), ("MY", IngressPolicy::Isolated));
        assert_eq!(load_with(&ctx(json!({})), None, || BackendKind::Iptables).unwrap().backend, Backend::Iptables);
        assert_eq!(
            load_with(&ctx(json!({"backend": "nftables"})), Some("iptables"), || BackendKind::Nftables)
                .unwrap()
                .backend,
            Backend::Iptables
        );
        let e = load_with(&ctx(json!({"backend": "firewalld"})), None, || BackendKind::Nftables).unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, code::UNSUPPORTED_FIELD);
        assert!(load_with(&ctx(json!({"ingressPolicy": "bogus"})), None, || BackendKind::Nftables).is_err());
        assert!(load_with(&ctx(json!({"backend": "ebtables"})), None, || BackendKind::Nftables).is_err());
    }
}
