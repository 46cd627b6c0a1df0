//! bridge: a veth pair whose host end is a port of a Linux bridge (reference checklist §2.2).

use super::steps::{self, veth::Pair, Undo};
use crate::cni::plugin::{acni, arg, cap, config_fields, k, Doc, Kind, Plugin, Version, DNS_KEY, IPAM_KEY};
use crate::cni::result::{go_quote, Interface, Route};
use crate::cni::{CniError, CniResult, Ctx};
use crate::firewall;
use crate::netlink::addr::Family;
use crate::netlink::link::{BridgeSpec, Link, VethSpec};
use crate::netlink::socket::{go_words, is_exists, is_not_found, Netlink};
use crate::sys::netns::NetNs;
use crate::sys::sysctl;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

pub const APPLET: Plugin = Plugin {
    name: "bridge",
    about: "veth pair attached to a Linux bridge (gateway, hairpin, VLANs, ipMasq)",
    min_version: Version::new(0, 1, 0),
    cni_args: Some(&["MAC"]),
    add,
    del,
    check,
    gc: Some(gc),
    status: Some(status),
    subcommands: &[],
    doc: &DOC,
};

pub const DOC: Doc = Doc {
    kind: Kind::Interface,
    summary: "A veth pair: the container end is CNI_IFNAME, the host end a port of a Linux bridge \
              (created when missing). With `ipam` it also assigns the addresses, and can make the \
              bridge the gateway; without `ipam` it is L2 only.",
    section: "",
    keys: &[
        k("bridge", "string", "\"cni0\"", "bridge name; created when missing, an error if it exists as another kind"),
        k("isGateway", "bool", "false", "put each range's gateway address on the bridge and enable forwarding"),
        k("isDefaultGateway", "bool", "false", "implies isGateway; add a default route via the gateway per family"),
        k("forceAddress", "bool", "false", "replace a different address already on the bridge instead of failing"),
        k("ipMasq", "bool", "false", "masquerade traffic from the container leaving its subnet"),
        k(
            "ipMasqBackend",
            "\"nftables\" or \"iptables\"",
            "auto",
            "firewall backend for ipMasq; auto = iptables when an iptables binary works, else nftables",
        ),
        k("mtu", "int", "kernel default", "MTU of both veth ends (and of the bridge when it is created)"),
        k("hairpinMode", "bool", "false", "let traffic leave the bridge port it came in on"),
        k("promiscMode", "bool", "false", "set the bridge promiscuous (not with hairpinMode)"),
        k(
            "vlan",
            "int 0-4094",
            "0",
            "access VLAN of the port (turns on VLAN filtering on the bridge); with isGateway the gateway \
             addresses go on a veth `<bridge>.<vlan>` whose peer is an access port of that VLAN",
        ),
        k("vlanTrunk", "list of {id} or {minID, maxID}", "[]", "tagged VLANs of the port"),
        k("preserveDefaultVlan", "bool", "false", "keep VLAN 1 on the port when vlan/vlanTrunk are set"),
        k("macspoofchk", "bool", "false", "drop frames from the container whose source MAC is not its own (nftables)"),
        k("enabledad", "bool", "false", "run IPv6 duplicate address detection on the container end"),
        k("disableContainerInterface", "bool", "false", "leave the container end down (L2 only, no ipam)"),
        k("portIsolation", "bool", "false", "mark the port isolated: no traffic to other isolated ports"),
        IPAM_KEY,
        DNS_KEY,
        cap("mac", "string", "MAC address of the container end"),
        acni("mac", "string", "MAC address of the container end (below runtimeConfig)"),
        arg("MAC", "string", "MAC address of the container end (below args.cni)"),
    ],
    notes: &[
        "DEL removes the container end (the host end goes with it), the IPAM lease and the firewall rules; the \
         bridge, its addresses and a VLAN gateway veth stay.",
        "A failed ADD undoes what it did: the veth pair, the IPAM lease, the firewall rules, a VLAN gateway veth \
         it made, the gateway addresses it added, and it takes down a bridge it brought up (not one that held IPv6 \
         addresses, which going down would flush), unless a port joined the bridge meanwhile (another pod may use \
         them). A bridge it created stays, down, as with the reference.",
        "GC removes IPAM leases, masquerade rules and spoof-check chains of this network's attachments not in \
         `cni.dev/valid-attachments`. Spoof-check chains name their network in a chain comment (networks can \
         share a bridge); chains without one (the reference's) are removed only once their port is gone.",
    ],
    example: r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "bridge",
  "bridge": "cni0",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "ranges": [[{"subnet": "10.22.0.0/16"}]],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}"#,
    config: Some(config_fields::<Conf>),
};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Conf {
    #[serde(rename = "bridge")]
    bridge: Option<String>,
    #[serde(rename = "isgateway")]
    is_gateway: bool,
    #[serde(rename = "isdefaultgateway")]
    is_default_gateway: bool,
    #[serde(rename = "forceaddress")]
    force_address: bool,
    #[serde(rename = "ipmasq")]
    ip_masq: bool,
    #[serde(rename = "ipmasqbackend")]
    ip_masq_backend: Option<String>,
    /// a Go int in the reference: 0 or less is the kernel's default
    #[serde(rename = "mtu")]
    mtu: i64,
    #[serde(rename = "hairpinmode")]
    hairpin_mode: bool,
    #[serde(rename = "promiscmode")]
    promisc_mode: bool,
    #[serde(rename = "vlan")]
    vlan: i64,
    #[serde(rename = "vlantrunk")]
    vlan_trunk: Option<Vec<Trunk>>,
    #[serde(rename = "preservedefaultvlan")]
    preserve_default_vlan: bool,
    #[serde(rename = "macspoofchk")]
    mac_spoof_chk: bool,
    #[serde(rename = "enabledad")]
    enable_dad: bool,
    #[serde(rename = "disablecontainerinterface")]
    disable_container_interface: bool,
    #[serde(rename = "portisolation")]
    port_isolation: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Trunk {
    id: Option<i64>,
    #[serde(rename = "minid")]
    min_id: Option<i64>,
    #[serde(rename = "maxid")]
    max_id: Option<i64>,
}

impl Conf {
    fn load(ctx: &Ctx) -> Result<Conf> {
        let mut c: Conf = ctx.plugin_conf()?;
        // isDefaultGateway implies isGateway (reference behaviour)
        c.is_gateway |= c.is_default_gateway;
        if !(0..=4094).contains(&c.vlan) {
            return Err(CniError::config(format!("invalid VLAN ID {} (must be between 0 and 4094)", c.vlan)).into());
        }
        if c.vlan > 0 && !c.trunk_vids()?.is_empty() {
            return Err(CniError::config("cannot set vlan and vlanTrunk at the same time").into());
        }
        steps::veth::mtu_key(c.mtu)?;
        // the kernel's rules for a link name, checked before anything is created
        crate::cni::env::validate_link_name(c.bridge_name())
            .map_err(|e| CniError::config(format!("invalid bridge name {}: {}", go_quote(c.bridge_name()), e.msg)))?;
        if c.hairpin_mode && c.promisc_mode {
            return Err(CniError::config("cannot set hairpin mode and promiscuous mode at the same time").into());
        }
        if c.disable_container_interface && ctx.ipam_type().is_some() {
            return Err(CniError::config("cannot use IPAM when the container interface is disabled").into());
        }
        Ok(c)
    }

    /// `cni0` when the key is absent; an explicit `""` stays empty, which ADD refuses (the
    /// reference fails creating a bridge named "" rather than using cni0).
    fn bridge_name(&self) -> &str {
        self.bridge.as_deref().unwrap_or("cni0")
    }

    /// The trunk's VLAN ids, sorted and without repeats, read as the reference's
    /// `collectVlanTrunk` reads them: an entry may give a `minID`..`maxID` range, an `id`, or
    /// both (both are taken); an empty entry adds nothing.
    fn trunk_vids(&self) -> Result<Vec<u16>> {
        let mut vids = std::collections::BTreeSet::new();
        let bad = |m: &str| -> anyhow::Error { CniError::config(m.to_string()).into() };
        for t in self.vlan_trunk.iter().flatten() {
            match (t.min_id, t.max_id) {
                (Some(lo), Some(hi)) => {
                    if !(1..=4094).contains(&lo) {
                        return Err(bad("incorrect trunk minID parameter"));
                    }
                    if !(1..=4094).contains(&hi) {
                        return Err(bad("incorrect trunk maxID parameter"));
                    }
                    if hi < lo {
                        return Err(bad("minID is greater than maxID in trunk parameter"));
                    }
                    vids.extend((lo..=hi).map(|v| v as u16));
                }
                (None, Some(_)) => {
                    return Err(bad("minID and maxID should be configured simultaneously, minID is missing"))
                }
                (Some(_), None) => {
                    return Err(bad("minID and maxID should be configured simultaneously, maxID is missing"))
                }
                (None, None) => {}
            }
            if let Some(id) = t.id {
                if !(1..=4094).contains(&id) {
                    return Err(bad("incorrect trunk id parameter"));
                }
                vids.insert(id as u16);
            }
        }
        Ok(vids.into_iter().collect())
    }

    /// Whether the bridge is made with VLAN filtering: a `vlan`, or any `vlanTrunk` key that
    /// is not null (even an empty list), as the reference decides it.
    fn uses_vlans(&self) -> bool {
        self.vlan != 0 || self.vlan_trunk.is_some()
    }
}

fn add(ctx: &Ctx) -> Result<CniResult> {
    let conf = Conf::load(ctx)?;
    let mac = steps::link::requested_mac(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut undo = Undo::default();

    // 1. the bridge
    let br = ensure_bridge(&mut host, &conf, &mut undo)
        .with_context(|| format!("failed to create bridge {}", go_quote(conf.bridge_name())))?;
    tracing::debug!(bridge = %br.name, index = br.index, "bridge ready");

    // 2. the veth pair, created inside the container with its peer in our namespace, and the
    //    host end made a port of the bridge
    let pair = Pair { mtu: steps::veth::mtu_key(conf.mtu)?, mac, host_name: None };
    let steps::veth::Ends { host: host_veth, cont: cont_link } =
        steps::veth::add_pair(ctx, &mut host, &mut cont, &ns, &mut undo, pair)?;
    attach_port(&mut host, &host_veth, &br, &conf)?;
    // The bridge as it is with our port: its MAC for the result (a bridge whose MAC is not set
    // takes a port's), and it must be up. Looked at now, before the container end goes up: that
    // starts the kernel's IPv6 work for the new link (its duplicate address detection is off, so
    // at once: router solicitation and MLD reports, flooded to every port while the kworker
    // holds the RTNL lock), and a query after it waits for that flood, O(ports), inside the
    // runtime's time. Nothing later in this ADD changes the bridge's ports but a VLAN gateway
    // veth made below (the bridge is looked at again then); a concurrent ADD's rollback that
    // takes the bridge down after this check sees our port when it looks again, and sets the
    // bridge up again (`bridge_down_unless_joined`).
    let mut br_now = bridge_up_now(&mut host, &br)?;

    // 3. the result skeleton: bridge, host veth, container veth
    let mut result = CniResult {
        interfaces: vec![
            iface(&br, None),
            iface(&host_veth, None),
            iface(&cont_link, Some(ctx.netns.clone().unwrap_or_default())),
        ],
        ..Default::default()
    };

    // 4. MAC anti-spoofing on the bridge port (nftables bridge family)
    if conf.mac_spoof_chk {
        let mac = cont_link.mac_string().context("container veth has no MAC")?;
        firewall::macspoof::ensure(&ctx.name, &ctx.container_id, &ctx.ifname, &host_veth.name, &mac)?;
        let (cid, ifname) = (ctx.container_id.clone(), ctx.ifname.clone());
        undo.push("spoof check", move || firewall::macspoof::remove(&cid, &ifname));
    }

    // 5. L3: addresses from IPAM in the container, gateways on the bridge, masquerading
    let mut pinned = false;
    if ctx.ipam_type().is_some() {
        let mut ipam = steps::ipam::add(ctx, &mut undo)?;
        tracing::debug!(ips = ?ipam.ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>(), "IPAM allocated");
        let gateways = plan_l3(&mut ipam, conf.is_gateway, conf.is_default_gateway)?;
        (result.ips, result.routes, result.dns) = (ipam.ips, ipam.routes, ipam.dns);

        set_container_dad(&ns, &ctx.ifname, conf.enable_dad)?;
        steps::link::set_notify(&ns, &mut cont, &cont_link, false);
        steps::ipam::configure_link(&ns, &mut cont, &cont_link, CONTAINER_IFACE, &result)?;
        tracing::debug!(ifname = %ctx.ifname, "container addresses and routes configured");

        if conf.is_gateway && conf.vlan != 0 {
            // an access port's container reaches its gateway only inside its VLAN: the
            // addresses go on a veth `<bridge>.<vlan>` whose peer is an access port of that VLAN
            // (made once per bridge and VLAN, kept by DEL, as the reference keeps it)
            let gw_link = ensure_vlan_gateway(&mut host, &br, &conf, &mut undo)?;
            // the gateway veth's peer may have just joined the bridge (and changed its MAC)
            br_now = host.link_by_index(br.index)?;
            let mut gw_iface = iface(&gw_link, None);
            let on = Gateways { link: &gw_link, bridge: &br, force: conf.force_address };
            let added = on.set(&mut host, &gateways, &mut undo);
            if let Some(m) = added.context("failed to set vlan interface for bridge with addr")? {
                gw_iface.mac = Some(crate::netlink::format_mac(&m));
            }
            result.interfaces.push(gw_iface);
            steps::veth::enable_forwarding(&mut host, &result)?;
            tracing::debug!(?gateways, gateway_link = %gw_link.name, "gateway addresses on the VLAN gateway, forwarding enabled");
        } else if conf.is_gateway {
            let on = Gateways { link: &br, bridge: &br, force: conf.force_address };
            if let Some(m) = on.set(&mut host, &gateways, &mut undo).context("failed to set bridge addr")? {
                result.interfaces[0].mac = Some(crate::netlink::format_mac(&m));
                pinned = true;
            }
            steps::veth::enable_forwarding(&mut host, &result)?;
            tracing::debug!(?gateways, "gateway addresses on the bridge, forwarding enabled");
        }
        if conf.ip_masq {
            steps::ipmasq::setup(ctx, conf.ip_masq_backend.as_deref(), &result, &mut undo)?;
        }
    } else if !conf.disable_container_interface {
        // L2: the container end, created down, goes up now (with disableContainerInterface it
        // stays down, so the port has no carrier and the host end gets no IPv6 link-local)
        cont.link_set_up(cont_link.index, true)
            .map_err(|e| go_words(e).context(format!("failed to set {} up", go_quote(&ctx.ifname))))?;
    }

    // 6. the port must forward before we return (the reference polls after 0/50/500/1000/1000 ms)
    let port = if conf.disable_container_interface {
        host.link_by_index(host_veth.index)?
    } else {
        let up = host.wait_oper_up_link(host_veth.index, &[0, 50, 500, 1000, 1000])?;
        Some(up.with_context(|| format!("bridge port in error state: {}", host_veth.name))?)
    };

    // 7. MACs: the port's as it is now, and the bridge's as it was looked at once our port had
    //    joined, unless the gateway step pinned it (to the MAC already in the result); the DNS
    //    rule.
    if let Some(l) = port {
        result.interfaces[1].mac = l.mac_string();
    }
    if let Some(l) = br_now.filter(|_| !pinned) {
        result.interfaces[0].mac = l.mac_string();
    }
    if let Some(dns) = steps::ipam::conf_dns(ctx) {
        result.dns = dns;
    }
    undo.commit();
    tracing::debug!("ADD done");
    Ok(result)
}

/// The container veth's index in the result (after the bridge and the host veth).
const CONTAINER_IFACE: usize = 2;

/// Make the host veth a port of the bridge: master, up, hairpin/isolation, VLANs.
fn attach_port(host: &mut Netlink, port: &Link, br: &Link, conf: &Conf) -> Result<()> {
    let name = &port.name;
    host.link_set_master_up(port.index, br.index).map_err(|e| {
        let why = if crate::netlink::socket::is_full(&e) { " (it has the kernel's maximum of 1023 ports)" } else { "" };
        e.context(format!("failed to connect {name:?} to bridge {}{why} and set it up", br.name))
    })?;
    if conf.hairpin_mode || conf.port_isolation {
        host.bridge_port_set(port.index, conf.hairpin_mode.then_some(true), conf.port_isolation.then_some(true))
            .with_context(|| format!("failed to set bridge port options on {name:?}"))?;
    }
    setup_port_vlans(host, port, conf)?;
    tracing::debug!(host_veth = %name, bridge = %br.name, "host veth attached to the bridge and up");
    Ok(())
}

/// The L3 plan (pure): the IPAM addresses move to the container veth (interface 2); with
/// `is_gateway` an address without a gateway gets its subnet's first host; with
/// `is_default_gateway` each family with an address and no default route gets one via its
/// first gateway. Returns the gateway addresses the bridge needs (gateway/prefix, no duplicates).
fn plan_l3(ipam: &mut CniResult, is_gateway: bool, is_default_gateway: bool) -> Result<Vec<IpNet>> {
    let mut gateways: Vec<IpNet> = Vec::new();
    for ip in &mut ipam.ips {
        ip.interface = Some(CONTAINER_IFACE);
        if is_gateway && ip.gateway.is_none() {
            ip.gateway = first_host(&ip.address.trunc());
        }
        if let Some(gw) = ip.gateway {
            let gwnet = IpNet::new(gw, ip.address.prefix_len()).context("invalid gateway prefix")?;
            if !gateways.contains(&gwnet) {
                gateways.push(gwnet);
            }
        }
    }
    if is_default_gateway {
        for fam_v4 in [true, false] {
            let has_ip = ipam.ips.iter().any(|i| i.address.addr().is_ipv4() == fam_v4);
            let has_default = ipam.routes.iter().any(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == fam_v4);
            if has_ip && !has_default {
                let gw = ipam.ips.iter().find(|i| i.address.addr().is_ipv4() == fam_v4).and_then(|i| i.gateway);
                let dst = if fam_v4 { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
                ipam.routes.push(Route::new(dst, gw));
            }
        }
    }
    Ok(gateways)
}

/// Container side before the addresses: the DAD policy.
fn set_container_dad(ns: &NetNs, ifname: &str, enable_dad: bool) -> Result<()> {
    ns.run(|| {
        if enable_dad {
            let _ = sysctl::set_if("ipv6", ifname, "enhanced_dad", "1");
            let _ = sysctl::set_if("ipv6", ifname, "accept_dad", "1");
        } else {
            let _ = sysctl::set_if("ipv6", ifname, "accept_dad", "0");
        }
        Ok(())
    })
}

/// Where the gateway addresses go: `link` (the bridge, or the VLAN gateway veth of an access
/// port's VLAN) of `bridge`; `force` replaces a conflicting address (forceAddress).
struct Gateways<'a> {
    link: &'a Link,
    bridge: &'a Link,
    force: bool,
}

impl Gateways<'_> {
    /// The gateway addresses on the link, and, when one was added, its MAC pinned so it does
    /// not change as ports come and go: the MAC it had before this ADD attached its port, as the
    /// reference pins it (the link it looked the bridge up as, or created it as: a new bridge
    /// keeps its own random MAC, not the port's). Only after adding an address: a bridge that
    /// has its gateways is left alone, because setting even the same MAC makes the kernel
    /// announce an address change, which flushes the bridge's ARP and neighbour entries. A bridge
    /// the kernel left with the all-zero MAC when its last port went before anyone pinned it (a
    /// failed first ADD, an L2-only network emptied) cannot take that MAC back: it is read again
    /// and pinned to the one it took from the new port. Returns the MAC it pinned.
    ///
    /// Each address this ADD adds is taken off again by its undo, unless a port joined the
    /// bridge after it was added (a pod attached meanwhile may have found it and use it; see
    /// [`BridgeChange`]). The errors are v1.9.1's `ensureAddr`'s, which the caller prefixes.
    fn set(&self, host: &mut Netlink, gateways: &[IpNet], undo: &mut Undo) -> Result<Option<[u8; 6]>> {
        let q = go_quote(&self.link.name);
        let mut ports = None;
        // whether an address went on (the MAC is then pinned)
        let mut added = false;
        for gw in gateways {
            let (in_the_way, present) = self.in_the_way(host, *gw)?;
            if in_the_way.is_empty() && present {
                continue;
            }
            // the bridge's ports before the change, once (a link dump, only when one is missing)
            let before = match &ports {
                Some(p) => BridgeChange::clone(p),
                None => ports.insert(BridgeChange::now(host, self.bridge)?).clone(),
            };
            // forceAddress: the conflicting addresses go; a failed ADD puts them back (without
            // their lifetimes and flags)
            for old in in_the_way {
                let index = self.link.index;
                host.addr_del(index, old)
                    .map_err(|e| go_words(e).context(format!("could not remove IP address from {q}")))?;
                let before = before.clone();
                undo.push("removed bridge address", move || {
                    before.undo("removed bridge address", |nl| match nl.addr_add(index, old) {
                        Err(e) if !is_exists(&e) => Err(e),
                        _ => Ok(()),
                    })
                });
            }
            if present {
                continue;
            }
            match host.addr_add(self.link.index, *gw) {
                Ok(()) => {
                    added = true;
                    let (index, gw) = (self.link.index, *gw);
                    undo.push("gateway address", move || {
                        before.undo("gateway address", |nl| match nl.addr_del(index, gw) {
                            Err(e) if !is_not_found(&e) => Err(e),
                            _ => Ok(()),
                        })
                    });
                }
                // a concurrent ADD added it a moment ago: not ours to take back (the MAC is
                // pinned all the same, as the reference does after an EEXIST)
                Err(e) if is_exists(&e) => added = true,
                Err(e) => return Err(go_words(e).context(format!("could not add IP address to {q}"))),
            }
        }
        if !added {
            return Ok(None);
        }
        let link = self.link;
        let mut mac = link.mac.filter(|m| m.iter().any(|&b| b != 0));
        if mac.is_none() {
            mac = host.link_by_index(link.index)?.and_then(|l| l.mac).filter(|m| m.iter().any(|&b| b != 0));
        }
        if let Some(m) = mac {
            host.link_set_mac(link.index, m).map_err(|e| go_words(e).context("could not set bridge's mac"))?;
        }
        Ok(mac)
    }

    /// The addresses forceAddress removes for `gw/prefix` (an existing different IPv4 address,
    /// an overlapping IPv6 one; without forceAddress the first is an error), and whether `gw`
    /// itself is there already. As the reference's ensureAddr, in the kernel's order: the
    /// conflicts listed before `gw` go even when `gw` is found.
    fn in_the_way(&self, host: &mut Netlink, gw: IpNet) -> Result<(Vec<IpNet>, bool)> {
        let (link, q) = (self.link, go_quote(&self.link.name));
        let fam = if gw.addr().is_ipv4() { Family::V4 } else { Family::V6 };
        let addrs = host
            .addrs(Some(link.index), Some(fam))
            .map_err(|e| go_words(e).context("could not get list of IP addresses"))?;
        let mut remove = Vec::new();
        for a in addrs {
            if a.addr == gw {
                return Ok((remove, true));
            }
            let conflicts = match fam {
                Family::V4 => true,
                Family::V6 => a.scope == 0 && (a.addr.contains(&gw.addr()) || gw.contains(&a.addr.addr())),
            };
            if conflicts {
                if !self.force {
                    bail!("{q} already has an IP address different from {gw}");
                }
                remove.push(a.addr);
            }
        }
        Ok((remove, false))
    }
}

/// A change a failed ADD made to a bridge that other pods may come to rely on (a gateway
/// address, the bridge being up): undone only while no port has joined the bridge since the
/// change (`ports`: its ports just before). A port that joined may be a concurrent ADD's pod
/// that found the address (or the bridge up) and uses it; the ADD that attaches a port does so
/// before it looks at the bridge's addresses, so a pod that saw the address is seen here.
#[derive(Clone)]
struct BridgeChange {
    index: u32,
    name: String,
    ports: Vec<u32>,
}

impl BridgeChange {
    /// The bridge's ports now (a link dump).
    fn now(host: &mut Netlink, br: &Link) -> Result<BridgeChange> {
        let ports = host.links()?.into_iter().filter(|l| l.master == Some(br.index)).map(|l| l.index).collect();
        Ok(BridgeChange { index: br.index, name: br.name.clone(), ports })
    }

    /// A bridge this ADD has just created: no port before it.
    fn new_bridge(br: &Link) -> BridgeChange {
        BridgeChange { index: br.index, name: br.name.clone(), ports: Vec::new() }
    }

    /// Run `undo` on a socket in the host namespace, unless the bridge is gone (or another link
    /// has its index) or a port joined it since.
    fn undo(&self, what: &str, undo: impl FnOnce(&mut Netlink) -> Result<()>) -> Result<()> {
        let mut nl = Netlink::new()?;
        let links = nl.links()?;
        if !links.iter().any(|l| l.index == self.index && l.name == self.name) {
            return Ok(());
        }
        let joined = self.joined_in(&links);
        if !joined.is_empty() {
            tracing::info!(bridge = %self.name, ?joined, "{what} kept: ports joined the bridge meanwhile");
            return Ok(());
        }
        undo(&mut nl)
    }

    /// The names of the bridge's ports that joined it since (a link dump).
    fn joined(&self, nl: &mut Netlink) -> Result<Vec<String>> {
        Ok(self.joined_in(&nl.links()?).into_iter().map(str::to_string).collect())
    }

    fn joined_in<'a>(&self, links: &'a [Link]) -> Vec<&'a str> {
        links
            .iter()
            .filter(|l| l.master == Some(self.index) && !self.ports.contains(&l.index))
            .map(|l| l.name.as_str())
            .collect()
    }
}

