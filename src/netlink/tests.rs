//! Real-kernel tests (root): each builds its own world of network namespaces, removed by a
//! Drop guard; nothing is created in the machine's root namespace. Addresses come from
//! 198.18.0.0/15 and fd00::/8.

use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;

use super::*;
use crate::sys::netns::{NetNs, NsError};
use crate::sys::sysctl;

/// Named netnses created with `ip netns add`, deleted on drop.
struct World {
    names: Vec<String>,
}

impl World {
    fn new() -> Option<World> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        Some(World { names: Vec::new() })
    }

    fn ns(&mut self, tag: &str) -> NetNs {
        let name = format!("cnl-{tag}-{}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(st.success(), "ip netns add {name}");
        self.names.push(name.clone());
        NetNs::open(&format!("/run/netns/{name}")).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn errno(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<NlError>().map_or(-1, |n| n.errno)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn netns_open_enter_and_errors() {
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("open");
    match NetNs::open("/run/netns/cnl-does-not-exist") {
        Err(NsError::NotExist(p)) => assert!(p.ends_with("cnl-does-not-exist")),
        other => panic!("expected NotExist, got {other:?}"),
    }
    let file = std::env::temp_dir().join(format!("cnl-regular-{}", std::process::id()));
    std::fs::write(&file, "x").unwrap();
    let res = NetNs::open(file.to_str().unwrap());
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(res, Err(NsError::NotNetns(_))), "{res:?}");
    // /proc/<pid>/ns/net (procfs magic) is accepted too.
    assert!(NetNs::open(&format!("/proc/{}/ns/net", std::process::id())).is_ok());

    assert!(NetNs::current().unwrap().is_current().unwrap());
    assert!(!ns.is_current().unwrap());
    {
        let _g = ns.enter().unwrap();
        assert!(ns.is_current().unwrap());
    }
    assert!(!ns.is_current().unwrap());
    let inside = ns.run(|| ns.is_current()).unwrap();
    assert!(inside);
    // An error inside run still restores.
    assert!(ns.run(|| -> anyhow::Result<()> { anyhow::bail!("boom") }).is_err());
    assert!(!ns.is_current().unwrap());
}

/// The namespace each thread remembers (`sys::netns`) is the one the kernel says it is in, at
/// every step: entered, nested, restored, after an anonymous namespace, in a new thread.
#[test]
fn netns_remembered_namespace_follows_the_kernel() {
    use crate::sys::netns::current_id;
    use std::os::unix::fs::MetadataExt;
    fn kernel() -> (u64, u64) {
        let m = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        (m.dev(), m.ino())
    }
    fn id(ns: &NetNs) -> (u64, u64) {
        let m = std::fs::File::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&ns.fd())))
            .unwrap()
            .metadata()
            .unwrap();
        (m.dev(), m.ino())
    }
    let Some(mut w) = World::new() else { return };
    let (a, b) = (w.ns("herea"), w.ns("hereb"));
    let home = kernel();
    assert_eq!(current_id(), Some(home));
    {
        let _ga = a.enter().unwrap();
        assert_eq!((current_id(), kernel()), (Some(id(&a)), id(&a)));
        assert_eq!(id(&NetNs::current().unwrap()), id(&a));
        {
            let _gb = b.enter().unwrap();
            assert_eq!((current_id(), kernel()), (Some(id(&b)), id(&b)));
        }
        assert_eq!((current_id(), kernel()), (Some(id(&a)), id(&a)));
        // a thread started in `a` knows it is in `a`, and moving it does not move this one
        let t = std::thread::spawn({
            let b = NetNs::open(b.path()).unwrap();
            move || {
                let start = (current_id(), kernel());
                let _g = b.enter().unwrap();
                (start, current_id(), kernel())
            }
        })
        .join()
        .unwrap();
        assert_eq!(t, ((Some(id(&a)), id(&a)), Some(id(&b)), id(&b)));
        assert_eq!((current_id(), kernel()), (Some(id(&a)), id(&a)));
    }
    assert_eq!((current_id(), kernel()), (Some(home), home));
    let anon = NetNs::new_anonymous().unwrap();
    assert_ne!(id(&anon), home);
    assert_eq!((current_id(), kernel()), (Some(home), home));
    assert_eq!(id(&NetNs::current().unwrap()), home);
    drop(anon);
    // a move behind the module's back leaves the remembered namespace stale until forget()
    // (why clippy.toml disallows setns elsewhere); on a thread of its own, which then ends
    let a_path = a.path().to_string();
    let (stale, fresh, id_a) = std::thread::spawn(move || {
        let a = NetNs::open(&a_path).unwrap();
        let home = current_id();
        #[allow(clippy::disallowed_methods)]
        nix::sched::setns(a.fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let stale = current_id() == home;
        crate::sys::netns::forget();
        (stale, current_id() == Some(kernel()), id(&a))
    })
    .join()
    .unwrap();
    assert!(stale && fresh, "stale before forget: {stale}, right after: {fresh}");
    assert_eq!(kernel(), home);
    assert_ne!(id_a, home);
}

