//! ptp behaviour against our binary: the container reaches the host side and back (v4, v6), the
//! routes and host addresses are as the reference lays them out, DEL cleans up (twice, and
//! after the netns is gone), and a failed ADD releases its lease. ipMasq: an outside namespace
//! with no route back is reached only thanks to masquerading; the backend is the reference's
//! default (iptables when an `iptables` binary on PATH works, else nftables) unless a key or the
//! environment says otherwise; DEL finds the rules without the netns; GC removes stale ones.

use crate::bridge::result_ips;
use crate::harness::plugin::Call;
use crate::harness::*;
use serde_json::json;

fn host_veths(w: &World) -> Vec<String> {
    w.host.link_names().into_iter().filter(|n| n.starts_with("veth")).collect()
}

#[test]
fn ptp_container_reaches_host_and_back() {
    let w = World::new("ptpping", 1, Impl::Ours);
    let s = Subnets::alloc();
    let c = ptp_conf(&w, &s, "ptpping", Some(1400));
    let r = w.add(&c).run().ok();

    // result: [host veth, container veth], ips on interface 1
    let ifs = r["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 2, "{r:#}");
    let veth = ifs[0]["name"].as_str().expect("host veth");
    assert!(veth.starts_with("veth"), "{veth}");
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], w.c(0).path_str());
    for ip in r["ips"].as_array().expect("ips") {
        assert_eq!(ip["interface"], 1);
    }
    assert_eq!(result_ips(&r), vec![format!("{}/24", s.ip4(2)), format!("{}/64", s.ip6(2))]);

    // kernel: both ends with the MTU; gateways as host-side /32 and /128; host route to the container
    let hv = w.host.link(veth).expect("host veth");
    assert_eq!(hv["mtu"], 1400);
    assert_eq!(ifs[0]["mac"], hv["address"]);
    let cv = w.c(0).link("eth0").expect("container eth0");
    assert_eq!(cv["mtu"], 1400);
    assert_eq!(ifs[1]["mac"], cv["address"]);
    let mut haddrs = w.host.addrs(veth);
    haddrs.sort();
    assert_eq!(haddrs, vec![format!("{}/32", s.ip4(1)), format!("{}/128", s.ip6(1))]);
    let hroutes = w.host.routes();
    assert!(
        hroutes.iter().any(|x| x["dst"] == s.ip4(2) && x["dev"] == veth),
        "host route to the container: {hroutes:?}"
    );
    let croutes = w.c(0).routes();
    assert!(croutes.iter().any(|x| x["dst"] == "default" && x["gateway"] == s.ip4(1)), "{croutes:?}");
    assert!(
        croutes.iter().any(|x| x["dst"] == s.ip4(1) && x["scope"] == "link"),
        "on-link route to the gateway: {croutes:?}"
    );
    assert!(
        croutes.iter().any(|x| x["dst"] == s.net4() && x["gateway"] == s.ip4(1)),
        "subnet via the gateway instead of the connected route: {croutes:?}"
    );
    assert_eq!(w.host.sysctl("net/ipv4/ip_forward").as_deref(), Some("1"));
    assert_eq!(w.host.sysctl("net/ipv6/conf/all/forwarding").as_deref(), Some("1"));

    // traffic both ways, both families (host-side v6 gateway may still be in DAD: retries)
    assert!(w.c(0).ping(&s.ip4(1), 2), "container -> host v4");
    assert!(w.host.ping(&s.ip4(2), 2), "host -> container v4");
    assert!(w.c(0).ping(&s.ip6(1), 10), "container -> host v6");
    assert!(w.host.ping(&s.ip6(2), 3), "host -> container v6");

    w.check(&c, &r).run().ok();

    w.del(&c).run().ok();
    assert!(w.c(0).link("eth0").is_none());
    assert!(host_veths(&w).is_empty());
    assert!(!w.host.routes().iter().any(|x| x["dst"] == s.ip4(2)), "host route gone");
    assert!(w.leases("ptpping").is_empty(), "{:?}", w.store("ptpping"));
    assert!(w.c(0).routes().is_empty());
    w.del(&c).run().ok();
}

