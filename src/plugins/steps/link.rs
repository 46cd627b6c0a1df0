//! Container links of the interface plugins (macvlan, ipvlan, vlan, host-device, dummy, tap, vrf):
//! lower devices, create-and-rename, MTU and MAC rules, the result entry, and deletion.

use super::ns::{self, NsOrGone};
use super::undo::Undo;
use crate::cni::result::go_quote;
use crate::cni::{CniError, Ctx};
use crate::netlink::route::Table;
use crate::netlink::socket::{go_context, is_exists, is_not_found, Netlink};
use crate::netlink::{addr::Family, Link, LinkSpec};
use crate::sys::netns::NetNs;
use crate::sys::sysctl;
use anyhow::{Context, Result};
use ipnet::IpNet;

/// The name of the interface of the first default route in the main table (IPv4 first, then
/// IPv6), as the reference picks a macvlan/ipvlan master when none is configured.
pub fn default_route_ifname(nl: &mut Netlink) -> Result<String> {
    for fam in [Family::V4, Family::V6] {
        let routes = nl.routes(fam, Some(Table::MAIN))?;
        let hit = routes.iter().find(|r| r.dst.is_none_or(|d| d.prefix_len() == 0) && r.oif.is_some());
        if let Some(idx) = hit.and_then(|r| r.oif) {
            if let Some(l) = nl.link_by_index(idx)? {
                return Ok(l.name);
            }
        }
    }
    anyhow::bail!("no default route interface found")
}

/// The lower device of a macvlan/ipvlan/vlan: `master` (or the default-route interface when
/// empty) looked up on `nl` (the host's or, with linkInContainer, the container's socket). A named
/// master that does not exist is a configuration error (code 7) in the words of the reference's
/// netlink library, `Link not found`, which v1.9.1's macvlan and vlan return as they are from
/// their loadConf (ADD; macvlan's CHECK).
pub fn lookup_master(nl: &mut Netlink, master: Option<&str>) -> Result<Link> {
    let name = master_name(nl, master)?;
    link_named(nl, &name)
}

/// [`lookup_master`] in the words of ipvlan's ADD and of the CHECKs that look the master up
/// after loading the config (ipvlan, vlan): `failed to lookup master "eth9": Link not found`.
pub fn resolve_master(nl: &mut Netlink, master: Option<&str>) -> Result<Link> {
    let name = master_name(nl, master)?;
    link_named(nl, &name).with_context(|| format!("failed to lookup master {name:?}"))
}

fn master_name(nl: &mut Netlink, master: Option<&str>) -> Result<String> {
    match master.filter(|m| !m.is_empty()) {
        Some(m) => Ok(m.to_string()),
        None => default_route_ifname(nl),
    }
}

fn link_named(nl: &mut Netlink, name: &str) -> Result<Link> {
    nl.link_by_name(name)?.ok_or_else(|| CniError::config("Link not found").into())
}

/// Create a link for the container under a temporary `veth…` name and rename it to `ifname`
/// inside the container (the reference's way to avoid clashes with host names).
/// `template` gives everything but the name and namespace. With `from_container` the link is
/// created through the container's socket (linkInContainer), otherwise through `host` with
/// IFLA_NET_NS_FD. On a failed rename the link is deleted. Returns the link as seen in the container.
/// Errors in the reference's words for the template's kind: `failed to create macvlan: <errno>`,
/// `failed to rename macvlan to "eth0": <errno>`.
pub fn create_renamed(
    host: &mut Netlink,
    cont: &mut Netlink,
    ns: &NetNs,
    ifname: &str,
    from_container: bool,
    template: &LinkSpec<'_>,
) -> Result<Link> {
    let kind = template.kind.name();
    let mut tries = 0;
    let tmp = loop {
        let tmp = super::veth::random_name();
        let r = if from_container {
            cont.link_add(&LinkSpec { name: &tmp, netns: None, ..*template })
        } else {
            host.link_add(&LinkSpec { name: &tmp, netns: Some(ns.fd()), ..*template })
        };
        match r {
            Ok(()) => break tmp,
            Err(e) if is_exists(&e) && tries < 10 => tries += 1,
            Err(e) => return Err(go_context(e, &format!("failed to create {kind}"))),
        }
    };
    let link = cont.link_by_name(&tmp)?.with_context(|| format!("failed to find new link {tmp:?}"))?;
    if let Err(e) = cont.link_set_name(link.index, ifname) {
        let _ = cont.link_del(link.index);
        return Err(go_context(e, &format!("failed to rename {kind} to {}", go_quote(ifname))));
    }
    cont.link_by_index(link.index)?.with_context(|| format!("failed to refetch {ifname:?}"))
}

