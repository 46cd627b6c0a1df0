//! firewall (applet `firewall`): accept rules for the container's addresses and the bridge
//! ingress policy (checklist §2.17), on the firewall layer's filter façade
//! ([`crate::firewall::filter`]), which also chooses the backend ([`filter::choose`]):
//!
//! - `iptables` (the reference's layout: CNI-FORWARD, the admin chain, the
//!   CNI-ISOLATION-STAGE-1/2 chains) and `nftables` (table `inet cni_firewall`, which the
//!   reference does not have): the env override wins, then `backend`; unset (or a value the
//!   reference's `getBackend` does not know, [`filter::backend_key`]) ⇒ the reference's
//!   default: iptables when an `iptables` binary on PATH works, else nftables over netlink.
//! - `firewalld` (over D-Bus): the addresses become sources of zone `firewalldZone`; chosen by that
//!   key, or when no key is set and firewalld owns its bus name (the env override still wins).
//!   With an `ingressPolicy` other than open, the isolation rules come from the iptables/nftables
//!   choice as well.
//!
//! ADD (chained, needs prevResult): per-IP accepts (`dst IP ct established,related`, `src IP`),
//! plus the isolation rules of the bridge (prevResult interface 0) for `ingressPolicy`
//! `same-bridge` / `isolated`. DEL removes the per-IP rules (isolation rules and chains stay, as
//! the reference); on nftables they are found by the attachment's tag (network, interface and
//! container id), so DEL works without prevResult, and with a prevResult that does not parse
//! (which fails DEL with the iptables backend, as the reference's, since its rules are found by
//! address only). CHECK verifies chains, jumps and per-IP rules, each whole. GC removes the
//! nftables rules of the network's attachments that are not valid (the iptables rules carry no
//! id, as the reference's).

use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall::filter::{self, Backend, FirewallSpec, IngressPolicy};
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
    gc: Some(gc),
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
            "firewall backend; auto (also for any other value, as the reference) = firewalld when it owns \
             `org.fedoraproject.FirewallD1` on the system D-Bus, else iptables when an `iptables` binary works, \
             else nftables. nftables is a cni-multi addition: its accepts cannot overrule an iptables FORWARD \
             drop (see docs/guides/firewall.md)",
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
    notes: &[
        "firewalld backend: spoken over D-Bus directly (no firewall-cmd), on the bus named by \
             `DBUS_SYSTEM_BUS_ADDRESS` (default `unix:path=/var/run/dbus/system_bus_socket`). ADD calls \
             `addSource(zone, \"IP/32\")` (`/128` for IPv6) per address, CHECK `querySource`, DEL `removeSource`; \
             DEL succeeds when the source or firewalld is already gone. See docs/guides/firewalld.md.",
        "firewalld with `ingressPolicy` same-bridge or isolated: the isolation chains are written with the \
         iptables/nftables choice as well, and no per-address rule (as the reference); CHECK and DEL are \
         about the zone's sources only.",
        "iptables: every rule is recognised whole, as the reference's `iptables -C` (a changed copy of a rule is \
         not ours: ADD adds ours, CHECK fails, DEL leaves it). nftables: each accept rule's comment names its \
         attachment (network, interface, container id), so two attachments of one container keep their own \
         rules; GC (spec 1.1.0) removes the rules of attachments not in `cni.dev/valid-attachments`.",
        "DEL with a prevResult that does not parse: nftables rules are removed by their tag; with iptables \
         (or firewalld) the rules are found by address only, so DEL fails (999, as the reference) and the \
         runtime retries.",
    ],
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
    pub backend: Backend,
    pub admin_chain: String,
    pub ingress_policy: IngressPolicy,
    /// The firewalld zone when the firewalld backend is used.
    pub firewalld_zone: Option<String>,
}

/// Parse; `env_backend` is the node override, `default` the backend when neither it nor the
/// config decides (the reference's rule, [`crate::firewall::default_backend`], outside tests),
/// `firewalld_running` whether firewalld owns its bus name (asked only when no key decides).
pub fn load_with(
    ctx: &Ctx,
    env_backend: Option<&str>,
    default: impl FnOnce() -> BackendKind,
    firewalld_running: impl FnOnce() -> bool,
) -> Result<Conf> {
    let raw: RawConf = ctx.plugin_conf()?;
    let key = filter::backend_key(raw.backend.as_deref());
    let firewalld_zone = filter::firewalld_zone(env_backend, key, raw.firewalld_zone.as_deref(), firewalld_running);
    let backend = filter::choose(env_backend, key, default)?;
    let ingress_policy = IngressPolicy::parse(raw.ingress_policy.as_deref().unwrap_or(""))
        .map_err(|e| CniError::config(format!("{e:#}")))?;
    Ok(Conf {
        backend,
        admin_chain: raw.admin_chain.filter(|c| !c.is_empty()).unwrap_or_else(|| DEFAULT_ADMIN_CHAIN.into()),
        ingress_policy,
        firewalld_zone,
    })
}

fn load(ctx: &Ctx) -> Result<Conf> {
    let env = std::env::var(crate::firewall::ENV_BACKEND).ok();
    load_with(ctx, env.as_deref(), crate::firewall::default_backend, filter::firewalld_running)
}