#[test]
fn ptp_del_after_netns_is_gone() {
    let mut w = World::new("ptpgone", 1, Impl::Ours);
    let s = Subnets::alloc();
    let c = ptp_conf(&w, &s, "ptpgone", None);
    w.add(&c).run().ok();
    assert_eq!(w.leases("ptpgone").len(), 2);
    let path = w.c(0).path_str();
    w.containers[0].delete();
    w.del(&c).netns_path(&path).run().ok();
    assert!(w.leases("ptpgone").is_empty());
    assert!(wait_for(5, || host_veths(&w).is_empty()), "the veth dies with the netns (asynchronously)");
    w.del(&c).netns_path(&path).run().ok();
}

#[test]
fn ptp_add_existing_ifname_fails_and_releases_the_lease() {
    let w = World::new("ptpexist", 1, Impl::Ours);
    let s = Subnets::alloc();
    let c = ptp_conf(&w, &s, "ptpexist", None);
    w.c(0).must(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let e = w.add(&c).run().err();
    assert!(!e.msg.is_empty());
    assert!(w.leases("ptpexist").is_empty(), "IPAM was released: {:?}", w.store("ptpexist"));
    assert!(host_veths(&w).is_empty());
    assert!(w.host.addrs("lo").is_empty(), "nothing added on the host");
    assert!(w.c(0).link("eth0").is_some(), "pre-existing link untouched");
}

/// ptp's veth pair too keeps the kernel's default txqueuelen on both ends (v1.9.1's
/// `ip.SetupVeth`); the Debian 1.1.1 oracle's ends have 0.
#[test]
fn ptp_veth_ends_keep_the_kernel_default_txqueuelen() {
    each_impl("ptpqlen", 1, &["ptp"], |w, which, tag| {
        let s = Subnets::alloc();
        let c = ptp_conf(w, &s, tag, None);
        let r = w.add(&c).run().ok();
        let host = r["interfaces"][0]["name"].as_str().expect("host veth");
        let want = if which.flavor() == Flavor::CniMulti { 1000 } else { 0 };
        let got = (crate::bridge::txqlen(w.c(0), "eth0"), crate::bridge::txqlen(&w.host, host));
        assert_eq!(got, (want, want), "{which:?}: container, host end");
        w.del(&c).run().ok();
    });
}

// ---------------------------------------------------------------- ipMasq

/// Masquerade state in the host netns: (an iptables `CNI-` nat chain exists, the nftables table
/// `inet cni_plugins_masquerade` holds a masquerade rule).
fn masq_state(w: &World) -> (bool, bool) {
    let ipt = ["iptables-save", "ip6tables-save"].iter().any(|t| w.host.must(&[t, "-t", "nat"]).contains(":CNI-"));
    let nft = w.host.exec(&["nft", "list", "table", "inet", "cni_plugins_masquerade"]);
    (ipt, String::from_utf8_lossy(&nft.stdout).contains("masquerade comment"))
}

/// An empty directory to use as PATH: no `iptables` (nor anything else) to be found.
fn empty_path(w: &World) -> String {
    let d = w.tmp.join("empty-path");
    std::fs::create_dir_all(&d).expect("empty PATH dir");
    d.to_string_lossy().into_owned()
}

/// Container 0 behind ptp; container 1 is an "outside" namespace on a veth from the host
/// (`<v4b>.1`/`<v6b>::1` on the host, `.2`/`::2` outside) with no route to the container subnet.
fn outside_world(tag: &str) -> (World, Subnets) {
    let w = World::new(tag, 2, Impl::Ours);
    let s = Subnets::alloc();
    let out = w.c(1);
    w.host_nodad();
    w.host.must(&["ip", "link", "add", "vout", "type", "veth", "peer", "name", "vin", "netns", &out.name]);
    w.host.must(&["ip", "addr", "add", &format!("{}.1/24", s.v4b), "dev", "vout"]);
    w.host.must(&["ip", "addr", "add", &format!("{}::1/64", s.v6b), "dev", "vout", "nodad"]);
    w.host.must(&["ip", "link", "set", "vout", "up"]);
    out.must(&["ip", "addr", "add", &format!("{}.2/24", s.v4b), "dev", "vin"]);
    out.must(&["ip", "addr", "add", &format!("{}::2/64", s.v6b), "dev", "vin", "nodad"]);
    out.must(&["ip", "link", "set", "vin", "up"]);
    (w, s)
}

#[test]
fn ptp_ipmasq_reaches_a_namespace_with_no_route_back() {
    let (w, s) = outside_world("ptpmasq");
    let (o4, o6) = (format!("{}.2", s.v4b), format!("{}::2", s.v6b));
    let mut c = ptp_conf(&w, &s, "ptpmasq", None);
    // without masquerading the outside cannot answer (it has no route to the container subnet)
    w.add(&c).run().ok();
    w.c(0).settle();
    assert!(w.c(0).ping(&s.ip4(1), 2), "the host side is reachable");
    assert!(!w.c(0).ping(&o4, 1), "no route back: unreachable without ipMasq");
    assert!(!w.c(0).ping(&o6, 1), "no route back: unreachable without ipMasq (v6)");
    w.del(&c).run().ok();
    // with ipMasq (the default backend) the replies come back to the host's address
    c["ipMasq"] = json!(true);
    let r = w.add(&c).run().ok();
    w.c(0).settle();
    assert_eq!(masq_state(&w), (true, false), "default backend on a node with iptables: iptables");
    assert!(w.c(0).ping(&o4, 3), "masqueraded v4 reaches the outside");
    assert!(w.c(0).ping(&o6, 10), "masqueraded v6 reaches the outside");
    w.check(&c, &r).run().ok();
    w.del(&c).run().ok();
    assert_eq!(masq_state(&w), (false, false), "DEL removes the masquerade rules");
    assert!(!w.c(0).ping(&s.ip4(1), 1), "container link gone");
    w.del(&c).run().ok();
}

/// (ipMasqBackend, PATH without iptables, CNI_MULTI_FIREWALL_BACKEND, expected (iptables, nftables))
type MasqCase = (Option<&'static str>, bool, Option<&'static str>, (bool, bool));

/// The reference's default backend rule, with the key and the environment override winning:
/// (ipMasqBackend, PATH without iptables, CNI_MULTI_FIREWALL_BACKEND) → (iptables, nftables).
#[test]
fn ptp_ipmasq_backend_choice() {
    let (w, s) = outside_world("ptpmback");
    let o4 = format!("{}.2", s.v4b);
    let nopath = empty_path(&w);
    let cases: [MasqCase; 5] = [
        (None, false, None, (true, false)),             // iptables usable: iptables
        (None, true, None, (false, true)),              // no iptables on PATH: nftables
        (Some("nftables"), false, None, (false, true)), // explicit key
        (Some("iptables"), true, None, (true, false)),  // explicit key, binary off PATH
        (Some("iptables"), false, Some("nftables"), (false, true)), // the env override wins
    ];
    for (key, no_ipt, env, want) in cases {
        let mut c = ptp_conf(&w, &s, "ptpmback", None);
        c["ipMasq"] = json!(true);
        if let Some(k) = key {
            c["ipMasqBackend"] = json!(k);
        }
        fn with<'a>(call: Call<'a>, path: Option<&str>, env: Option<&str>) -> Call<'a> {
            let call = match path {
                Some(p) => call.env("PATH", p),
                None => call,
            };
            match env {
                Some(e) => call.env("CNI_MULTI_FIREWALL_BACKEND", e),
                None => call,
            }
        }
        let path = no_ipt.then_some(nopath.as_str());
        with(w.add(&c), path, env).run().ok();
        let label = format!("key {key:?}, PATH without iptables {no_ipt}, env {env:?}");
        assert_eq!(masq_state(&w), want, "{label}");
        w.c(0).settle();
        assert!(w.c(0).ping(&o4, 3), "masqueraded: {label}");
        with(w.del(&c), path, env).run().ok();
        assert_eq!(masq_state(&w), (false, false), "DEL cleans up: {label}");
    }
}

