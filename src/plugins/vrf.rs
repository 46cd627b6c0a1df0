//! vrf (meta): put CNI_IFNAME into a VRF inside the container — created on first use with a
//! free routing table, reused after — and carry the interface's routes into the VRF's table;
//! the last member to leave deletes the VRF (checklist §2.19).

use super::steps::{self, NsOrGone, Undo};
use crate::cni::plugin::{config_fields, k, Doc, Kind, Plugin, Version};
use crate::cni::{CniError, CniResult, Ctx};
use crate::netlink::ifext::{IFA_F_NODAD, IFA_F_NOPREFIXROUTE};
use crate::netlink::route::{RouteSpec, Scope};
use crate::netlink::socket::go_context;
use crate::netlink::{Family, Link, LinkKind, LinkSpec, Netlink};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const APPLET: Plugin = Plugin {
    name: "vrf",
    about: "enslave the container interface to a VRF",
    min_version: Version::new(0, 3, 1),
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
    summary: "Puts CNI_IFNAME into a VRF inside the container (created when missing) and moves its \
              routes into the VRF's table. DEL removes the VRF when its last member leaves.",
    section: "",
    keys: &[
        k("vrfname", "string", "", "required: name of the VRF device"),
        k("table", "int", "first unused id", "routing table of the VRF; an error if the VRF exists with another"),
    ],
    notes: &[
        "The routes are copied as `ip route replace` does (a route of another member to the same \
         destination gives way) and keep every attribute: protocol, metrics, tos, realm.",
        "ADD's failures in the container read `cmdAdd failed: …`, as the reference's. DEL succeeds when the VRF \
         is gone, when `vrfname` names a link that is no VRF and when it is a name ADD refuses (a `%`, \
         whitespace, `/` or `:`, more than 15 bytes): no such VRF can exist. When CNI_IFNAME is gone, DEL \
         still deletes the VRF if no member is left.",
        "CHECK fails when CNI_IFNAME is not in the VRF (the reference's CHECK passes).",
        "A failed ADD detaches the interface and puts back its IPv6 addresses and the routes the \
         kernel took out of `main` when it was enslaved.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "red",
  "plugins": [
    {"type": "macvlan", "master": "eth0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.5.0/24"}]]}},
    {"type": "vrf", "vrfname": "red"}
  ]
}"#,
    config: Some(config_fields::<Conf>),
};

const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTPROT_KERNEL: u8 = 2;
const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    #[serde(rename = "vrfname")]
    vrf_name: String,
    table: u32,
}

/// The config as the reference's parseConf reads it: `vrfname` must not be empty (DEL's rule).
fn parse(ctx: &Ctx) -> Result<Conf> {
    let conf: Conf = ctx.plugin_conf()?;
    if conf.vrf_name.is_empty() {
        return Err(CniError::config("configuration is expected to have a valid vrf name").into());
    }
    Ok(conf)
}

/// The config for ADD and CHECK: [`parse`], and `vrfname` must be a name the kernel gives a new
/// link as it is (no `%` template, none of its whitespace bytes, `/`, `:`, at most 15 bytes).
fn load(ctx: &Ctx) -> Result<Conf> {
    let conf = parse(ctx)?;
    if let Err(e) = crate::cni::env::validate_link_name(&conf.vrf_name) {
        let name = crate::cni::result::go_quote(&conf.vrf_name);
        return Err(CniError::config(format!("invalid vrf name {name}: {}", e.msg)).into());
    }
    Ok(conf)
}

/// What the link called `name` is to us.
enum Named {
    Missing,
    NotVrf,
    /// The VRF and its table.
    Vrf(Link, u32),
}

fn lookup(nl: &mut Netlink, name: &str) -> Result<Named> {
    let Some(l) = nl.link_by_name(name)? else { return Ok(Named::Missing) };
    Ok(match nl.link_details(l.index)? {
        Some(d) if d.link.kind.as_deref() == Some("vrf") => Named::Vrf(d.link, d.vrf_table.unwrap_or(0)),
        _ => Named::NotVrf,
    })
}

/// The VRF called `name`: None when no link has that name, an error when it is not a VRF.
fn find_vrf(nl: &mut Netlink, name: &str) -> Result<Option<(Link, u32)>> {
    match lookup(nl, name)? {
        Named::Missing => Ok(None),
        Named::NotVrf => bail!("Netlink {name} is not a VRF"),
        Named::Vrf(l, t) => Ok(Some((l, t))),
    }
}

/// The lowest table id >= 1 that no VRF in the namespace uses.
fn free_table(nl: &mut Netlink) -> Result<u32> {
    let mut taken = Vec::new();
    for l in nl.links()?.into_iter().filter(|l| l.kind.as_deref() == Some("vrf")) {
        if let Some(t) = nl.link_details(l.index)?.and_then(|d| d.vrf_table) {
            taken.push(t);
        }
    }
    (1..u32::MAX).find(|t| !taken.contains(t)).context("failed to find an available routing table id")
}