/// The gateway link of VLAN `conf.vlan` on `br`: the veth `<bridge>.<vlan>` in the host
/// namespace, its peer an access port of that VLAN (the bridge's MTU on both ends, the peer's
/// `accept_ra` off, the peer's default VLANs removed unless preserveDefaultVlan), set up. An
/// existing link of that name is used as it is (another ADD made it). One this ADD makes is
/// deleted by its undo; a concurrent ADD making it first is not an error.
fn ensure_vlan_gateway(host: &mut Netlink, br: &Link, conf: &Conf, undo: &mut Undo) -> Result<Link> {
    let name = format!("{}.{}", br.name, conf.vlan);
    if let Some(l) = host.link_by_name(&name)? {
        return Ok(l);
    }
    crate::cni::env::validate_link_name(&name)
        .map_err(|e| anyhow::anyhow!("could not setup vlan-interface {}: {}", go_quote(&name), e.msg))?;
    let peer = steps::veth::random_name();
    let spec =
        VethSpec { name: &name, peer_name: &peer, mtu: Some(br.mtu).filter(|m| *m > 0), mac: None, peer_ns: None };
    if let Err(e) = host.veth_add(&spec) {
        if is_exists(&e) {
            if let Some(l) = host.link_by_name(&name)? {
                return Ok(l);
            }
        }
        return Err(e.context(format!("could not setup vlan-interface {name:?}")));
    }
    let undo_name = name.clone();
    undo.push("vlan gateway veth", move || {
        let mut nl = Netlink::new()?;
        match nl.link_by_name(&undo_name)? {
            Some(l) => nl.link_del(l.index),
            None => Ok(()),
        }
    });
    let port = host.link_by_name(&peer)?.with_context(|| format!("failed to lookup {peer:?}"))?;
    let _ = sysctl::set_if("ipv6", &peer, "accept_ra", "0");
    host.link_set_master_up(port.index, br.index)
        .with_context(|| format!("failed to connect {peer:?} to bridge {}", br.name))?;
    setup_port_vlans(host, &port, conf)?;
    let gw = host.link_by_name(&name)?.with_context(|| format!("could not lookup vlan-interface {name:?}"))?;
    host.link_set_up(gw.index, true).with_context(|| format!("could not set vlan-interface {name:?} up"))?;
    Ok(gw)
}