#[test]
fn ptp_ipmasq_del_without_netns_and_gc() {
    let mut w = World::new("ptpmgc", 3, Impl::Ours);
    let subnets = [Subnets::alloc(), Subnets::alloc()];
    // one interface (and subnet) per backend in each container
    for (s, (backend, ifname)) in subnets.iter().zip([("iptables", "eth0"), ("nftables", "eth1")]) {
        let mut c = ptp_conf(&w, s, "ptpmgc", None);
        c["ipMasq"] = json!(true);
        c["ipMasqBackend"] = json!(backend);
        c["cniVersion"] = json!("1.1.0");
        for i in 0..2 {
            w.add(&c).container(i).cid(&format!("{backend}-c{i}")).ifname(ifname).run().ok();
        }
        // GC naming c0 only: c1's rules go, c0's stay
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": format!("{backend}-c0"), "ifname": ifname}]);
        w.cni("GC", &gc).run().ok();
        let rules = format!(
            "{}{}",
            w.host.must(&["iptables-save", "-t", "nat"]),
            String::from_utf8_lossy(&w.host.exec(&["nft", "list", "ruleset"]).stdout)
        );
        assert!(rules.contains(&format!("{backend}-c0")), "{backend}: the valid attachment keeps its rules\n{rules}");
        assert!(!rules.contains(&format!("{backend}-c1")), "{backend}: the stale attachment's rules are gone\n{rules}");
        w.del(&c).container(1).cid(&format!("{backend}-c1")).ifname(ifname).run().ok();
        assert!(if backend == "iptables" { masq_state(&w).0 } else { masq_state(&w).1 }, "{backend}");
    }
    // DEL after the netns is gone: the rules are found by their comment / chain name
    let path = w.c(0).path_str();
    w.containers[0].delete();
    for (s, (backend, ifname)) in subnets.iter().zip([("iptables", "eth0"), ("nftables", "eth1")]) {
        let mut c = ptp_conf(&w, s, "ptpmgc", None);
        c["ipMasq"] = json!(true);
        c["ipMasqBackend"] = json!(backend);
        w.del(&c).netns_path(&path).cid(&format!("{backend}-c0")).ifname(ifname).run().ok();
    }
    assert_eq!(masq_state(&w), (false, false), "DEL without the netns removed the rules of both backends");
    assert!(w.leases("ptpmgc").is_empty(), "{:?}", w.store("ptpmgc"));
}