fn members(nl: &mut Netlink, vrf: u32) -> Result<Vec<Link>> {
    Ok(nl.links()?.into_iter().filter(|l| l.master == Some(vrf)).collect())
}

/// Routes through `index` that enslaving will flush and that we carry into the VRF table.
fn routes_via(nl: &mut Netlink, index: u32) -> Result<Vec<RouteSpec>> {
    let mut out = Vec::new();
    for fam in [Family::V4, Family::V6] {
        out.extend(nl.routes(fam, Some(RT_TABLE_MAIN))?.into_iter().filter(|r| {
            r.oif == Some(index)
                && r.scope == Some(Scope::UNIVERSE)
                && r.kind == Some(RTN_UNICAST)
                && r.protocol != Some(RTPROT_KERNEL)
        }));
    }
    Ok(out)
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = load(ctx)?;
    let Some(prev) = ctx.prev_result.clone() else {
        bail!("missing prevResult from earlier plugin");
    };
    // everything the reference does inside the container's namespace fails as `cmdAdd failed: …`
    enter_vrf(ctx, &conf).context("cmdAdd failed")?;
    Ok(prev)
}

/// ADD's work in the container: the VRF, the enslaving, the addresses and routes it carries over.
fn enter_vrf(ctx: &Ctx, conf: &Conf) -> Result<()> {
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // 1. the VRF: reuse (same table if one is configured) or create with a free table
    let (vrf, table) = match find_vrf(&mut cont, &conf.vrf_name)? {
        Some((l, t)) if conf.table != 0 && t != conf.table => {
            bail!("VRF {} already exist with different routing table {t}", l.name)
        }
        Some(found) => found,
        None => {
            let table = if conf.table != 0 { conf.table } else { free_table(&mut cont)? };
            cont.link_add(&LinkSpec { txqlen: Some(0), ..LinkSpec::new(&conf.vrf_name, LinkKind::Vrf { table }) })
                .map_err(|e| go_context(e, &format!("could not add VRF {}", conf.vrf_name)))?;
            let l = cont.link_by_name(&conf.vrf_name)?.with_context(|| format!("VRF {} vanished", conf.vrf_name))?;
            let index = l.index;
            undo.push_in("VRF", ns.path(), move |nl| nl.link_del(index));
            cont.link_set_up(l.index, true)
                .map_err(|e| go_context(e, &format!("could not set link up for VRF {}", l.name)))?;
            (l, table)
        }
    };

    // 2. the interface: not enslaved yet; remember its IPv6 addresses and routes
    let link = cont.link_by_name(&ctx.ifname)?.with_context(|| format!("could not get link by name {}", ctx.ifname))?;
    if let Some(m) = link.master {
        let name = cont.link_by_index(m)?.map(|l| l.name).unwrap_or_else(|| m.to_string());
        bail!("interface {} has already a master set: {name}", ctx.ifname);
    }
    let v6_before: Vec<_> = cont
        .addrs(Some(link.index), Some(Family::V6))?
        .into_iter()
        .filter(|a| a.scope == 0)
        .map(|a| (a.addr, a.flags & (IFA_F_NODAD | IFA_F_NOPREFIXROUTE)))
        .collect();
    let routes = routes_via(&mut cont, link.index)?;

    // 3. enslave (the kernel cycles the link: it flushes the link's routes from `main`, and its
    //    IPv6 addresses unless keep_addr_on_down); a failure from here on detaches the link and
    //    puts back the addresses and routes it had
    cont.link_set_master(link.index, Some(vrf.index))
        .map_err(|e| go_context(e, &format!("could not set vrf {} as master of {}", vrf.name, ctx.ifname)))?;
    let (index, before, saved) = (link.index, v6_before.clone(), routes.clone());
    undo.push_in("VRF membership", ns.path(), move |nl| leave_vrf(nl, index, &before, &saved));
    // restore the IPv6 addresses the kernel dropped, with their NODAD flag (usable at once, as
    // the reference re-adds them), and wait for the local routes of those only, as the reference
    // does: an address the link kept stays tentative until DAD ends (never, without carrier)
    let v6_after: Vec<_> = cont.addrs(Some(link.index), Some(Family::V6))?.into_iter().map(|a| a.addr).collect();
    let mut readded = Vec::new();
    for (a, flags) in v6_before.iter().filter(|(a, _)| !v6_after.contains(a)) {
        cont.addr_add_flags(link.index, *a, *flags)
            .map_err(|e| go_context(e, &format!("could not restore address {a} to {} @ {}", ctx.ifname, vrf.name)))?;
        readded.push(*a);
    }
    wait_local_routes(&mut cont, &ctx.ifname, table, &readded)?;

    // 4. the interface's routes, now in the VRF's table: replaced (a route of another member
    //    with the same key gives way) with their protocol kept, as the reference's RouteReplace
    for r in routes {
        let spec = RouteSpec { table: Some(table), ..r };
        cont.route_replace(&spec).map_err(|e| go_context(e, &format!("could not add route to VRF {}", vrf.name)))?;
    }
    undo.commit();
    Ok(())
}