/// An undo step that deletes `ifname` in the namespace at `ns_path` (a missing link is fine).
pub fn undo_delete(undo: &mut Undo, ns_path: &str, ifname: &str) {
    let (path, ifname) = (ns_path.to_string(), ifname.to_string());
    undo.push("container link", move || delete_in(&mut Netlink::in_netns(&ns::reopen(&path)?)?, &ifname).map(|_| ()));
}

/// DEL step: delete CNI_IFNAME in the container; a missing netns or link is success.
/// Returns the link's global addresses (for the ipMasq teardown).
pub fn delete(ctx: &Ctx) -> Result<Vec<IpNet>> {
    delete_with(ctx, None)
}

/// [`delete`], with `meanwhile` run on the link's global addresses while the kernel deletes it:
/// a veth deletion waits for RCU grace periods (~17 ms) and leaves the CPU idle, so DEL work
/// that does not depend on the link being gone (firewall teardown) runs in that time. The
/// deletion runs on a second thread with the container socket; `meanwhile` on this thread (in
/// this thread's namespace). Both finish before this returns; the deletion's error comes first.
pub fn delete_meanwhile(ctx: &Ctx, meanwhile: impl FnOnce(&[IpNet]) -> Result<()>) -> Result<Vec<IpNet>> {
    delete_with(ctx, Some(Box::new(meanwhile)))
}

/// Delete `ifname` through `nl` (a container socket); a missing link is success. Returns its
/// global addresses.
pub fn delete_in(nl: &mut Netlink, ifname: &str) -> Result<Vec<IpNet>> {
    delete_in_with(nl, ifname, None)
}

/// Work run beside a link deletion (see [`delete_meanwhile`]).
type Meanwhile<'a> = Option<Box<dyn FnOnce(&[IpNet]) -> Result<()> + 'a>>;

fn delete_with(ctx: &Ctx, meanwhile: Meanwhile<'_>) -> Result<Vec<IpNet>> {
    match ns::open_for_del(ctx)? {
        NsOrGone::Ns(ns) => delete_in_with(&mut Netlink::in_netns(&ns)?, &ctx.ifname, meanwhile),
        NsOrGone::Gone => meanwhile.map_or(Ok(()), |f| f(&[])).map(|()| Vec::new()),
    }
}

fn delete_in_with(nl: &mut Netlink, ifname: &str, meanwhile: Meanwhile<'_>) -> Result<Vec<IpNet>> {
    let Some(link) = nl.link_by_name(ifname)? else {
        return meanwhile.map_or(Ok(()), |f| f(&[])).map(|()| Vec::new());
    };
    let addrs = global_addrs(nl, link.index);
    let mut delete = move || match nl.link_del(link.index) {
        Err(e) if !is_not_found(&e) => Err(e.context(format!("failed to delete {ifname:?}"))),
        _ => Ok(()),
    };
    let (deleted, done) = match meanwhile {
        None => (delete(), Ok(())),
        Some(f) => beside(delete, || f(&addrs)),
    };
    deleted?;
    done?;
    Ok(addrs)
}

/// Run `a` on a second thread while `b` runs on this one; both results. (The root-free unit
/// tests' fake kernel is per thread: there `a` runs first, then `b`, on this thread.)
fn beside<A: Send>(a: impl FnOnce() -> Result<A> + Send, b: impl FnOnce() -> Result<()>) -> (Result<A>, Result<()>) {
    if cfg!(test) {
        return (a(), b());
    }
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        (a.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a DEL step failed"))), b)
    })
}

/// Global-unicast addresses of link `index` (remembered before DEL for the ipMasq teardown).
pub fn global_addrs(nl: &mut Netlink, index: u32) -> Vec<IpNet> {
    nl.addrs(Some(index), None)
        .map(|v| v.into_iter().filter(|a| a.scope == 0).map(|a| a.addr).collect())
        .unwrap_or_default()
}

/// The result entry of a container interface: name, MAC, sandbox = CNI_NETNS.
pub fn container_iface(ctx: &Ctx, link: &Link) -> crate::cni::result::Interface {
    crate::cni::result::Interface {
        name: link.name.clone(),
        mac: link.mac_string(),
        sandbox: ctx.netns.clone(),
        ..Default::default()
    }
}

/// `arp_notify=1` on the container's `link` (over rtnetlink, which stores it as a /proc/sys
/// write would, without that path's lookup: see `Netlink::link_set_arp_notify`), and with
/// `ndisc`, `ndisc_notify=1` (IPv6 settings are only written through /proc/sys, inside the
/// container). Errors are ignored, as the reference ignores them.
pub fn set_notify(ns: &NetNs, cont: &mut Netlink, link: &Link, ndisc: bool) {
    if let Err(e) = cont.link_set_arp_notify(link.index) {
        tracing::debug!("arp_notify on {}: {e:#}", link.name);
    }
    if ndisc {
        if let Err(e) = ns.run(|| Ok(sysctl::set_if("ipv6", &link.name, "ndisc_notify", "1")?)) {
            tracing::debug!("ndisc_notify on {}: {e:#}", link.name);
        }
    }
}