/// static's route `mtu`/`advmss`/`priority` are Go ints (v1.9.1's types.Route): negative ones are
/// accepted and printed in the result as given, and, as the reference's netlink library does with
/// values that are not positive, put nothing on the route in the kernel.
#[test]
fn ptp_static_route_with_negative_mtu_and_priority_sets_none() {
    let w = World::new("ptpneg", 1, Impl::Ours);
    let s = Subnets::alloc();
    let c = json!({"cniVersion": "1.0.0", "name": "ptpneg", "type": "ptp", "ipam": {"type": "static",
        "addresses": [{"address": format!("{}/24", s.ip4(2)), "gateway": s.ip4(1)}],
        "routes": [{"dst": format!("{}.0/24", s.v4b), "mtu": -5, "advmss": -7, "priority": -1}]}});
    let r = w.add(&c).run().ok();
    assert_eq!(r["routes"], json!([{"dst": format!("{}.0/24", s.v4b), "mtu": -5, "advmss": -7, "priority": -1}]));
    let routes = w.c(0).routes();
    let rt = routes.iter().find(|x| x["dst"] == format!("{}.0/24", s.v4b)).expect("the static route");
    assert_eq!(
        (rt["gateway"].as_str(), rt.get("metric"), rt.get("metrics")),
        (Some(s.ip4(1).as_str()), None, None),
        "{rt}"
    );
    w.del(&c).run().ok();
}