/// Undo of the membership: detach link `index`, then put back the IPv6 addresses (`v6`, with
/// their flags) and the routes the enslaving flushed, as far as they are missing, so the link is
/// as it was before the ADD.
fn leave_vrf(nl: &mut Netlink, index: u32, v6: &[(ipnet::IpNet, u32)], routes: &[RouteSpec]) -> Result<()> {
    use crate::netlink::socket::is_exists;
    nl.link_set_master(index, None)?;
    let have: Vec<_> = nl.addrs(Some(index), Some(Family::V6))?.into_iter().map(|a| a.addr).collect();
    for (a, flags) in v6.iter().filter(|(a, _)| !have.contains(a)) {
        if let Err(e) = nl.addr_add_flags(index, *a, *flags) {
            if !is_exists(&e) {
                return Err(e);
            }
        }
    }
    for r in routes {
        if let Err(e) = nl.route_add(r) {
            if !is_exists(&e) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Wait (10 ms, doubling, 8 tries) until each IPv6 address of `ifname` has its local route in
/// `table`.
fn wait_local_routes(nl: &mut Netlink, ifname: &str, table: u32, addrs: &[ipnet::IpNet]) -> Result<()> {
    let mut delay = 10;
    for _ in 0..8 {
        let locals = nl.routes(Family::V6, Some(table))?;
        let missing = addrs
            .iter()
            .find(|a| !locals.iter().any(|r| r.kind == Some(RTN_LOCAL) && r.dst.is_some_and(|d| d.addr() == a.addr())));
        if missing.is_none() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(delay));
        delay *= 2;
    }
    let locals = nl.routes(Family::V6, Some(table))?;
    for a in addrs {
        if !locals.iter().any(|r| r.kind == Some(RTN_LOCAL) && r.dst.is_some_and(|d| d.addr() == a.addr())) {
            bail!("failed getting local/host addresses for {ifname} in table {table} with dst {a}");
        }
    }
    Ok(())
}

fn del(ctx: &Ctx) -> Result<()> {
    let conf = parse(ctx)?;
    let NsOrGone::Ns(ns) = steps::ns::open_for_del(ctx)? else { return Ok(()) };
    // a name ADD refuses names no link (the kernel would not take it as it is): no VRF to leave
    if crate::cni::env::validate_link_name(&conf.vrf_name).is_err() {
        return Ok(());
    }
    let mut cont = Netlink::in_netns(&ns)?;
    // no VRF of that name (gone, or a link that is no VRF, which ADD refuses): nothing to undo
    let Named::Vrf(vrf, _) = lookup(&mut cont, &conf.vrf_name)? else { return Ok(()) };
    if let Some(link) = cont.link_by_name(&ctx.ifname)? {
        if link.master == Some(vrf.index) {
            cont.link_set_master(link.index, None)
                .with_context(|| format!("could not detach {} from VRF {}", ctx.ifname, vrf.name))?;
        }
    }
    if members(&mut cont, vrf.index)?.is_empty() {
        if let Err(e) = cont.link_del(vrf.index) {
            if !crate::netlink::socket::is_not_found(&e) {
                return Err(e.context(format!("could not delete VRF {}", vrf.name)));
            }
        }
    }
    Ok(())
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf = load(ctx)?;
    if ctx.read_prev_result()?.is_none() {
        bail!("missing prevResult from earlier plugin");
    }
    let ns = steps::ns::open(ctx)?;
    let mut cont = Netlink::in_netns(&ns)?;
    let Some((vrf, _)) = find_vrf(&mut cont, &conf.vrf_name)? else { bail!("VRF {} not found", conf.vrf_name) };
    if !members(&mut cont, vrf.index)?.iter().any(|l| l.name == ctx.ifname) {
        bail!("Failed to find {} associated to vrf {}", ctx.ifname, conf.vrf_name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(conf: serde_json::Value) -> Ctx {
        Ctx::test_add(conf)
    }

    /// `vrfname` becomes a new link's name: the kernel's rules (a `%` template would be expanded
    /// into another name, a tab is its whitespace), code 7 before anything is made.
    #[test]
    fn vrf_name_follows_the_kernels_rules_for_a_new_link() {
        for bad in ["red%d", "r\tx", "r x", "a/b", "a:b", ".", "..", "0123456789abcdef"] {
            let e = load(&ctx(serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "vrf", "vrfname": bad})))
                .unwrap_err();
            let ce = CniError::from_anyhow(&e);
            assert_eq!(ce.code, 7, "{bad:?}: {ce:?}");
            assert!(ce.msg.starts_with("invalid vrf name"), "{bad:?}: {}", ce.msg);
        }
        for good in ["red", "vrf-blue.1", "b\u{2028}"] {
            let c = load(&ctx(serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "vrf", "vrfname": good})));
            assert!(c.is_ok(), "{good:?}: {c:?}");
        }
    }
}