/// What the layer needs: the attachment, every prevResult IP, the bridge = interface 0 (for the
/// ingress policy).
pub fn spec(ctx: &Ctx, conf: &Conf, prev: Option<&CniResult>) -> FirewallSpec {
    FirewallSpec {
        network: ctx.name.clone(),
        container_id: ctx.container_id.clone(),
        ifname: ctx.ifname.clone(),
        ips: prev.map(|p| p.ips.iter().map(|i| i.address).collect()).unwrap_or_default(),
        admin_chain: conf.admin_chain.clone(),
        ingress_policy: conf.ingress_policy,
        bridge: prev.and_then(|p| p.interfaces.first()).map(|i| i.name.clone()),
        firewalld_zone: conf.firewalld_zone.clone(),
    }
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    let prev = ctx.prev_result.clone().ok_or_else(|| anyhow::anyhow!("missing prevResult from earlier plugin"))?;
    filter::ensure(conf.backend, &spec(ctx, &conf, Some(&prev)))?;
    Ok(prev)
}

fn del(ctx: &Ctx) -> Result<()> {
    // DEL tears down both backends: no default-backend probe, and no backend value fails it (an
    // override naming no backend is left out: it would only decide whether firewalld is asked)
    let env = std::env::var(crate::firewall::ENV_BACKEND).ok().filter(|e| BackendKind::parse(e).is_ok());
    let conf = load_with(ctx, env.as_deref(), || BackendKind::Iptables, filter::firewalld_running)?;
    match ctx.read_prev_result() {
        Ok(prev) => filter::remove(&spec(ctx, &conf, prev)),
        // `"prevResult": null` is no prevResult, as Go reads it
        Err(_) if ctx.conf.get("prevresult").is_some_and(serde_json::Value::is_null) => {
            filter::remove(&spec(ctx, &conf, None))
        }
        // there but unreadable: whether DEL can do without the addresses depends on the backend,
        // chosen here as ADD chose it
        Err(e) => {
            let conf = load_with(ctx, env.as_deref(), crate::firewall::default_backend, filter::firewalld_running)?;
            filter::remove_without_prev_result(conf.backend, &spec(ctx, &conf, None), e)
        }
    }
}

fn gc(ctx: &Ctx) -> Result<()> {
    let Some(valid) = ctx.valid_attachments()? else {
        return Ok(());
    };
    filter::gc(&ctx.name, &valid)
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    let prev = ctx.read_prev_result()?.ok_or_else(|| anyhow::anyhow!("missing prevResult from earlier plugin"))?;
    filter::check(conf.backend, &spec(ctx, &conf, Some(prev)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(conf: serde_json::Value) -> Ctx {
        Ctx::test_add(conf)
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = load_with(&ctx(json!({"name": "n"})), None, || BackendKind::Nftables, || false).unwrap();
        assert_eq!(
            (c.backend, c.admin_chain.as_str(), c.ingress_policy),
            (Backend::Nftables, "CNI-ADMIN", IngressPolicy::Open)
        );
        let c = load_with(
            &ctx(json!({"iptablesAdminChainName": "MY", "ingressPolicy": "isolated"})),
            None,
            || BackendKind::Nftables,
            || false,
        )
        .unwrap();
        assert_eq!((c.admin_chain.as_str(), c.ingress_policy), ("MY", IngressPolicy::Isolated));
        assert_eq!(
            load_with(&ctx(json!({})), None, || BackendKind::Iptables, || false).unwrap().backend,
            Backend::Iptables
        );
        assert_eq!(
            load_with(&ctx(json!({"backend": "nftables"})), Some("iptables"), || BackendKind::Nftables, || false)
                .unwrap()
                .backend,
            Backend::Iptables
        );
        // firewalld: by key (zone default `trusted`, or firewalldZone), or with no key when it runs;
        // the env override names another backend and wins; the isolation rules keep a rules backend
        let c = load_with(&ctx(json!({"backend": "firewalld"})), None, || BackendKind::Nftables, || false).unwrap();
        assert_eq!((c.firewalld_zone.as_deref(), c.backend), (Some("trusted"), Backend::Nftables));
        let c = load_with(
            &ctx(json!({"backend": "firewalld", "firewalldZone": "internal"})),
            None,
            || BackendKind::Iptables,
            || false,
        )
        .unwrap();
        assert_eq!(c.firewalld_zone.as_deref(), Some("internal"));
        let c = load_with(&ctx(json!({})), None, || BackendKind::Iptables, || true).unwrap();
        assert_eq!(c.firewalld_zone.as_deref(), Some("trusted"));
        let c = load_with(&ctx(json!({"backend": "nftables"})), None, || BackendKind::Iptables, || true).unwrap();
        assert_eq!((c.firewalld_zone, c.backend), (None, Backend::Nftables));
        let c = load_with(&ctx(json!({"backend": "firewalld"})), Some("iptables"), || BackendKind::Nftables, || true)
            .unwrap();
        assert_eq!((c.firewalld_zone, c.backend), (None, Backend::Iptables));
        assert!(load_with(&ctx(json!({"ingressPolicy": "bogus"})), None, || BackendKind::Nftables, || false).is_err());
        // a value the reference's getBackend does not know falls through to its default:
        // firewalld when it runs, else the rules backend's default
        for bogus in ["ebtables", "IPTABLES", "bogus"] {
            let c = load_with(&ctx(json!({"backend": bogus})), None, || BackendKind::Nftables, || false).unwrap();
            assert_eq!((c.firewalld_zone, c.backend), (None, Backend::Nftables), "{bogus}");
            let c = load_with(&ctx(json!({"backend": bogus})), None, || BackendKind::Iptables, || true).unwrap();
            assert_eq!((c.firewalld_zone.as_deref(), c.backend), (Some("trusted"), Backend::Iptables), "{bogus}");
        }
        // the node override is ours: a value naming no backend is an error (DEL leaves it out)
        assert!(load_with(&ctx(json!({})), Some("bogus"), || BackendKind::Nftables, || false).is_err());
    }
}