/// A route's `mtu` and `advmss` (CNI 1.1 route fields) are installed on the kernel route. v1.9.1's
/// ConfigureIface builds its routes from dst, gw, priority, table and scope only, so its routes
/// carry neither; the Debian 1.1.1 oracle has no such fields: its route carries none either.
#[test]
fn ptp_route_mtu_and_advmss_are_installed_where_the_reference_ignores_them() {
    each_impl("ptpmss", 1, &["ptp", "static"], |w, which, tag| {
        let s = Subnets::alloc();
        let dst = format!("{}.0/24", s.v4b);
        let c = json!({"cniVersion": "1.0.0", "name": tag, "type": "ptp", "ipam": {"type": "static",
            "addresses": [{"address": format!("{}/24", s.ip4(2)), "gateway": s.ip4(1)}],
            "routes": [{"dst": dst, "mtu": 1400, "advmss": 1360}]}});
        w.add(&c).run().ok();
        let shown = w.c(0).must(&["ip", "route", "show", &dst]);
        assert!(shown.contains(&format!("via {}", s.ip4(1))), "{which:?}: {shown}");
        match which {
            Impl::Ours => assert!(shown.contains("mtu 1400 advmss 1360"), "ours: {shown}"),
            Impl::Reference => assert!(!shown.contains("mtu") && !shown.contains("advmss"), "reference: {shown}"),
        }
        w.del(&c).run().ok();
    });
}

/// A config `dns` replaces the IPAM's DNS in bridge and ptp when v1.9.1's `dnsConfSet` says it is
/// set: a list that is present, even empty (Go decodes `[]` as a non-nil slice), counts; so
/// `"nameservers": []` gives a result without DNS in both implementations (ours kept the IPAM's).
/// A `null` list or an empty `domain` sets nothing: the IPAM's DNS is kept, as by v1.9.1 and the
/// Debian 1.1.1 oracle's ptp (its bridge always takes the config's `dns`).
#[test]
fn ptp_and_bridge_config_dns_with_an_empty_list_replaces_the_ipam_dns() {
    each_impl("dnsset", 1, &["ptp", "bridge", "static"], |w, which, tag| {
        let s = Subnets::alloc();
        let ipam = json!({"type": "static", "dns": {"nameservers": ["198.18.0.53"], "search": ["ipam.test"]},
            "addresses": [{"address": format!("{}/24", s.ip4(2)), "gateway": s.ip4(1)}]});
        let empty = |r: &serde_json::Value| r.get("dns").is_none_or(|d| d.as_object().is_some_and(|o| o.is_empty()));
        for plugin in ["ptp", "bridge"] {
            for (dns, set) in [
                (json!({"nameservers": []}), true),
                (json!({"search": [], "domain": ""}), true),
                (json!({"domain": ""}), false),
                (json!({"nameservers": null, "options": null}), false),
            ] {
                let mut c = json!({"cniVersion": "1.0.0", "name": tag, "type": plugin, "ipam": ipam, "dns": dns});
                if plugin == "bridge" {
                    c["bridge"] = json!("cmdns0");
                    c["isGateway"] = json!(true);
                }
                let r = w.add(&c).run().ok();
                // the Debian 1.1.1 bridge (older than dnsConfSet there) always takes the config's
                if set || (which == Impl::Reference && plugin == "bridge") {
                    assert!(empty(&r), "{which:?} {plugin} {dns}: {r}");
                } else {
                    assert_eq!(r["dns"], ipam["dns"], "{which:?} {plugin} {dns}: {r}");
                }
                w.del(&c).run().ok();
            }
        }
    });
}