#[test]
fn sysctl_inside_netns() {
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("sysctl");
    let mut nl = Netlink::in_netns(&ns).unwrap();
    // An interface name with a dot must work through set_if/get_if.
    nl.veth_add(&VethSpec { name: "v.1", peer_name: "v.2", mtu: None, mac: None, peer_ns: None }).unwrap();
    ns.run(|| {
        assert_eq!(sysctl::get("net.ipv4.ip_forward")?, "0");
        sysctl::set("net/ipv4/ip_forward", "1")?;
        assert_eq!(sysctl::get("net.ipv4.ip_forward")?, "1");
        sysctl::set_if("ipv4", "v.1", "arp_notify", "1")?;
        assert_eq!(sysctl::get_if("ipv4", "v.1", "arp_notify")?, "1");
        assert_eq!(sysctl::get_if("ipv4", "v.2", "arp_notify")?, "0");
        assert_eq!(sysctl::get_if("ipv6", "v.1", "accept_dad")?, "1");
        let e = sysctl::get_if("ipv4", "nope0", "arp_notify").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        Ok(())
    })
    .unwrap();
    // A second, fresh namespace does not see the change.
    let other = w.ns("sysctl2");
    assert_eq!(other.run(|| Ok(sysctl::get("net.ipv4.ip_forward")?)).unwrap(), "0");
}

/// The settings read and written over rtnetlink equal what /proc/sys shows: a link's IPv6
/// accept_ra in its dump, arp_notify set through IFLA_INET_CONF, and the forwarding switches
/// read through netconf.
#[test]
fn ip_settings_over_rtnetlink_match_proc_sys() {
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("ipconf");
    let mut nl = Netlink::in_netns(&ns).unwrap();
    nl.veth_add(&VethSpec { name: "v.1", peer_name: "v.2", mtu: None, mac: None, peer_ns: None }).unwrap();
    let get = |nl: &mut Netlink, n: &str| nl.link_by_name(n).unwrap().unwrap();
    let v1 = get(&mut nl, "v.1");
    let proc_ra = ns.run(|| Ok(sysctl::get_if("ipv6", "v.1", "accept_ra")?)).unwrap();
    assert_eq!(v1.ipv6_accept_ra.map(|v| v.to_string()), Some(proc_ra));
    ns.run(|| Ok(sysctl::set_if("ipv6", "v.1", "accept_ra", "0")?)).unwrap();
    assert_eq!(get(&mut nl, "v.1").ipv6_accept_ra, Some(0));
    assert_eq!(get(&mut nl, "v.2").ipv6_accept_ra, v1.ipv6_accept_ra, "the peer keeps the default");

    nl.link_set_arp_notify(v1.index).unwrap();
    let notify = |n: &'static str| ns.run(move || Ok(sysctl::get_if("ipv4", n, "arp_notify")?)).unwrap();
    assert_eq!((notify("v.1"), notify("v.2")), ("1".to_string(), "0".to_string()));
    // an unknown setting is refused, not ignored
    assert!(nl.link_set_ipv4_conf(v1.index, &[(4000, 1)]).is_err());

    for (v6, key) in [(false, "net.ipv4.ip_forward"), (true, "net.ipv6.conf.all.forwarding")] {
        assert!(!nl.forwarding(v6).unwrap(), "{key} starts off");
        ns.run(|| Ok(sysctl::set(key, "1")?)).unwrap();
        assert!(nl.forwarding(v6).unwrap(), "{key} on");
    }
}