/// The container MAC of bridge: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC, each used only
/// when it is not empty (the reference's `!= ""`), so an empty runtimeConfig.mac falls through.
/// A source of the wrong JSON type is code 999, as the reference's decoding fails.
pub fn requested_mac(ctx: &Ctx) -> Result<Option<[u8; 6]>> {
    let s = match mac_key(ctx, "runtimeconfig", "runtimeConfig")? {
        Some(s) => Some(s),
        None => match ctx.get("args").map(|a| object_or_err(a, "args")).transpose()? {
            Some(args) => match args.get("cni").map(|c| object_or_err(c, "args.cni")).transpose()? {
                Some(cni) => string_or_err(cni.get("mac"), "args.cni.mac")?,
                None => None,
            },
            None => None,
        },
    }
    .or_else(|| ctx.cni_arg("MAC").filter(|s| !s.is_empty()));
    match s {
        None => Ok(None),
        Some(s) => crate::netlink::parse_mac(s)
            .map(Some)
            .map_err(|e| CniError::config(format!("invalid MAC address {s:?}: {e}")).into()),
    }
}

/// The container MAC of macvlan/tap: runtimeConfig.mac > CNI_ARGS MAC > the config's `mac`
/// (empty strings skipped), in the reference's error wording; a mistyped runtimeConfig.mac is
/// code 999 as the reference's decoding fails.
pub fn configured_mac(ctx: &Ctx, conf_mac: Option<&str>) -> Result<Option<[u8; 6]>> {
    let s = mac_key(ctx, "runtimeconfig", "runtimeConfig")?
        .or_else(|| ctx.cni_arg("MAC").filter(|s| !s.is_empty()))
        .or(conf_mac.filter(|s| !s.is_empty()));
    match s {
        None => Ok(None),
        Some(s) => crate::netlink::parse_mac(s)
            .map(Some)
            .map_err(|e| CniError::config(format!("invalid args {s} for MAC addr: {e}")).into()),
    }
}

/// `<section>.mac` of the config: `None` when absent or empty; an error when `section` is not an
/// object or `mac` not a string (`shown` is the key as the user spells it).
fn mac_key<'a>(ctx: &'a Ctx, section: &str, shown: &str) -> Result<Option<&'a str>> {
    match ctx.get(section) {
        None => Ok(None),
        Some(v) => string_or_err(object_or_err(v, shown)?.get("mac"), &format!("{shown}.mac")),
    }
}

fn object_or_err<'a>(v: &'a serde_json::Value, path: &str) -> Result<&'a serde_json::Map<String, serde_json::Value>> {
    v.as_object().ok_or_else(|| decode_error(path, "an object", v))
}

/// A string value, `None` when absent or empty.
fn string_or_err<'a>(v: Option<&'a serde_json::Value>, path: &str) -> Result<Option<&'a str>> {
    match v {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(other) => Err(decode_error(path, "a string", other)),
    }
}

fn decode_error(path: &str, want: &str, got: &serde_json::Value) -> anyhow::Error {
    CniError::internal(format!(
        "failed to load netconf: {path}: expected {want}, got {}",
        crate::cni::config::kind(got)
    ))
    .into()
}