/// ptp with a /32 and a /128 IPAM address gives a working pod: there is no connected route to
/// replace, so the container gets the on-link route to the gateway and its address via the
/// gateway, the host its /32 (/128) route, and traffic flows both ways in both families. The
/// reference fails the ADD (999, `failed to delete route …: no such process`: v1.9.1's
/// setupContainerVeth fails on any error deleting the connected route, which a /32 never had).
#[test]
fn ptp_host_address_ipam_gives_a_working_pod_where_the_reference_fails() {
    each_impl("ptp32", 1, &["ptp", "static"], |w, which, tag| {
        let s = Subnets::alloc();
        let c = json!({"cniVersion": "1.0.0", "name": tag, "type": "ptp", "ipam": {"type": "static", "addresses": [
            {"address": format!("{}/32", s.ip4(5)), "gateway": s.ip4(1)},
            {"address": format!("{}/128", s.ip6(5)), "gateway": s.ip6(1)}]}});
        let out = w.add(&c).run();
        if which == Impl::Reference {
            let e = out.err_code(999);
            assert!(e.msg.contains("failed to delete route") && e.msg.contains("no such process"), "{e:?}");
            w.del(&c).run().ok();
            return;
        }
        let r = out.ok();
        let v6: std::net::IpAddr = s.ip6(5).parse().unwrap();
        assert_eq!(result_ips(&r), vec![format!("{}/32", s.ip4(5)), format!("{v6}/128")]);
        assert!(w.c(0).ping(&s.ip4(1), 2), "container -> host v4");
        assert!(w.host.ping(&s.ip4(5), 2), "host -> container v4");
        assert!(w.c(0).ping(&s.ip6(1), 10), "container -> host v6");
        assert!(w.host.ping(&s.ip6(5), 3), "host -> container v6");
        w.check(&c, &r).run().ok();
        w.del(&c).run().ok();
        assert!(w.c(0).link("eth0").is_none() && host_veths(w).is_empty());
        assert!(!w.host.routes().iter().any(|x| x["dst"] == s.ip4(5)), "host route gone");
    });
}

/// ptp CHECK failures in the reference's words (v1.9.1's and the Debian 1.1.1 oracle's): another
/// MAC in the prevResult, `ptp: Interface eth0 Mac … doesn't match container Mac: …`; an eth0
/// that is no veth, `Error: Container interface eth0 not of type veth/p2p`; the route to the
/// address's subnet gone, `Failed to find Gateway <gw> for interface eth0`; eth0 gone, `ptp:
/// Container Interface name in prevResult: eth0 not found`. Ours said `Interface …`, `… not of
/// type veth`, `Failed to find ip route 198.18.0.0/24 on interface eth0` and `interface eth0 not
/// found`.
#[test]
fn ptp_check_failures_are_worded_as_the_reference() {
    each_impl("ptpckw", 1, &["ptp", "static"], |w, which, tag| {
        let s = Subnets::alloc();
        let c = json!({"cniVersion": "1.0.0", "name": tag, "type": "ptp", "ipam": {"type": "static",
            "addresses": [{"address": format!("{}/24", s.ip4(2)), "gateway": s.ip4(1)}]}});
        let r = w.add(&c).run().ok();
        let mac = r["interfaces"][1]["mac"].as_str().unwrap().to_string();
        let msg = |prev: &serde_json::Value| w.check(&c, prev).run().err_code(999).msg;
        let mut other = r.clone();
        other["interfaces"][1]["mac"] = json!("02:00:00:00:00:01");
        let want = format!("ptp: Interface eth0 Mac 02:00:00:00:00:01 doesn't match container Mac: {mac}");
        assert_eq!(msg(&other), want, "{which:?}");
        w.c(0).must(&["ip", "route", "del", &s.net4()]);
        assert_eq!(msg(&r), format!("Failed to find Gateway {} for interface eth0", s.ip4(1)), "{which:?}");
        w.c(0).must(&["ip", "link", "del", "eth0"]);
        assert_eq!(msg(&r), "ptp: Container Interface name in prevResult: eth0 not found", "{which:?}");
        w.c(0).must(&["ip", "link", "add", "eth0", "type", "bridge"]);
        assert_eq!(msg(&r), "Error: Container interface eth0 not of type veth/p2p", "{which:?}");
        w.c(0).must(&["ip", "link", "del", "eth0"]);
        w.del(&c).run().ok();
    });
}

