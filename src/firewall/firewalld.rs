//! The firewall plugin's `firewalld` backend: each container address becomes a *source* of a
//! firewalld zone (default `trusted`), over D-Bus ([`crate::dbus`]), as the reference does.
//!
//! On the bus (destination `org.fedoraproject.FirewallD1`, path `/org/fedoraproject/FirewallD1`,
//! interface `org.fedoraproject.FirewallD1.zone`), one call per address, the source written
//! exactly `IP/32` or `IP/128` (firewalld compares sources as strings, so `198.18.0.2` and
//! `198.18.0.2/32` would be two different sources):
//! - ADD: `addSource(zone, src)`; `ZONE_ALREADY_SET` (already a source of this zone) is success;
//!   on any other failure the sources this ADD added are removed again.
//! - CHECK: `querySource(zone, src)` must answer true (the reference only checks that the call
//!   works).
//! - DEL: `removeSource(zone, src)`; a source that is not there (`UNKNOWN_SOURCE`), bound to
//!   another zone (`ZONE_CONFLICT`) or a zone that no longer exists (`INVALID_ZONE`) is success,
//!   and so is firewalld being gone (no bus, or nobody owns its name).
//! - [`running`]: `org.freedesktop.DBus.GetNameOwner("org.fedoraproject.FirewallD1")` answers.
//!
//! Error codes: firewalld unreachable on ADD/CHECK → 11 (try again); `INVALID_ZONE` → 7; other
//! firewalld errors → 999 with firewalld's message.

use crate::cni::CniError;
use crate::dbus::{self, Connection, MethodError};
use anyhow::Result;
use ipnet::IpNet;
use std::time::Duration;

pub const BUS_NAME: &str = "org.fedoraproject.FirewallD1";
pub const PATH: &str = "/org/fedoraproject/FirewallD1";
pub const ZONE_INTERFACE: &str = "org.fedoraproject.FirewallD1.zone";
/// `firewalldZone` when unset or empty.
pub const DEFAULT_ZONE: &str = "trusted";

/// The presence probe is answered by the bus daemon itself.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// firewalld applies each change as an nftables transaction before answering; libdbus' default.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// The source string for one address: `IP/32` or `IP/128` whatever the prefix.
pub fn source(ip: &IpNet) -> String {
    format!("{}/{}", ip.addr(), ip.max_prefix_len())
}

/// Does firewalld own its name on the system bus?
pub fn running() -> bool {
    let r = Connection::system(PROBE_TIMEOUT)
        .and_then(|mut c| c.call(dbus::BUS_NAME, dbus::BUS_PATH, dbus::BUS_INTERFACE, "GetNameOwner", &[BUS_NAME]));
    match r {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("firewalld not running: {e:#}");
            false
        }
    }
}

/// Should the firewall plugin use firewalld? `backend: "firewalld"` yes, unless the node
/// override `CNI_MULTI_FIREWALL_BACKEND` (`env`) names another backend; no `backend` key: when
/// `is_running()` says so. `iptables`/`nftables` keys: no.
pub fn selected(env: Option<&str>, backend_key: Option<&str>, is_running: impl FnOnce() -> bool) -> bool {
    if env.is_some_and(|e| !e.is_empty()) {
        return false;
    }
    match backend_key.filter(|k| !k.is_empty()) {
        Some(k) => k == "firewalld",
        None => is_running(),
    }
}

/// The zone for `firewalldZone`.
pub fn zone_or_default(zone: Option<&str>) -> String {
    zone.filter(|z| !z.is_empty()).unwrap_or(DEFAULT_ZONE).to_string()
}

fn connect() -> Result<Connection> {
    Connection::system(CALL_TIMEOUT)
        .map_err(|e| CniError::try_again(format!("firewalld: cannot reach the system bus: {e:#}")).into())
}

fn zone_call(c: &mut Connection, member: &str, zone: &str, src: &str) -> Result<Vec<dbus::Value>> {
    c.call(BUS_NAME, PATH, ZONE_INTERFACE, member, &[zone, src])
}

/// firewalld's error code: its exceptions carry `CODE: detail` (e.g. `UNKNOWN_SOURCE: …`).
fn firewalld_code(e: &MethodError) -> &str {
    e.message.split(':').next().unwrap_or_default().trim()
}

/// The bus says nobody owns firewalld's name.
fn gone(e: &MethodError) -> bool {
    matches!(
        e.name.as_str(),
        "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.NoReply"
    )
}

fn to_cni(err: anyhow::Error, what: String) -> anyhow::Error {
    let Some(me) = dbus::method_error(&err) else {
        return err.context(what);
    };
    let c = if gone(me) {
        CniError::try_again(format!("{what}: firewalld is not running ({me})"))
    } else if firewalld_code(me) == "INVALID_ZONE" {
        CniError::config(format!("{what}: {}", me.message))
    } else {
        CniError::internal(format!("{what}: {me}"))
    };
    c.into()
}

