//! portmap: one container with two attachments, the host interface that gets `route_localnet`,
//! DEL of configs ADD refuses, protocols, messages; against the reference (iptables) where it
//! has the case, ours alone (nftables) where it has not.

use crate::harness::*;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpListener;

/// A v4-only ptp network on `subnet` (the first plugin of the chains here).
fn ptp_v4(w: &World, name: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "ptp",
        "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": subnet}]]}})
}

/// portmap in network `name` with `prev` and the mappings `maps` (and `extra` keys).
fn pm_conf(name: &str, prev: &Value, maps: Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": name, "type": "portmap",
        "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps}, "prevResult": prev});
    for (k, v) in extra.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

fn tcp(host: u16, cont: u16) -> Value {
    json!({"hostPort": host, "containerPort": cont, "protocol": "tcp"})
}

/// A TCP server in `ns` on 0.0.0.0:`port` answering each connection with the address it was
/// reached at (so a client sees which attachment a host port leads to), for 60 s.
fn addr_server(ns: &Netns, port: u16) {
    server(ns, port, false);
}

/// [`addr_server`], answering with the client's address when `peer`.
fn server(ns: &Netns, port: u16, peer: bool) {
    let l = ns.run_in(move || TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind tcp"));
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < end {
            match l.accept() {
                Ok((mut s, from)) => {
                    let local = s.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                    let local = if peer { from.ip().to_string() } else { local };
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(local.as_bytes());
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    });
}

/// From the host netns to `addr:port` (a local address of the host: the mapping's DNAT applies).
fn reach(w: &World, addr: &str, port: u16) -> Option<String> {
    w.host.tcp_read(format!("{addr}:{port}").parse().unwrap())
}

fn first_ip(prev: &Value) -> String {
    prev["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

fn gateway(prev: &Value) -> String {
    prev["ips"][0]["gateway"].as_str().unwrap().to_string()
}

/// `iptables-save -t nat` of the host netns without comments and counters.
fn nat(w: &World) -> String {
    let text = w.host.must(&["iptables-save", "-t", "nat"]);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| if l.starts_with(':') { l.split(" [").next().unwrap_or(l) } else { l })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One container (c0) with two ptp attachments, eth0 on `<v4a>.0/24` in network `nets[0]` and
/// net1 on `<v4b>.0/24` in network `nets[1]`, each with portmap: eth0 8080→80, net1 8081→80.
struct TwoAttachments {
    w: World,
    prevs: [Value; 2],
    pms: [Value; 2],
}

const IFS: [&str; 2] = ["eth0", "net1"];

fn two_attachments(imp: Impl, tag: &str, s: &Subnets, nets: [&str; 2], extra: Value) -> TwoAttachments {
    let w = World::new(tag, 1, imp);
    w.host_nodad();
    w.host.must(&["ip", "link", "set", "lo", "up"]);
    let subnets = [s.net4(), format!("{}.0/24", s.v4b)];
    let prevs: [Value; 2] =
        [0, 1].map(|i| w.add(&ptp_v4(&w, nets[i], &subnets[i])).cid("c1").ifname(IFS[i]).run().ok());
    w.c(0).settle();
    let pms = [0, 1].map(|i| pm_conf(nets[i], &prevs[i], json!([tcp(8080 + i as u16, 80)]), extra.clone()));
    for i in 0..2 {
        w.add(&pms[i]).cid("c1").ifname(IFS[i]).run().ok();
    }
    addr_server(w.c(0), 80);
    TwoAttachments { w, prevs, pms }
}

impl TwoAttachments {
    /// Where host port 8080+i leads (through attachment i's own gateway address).
    fn reach(&self, i: usize) -> Option<String> {
        reach(&self.w, &gateway(&self.prevs[i]), 8080 + i as u16)
    }
    fn expect(&self, i: usize) -> Option<String> {
        Some(first_ip(&self.prevs[i]))
    }
    fn call(&self, cmd: &str, i: usize) -> Outcome {
        let mut call = self.w.cni(cmd, &self.pms[i]).cid("c1").ifname(IFS[i]);
        if cmd == "CHECK" {
            call = self.w.check(&self.pms[i], &self.prevs[i]).cid("c1").ifname(IFS[i]);
        }
        call.run()
    }
}

/// Regression: a portmap ADD of a container's second attachment removed the first one's mappings
/// (iptables: the two share the DN chain of network + container id, which ADD rewrote whole). As
/// the reference, both attachments' rules stay, in the reference's order (the nat table equals
/// the reference's), both host ports reach their attachment and CHECK of each passes. DEL with
/// its prevResult removes only that attachment's rules: the other keeps its traffic (the
/// reference's DEL flushes the container's chain, taking the other attachment's mappings with
/// it), and the last DEL removes the chain and its entry rules.
#[test]
fn portmap_iptables_second_attachment_keeps_the_first_ones_mappings() {
    let s = Subnets::alloc();
    let extra = json!({"backend": "iptables"});
    let ours = two_attachments(Impl::Ours, "pm2ao", &s, ["pm2a", "pm2a"], extra.clone());
    let after_add = nat(&ours.w);
    assert_eq!(ours.reach(0), ours.expect(0), "8080 after the second ADD\n{after_add}");
    assert_eq!(ours.reach(1), ours.expect(1), "8081\n{after_add}");
    for i in 0..2 {
        ours.call("CHECK", i).ok();
    }
    if have_reference("portmap") {
        let theirs = two_attachments(Impl::Reference, "pm2ar", &s, ["pm2a", "pm2a"], json!({}));
        assert_eq!(after_add, nat(&theirs.w), "nat table after both ADDs: ours, then the reference's");
        assert_eq!(theirs.reach(0), theirs.expect(0));
        assert_eq!(theirs.reach(1), theirs.expect(1));
        // the reference's DEL of one attachment takes the other's mappings too
        theirs.call("DEL", 1).ok();
        assert_eq!(theirs.reach(0), None, "the reference's DEL flushes the container's chain");
    }
    ours.call("DEL", 1).ok();
    let after_del = nat(&ours.w);
    assert_eq!(ours.reach(0), ours.expect(0), "8080 after DEL of net1\n{after_del}");
    assert_eq!(ours.reach(1), None, "8081 gone after its DEL\n{after_del}");
    ours.call("CHECK", 0).ok();
    assert!(!after_del.contains("8081"), "{after_del}");
    ours.call("DEL", 1).ok();
    ours.call("DEL", 0).ok();
    let end = nat(&ours.w);
    assert!(!end.contains("CNI-DN-") && !end.contains("c1"), "the last DEL removes the chain and its entries\n{end}");
    assert_eq!(ours.reach(0), None);
}

/// The same with nftables, on two networks (the rules' comment is the container id alone, as the
/// reference's): ADD of the second attachment keeps the first one's rules, CHECK looks for the
/// attachment's own rules (a missing rule of the other attachment does not fail it), DEL of one
/// keeps the other's traffic.
#[test]
fn portmap_nftables_second_attachment_keeps_the_first_ones_mappings() {
    let s = Subnets::alloc();
    let t = two_attachments(Impl::Ours, "pm2an", &s, ["pm2na", "pm2nb"], json!({"backend": "nftables"}));
    let rules = || t.w.host.must(&["nft", "-a", "list", "table", "ip", "cni_hostport"]);
    let listing = rules();
    assert_eq!(t.reach(0), t.expect(0), "8080 after the second ADD\n{listing}");
    assert_eq!(t.reach(1), t.expect(1), "8081\n{listing}");
    for i in 0..2 {
        t.call("CHECK", i).ok();
    }
    // CHECK of eth0 fails once its DNAT rule is gone; net1's still passes
    let a = first_ip(&t.prevs[0]);
    let handle = listing
        .lines()
        .find(|l| l.contains(&format!("dnat to {a}:80")))
        .and_then(|l| l.rsplit("handle ").next())
        .unwrap_or_else(|| panic!("no DNAT rule to {a}\n{listing}"))
        .trim()
        .to_string();
    t.w.host.must(&["nft", "delete", "rule", "ip", "cni_hostport", "hostports", "handle", &handle]);
    let e = t.call("CHECK", 0).err();
    assert!(e.msg.contains("hostports"), "{e:?}");
    t.call("CHECK", 1).ok();
    t.call("ADD", 0).ok();
    t.call("CHECK", 0).ok();
    t.call("DEL", 1).ok();
    assert_eq!(t.reach(0), t.expect(0), "8080 after DEL of net1\n{}", rules());
    assert_eq!(t.reach(1), None, "8081 after its DEL\n{}", rules());
    t.call("CHECK", 0).ok();
    t.call("DEL", 0).ok();
    assert!(!rules().contains("\"c1\""), "{}", rules());
}

/// A re-ADD of an attachment with other mappings: ours replaces its mappings (the current config
/// wins), the reference keeps the old ones beside the new (it never removes a rule on ADD).
#[test]
fn portmap_iptables_readd_with_other_mappings_replaces_them_where_the_reference_keeps_both() {
    let s = Subnets::alloc();
    let mut seen = vec![];
    for (imp, tag) in [(Impl::Ours, "pmreo"), (Impl::Reference, "pmrer")] {
        if imp == Impl::Reference && !have_reference("portmap") {
            continue;
        }
        let w = World::new(tag, 1, imp);
        w.host.must(&["ip", "link", "set", "lo", "up"]);
        let prev = w.add(&ptp_v4(&w, "pmre", &s.net4())).cid("c1").run().ok();
        w.c(0).settle();
        addr_server(w.c(0), 80);
        for port in [8080, 9090] {
            w.add(&pm_conf("pmre", &prev, json!([tcp(port, 80)]), json!({"backend": "iptables"}))).cid("c1").run().ok();
        }
        let dn = nat(&w).lines().filter(|l| l.starts_with("-A CNI-DN-") && l.contains("DNAT")).count();
        seen.push((dn, reach(&w, &gateway(&prev), 8080).is_some(), reach(&w, &gateway(&prev), 9090).is_some()));
    }
    assert_eq!(seen[0], (1, false, true), "ours: the new mapping alone");
    if let Some(r) = seen.get(1) {
        assert_eq!(*r, (2, true, true), "the reference: both");
    }
}

/// The host interface of the route the kernel takes to the container gets `route_localnet=1`,
/// as the reference's `netlink.RouteGet` finds it: (a) a second route to the subnet with a
/// higher metric, (b) the subnet's route in another table chosen by an `ip rule`, with a default
/// route over the other interface in `main`. Regression: ours took the longest main-table prefix
/// (the last among equals), and set `up0` in both cases.
#[test]
fn portmap_route_localnet_goes_to_the_interface_the_kernel_routes_through() {
    let s = Subnets::alloc();
    let net4 = s.net4();
    let (up_addr, up_gw) = (format!("{}.1/24", s.v4b), format!("{}.2", s.v4b));
    let metric: Vec<Vec<String>> = vec![vec!["route", "add", &net4, "dev", "up0", "metric", "500"]]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect();
    let rule: Vec<Vec<String>> = [
        vec!["addr", "add", up_addr.as_str(), "dev", "up0"],
        vec!["route", "del", net4.as_str(), "dev", "BR"],
        vec!["route", "add", net4.as_str(), "dev", "BR", "table", "100"],
        vec!["rule", "add", "to", net4.as_str(), "lookup", "100"],
        vec!["route", "add", "default", "via", up_gw.as_str(), "dev", "up0"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    for (case, setup) in [("metric", metric), ("rule", rule)] {
        let mut seen = vec![];
        for (imp, suffix) in [(Impl::Ours, "o"), (Impl::Reference, "r")] {
            if imp == Impl::Reference && !have_reference("portmap") {
                continue;
            }
            let tag = format!("pmrl{}{suffix}", &case[..1]);
            let w = World::new(&tag, 1, imp);
            let br = "pmrlbr0";
            let prev = w.add(&bridge_conf(&w, "pmrl", br, &[&net4])).run().ok();
            w.host.must(&["ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
            w.host.must(&["ip", "link", "set", "up0", "up"]);
            w.host.must(&["ip", "link", "set", "up0p", "up"]);
            for cmd in &setup {
                let mut argv = vec!["ip".to_string()];
                argv.extend(cmd.iter().map(|a| if a == "BR" { br.to_string() } else { a.clone() }));
                w.host.must(&argv.iter().map(String::as_str).collect::<Vec<_>>());
            }
            let pm = pm_conf("pmrl", &prev, json!([tcp(8080, 80)]), json!({}));
            w.add(&pm).run().ok();
            let on = |dev: &str| w.host.sysctl(&format!("net/ipv4/conf/{dev}/route_localnet"));
            let ip = first_ip(&prev);
            let got = w.host.must(&["ip", "route", "get", &ip]);
            seen.push((on(br), on("up0"), got.contains(br)));
            w.del(&pm).run().ok();
        }
        assert_eq!(seen[0], (Some("1".into()), Some("0".into()), true), "{case}: ours");
        if let Some(r) = seen.get(1) {
            assert_eq!(*r, seen[0], "{case}: the reference");
        }
    }
}

/// DEL takes the mapping values ADD refuses: a host or container port above 65535, a `hostIP`
/// that is no address, an unknown protocol (it tears down by container and attachment, needing
/// none of them); GC too. ADD refuses them with code 7 (the reference takes such a `hostIP`: on
/// an IPv4 pod it leaves the container's chain and entry rule, mapping nothing, which our DEL then
/// removes). Regression: our DEL failed with ADD's error, code 7, and left the reference's chain.
#[test]
fn portmap_del_and_gc_take_mapping_values_that_add_refuses() {
    let s = Subnets::alloc();
    let w = World::new("pmdelv", 1, Impl::Ours);
    let prev = w.add(&ptp_v4(&w, "pmdelv", &s.net4())).cid("c1").run().ok();
    let ipt = json!({"backend": "iptables"});
    let bad = [
        (json!([{"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}]), "Invalid host port number: 70000"),
        (
            json!([{"hostPort": 8080, "containerPort": 70000, "protocol": "tcp"}]),
            "Invalid container port number: 70000",
        ),
        (json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "garbage"}]), "Invalid host IP"),
        (json!([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]), "Invalid host port number: 0"),
    ];
    for (maps, msg) in &bad {
        let c = pm_conf("pmdelv", &prev, maps.clone(), ipt.clone());
        let e = w.add(&c).cid("c1").run().err();
        assert_eq!(e.code, 7, "{maps}: {e:?}");
        assert!(e.msg.starts_with("failed to parse config: ") && e.msg.contains(msg), "{maps}: {e:?}");
        w.del(&c).cid("c1").run().ok();
        let mut gc = c.clone();
        gc["cniVersion"] = json!("1.1.0");
        gc["cni.dev/valid-attachments"] = json!([]);
        w.cni("GC", &gc).unset("CNI_NETNS").unset("CNI_IFNAME").unset("CNI_CONTAINERID").run().ok();
    }
    // the reference's ADD with hostIP "garbage" on an IPv4 pod; our DEL removes what it made
    if let Some(reference) = w.reference_applet("portmap") {
        let c = pm_conf("pmdelv", &prev, bad[2].0.clone(), json!({}));
        w.add(&c).cid("c1").plugin(&reference).run().ok();
        let made = nat(&w);
        assert!(made.contains(":CNI-DN-") && made.contains("id: \\\"c1\\\""), "{made}");
        w.del(&c).cid("c1").run().ok();
        let left = nat(&w) + &w.host.must(&["ip6tables-save", "-t", "nat"]);
        assert!(!left.contains("CNI-DN-") && !left.contains("c1"), "nothing of the container is left:\n{left}");
    }
}

/// Mapping protocols: "tcp", "udp", "sctp" in any case, and their IANA numbers "6", "17", "132"
/// as those protocols (the rules iptables holds are the reference's, which writes `-p 6`); any
/// other protocol is refused with code 7 before any change (the reference writes e.g. "dccp"
/// into its rules and its nftables backend passes it to `nft`).
#[test]
fn portmap_protocol_numbers_are_their_names_and_other_protocols_are_refused() {
    let s = Subnets::alloc();
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "6"},
        {"hostPort": 5300, "containerPort": 53, "protocol": "17"}]);
    let mut texts = vec![];
    for (imp, tag) in [(Impl::Ours, "pmprno"), (Impl::Reference, "pmprnr")] {
        if imp == Impl::Reference && !have_reference("portmap") {
            continue;
        }
        let w = World::new(tag, 1, imp);
        let prev = w.add(&ptp_v4(&w, "pmprn", &s.net4())).cid("c1").run().ok();
        let c = pm_conf("pmprn", &prev, maps.clone(), json!({}));
        w.add(&c).cid("c1").run().ok();
        texts.push(nat(&w));
        let dccp = pm_conf("pmprn", &prev, json!([{"hostPort": 9, "containerPort": 9, "protocol": "dccp"}]), json!({}));
        w.del(&c).cid("c1").run().ok();
        let before = nat(&w);
        let add = w.add(&dccp).cid("c2").run();
        match imp {
            Impl::Ours => {
                let e = add.err();
                assert_eq!(e.code, 7, "{e:?}");
                assert!(e.msg.contains("unsupported portmap protocol \"dccp\""), "{e:?}");
                assert_eq!(nat(&w), before, "nothing changed");
            }
            Impl::Reference => {
                add.ok();
            }
        }
        w.del(&dccp).cid("c2").run().ok();
    }
    assert!(
        texts[0].contains("-p tcp -m tcp --dport 8080") && texts[0].contains("-p udp -m udp --dport 5300"),
        "{}",
        texts[0]
    );
    if let Some(r) = texts.get(1) {
        assert_eq!(&texts[0], r, "ours, then the reference's");
    }
    // the nftables backend maps them as well
    let w = World::new("pmprnn", 1, Impl::Ours);
    let prev = w.add(&ptp_v4(&w, "pmprn", &s.net4())).cid("c1").run().ok();
    w.add(&pm_conf("pmprn", &prev, maps.clone(), json!({"backend": "nftables"}))).cid("c1").run().ok();
    let t = w.host.must(&["nft", "list", "table", "ip", "cni_hostport"]);
    assert!(t.contains("tcp dport 8080") && t.contains("udp dport 5300"), "{t}");
}

/// Messages and keys as v1.9.1 (code 7 for config errors, the reference 999): CHECK without a
/// prevResult says "Required prevResult missing"; `"backend": "bogus"` and `"backend": ""` are
/// `unrecognized backend "…"`; `"externalSetMarkChain": ""` is refused (the reference's iptables
/// fails on it, "Invalid target name (too short)", after making its chains); none changes a rule.
#[test]
fn portmap_messages_and_edge_keys_as_the_reference() {
    let s = Subnets::alloc();
    let w = World::new("pmmsg", 1, Impl::Ours);
    let prev = w.add(&ptp_v4(&w, "pmmsg", &s.net4())).cid("c1").run().ok();
    let maps = json!([tcp(8080, 80)]);
    let mut c = pm_conf("pmmsg", &prev, maps.clone(), json!({}));
    c.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(w.cni("CHECK", &c).cid("c1").run().err().msg, "Required prevResult missing");
    let before = nat(&w) + &w.host.must(&["nft", "list", "ruleset"]);
    for (extra, msg) in [
        (json!({"backend": "bogus"}), r#"unrecognized backend "bogus""#),
        (json!({"backend": ""}), r#"unrecognized backend """#),
        (json!({"externalSetMarkChain": ""}), "externalSetMarkChain must not be empty"),
    ] {
        let c = pm_conf("pmmsg", &prev, maps.clone(), extra.clone());
        let e = w.add(&c).cid("c1").run().err();
        assert_eq!((e.code, e.msg.as_str()), (7, format!("failed to parse config: {msg}").as_str()), "{extra}");
        let e = w.check(&c, &prev).cid("c1").run().err();
        assert_eq!((e.code, e.msg.as_str()), (7, msg), "CHECK {extra}");
        w.del(&c).cid("c1").run().ok();
    }
    assert_eq!(nat(&w) + &w.host.must(&["nft", "list", "ruleset"]), before);
}

/// `masqAll` with nftables masquerades mapped traffic from any source (a client outside the
/// container's subnet arrives as the host's address), as with iptables; v1.9.1's nftables
/// backend ignores the key (upstream's main fixed it after v1.9.1).
#[test]
fn portmap_nftables_masq_all_masquerades_every_source() {
    for (backend, masq_all) in [("nftables", false), ("nftables", true), ("iptables", true)] {
        let (w, s) = crate::meta::client_world(&format!("pmma{}{}", &backend[..1], u8::from(masq_all)));
        let mut ptp = ptp_v4(&w, "pmma", &s.net4());
        ptp["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        let prev = w.add(&ptp).run().ok();
        let (c0, client) = (w.c(0), w.c(1));
        c0.settle();
        let c = pm_conf("pmma", &prev, json!([tcp(8080, 80)]), json!({"backend": backend, "masqAll": masq_all}));
        w.add(&c).run().ok();
        server(c0, 80, true);
        let from = client.tcp_read(format!("{}.1:8080", s.v4b).parse().unwrap());
        let want = if masq_all { gateway(&prev) } else { format!("{}.2", s.v4b) };
        assert_eq!(from, Some(want), "{backend} masqAll {masq_all}");
        w.del(&c).run().ok();
    }
}