/// An IPAM address without a gateway is refused before anything is made: code 7, no veth, no
/// lease left. The reference fails with 999 after making the veth pair and addressing the
/// container end (`failed to add IP addr (&net.IPNet{IP:net.IP(nil), …}) to veth: numerical
/// result out of range`), which it leaves.
#[test]
fn ptp_ipam_address_without_gateway_is_code_7_and_makes_nothing() {
    for imp in [Impl::Reference, Impl::Ours] {
        if imp.flavor() != Flavor::CniMulti && !have_reference("ptp") {
            continue;
        }
        let w = World::new("ptpnogw", 1, imp);
        let s = Subnets::alloc();
        let c = json!({"cniVersion": "1.0.0", "name": "ptpnogw", "type": "ptp",
            "ipam": {"type": "static", "addresses": [{"address": format!("{}/24", s.ip4(5))}]}});
        let out = w.add(&c).run();
        if imp.flavor() != Flavor::CniMulti {
            assert_eq!(out.err().code, 999, "the reference");
            w.del(&c).run().ok();
            continue;
        }
        let e = out.err_code(7);
        assert_eq!(e.msg, format!("ptp needs a gateway for {}/24 from IPAM", s.ip4(5)));
        assert!(w.c(0).link("eth0").is_none(), "container veth made");
        assert!(host_veths(&w).is_empty(), "host veth made: {:?}", w.host.link_names());
        w.del(&c).run().ok();
    }
}

/// An IPv6 address on a link whose MTU is below IPv6's minimum (the kernel then has no IPv6
/// settings for it): as v1.9.1's ConfigureIface, the unreadable `disable_ipv6` is passed over
/// and the ADD fails on `keep_addr_on_down`, in its words, leaving nothing (ours said `failed to
/// enable IPv6 on "eth0": …`).
#[test]
fn ptp_ipv6_below_the_ipv6_minimum_mtu_fails_on_keep_addr_on_down() {
    let w = World::new("ptpmtu6", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut c = ptp_conf(&w, &s, "ptpmtu6", None);
    c["mtu"] = json!(600);
    let e = w.add(&c).run().err_code(999);
    assert_eq!(
        e.msg,
        "failed to enable keep_addr_on_down for interface \"eth0\": open /proc/sys/net/ipv6/conf/eth0/keep_addr_on_down: no such file or directory"
    );
    assert!(w.c(0).link("eth0").is_none(), "container veth left");
    assert!(host_veths(&w).is_empty(), "host veth left: {:?}", w.host.link_names());
    assert!(w.leases("ptpmtu6").is_empty(), "lease left: {:?}", w.store("ptpmtu6"));
    w.del(&c).run().ok();
}

/// An `ipMasqBackend` the reference does not know fails the ADD in v1.9.1's words
/// (SetupIPMasqForNetworks: `unknown ipmasq backend "bogus"`), leaving nothing.
#[test]
fn ptp_unknown_ipmasq_backend_is_worded_as_v1_9_1() {
    let w = World::new("ptpmqbe", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut c = ptp_conf(&w, &s, "ptpmqbe", None);
    c["ipMasq"] = json!(true);
    c["ipMasqBackend"] = json!("bogus");
    let e = w.add(&c).run().err_code(999);
    assert_eq!(e.msg, "unknown ipmasq backend \"bogus\"");
    assert!(w.c(0).link("eth0").is_none(), "container veth left");
    assert!(host_veths(&w).is_empty(), "host veth left: {:?}", w.host.link_names());
    w.del(&c).run().ok();
}