/// ADD: every address becomes a source of `zone`. All or nothing.
pub fn add(zone: &str, ips: &[IpNet]) -> Result<()> {
    if ips.is_empty() {
        return Ok(());
    }
    let mut c = connect()?;
    let mut added: Vec<String> = Vec::new();
    for ip in ips {
        let src = source(ip);
        match zone_call(&mut c, "addSource", zone, &src) {
            Ok(_) => added.push(src),
            Err(e) if dbus::method_error(&e).is_some_and(|m| firewalld_code(m) == "ZONE_ALREADY_SET") => {
                tracing::debug!(zone, src, "already a source of the zone");
            }
            Err(e) => {
                for s in &added {
                    if let Err(re) = zone_call(&mut c, "removeSource", zone, s) {
                        tracing::warn!(zone, src = s.as_str(), "rollback of addSource failed: {re:#}");
                    }
                }
                return Err(to_cni(e, format!("firewalld addSource({zone}, {src})")));
            }
        }
    }
    Ok(())
}

/// DEL: the addresses stop being sources of `zone`. Idempotent; success when firewalld is gone.
pub fn remove(zone: &str, ips: &[IpNet]) -> Result<()> {
    if ips.is_empty() {
        return Ok(());
    }
    let mut c = match Connection::system(CALL_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("firewalld DEL: no system bus, nothing to remove: {e:#}");
            return Ok(());
        }
    };
    for ip in ips {
        let src = source(ip);
        if let Err(e) = zone_call(&mut c, "removeSource", zone, &src) {
            match dbus::method_error(&e) {
                Some(m) if gone(m) => {
                    tracing::debug!("firewalld DEL: firewalld is not running: {m}");
                    return Ok(());
                }
                Some(m) if matches!(firewalld_code(m), "UNKNOWN_SOURCE" | "ZONE_CONFLICT" | "INVALID_ZONE") => {
                    tracing::debug!(zone, src, "firewalld DEL: source not in the zone: {m}");
                }
                _ => return Err(to_cni(e, format!("firewalld removeSource({zone}, {src})"))),
            }
        }
    }
    Ok(())
}

/// CHECK: every address is a source of `zone`.
pub fn check(zone: &str, ips: &[IpNet]) -> Result<()> {
    if ips.is_empty() {
        return Ok(());
    }
    let mut c = connect()?;
    for ip in ips {
        let src = source(ip);
        let reply = zone_call(&mut c, "querySource", zone, &src)
            .map_err(|e| to_cni(e, format!("firewalld querySource({zone}, {src})")))?;
        if reply.first().and_then(dbus::Value::as_bool) != Some(true) {
            anyhow::bail!("firewalld: {src} is not a source of zone {zone:?}");
        }
    }
    Ok(())
}

/// The sources of `zone` (`getSources`), e.g. for tests and diagnostics.
pub fn sources(zone: &str) -> Result<Vec<String>> {
    let mut c = connect()?;
    let reply = c
        .call(BUS_NAME, PATH, ZONE_INTERFACE, "getSources", &[zone])
        .map_err(|e| to_cni(e, format!("firewalld getSources({zone})")))?;
    reply
        .first()
        .and_then(dbus::Value::as_strings)
        .ok_or_else(|| anyhow::anyhow!("firewalld getSources({zone}): unexpected reply {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::code;

    #[test]
    fn source_strings_are_host_prefixes() {
        let s = |x: &str| source(&x.parse().unwrap());
        assert_eq!(s("198.18.88.99/24"), "198.18.88.99/32");
        assert_eq!(s("198.18.88.99/32"), "198.18.88.99/32");
        assert_eq!(s("fd00:1::5/64"), "fd00:1::5/128");
        assert_eq!(s("fd00:0:0:0:0:0:0:a/64"), "fd00::a/128");
    }

    #[test]
    fn selection() {
        let yes = || true;
        let no = || false;
        assert!(selected(None, Some("firewalld"), no));
        assert!(selected(None, None, yes));
        assert!(selected(None, Some(""), yes));
        assert!(!selected(None, None, no));
        assert!(!selected(None, Some("iptables"), yes));
        assert!(!selected(None, Some("nftables"), yes));
        assert!(!selected(Some("nftables"), Some("firewalld"), yes));
        assert!(!selected(Some("iptables"), None, yes));
        assert!(selected(Some(""), None, yes));
        assert_eq!(zone_or_default(None), "trusted");
        assert_eq!(zone_or_default(Some("")), "trusted");
        assert_eq!(zone_or_default(Some("internal")), "internal");
    }

    #[test]
    fn error_codes() {
        let me = |name: &str, msg: &str| MethodError { name: name.into(), message: msg.into() };
        let exc = "org.fedoraproject.FirewallD1.Exception";
        assert_eq!(firewalld_code(&me(exc, "UNKNOWN_SOURCE: '198.18.0.2/32' is not in any zone")), "UNKNOWN_SOURCE");
        assert_eq!(firewalld_code(&me(exc, "ZONE_ALREADY_SET")), "ZONE_ALREADY_SET");
        let code_of = |m: MethodError| CniError::from_anyhow(&to_cni(m.into(), "x".into())).code;
        assert_eq!(code_of(me(exc, "INVALID_ZONE: nope")), code::INVALID_CONFIG);
        assert_eq!(code_of(me(exc, "ZONE_CONFLICT: 'a' already bound to a zone")), code::INTERNAL);
        assert_eq!(code_of(me("org.freedesktop.DBus.Error.ServiceUnknown", "")), code::TRY_AGAIN);
    }
}