fn iface(l: &Link, sandbox: Option<String>) -> Interface {
    Interface { name: l.name.clone(), mac: l.mac_string(), sandbox, ..Default::default() }
}

fn first_host(net: &IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) => Some(IpAddr::V4(u32::from(n.network()).checked_add(1)?.into())),
        IpNet::V6(n) => Some(IpAddr::V6(u128::from(n.network()).checked_add(1)?.into())),
    }
}

/// The bridge, created (and set up) when missing; one lookup when it exists and is up (the
/// flags it is given here are all that changes, and they are recorded in the returned link,
/// whose MAC is the one the bridge had before this ADD's port). A bridge this ADD brings up is
/// taken down again by its undo (unless a port joined it meanwhile, see [`BridgeChange`], or it
/// held IPv6 addresses, which going down would flush); one it created stays, as with the
/// reference. The errors are v1.9.1's `ensureBridge`'s (the caller prefixes them,
/// `failed to create bridge "cni0": `).
fn ensure_bridge(host: &mut Netlink, conf: &Conf, undo: &mut Undo) -> Result<Link> {
    let name = conf.bridge_name();
    let q = go_quote(name);
    let mtu = steps::veth::mtu_key(conf.mtu)?;
    let spec = BridgeSpec { name, mtu: (mtu > 0).then_some(mtu), vlan_filtering: conf.uses_vlans() };
    let (mut br, created) = match host.link_by_name(name)? {
        Some(br) => (br, false),
        None => {
            let created = match host.bridge_add(&spec) {
                Ok(()) => true,
                Err(e) if is_exists(&e) => false,
                Err(e) => return Err(go_words(e).context(format!("could not add {q}"))),
            };
            let br = host.link_by_name(name)?.ok_or_else(|| anyhow!("could not lookup {q}: Link not found"))?;
            (br, created)
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        bail!("{q} already exists but is not a bridge");
    }
    if conf.promisc_mode && !br.promisc {
        host.link_set_promisc(br.index, true)
            .map_err(|e| go_words(e).context(format!("could not set promiscuous mode on {q}")))?;
        br.promisc = true;
    }
    // the bridge's link dump carries its IPv6 settings: a write that changes nothing is skipped
    // (the /proc/sys lookup costs more with every network namespace on the node)
    if br.ipv6_accept_ra != Some(0) {
        let _ = sysctl::set_if("ipv6", name, "accept_ra", "0");
    }
    if !br.is_up() {
        // Taking a link down flushes its IPv6 addresses: a bridge that holds some (an operator
        // put them there while it was down) is left up by a failed ADD rather than lose them.
        let before = if created {
            Some(BridgeChange::new_bridge(&br))
        } else if host.addrs(Some(br.index), Some(Family::V6))?.is_empty() {
            Some(BridgeChange::now(host, &br)?)
        } else {
            tracing::debug!(bridge = %name, "has IPv6 addresses: a failed ADD will leave it up");
            None
        };
        host.link_set_up(br.index, true).map_err(go_words)?;
        br.flags |= crate::netlink::consts::IFF_UP;
        if let Some(before) = before {
            undo.push("bridge up", move || before.undo("bridge up", |nl| bridge_down_unless_joined(nl, &before)));
        }
    }
    Ok(br)
}

/// The bridge as it is now; set up again when it went down meanwhile (a concurrent ADD that
/// brought it up and failed takes it down again unless a port had joined when it looked, and
/// ours may have joined just after it looked).
fn bridge_up_now(host: &mut Netlink, br: &Link) -> Result<Option<Link>> {
    let now = host.link_by_index(br.index)?;
    if now.as_ref().is_some_and(|l| !l.is_up()) {
        tracing::info!(bridge = %br.name, "the bridge went down during the ADD: setting it up again");
        host.link_set_up(br.index, true)
            .map_err(|e| go_words(e).context(format!("failed to set {} up", go_quote(&br.name))))?;
    }
    Ok(now)
}

/// The undo of "bridge up": the bridge goes down, then, when a port joined it meanwhile (a
/// concurrent ADD attached its pod after [`BridgeChange::undo`] looked, and may have found the
/// bridge still up), up again. With [`bridge_up_now`] in the other ADD, after its port joined,
/// one of the two always sees the other: the bridge is never left down under a new pod.
fn bridge_down_unless_joined(nl: &mut Netlink, before: &BridgeChange) -> Result<()> {
    nl.link_set_up(before.index, false)?;
    let joined = before.joined(nl)?;
    if !joined.is_empty() {
        tracing::info!(bridge = %before.name, ?joined, "bridge up kept: ports joined the bridge meanwhile");
        nl.link_set_up(before.index, true)?;
    }
    Ok(())
}

/// The port's VLANs, in v1.9.1's words: its default VLANs removed (unless
/// preserveDefaultVlan), the trunk's tagged, the native one (`vlan`, else 1) as PVID untagged.
fn setup_port_vlans(host: &mut Netlink, port: &Link, conf: &Conf) -> Result<()> {
    let trunk = conf.trunk_vids()?;
    if conf.vlan == 0 && trunk.is_empty() {
        return Ok(());
    }
    let index = port.index;
    let q = go_quote(&port.name);
    if !conf.preserve_default_vlan {
        // every VLAN the new port has (the bridge's default_pvid, normally 1), as the
        // reference's removeDefaultVlan lists and deletes them
        let mut remove = || -> Result<()> {
            for v in host.bridge_vlans(index)? {
                host.bridge_vlan_del(index, v.vid)?;
            }
            Ok(())
        };
        remove().map_err(|e| go_words(e).context(format!("failed to remove default vlan on interface {q}")))?;
    }
    let tag = |e: anyhow::Error| go_words(e).context(format!("failed to setup vlan tag on interface {q}"));
    for vid in &trunk {
        host.bridge_vlan_add(index, *vid, false, false).map_err(tag)?;
    }
    let native = if conf.vlan != 0 { conf.vlan as u16 } else { 1 };
    host.bridge_vlan_add(index, native, true, true).map_err(tag)?;
    Ok(())
}

fn del(ctx: &Ctx) -> Result<()> {
    // an unreadable config fails DEL, as in the reference
    let conf: Conf = ctx.plugin_conf()?;
    // The IPAM reservation goes while the kernel deletes the container veth (its RCU waits leave
    // the CPU idle for ~20 ms); it is released whatever happens to the rest, as the reference
    // releases it first. The firewall rules go once the veth is gone, as the reference orders
    // them: no window where the pod's traffic leaves unmasqueraded, and an nftables commit run
    // beside the deletion seemed to slow it (a chain DEL's bridge step 32.7 against 29.4 ms, the
    // means of six noisy bench runs each). They are found by their comments, so this also works
    // when the netns is already gone (the reference then leaks them) or the deletion failed.
    let deleted = steps::link::delete_meanwhile(ctx, |_| steps::ipam::del_if_set(ctx));
    let addrs = deleted.as_deref().unwrap_or_default();
    if conf.mac_spoof_chk {
        if let Err(e) = firewall::macspoof::remove(&ctx.container_id, &ctx.ifname) {
            tracing::warn!("failed to remove spoof check: {e:#}");
        }
    }
    let rules = match conf.ip_masq {
        true => firewall::ipmasq::remove(&firewall::ipmasq::MasqSpec {
            network: &ctx.name,
            container_id: &ctx.container_id,
            ifname: &ctx.ifname,
            ips: addrs,
        }),
        false => Ok(()),
    };
    let addrs = deleted?;
    rules?;
    tracing::debug!(ifname = %ctx.ifname, ?addrs, "container veth deleted, and its firewall rules and reservation (or already gone)");
    Ok(())
}

/// GC (the reference has none): IPAM reservations, masquerade rules and spoof-check chains of this
/// network's attachments not in `cni.dev/valid-attachments` (spoof-check chains without a network,
/// the reference's, once their port is gone). An absent list means "unknown": nothing is removed.
fn gc(ctx: &Ctx) -> Result<()> {
    // GC uses no key of the plugin's own: one that does not decode (`"mtu": "x"`) stops nothing,
    // and then the masquerade and spoof-check rules of this network are collected whatever
    // ipMasq and macspoofchk say (each is found by this network's comment)
    let conf: Option<Conf> = steps::gc::plugin_conf(ctx);
    let mut errors = steps::gc::GcErrors::default();
    if let Some(valid) = steps::gc::ipam(ctx, &mut errors)? {
        if conf.as_ref().is_none_or(|c| c.ip_masq) {
            steps::ipmasq::gc(ctx, &valid, &mut errors);
        }
        if conf.as_ref().is_none_or(|c| c.mac_spoof_chk) {
            // this network's chains are found by their comment (networks can share a bridge);
            // ownerless ones (the reference's) only once their port is gone
            let links = Netlink::new()?.links()?;
            let port_exists = |veth: &str| links.iter().any(|l| l.name == veth);
            errors.note("macspoofchk", firewall::macspoof::gc(&ctx.name, &valid, port_exists));
        }
    }
    errors.finish()
}

fn check(ctx: &Ctx) -> Result<()> {
    let conf: Conf = ctx.plugin_conf()?;
    // the reference calls IPAM CHECK even in L2 mode (where it fails); we only call it when set
    steps::ipam::check_if_set(ctx)?;
    let prev = steps::check::require_prev(ctx)?;
    let ns = steps::ns::open(ctx)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&ns)?;

    // the bridge
    let br_name = conf.bridge_name();
    let br = host.link_by_name(br_name)?.with_context(|| format!("bridge {br_name} not found"))?;
    if br.kind.as_deref() != Some("bridge") {
        bail!("Error: Bridge {br_name} is not a bridge");
    }
    // the bridge must be in prevResult, outside any sandbox, as the reference's CHECK wants it
    let Some(itf) = prev.interfaces.iter().find(|i| i.name == br_name) else {
        bail!("prevResult has no interface for bridge {br_name}");
    };
    if itf.sandbox.as_deref().is_some_and(|s| !s.is_empty()) {
        bail!("Interface {br_name} should not be in sandbox");
    }
    // The bridge's MAC is not compared with prevResult's (the reference's CHECK compares it):
    // a bridge whose MAC was never pinned (no gateway address) takes the lowest MAC of its
    // ports, so a later port, another pod's or anyone's, changes it, and the earlier pods'
    // CHECK would fail though nothing of theirs changed (reference-features.md: a reference
    // bug not to copy).
    if br.promisc != conf.promisc_mode {
        bail!("bridge {br_name} promiscuous mode is {}, config says {}", br.promisc, conf.promisc_mode);
    }

    // the container veth and its peer on the bridge
    let words = steps::check::VethWords { prefix: "", kind: "veth" };
    let (idx, c) = steps::check::container_veth(ctx, &mut cont, prev, words)?;
    let peer = c.link.context("container veth has no peer")?;
    // the host end: a prevResult interface outside the sandbox that is the container veth's
    // peer and a port of the bridge; its MAC, when prevResult gives one, must be the link's
    let mut found = false;
    for i in prev.interfaces.iter().filter(|i| i.sandbox.is_none() && i.name != br_name) {
        let Some(h) = host.link_by_name(&i.name)? else { continue };
        if h.index != peer || h.master != Some(br.index) {
            continue;
        }
        if let (Some(want), Some(have)) = (i.mac.as_deref(), h.mac_string()) {
            if !want.eq_ignore_ascii_case(&have) {
                bail!("Interface {} Mac doesn't match: {want} not found (it has {have})", i.name);
            }
        }
        found = true;
        break;
    }
    if !found {
        bail!("CNI_IFNAME {} is not a veth attached to bridge {br_name}", ctx.ifname);
    }
    steps::check::addrs_and_routes(&mut cont, &ctx.ifname, idx, prev)
}