#[test]
fn links_veth_bridge_across_namespaces() {
    let Some(mut w) = World::new() else { return };
    let host_ns = w.ns("lhost");
    let cont_ns = w.ns("lcont");
    let mut h = Netlink::in_netns(&host_ns).unwrap();
    let mut c = Netlink::in_netns(&cont_ns).unwrap();
    let mac = parse_mac("02:42:c6:12:00:02").unwrap();

    // Container end created from the container socket, peer placed in the host netns.
    let spec =
        VethSpec { name: "eth0", peer_name: "veth0h", mtu: Some(1400), mac: Some(mac), peer_ns: Some(host_ns.fd()) };
    c.veth_add(&spec).unwrap();
    let e = c.veth_add(&spec).unwrap_err();
    assert!(socket::is_exists(&e), "{e:#}");
    let ce = c.link_by_name("eth0").unwrap().unwrap();
    assert_eq!((ce.kind.as_deref(), ce.mtu, ce.mac), (Some("veth"), 1400, Some(mac)));
    assert!(ce.link_netnsid.is_some(), "peer is in another netns");
    let he = h.link_by_name("veth0h").unwrap().unwrap();
    assert_eq!(he.mtu, 1400);
    assert_eq!(he.link, Some(ce.index));
    assert_eq!(ce.link, Some(he.index));
    assert!(c.link_by_name("veth0h").unwrap().is_none());
    assert_eq!(c.link_by_index(ce.index).unwrap().unwrap().name, "eth0");
    assert!(c.links().unwrap().iter().any(|l| l.name == "lo"));

    // Bridge with the host end as a port; hairpin/isolated read back.
    h.bridge_add(&BridgeSpec { name: "cnlbr0", mtu: Some(1400), vlan_filtering: false }).unwrap();
    let br = h.link_by_name("cnlbr0").unwrap().unwrap();
    assert_eq!((br.kind.as_deref(), br.bridge_vlan_filtering), (Some("bridge"), Some(false)));
    h.link_set_master(he.index, Some(br.index)).unwrap();
    h.bridge_port_set(he.index, Some(true), Some(true)).unwrap();
    let port = h.link_by_index(he.index).unwrap().unwrap();
    assert_eq!((port.master, port.port_hairpin, port.port_isolated), (Some(br.index), Some(true), Some(true)));
    h.bridge_port_set(he.index, Some(false), None).unwrap();
    let port = h.link_by_index(he.index).unwrap().unwrap();
    assert_eq!((port.port_hairpin, port.port_isolated), (Some(false), Some(true)));
    // No VLAN filtering on this bridge: the port lists no VLANs (and the dump works).
    assert!(h.bridge_vlans(he.index).unwrap().iter().all(|v| v.vid == 1));
    h.link_set_master(he.index, None).unwrap();
    assert_eq!(h.link_by_index(he.index).unwrap().unwrap().master, None);

    // Up both ends: the container end becomes operationally up.
    h.link_set_up(he.index, true).unwrap();
    c.link_set_up(ce.index, true).unwrap();
    assert!(c.wait_oper_up(ce.index, &[10, 20, 50, 100, 200, 500]).unwrap());
    assert!(c.link_by_index(ce.index).unwrap().unwrap().is_up());

    // Attribute changes.
    c.link_set_mtu(ce.index, 1300).unwrap();
    let mac2 = [2, 0x42, 0xc6, 0x12, 0, 9];
    c.link_set_mac(ce.index, mac2).unwrap();
    c.link_set_promisc(ce.index, true).unwrap();
    let l = c.link_by_index(ce.index).unwrap().unwrap();
    assert_eq!((l.mtu, l.mac_string().as_deref(), l.promisc), (1300, Some("02:42:c6:12:00:09"), true));
    c.link_set_promisc(ce.index, false).unwrap();
    assert!(!c.link_by_index(ce.index).unwrap().unwrap().promisc);

    // Rename (must be down first).
    c.link_set_up(ce.index, false).unwrap();
    assert!(!c.link_by_index(ce.index).unwrap().unwrap().is_up());
    c.link_set_name(ce.index, "net1").unwrap();
    assert!(c.link_by_name("eth0").unwrap().is_none());
    assert_eq!(c.link_by_name("net1").unwrap().unwrap().index, ce.index);

    // Move a link between namespaces.
    h.veth_add(&VethSpec { name: "mv0", peer_name: "mv1", mtu: None, mac: None, peer_ns: None }).unwrap();
    let mv = h.link_by_name("mv0").unwrap().unwrap();
    h.link_set_netns(mv.index, cont_ns.fd()).unwrap();
    assert!(h.link_by_name("mv0").unwrap().is_none());
    assert!(c.link_by_name("mv0").unwrap().is_some());

    // Delete; the peer goes with it; not-found errors afterwards.
    c.link_del(ce.index).unwrap();
    assert!(c.link_by_index(ce.index).unwrap().is_none());
    assert!(h.link_by_name("veth0h").unwrap().is_none());
    let e = c.link_del(ce.index).unwrap_err();
    assert!(socket::is_not_found(&e), "{e:#}");
    assert_eq!(errno(&e), 19);
    let e = c.link_set_up(999_999, true).unwrap_err();
    assert!(socket::is_not_found(&e), "{e:#}");
    assert!(c.link_by_index(999_999).unwrap().is_none());
    assert!(c.wait_oper_up(999_999, &[1]).is_err());
}