/// ADD (and macvlan's CHECK): a sub-interface MTU (macvlan, vlan) is within 0 and its master's
/// (the reference's words, code 7); returns it as u32 (0 = inherit).
pub fn mtu_within_master(mtu: i64, master: &Link) -> Result<u32> {
    match u32::try_from(mtu) {
        Ok(m) if m <= master.mtu => Ok(m),
        _ => Err(CniError::config(format!("invalid MTU {mtu}, must be [0, master MTU({})]", master.mtu)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::{config, Command};

    fn ctx(conf: &str, args: &str) -> Ctx {
        Ctx {
            conf: config::parse_folded(conf.as_bytes()).unwrap(),
            args: crate::cni::env::parse_args_lenient(args),
            ..Ctx::new(Command::Add)
        }
    }

    #[test]
    fn mac_precedence_and_errors() {
        let rc = r#"{"runtimeConfig": {"mac": "02:00:00:00:00:01"}, "args": {"cni": {"mac": "02:00:00:00:00:02"}}}"#;
        let args = "MAC=02:00:00:00:00:03";
        assert_eq!(requested_mac(&ctx(rc, args)).unwrap(), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            requested_mac(&ctx(r#"{"args": {"cni": {"mac": "02:00:00:00:00:02"}}}"#, args)).unwrap(),
            Some([2, 0, 0, 0, 0, 2])
        );
        assert_eq!(requested_mac(&ctx("{}", args)).unwrap(), Some([2, 0, 0, 0, 0, 3]));
        assert_eq!(requested_mac(&ctx("{}", "")).unwrap(), None);
        let e = requested_mac(&ctx("{}", "MAC=zz")).unwrap_err();
        assert_eq!(CniError::from_anyhow(&e).code, 7);
        // macvlan/tap: an empty runtimeConfig/CNI_ARGS value falls through to the config's key
        let empty = r#"{"runtimeConfig": {"mac": ""}}"#;
        assert_eq!(configured_mac(&ctx(empty, "MAC="), Some("02:00:00:00:00:04")).unwrap(), Some([2, 0, 0, 0, 0, 4]));
        assert_eq!(configured_mac(&ctx("{}", args), Some("02:00:00:00:00:04")).unwrap(), Some([2, 0, 0, 0, 0, 3]));
        let e = configured_mac(&ctx("{}", ""), Some("nope")).unwrap_err();
        assert!(CniError::from_anyhow(&e).msg.starts_with("invalid args nope for MAC addr"));
        // Go's net.ParseMAC, as the reference's bridge, macvlan and tap read a MAC: the dotted
        // form is taken, mixed separators and a sign are not
        assert_eq!(requested_mac(&ctx("{}", "MAC=0200.0000.0003")).unwrap(), Some([2, 0, 0, 0, 0, 3]));
        assert_eq!(configured_mac(&ctx("{}", ""), Some("0200.0000.0004")).unwrap(), Some([2, 0, 0, 0, 0, 4]));
        for bad in ["02:00-00:00:00:04", "+2:00:00:00:00:04"] {
            let e = CniError::from_anyhow(&configured_mac(&ctx("{}", ""), Some(bad)).unwrap_err());
            assert_eq!(e.msg, format!("invalid args {bad} for MAC addr: address {bad}: invalid MAC address"));
            assert!(requested_mac(&ctx("{}", &format!("MAC={bad}"))).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_mac_sources_fall_through_like_the_reference() {
        // bridge: each source is used only when it is not "" (runtimeConfig > args.cni > CNI_ARGS)
        let args = "MAC=02:aa:bb:cc:dd:01";
        assert_eq!(
            requested_mac(&ctx(r#"{"runtimeConfig": {"mac": ""}}"#, args)).unwrap(),
            Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 1])
        );
        let both_empty = r#"{"runtimeConfig": {"mac": ""}, "args": {"cni": {"mac": ""}}}"#;
        assert_eq!(requested_mac(&ctx(both_empty, args)).unwrap(), Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 1]));
        let cni = r#"{"runtimeConfig": {"mac": ""}, "args": {"cni": {"mac": "02:00:00:00:00:02"}}}"#;
        assert_eq!(requested_mac(&ctx(cni, args)).unwrap(), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(requested_mac(&ctx(both_empty, "MAC=")).unwrap(), None);
    }

    #[test]
    fn mistyped_mac_sources_are_decode_errors() {
        for conf in [
            r#"{"runtimeConfig": {"mac": 5}}"#,
            r#"{"runtimeConfig": 5}"#,
            r#"{"args": {"cni": {"mac": ["02:00:00:00:00:01"]}}}"#,
            r#"{"args": {"cni": 1}}"#,
            r#"{"args": "x"}"#,
        ] {
            let e = CniError::from_anyhow(&requested_mac(&ctx(conf, "")).unwrap_err());
            assert_eq!(e.code, 999, "{conf}");
            assert!(e.msg.starts_with("failed to load netconf: "), "{conf}: {}", e.msg);
        }
        for conf in [r#"{"runtimeConfig": {"mac": 5}}"#, r#"{"runtimeConfig": []}"#] {
            let e = CniError::from_anyhow(&configured_mac(&ctx(conf, ""), None).unwrap_err());
            assert_eq!(e.code, 999, "{conf}");
        }
        let e = CniError::from_anyhow(&requested_mac(&ctx(r#"{"runtimeConfig": {"mac": 5}}"#, "")).unwrap_err());
        assert_eq!(e.msg, "failed to load netconf: runtimeConfig.mac: expected a string, got number");
    }

    #[test]
    fn mtu_rules() {
        let master = Link { mtu: 1500, ..Default::default() };
        assert_eq!(mtu_within_master(0, &master).unwrap(), 0);
        assert_eq!(mtu_within_master(1500, &master).unwrap(), 1500);
        for bad in [1501, -1, i64::MIN, i64::from(u32::MAX) + 1] {
            let e = CniError::from_anyhow(&mtu_within_master(bad, &master).unwrap_err());
            // the master's MTU is named for a negative value too, as by the reference
            assert_eq!((e.code, e.msg), (7, format!("invalid MTU {bad}, must be [0, master MTU(1500)]")));
        }
    }
}