fn status(ctx: &Ctx) -> Result<()> {
    // the reference decodes its whole config first: a key of the wrong type fails STATUS
    let _conf: Conf = ctx.plugin_conf()?;
    steps::ipam::status_if_set(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::IpConfig;

    fn ipam(ips: &[(&str, Option<&str>)], routes: &[&str]) -> CniResult {
        CniResult {
            ips: ips
                .iter()
                .map(|(a, gw)| IpConfig {
                    address: a.parse().unwrap(),
                    gateway: gw.map(|g| g.parse().unwrap()),
                    interface: Some(0),
                })
                .collect(),
            routes: routes.iter().map(|d| Route::new(d.parse().unwrap(), None)).collect(),
            ..Default::default()
        }
    }

    fn shown<T: std::fmt::Display>(v: impl IntoIterator<Item = T>) -> Vec<String> {
        v.into_iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn l3_plan_without_gateway_keeps_ipam_as_is() {
        let mut r = ipam(&[("198.18.0.5/24", None)], &[]);
        assert!(plan_l3(&mut r, false, false).unwrap().is_empty());
        assert_eq!(r.ips[0].interface, Some(2), "addresses belong to the container veth");
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn l3_plan_gateway_is_the_first_host_and_deduplicated() {
        let mut r =
            ipam(&[("198.18.0.5/24", None), ("198.18.0.6/24", None), ("fd00:1::5/64", Some("fd00:1::fe"))], &[]);
        let gws = plan_l3(&mut r, true, false).unwrap();
        assert_eq!(shown(&gws), ["198.18.0.1/24", "fd00:1::fe/64"]);
        assert_eq!(shown(r.ips.iter().filter_map(|i| i.gateway)), ["198.18.0.1", "198.18.0.1", "fd00:1::fe"]);
        assert!(r.routes.is_empty(), "isGateway alone adds no route");
    }

    #[test]
    fn l3_plan_default_gateway_adds_missing_default_routes_per_family() {
        // both families, no default route yet: one per family, via that family's gateway
        let mut r = ipam(&[("198.18.0.5/24", None), ("fd00:1::5/64", None)], &["198.19.0.0/16"]);
        plan_l3(&mut r, true, true).unwrap();
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|x| format!("{} via {}", x.dst, x.gw.map(|g| g.to_string()).unwrap_or_default()))
            .collect();
        assert_eq!(routes, ["198.19.0.0/16 via ", "0.0.0.0/0 via 198.18.0.1", "::/0 via fd00:1::1"]);
        // an IPAM default route is kept and not doubled; a family without addresses gets none
        let mut r = ipam(&[("198.18.0.5/24", Some("198.18.0.254"))], &["0.0.0.0/0"]);
        let gws = plan_l3(&mut r, true, true).unwrap();
        assert_eq!(shown(&gws), ["198.18.0.254/24"]);
        assert_eq!(shown(r.routes.iter().map(|x| x.dst)), ["0.0.0.0/0"]);
    }

    fn trunk_conf(v: serde_json::Value) -> Conf {
        serde_json::from_value(serde_json::json!({ "vlantrunk": v })).unwrap()
    }

    #[test]
    fn vlan_trunk_is_read_as_the_reference_reads_it() {
        // a range and an id in one entry are both taken; repeats collapse; sorted
        let c = trunk_conf(serde_json::json!([{"id": 5, "minid": 1, "maxid": 3}, {"id": 2}, {}]));
        assert_eq!(c.trunk_vids().unwrap(), [1, 2, 3, 5]);
        assert!(c.uses_vlans());
        // an empty list: no trunk VLANs, but the bridge filters VLANs (the key is not null)
        let c = trunk_conf(serde_json::json!([]));
        assert!(c.trunk_vids().unwrap().is_empty());
        assert!(c.uses_vlans());
        let c = trunk_conf(serde_json::Value::Null);
        assert!(!c.uses_vlans());
        for (v, msg) in [
            (serde_json::json!([{"minid": 0, "maxid": 3}]), "incorrect trunk minID parameter"),
            (serde_json::json!([{"minid": 1, "maxid": 4095}]), "incorrect trunk maxID parameter"),
            (serde_json::json!([{"minid": 9, "maxid": 3}]), "minID is greater than maxID in trunk parameter"),
            (
                serde_json::json!([{"maxid": 3}]),
                "minID and maxID should be configured simultaneously, minID is missing",
            ),
            (
                serde_json::json!([{"minid": 3}]),
                "minID and maxID should be configured simultaneously, maxID is missing",
            ),
            (serde_json::json!([{"id": 4095}]), "incorrect trunk id parameter"),
        ] {
            let e = CniError::from_anyhow(&trunk_conf(v.clone()).trunk_vids().unwrap_err());
            assert_eq!((e.code, e.msg.as_str()), (7, msg), "{v}");
        }
    }

    /// The undo of a failed ADD's change to the bridge (gateway address, bridge up) runs only
    /// while no port joined the bridge since the change, and not on a bridge that is gone.
    #[test]
    fn bridge_changes_are_undone_only_while_no_port_joined() {
        let _k = crate::netlink::fake::FakeKernel::install(&[]);
        let mut nl = Netlink::new().unwrap();
        nl.bridge_add(&BridgeSpec { name: "br9", mtu: None, vlan_filtering: false }).unwrap();
        let br = nl.link_by_name("br9").unwrap().unwrap();
        let port = |nl: &mut Netlink, name: &str, peer: &str| {
            nl.veth_add(&VethSpec { name, peer_name: peer, mtu: None, mac: None, peer_ns: None }).unwrap();
            let l = nl.link_by_name(name).unwrap().unwrap();
            nl.link_set_master(l.index, Some(br.index)).unwrap();
        };
        port(&mut nl, "p0", "p1");
        let ran = std::cell::Cell::new(0);
        let undo = |c: &BridgeChange| {
            c.undo("test", |_| {
                ran.set(ran.get() + 1);
                Ok(())
            })
            .unwrap()
        };
        // p0 was a port before the change: undone
        let before = BridgeChange::now(&mut nl, &br).unwrap();
        undo(&before);
        assert_eq!(ran.get(), 1);
        // a port joined since: kept; a new bridge counts every port as joined
        port(&mut nl, "p2", "p3");
        undo(&before);
        undo(&BridgeChange::new_bridge(&br));
        assert_eq!(ran.get(), 1);
        // the bridge is gone: nothing to undo
        nl.link_del(br.index).unwrap();
        undo(&BridgeChange { ports: vec![], ..before.clone() });
        assert_eq!(ran.get(), 1);
    }

    /// The rollback of "bridge up" sets the bridge up again when a port joined it after the
    /// rollback looked (a concurrent ADD that saw the bridge up just before it went down), and
    /// leaves it down otherwise.
    #[test]
    fn bridge_up_is_taken_back_unless_a_port_joined_meanwhile() {
        let _k = crate::netlink::fake::FakeKernel::install(&[]);
        let mut nl = Netlink::new().unwrap();
        nl.bridge_add(&BridgeSpec { name: "br8", mtu: None, vlan_filtering: false }).unwrap();
        let br = nl.link_by_name("br8").unwrap().unwrap();
        nl.link_set_up(br.index, true).unwrap();
        let before = BridgeChange::new_bridge(&br);
        let up = |nl: &mut Netlink| nl.link_by_index(br.index).unwrap().unwrap().is_up();
        bridge_down_unless_joined(&mut nl, &before).unwrap();
        assert!(!up(&mut nl), "no port: the bridge stays down");
        nl.link_set_up(br.index, true).unwrap();
        nl.veth_add(&VethSpec { name: "q0", peer_name: "q1", mtu: None, mac: None, peer_ns: None }).unwrap();
        let q0 = nl.link_by_name("q0").unwrap().unwrap();
        nl.link_set_master(q0.index, Some(br.index)).unwrap();
        bridge_down_unless_joined(&mut nl, &before).unwrap();
        assert!(up(&mut nl), "a port joined: the bridge is up again");
    }

    #[test]
    fn first_host_of_a_subnet() {
        assert_eq!(first_host(&"198.18.4.0/22".parse().unwrap()), Some("198.18.4.1".parse().unwrap()));
        assert_eq!(first_host(&"fd00::/64".parse().unwrap()), Some("fd00::1".parse().unwrap()));
        assert_eq!(first_host(&"255.255.255.255/32".parse().unwrap()), None);
    }
}