#[test]
fn addrs_routes_neighbours() {
    let Some(mut w) = World::new() else { return };
    let host_ns = w.ns("rhost");
    let cont_ns = w.ns("rcont");
    let mut h = Netlink::in_netns(&host_ns).unwrap();
    let mut c = Netlink::in_netns(&cont_ns).unwrap();
    let echoed = c
        .veth_add(&VethSpec { name: "eth0", peer_name: "vh0", mtu: None, mac: None, peer_ns: Some(host_ns.fd()) })
        .unwrap();
    let eth0 = c.link_by_name("eth0").unwrap().unwrap();
    let vh0 = h.link_by_name("vh0").unwrap().unwrap().index;
    // Linux ≥ 6.2 echoes the new end: the same link a lookup finds
    if crate::sys::kernel_at_least(6, 2) {
        let e = echoed.expect("the kernel echoes the new veth");
        assert_eq!((e.index, e.name.as_str(), e.mac, e.link), (eth0.index, "eth0", eth0.mac, Some(vh0)));
    }
    let eth0 = eth0.index;
    cont_ns.run(|| Ok(sysctl::set_if("ipv6", "eth0", "accept_dad", "0")?)).unwrap();
    h.link_set_up(vh0, true).unwrap();
    c.link_set_up(eth0, true).unwrap();

    // Addresses.
    c.addr_add(eth0, net("198.18.5.2/24")).unwrap();
    c.addr_add(eth0, net("fd00:5::2/64")).unwrap();
    let e = c.addr_add(eth0, net("198.18.5.2/24")).unwrap_err();
    assert!(socket::is_exists(&e), "{e:#}");
    let v4 = c.addrs(Some(eth0), Some(Family::V4)).unwrap();
    assert_eq!(v4.iter().map(|a| a.addr).collect::<Vec<_>>(), vec![net("198.18.5.2/24")]);
    assert_eq!(v4[0].scope, 0);
    let v6 = c.addrs(Some(eth0), Some(Family::V6)).unwrap();
    assert!(v6.iter().any(|a| a.addr == net("fd00:5::2/64")), "{v6:?}");
    assert!(v6.iter().all(|a| a.addr.addr().is_ipv6()));
    let lo = c.link_by_name("lo").unwrap().unwrap().index;
    c.link_set_up(lo, true).unwrap();
    let all = c.addrs(None, None).unwrap();
    assert!(all.iter().any(|a| a.addr == net("127.0.0.1/8")));
    // The broadcast address is set like the reference's (ip addr shows "brd 198.18.5.255").
    let out =
        Command::new("ip").args(["-n", &host_ns_name(&cont_ns), "-4", "addr", "show", "dev", "eth0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("brd 198.18.5.255"));

    // Routes: default via gw in main, a table > 255 route with metric, replace with metrics.
    let gw = ip("198.18.5.1");
    c.route_add(&RouteSpec { family: Some(Family::V4), gw: Some(gw), oif: Some(eth0), ..Default::default() }).unwrap();
    let main = c.routes(Family::V4, Some(254)).unwrap();
    let def = main.iter().find(|r| r.dst == Some(net("0.0.0.0/0"))).expect("default route");
    assert_eq!((def.gw, def.oif, def.protocol), (Some(gw), Some(eth0), Some(3)));
    let t1000 = RouteSpec {
        dst: Some(net("198.19.0.0/16")),
        gw: Some(gw),
        oif: Some(eth0),
        table: Some(1000),
        metric: Some(100),
        ..Default::default()
    };
    c.route_add(&t1000).unwrap();
    let e = c.route_add(&t1000).unwrap_err();
    assert!(socket::is_exists(&e), "{e:#}");
    let rs = c.routes(Family::V4, Some(1000)).unwrap();
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!((rs[0].dst, rs[0].table, rs[0].metric, rs[0].gw), (t1000.dst, Some(1000), Some(100), Some(gw)));
    assert!(c.routes(Family::V4, None).unwrap().iter().any(|r| r.table == Some(1000)));
    let link_route = RouteSpec {
        dst: Some(net("198.19.7.0/24")),
        oif: Some(eth0),
        scope: Some(consts::RT_SCOPE_LINK),
        src: Some(ip("198.18.5.2")),
        ..Default::default()
    };
    c.route_add(&link_route).unwrap();
    c.route_replace(&RouteSpec { mtu: Some(1280), advmss: Some(1200), ..link_route.clone() }).unwrap();
    let r = c.routes(Family::V4, Some(254)).unwrap().into_iter().find(|r| r.dst == link_route.dst).unwrap();
    assert_eq!((r.mtu, r.advmss, r.scope, r.src), (Some(1280), Some(1200), Some(253), link_route.src));
    c.route_del(&link_route).unwrap();
    let e = c.route_del(&link_route).unwrap_err();
    assert!(socket::is_not_found(&e), "{e:#}");
    c.route_del(&RouteSpec { dst: t1000.dst, table: Some(1000), ..Default::default() }).unwrap();
    assert!(c.routes(Family::V4, Some(1000)).unwrap().is_empty());

    // IPv6 ECMP by appending a second next hop.
    let mp = |g: &str| RouteSpec {
        dst: Some(net("fd00:77::/64")),
        gw: Some(ip(g)),
        oif: Some(eth0),
        metric: Some(1024),
        ..Default::default()
    };
    c.route_add(&mp("fd00:5::1")).unwrap();
    c.route_append(&mp("fd00:5::3")).unwrap();
    let mut gws: Vec<_> = c
        .routes(Family::V6, Some(254))
        .unwrap()
        .into_iter()
        .filter(|r| r.dst == Some(net("fd00:77::/64")))
        .map(|r| r.gw.unwrap())
        .collect();
    gws.sort();
    assert_eq!(gws, vec![ip("fd00:5::1"), ip("fd00:5::3")]);

    // An unreachable gateway is refused with the kernel's ext-ack text.
    let e = c
        .route_add(&RouteSpec { dst: Some(net("198.19.9.0/24")), gw: Some(ip("198.18.99.1")), ..Default::default() })
        .unwrap_err();
    let nl = e.downcast_ref::<NlError>().unwrap();
    assert_eq!(nl.errno, 101, "{nl}");
    assert!(nl.msg.to_lowercase().contains("gateway"), "ext-ack text missing: {nl}");

    // Neighbours.
    let mac = [2, 0, 0, 0, 0, 0x42];
    c.neigh_add(eth0, ip("198.18.5.9"), mac, true).unwrap();
    c.neigh_add(eth0, ip("198.18.5.9"), mac, true).unwrap(); // replace semantics
    c.neigh_add(eth0, ip("fd00:5::9"), mac, false).unwrap();
    let ns = c.neighs(Some(eth0)).unwrap();
    let n4 = ns.iter().find(|n| n.ip == ip("198.18.5.9")).expect("v4 neighbour");
    assert_eq!((n4.mac, n4.state), (Some(mac), consts::NUD_PERMANENT));
    assert!(ns.iter().any(|n| n.ip == ip("fd00:5::9") && n.mac == Some(mac)));
    c.neigh_del(eth0, ip("198.18.5.9")).unwrap();
    assert!(!c.neighs(Some(eth0)).unwrap().iter().any(|n| n.ip == ip("198.18.5.9")));
    let e = c.neigh_del(eth0, ip("198.18.5.9")).unwrap_err();
    assert!(socket::is_not_found(&e), "{e:#}");

    // Address removal.
    c.addr_del(eth0, net("198.18.5.2/24")).unwrap();
    assert!(c.addrs(Some(eth0), Some(Family::V4)).unwrap().is_empty());
    let e = c.addr_del(eth0, net("198.18.5.2/24")).unwrap_err();
    assert!(socket::is_not_found(&e), "{e:#}");
}

/// The `ip netns` name of a namespace opened from /run/netns/<name>.
fn host_ns_name(ns: &NetNs) -> String {
    ns.path().rsplit('/').next().unwrap().to_string()
}

#[test]
fn other_kinds_details_and_attrs() {
    let Some(mut w) = World::new() else { return };
    let host_ns = w.ns("khost");
    let cont_ns = w.ns("kcont");
    let mut h = Netlink::in_netns(&host_ns).unwrap();
    let mut c = Netlink::in_netns(&cont_ns).unwrap();
    h.veth_add(&VethSpec { name: "up0", peer_name: "up1", mtu: None, mac: None, peer_ns: None }).unwrap();
    let up0 = h.link_by_name("up0").unwrap().unwrap().index;

    // macvlan created from the host socket directly in the container netns, temp name, then renamed.
    let mac = [2, 0x11, 0x22, 0x33, 0x44, 0x55];
    let kind = LinkKind::Macvlan { mode: MacvlanMode::Bridge, bcqueuelen: None };
    let spec = LinkSpec {
        parent: Some(up0),
        mtu: Some(1400),
        mac: Some(mac),
        netns: Some(cont_ns.fd()),
        ..LinkSpec::new("vethtmp01", kind)
    };
    h.link_add(&spec).unwrap();
    assert!(h.link_by_name("vethtmp01").unwrap().is_none());
    let mv = c.link_by_name("vethtmp01").unwrap().unwrap();
    c.link_set_name(mv.index, "eth0").unwrap();
    let d = c.link_details(mv.index).unwrap().unwrap();
    assert_eq!(
        (d.link.name.as_str(), d.link.kind.as_deref(), d.link.mac, d.link.mtu),
        ("eth0", Some("macvlan"), Some(mac), 1400)
    );
    assert_eq!(d.macvlan_mode, Some(MacvlanMode::Bridge as u32));
    assert_eq!(MacvlanMode::from_u32(4), Some(MacvlanMode::Bridge));
    assert!(c.link_details(999_999).unwrap().is_none());

    // ifb with txqueuelen 0.
    h.link_add(&LinkSpec { txqlen: Some(0), ..LinkSpec::new("cnlifb0", LinkKind::Ifb) }).unwrap();
    let ifb = h.link_by_name("cnlifb0").unwrap().unwrap();
    assert_eq!((ifb.kind.as_deref(), ifb.txqlen), (Some("ifb"), 0));
    let e = h.link_add(&LinkSpec::new("cnlifb0", LinkKind::Ifb)).unwrap_err();
    assert!(socket::is_exists(&e), "{e:#}");

    // alias / txqueuelen / allmulticast.
    h.link_set_alias(up0, "hostdev0").unwrap();
    h.link_set_txqlen(up0, 500).unwrap();
    h.link_set_allmulti(up0, true).unwrap();
    let d = h.link_details(up0).unwrap().unwrap();
    assert_eq!((d.alias.as_deref(), d.link.txqlen, d.allmulti), (Some("hostdev0"), 500, true));
    h.link_set_alias(up0, "").unwrap();
    h.link_set_allmulti(up0, false).unwrap();
    let d = h.link_details(up0).unwrap().unwrap();
    assert_eq!((d.alias, d.allmulti), (None, false));

    // Kinds this kernel may lack: either created and read back, or refused with EOPNOTSUPP.
    let tries = [
        LinkSpec::new("cnld0", LinkKind::Dummy),
        LinkSpec::new("cnlvrf0", LinkKind::Vrf { table: 1001 }),
        LinkSpec { parent: Some(up0), ..LinkSpec::new("cnlv.10", LinkKind::Vlan { id: 10 }) },
        LinkSpec {
            parent: Some(up0),
            ..LinkSpec::new("cnlipv0", LinkKind::Ipvlan { mode: IpvlanMode::L3, flag: IpvlanFlag::Bridge })
        },
    ];
    for spec in tries {
        match h.link_add(&spec) {
            Ok(()) => {
                let l = h.link_by_name(spec.name).unwrap().unwrap();
                let d = h.link_details(l.index).unwrap().unwrap();
                match spec.kind {
                    LinkKind::Vrf { table } => assert_eq!(d.vrf_table, Some(table)),
                    LinkKind::Vlan { id } => assert_eq!(d.vlan_id, Some(id)),
                    LinkKind::Ipvlan { mode, .. } => assert_eq!(d.ipvlan_mode, Some(mode as u16)),
                    _ => assert_eq!(d.link.kind.as_deref(), Some("dummy")),
                }
            }
            Err(e) => assert_eq!(errno(&e), 95, "{e:#}"),
        }
    }
}

#[test]
fn rules_add_list_delete() {
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("rules");
    let mut nl = Netlink::in_netns(&ns).unwrap();
    let r4 = RuleSpec {
        src: Some(net("198.18.0.5/32")),
        table: Some(1000),
        priority: Some(100),
        ..RuleSpec::new(Family::V4)
    };
    let mark = RuleSpec {
        fwmark: Some(0x10),
        fwmask: Some(0xff),
        table: Some(200),
        priority: Some(200),
        ..RuleSpec::new(Family::V4)
    };
    let r6 = RuleSpec {
        dst: Some(net("fd00::/64")),
        iif: Some("lo".into()),
        table: Some(300),
        priority: Some(300),
        ..RuleSpec::new(Family::V6)
    };
    for r in [&r4, &mark, &r6] {
        nl.rule_add(r).unwrap();
    }
    let e = nl.rule_add(&r4).unwrap_err();
    assert!(socket::is_exists(&e), "{e:#}");
    // errors name the rule as `ip rule` prints it (regression: `failed to add rule RuleSpec {
    // family: V4, … }` reached the CNI error)
    assert!(format!("{e:#}").starts_with("failed to add rule from 198.18.0.5 lookup 1000 pref 100: "), "{e:#}");
    let e = nl.rule_del(&RuleSpec { priority: Some(7), invert: true, ..r6.clone() }).unwrap_err();
    assert!(
        format!("{e:#}").starts_with("failed to delete rule not from all to fd00::/64 iif lo lookup 300 pref 7: "),
        "{e:#}"
    );
    let v4 = nl.rules(Family::V4).unwrap();
    assert!(v4.contains(&r4), "{v4:?}");
    assert!(v4.contains(&mark), "{v4:?}");
    // The kernel's default rules are there too (local, main, default).
    assert!(v4.iter().any(|r| r.table == Some(255) && r.priority.unwrap_or(0) == 0));
    let v6 = nl.rules(Family::V6).unwrap();
    assert!(v6.contains(&r6), "{v6:?}");
    nl.rule_del(&r4).unwrap();
    nl.rule_del(&RuleSpec { priority: Some(200), ..RuleSpec::new(Family::V4) }).unwrap();
    let v4 = nl.rules(Family::V4).unwrap();
    assert!(!v4.iter().any(|r| r.priority == Some(100) || r.priority == Some(200)), "{v4:?}");
    let e = nl.rule_del(&r4).unwrap_err();
    assert!(socket::is_not_found(&e), "{e:#}");
}

#[test]
fn tap_persistent_in_netns() {
    use crate::sys::tun::{create_persistent, TapSpec};
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("tap");
    let mut nl = Netlink::in_netns(&ns).unwrap();
    let spec =
        TapSpec { name: "vethtap0", tap: true, multi_queue: true, vnet_hdr: true, owner: Some(0), group: Some(0) };
    let name = ns.run(|| Ok(create_persistent(&spec)?)).unwrap();
    assert_eq!(name, "vethtap0");
    // Persistent: still there after the fd is closed; created inside the netns only.
    let l = nl.link_by_name("vethtap0").unwrap().expect("tap exists in the netns");
    assert_eq!(l.kind.as_deref(), Some("tun"));
    assert!(Netlink::new().unwrap().link_by_name("vethtap0").unwrap().is_none());
    let pat =
        ns.run(|| Ok(create_persistent(&TapSpec { name: "cnltap%d", owner: None, group: None, ..spec })?)).unwrap();
    assert_eq!(pat, "cnltap0");
    nl.link_del(l.index).unwrap();
    assert!(nl.link_by_name("vethtap0").unwrap().is_none());
    assert!(create_persistent(&TapSpec { name: "", ..spec }).is_err());
}

#[test]
fn anonymous_netns_and_dad_settle() {
    use std::time::{Duration, Instant};
    let Some(mut w) = World::new() else { return };
    let host_ns = w.ns("dhost");
    let anon = NetNs::new_anonymous().unwrap();
    assert!(!anon.is_current().unwrap());
    let mut h = Netlink::in_netns(&host_ns).unwrap();
    let mut a = Netlink::in_netns(&anon).unwrap();
    assert!(a.link_by_name("lo").unwrap().is_some());
    // A veth between the named and the anonymous namespace, DAD enabled.
    h.veth_add(&VethSpec { name: "dh0", peer_name: "da0", mtu: None, mac: None, peer_ns: Some(anon.fd()) }).unwrap();
    let dh0 = h.link_by_name("dh0").unwrap().unwrap().index;
    let da0 = a.link_by_name("da0").unwrap().unwrap().index;

    // veth_add creates both ends down with the kernel's default txqueuelen (as v1.9.1).
    let l = h.link_by_index(dh0).unwrap().unwrap();
    assert!(!l.is_up() && l.txqlen == 1000, "{l:?}");
    let p = a.link_by_index(da0).unwrap().unwrap();
    assert!(!p.is_up() && p.txqlen == 1000, "{p:?}");

    // Peer down: the address stays tentative, but the wait ends at once (not oper-up).
    a.link_set_up(da0, true).unwrap();
    a.addr_add(da0, net("fd00:9::2/64")).unwrap();
    let t = Instant::now();
    a.settle_addrs(da0, Duration::from_secs(5)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(a.addrs(Some(da0), Some(Family::V6)).unwrap().iter().any(|x| x.flags & addr::IFA_F_TENTATIVE != 0));

    // Peer up: DAD completes and no address is tentative afterwards.
    h.link_set_up(dh0, true).unwrap();
    assert!(a.wait_oper_up(da0, &[10, 20, 50, 100, 200, 500]).unwrap());
    a.settle_addrs(da0, Duration::from_secs(10)).unwrap();
    assert!(a.addrs(Some(da0), Some(Family::V6)).unwrap().iter().all(|x| x.flags & addr::IFA_F_TENTATIVE == 0));

    // The same address on the other end fails DAD.
    h.addr_add(dh0, net("fd00:9::2/64")).unwrap();
    let e = h.settle_addrs(dh0, Duration::from_secs(10)).unwrap_err();
    assert!(format!("{e:#}").contains("DADFAILED"), "{e:#}");

    // Links move into and out of the anonymous namespace by fd.
    a.link_set_netns(da0, host_ns.fd()).unwrap();
    assert!(h.link_by_name("da0").unwrap().is_some());
}

#[test]
fn large_dumps_span_many_datagrams() {
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("many");
    let mut nl = Netlink::in_netns(&ns).unwrap();
    for i in 0..60 {
        let (a, b) = (format!("ma{i}"), format!("mb{i}"));
        nl.veth_add(&VethSpec { name: &a, peer_name: &b, mtu: None, mac: None, peer_ns: None }).unwrap();
        let idx = nl.link_by_name(&a).unwrap().unwrap().index;
        nl.addr_add(idx, format!("198.18.{i}.1/24").parse().unwrap()).unwrap();
    }
    let links = nl.links().unwrap();
    assert_eq!(links.len(), 121, "lo + 60 pairs");
    assert!((0..60).all(|i| links.iter().any(|l| l.name == format!("mb{i}"))));
    assert_eq!(nl.addrs(None, Some(Family::V4)).unwrap().len(), 60);
}

#[test]
fn tc_tbf_ingress_redirect() {
    use super::tc::{handle, Tbf};
    let Some(mut w) = World::new() else { return };
    let ns = w.ns("tc");
    let mut nl = Netlink::in_netns(&ns).unwrap();
    nl.veth_add(&VethSpec { name: "tv0", peer_name: "tv1", mtu: None, mac: None, peer_ns: None }).unwrap();
    nl.link_add(&LinkSpec { txqlen: Some(0), ..LinkSpec::new("tifb0", LinkKind::Ifb) }).unwrap();
    let tv0 = nl.link_by_name("tv0").unwrap().unwrap().index;
    let ifb = nl.link_by_name("tifb0").unwrap().unwrap().index;

    let tbf = Tbf::from_bits(8_000_000, 80_000, 25.0);
    nl.qdisc_add_tbf(tv0, handle(1, 0), consts::TC_H_ROOT, &tbf).unwrap();
    nl.qdisc_add_tbf(ifb, handle(1, 0), consts::TC_H_ROOT, &tbf).unwrap();
    nl.qdisc_add_ingress(tv0).unwrap();
    nl.filter_add_redirect(tv0, handle(0xffff, 0), 1, ifb).unwrap();

    let qs = nl.qdiscs(Some(tv0)).unwrap();
    let root = qs.iter().find(|q| q.kind == "tbf").expect("tbf on tv0");
    assert_eq!((root.handle, root.parent), (handle(1, 0), consts::TC_H_ROOT));
    let got = root.tbf.unwrap();
    assert_eq!((got.rate, got.limit), (tbf.rate, tbf.limit));
    assert!(got.buffer.abs_diff(tbf.buffer) <= 1, "{got:?} vs {tbf:?}");
    assert!(qs.iter().any(|q| q.kind == "ingress" && q.handle == handle(0xffff, 0)));
    // The kernel state reads like the reference's (`tc` text as seen after its bandwidth ADD).
    let tc = |args: &[&str]| {
        let out = Command::new("ip").args(["netns", "exec", &host_ns_name(&ns), "tc"]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(tc(&["qdisc", "show", "dev", "tifb0"]).contains("rate 8Mbit burst 10000b lat 25ms"));
    let f = tc(&["filter", "show", "dev", "tv0", "parent", "ffff:"]);
    assert!(f.contains("flowid 1:1") && f.contains("match 00000000/00000000 at 0"), "{f}");
    assert!(f.contains("action order 1: mirred (Egress Redirect to device tifb0) stolen"), "{f}");
    assert!(f.contains("action order 2: mirred (Egress Redirect to device tifb0) pass"), "{f}");
    // read back: the u32 key node names the redirect target of both actions, with its classid
    let filters = nl.filters(tv0, handle(0xffff, 0)).unwrap();
    let node = filters.iter().find(|f| !f.redirects.is_empty()).expect("u32 node with actions");
    assert_eq!((node.kind.as_str(), node.prio, node.protocol), ("u32", 1, consts::ETH_P_ALL));
    assert_eq!((node.classid, node.redirects.as_slice()), (Some(handle(1, 1)), &[ifb, ifb][..]));
    assert!(filters.iter().all(|f| f.kind == "u32" && f.prio == 1), "{filters:?}");
    // a target that is gone reads as 0; a parent or link with nothing attached as no filter
    nl.link_del(ifb).unwrap();
    let filters = nl.filters(tv0, handle(0xffff, 0)).unwrap();
    assert!(filters.iter().any(|f| f.redirects == [0, 0]), "{filters:?}");
    assert_eq!(nl.filters(tv0, handle(0x10, 0)).unwrap(), vec![]);
    assert_eq!(nl.filters(9999, handle(0xffff, 0)).unwrap(), vec![]);

    nl.qdisc_change_tbf(tv0, handle(1, 0), consts::TC_H_ROOT, &Tbf::from_bits(16_000_000, 80_000, 25.0)).unwrap();
    let q = nl.qdiscs(Some(tv0)).unwrap().into_iter().find(|q| q.kind == "tbf").unwrap();
    assert_eq!(q.tbf.unwrap().rate, 2_000_000);
    nl.qdisc_del(tv0, 0, consts::TC_H_ROOT).unwrap();
    assert!(!nl.qdiscs(Some(tv0)).unwrap().iter().any(|q| q.kind == "tbf"));
    let e = nl.qdisc_del(tv0, 0, consts::TC_H_ROOT).unwrap_err();
    assert!(errno(&e) > 0, "{e:#}");
}
