//! vpc-routed in a namespace world: a "node" with a secondary ENI (a veth to a "vpc" namespace),
//! prepared by `cni-multi vpc-routed setup-host`; pods wired through `cni-multi tool`. Two pods
//! reach each other and the node; rules, routes and neighbours read back exactly; a pod whose
//! ENI has its own table leaves through that table; DEL removes everything and is idempotent.

use crate::harness::runtime::*;
use crate::harness::{unique, Netns};

fn pod_args(name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}")
}

/// The runtime environment of a `cni-multi tool` run: the conflists in `netconf`, our
/// vpc-routed and host-local on CNI_PATH, the cache in `tmp`, and the pod's CNI_ARGS if any.
fn tool_env(netconf: &std::path::Path, tmp: &Tmp, pod: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", our_plugin_dir(tmp, &["vpc-routed", "host-local"])),
        ("CNI_CACHE_DIR", tmp.s("cache")),
    ];
    env.extend(pod.map(|p| ("CNI_ARGS", pod_args(p))));
    env
}

#[test]
fn vpc_routed_pods_rules_routes_and_eni_table() {
    let tmp = Tmp::new("vpcr");
    let node = Netns::up("vn");
    let vpc = Netns::up("vv");
    let p1 = Netns::up("vp");
    let p2 = Netns::up("vp");
    let p3 = Netns::up("vp");

    // node: primary interface with the node IP; ENI #2 to the "vpc", whose router is 198.19.9.1
    // and behind which sits 198.19.77.1 (only reachable through the ENI's table)
    node.ok("ip link add prim0 type veth peer name prim1 && ip addr add 198.18.30.1/24 dev prim0 && ip link set prim0 up && ip link set prim1 up");
    node.ok(&format!("ip link add eni2 type veth peer name eth0 netns {}", vpc.name));
    node.ok("ip addr add 198.19.9.10/24 dev eni2");
    vpc.ok("ip addr add 198.19.9.1/24 dev eth0 && ip link set eth0 up && ip addr add 198.19.77.1/32 dev lo");
    vpc.ok("ip route add 198.18.20.0/24 via 198.19.9.10");
    let host_conf = serde_json::json!({
        "primaryInterface": "prim0",
        "nodePortMark": "0x80",
        "enis": [{"interface": "eni2", "deviceNumber": 2, "mtu": 9001, "gateway": "198.19.9.1", "subnet": "198.19.9.0/24"}]
    });
    std::fs::write(tmp.join("host.json"), host_conf.to_string()).unwrap();
    for _ in 0..2 {
        // idempotent
        run_in(&node, bin(), &["vpc-routed", "setup-host"], &[], &["--config", &tmp.s("host.json")])
            .expect_ok("setup-host");
    }
    assert_eq!(node.ok("cat /proc/sys/net/ipv4/conf/prim0/rp_filter").trim(), "2");
    assert_eq!(node.ok("ip rule show pref 1024").trim(), "1024:\tfrom all fwmark 0x80/0x80 lookup main");
    assert_eq!(node.ok("ip route show table 3"), "default via 198.19.9.1 dev eni2 \n198.19.9.1 dev eni2 scope link \n");
    assert!(node.ok("ip -o link show eni2").contains("mtu 9001"));
    assert_eq!(node.ok("ip route show dev eni2 table main"), "", "the ENI subnet route left the main table");

    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    let ipam = |start: &str| {
        serde_json::json!({"type": "host-local", "dataDir": tmp.s("ipam"),
            "ranges": [[{"subnet": "198.18.20.0/24", "rangeStart": start}]]})
    };
    let main_list = serde_json::json!({"cniVersion": "1.0.0", "name": "vpc", "plugins": [
        {"type": "vpc-routed", "mtu": "1500", "ipam": ipam("198.18.20.2")}]});
    let eni_list = serde_json::json!({"cniVersion": "1.0.0", "name": "vpc-eni", "plugins": [
        {"type": "vpc-routed", "vethPrefix": "cali", "deviceNumber": 2, "ipam": ipam("198.18.20.100")}]});
    std::fs::write(netconf.join("10-vpc.conflist"), main_list.to_string()).unwrap();
    std::fs::write(netconf.join("20-vpc-eni.conflist"), eni_list.to_string()).unwrap();
    let env = |pod: &str| tool_env(&netconf, &tmp, Some(pod));
    let (n1, n2, n3) = (unique("p1-"), unique("p2-"), unique("p3-"));
    let r1 = tool(&node, &env(&n1), &["add", "vpc", &p1.path_str()]).expect_ok("add p1").json();
    let _r2 = tool(&node, &env(&n2), &["add", "vpc", &p2.path_str()]).expect_ok("add p2").json();
    let _r3 = tool(&node, &env(&n3), &["add", "vpc-eni", &p3.path_str()]).expect_ok("add p3").json();

    // the result
    let hv1 = format!("eni{}", &sha1_hex(&format!("default.{n1}"))[..11]);
    let hv3 = format!("cali{}", &sha1_hex(&format!("default.{n3}"))[..11]);
    assert_eq!(r1["interfaces"][0]["name"], hv1.as_str());
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(r1["interfaces"][1]["sandbox"], p1.path_str().as_str());
    assert_eq!(r1["ips"], serde_json::json!([{"address": "198.18.20.2/32", "gateway": "169.254.1.1", "interface": 1}]));
    assert_eq!(r1["routes"], serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
    let host_mac = r1["interfaces"][0]["mac"].as_str().unwrap().to_string();

    // inside pod 1: /32, link route to the fake gateway, default via it, permanent neighbour
    assert_eq!(p1.ok("ip -4 -o addr show dev eth0 | awk '{print $4}'").trim(), "198.18.20.2/32");
    assert_eq!(p1.ok("ip -4 route show"), "default via 169.254.1.1 dev eth0 \n169.254.1.1 dev eth0 scope link \n");
    assert_eq!(p1.ok("ip -4 neigh show dev eth0").trim(), format!("169.254.1.1 lladdr {host_mac} PERMANENT"));
    assert!(p1.ok("ip -o link show eth0").contains("mtu 1500"));
    // on the node: the host route and rules, read back exactly
    assert_eq!(node.ok("ip route show 198.18.20.2"), format!("198.18.20.2 dev {hv1} scope link \n"));
    let rules: Vec<String> = node
        .ok("ip rule show")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.starts_with("512:") || l.starts_with("1536:"))
        .collect();
    assert_eq!(
        rules,
        [
            "512:\tfrom all to 198.18.20.2 lookup main",
            "512:\tfrom all to 198.18.20.3 lookup main",
            "512:\tfrom all to 198.18.20.100 lookup main",
            "1536:\tfrom 198.18.20.100 lookup 3",
        ]
    );
    assert!(node.ok(&format!("ip -o link show {hv3}")).contains("mtu 9001"), "default MTU");

    // connectivity
    assert!(p1.ping("198.18.20.3", 1), "pod 1 -> pod 2");
    assert!(p2.ping("198.18.20.2", 1), "pod 2 -> pod 1");
    assert!(p1.ping("198.18.30.1", 1), "pod 1 -> node");
    assert!(p3.ping("198.18.20.2", 1), "ENI pod -> main pod");
    // only the ENI table knows 198.19.77.1: pod 3 (table 3) gets there, pod 1 does not
    assert!(p3.ping("198.19.77.1", 1), "pod 3 leaves by table 3");
    assert!(!p1.ping("198.19.77.1", 1), "pod 1 has no such route");
    let route = node.ok(&format!("ip route get 198.19.77.1 from 198.18.20.100 iif {hv3}"));
    assert!(route.contains("via 198.19.9.1 dev eni2 table 3"), "{route}");

    // CHECK, then DEL: everything of pod 1 goes, pod 2 keeps its rule; DEL twice is fine
    tool(&node, &env(&n1), &["check", "vpc", &p1.path_str()]).expect_ok("check p1");
    tool(&node, &env(&n1), &["del", "vpc", &p1.path_str()]).expect_ok("del p1");
    assert!(!node.sh(&format!("ip link show {hv1}")).0);
    assert!(!p1.sh("ip link show eth0").0);
    assert_eq!(node.ok("ip route show 198.18.20.2"), "");
    let rules = node.ok("ip rule show");
    assert!(!rules.contains("198.18.20.2 "), "{rules}");
    assert!(rules.contains("to 198.18.20.3 lookup main"), "{rules}");
    tool(&node, &env(&n1), &["del", "vpc", &p1.path_str()]).expect_ok("second del p1");
    tool(&node, &env(&n3), &["del", "vpc-eni", &p3.path_str()]).expect_ok("del p3");
    assert!(!node.ok("ip rule show").contains("1536:"));
    // DEL with the pod's netns already gone still cleans the node
    let p2_path = p2.path_str();
    drop(p2);
    tool(&node, &env(&n2), &["del", "vpc", &p2_path]).expect_ok("del p2 after its netns is gone");
    assert!(!node.ok("ip rule show").contains("198.18.20.3"));
}

/// IPv6 beside IPv4: /128 in the pod, default via fe80::1 with a permanent neighbour, /128 host
/// route and an IPv6 `to` rule on the node; the two pods reach each other over IPv6.
#[test]
fn vpc_routed_dual_stack() {
    let tmp = Tmp::new("vpcr6");
    let node = Netns::up("vn");
    let p1 = Netns::up("vp");
    let p2 = Netns::up("vp");
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    let list = serde_json::json!({"cniVersion": "1.0.0", "name": "vpc6", "plugins": [
        {"type": "vpc-routed", "mtu": 1500, "ipam": {"type": "host-local", "dataDir": tmp.s("ipam"),
            "ranges": [[{"subnet": "198.18.21.0/24"}], [{"subnet": "fd00:21::/64"}]]}}]});
    std::fs::write(netconf.join("10-vpc6.conflist"), list.to_string()).unwrap();
    let env = |pod: &str| tool_env(&netconf, &tmp, Some(pod));
    let (n1, n2) = (unique("d1-"), unique("d2-"));
    let r1 = tool(&node, &env(&n1), &["add", "vpc6", &p1.path_str()]).expect_ok("add p1").json();
    tool(&node, &env(&n2), &["add", "vpc6", &p2.path_str()]).expect_ok("add p2");
    assert_eq!(
        r1["ips"],
        serde_json::json!([
            {"address": "198.18.21.2/32", "gateway": "169.254.1.1", "interface": 1},
            {"address": "fd00:21::2/128", "gateway": "fe80::1", "interface": 1}
        ])
    );
    assert_eq!(
        r1["routes"],
        serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}])
    );
    let host_mac = r1["interfaces"][0]["mac"].as_str().unwrap().to_string();
    let hv1 = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(p1.ok("ip -6 -o addr show dev eth0 scope global").contains("fd00:21::2/128"));
    assert!(p1.ok("ip -6 route show").contains("default via fe80::1 dev eth0"));
    assert_eq!(p1.ok("ip -6 neigh show dev eth0").trim(), format!("fe80::1 lladdr {host_mac} PERMANENT"));
    assert_eq!(node.ok("ip -6 route show fd00:21::2").trim(), format!("fd00:21::2 dev {hv1} metric 1024 pref medium"));
    assert!(node.ok("ip -6 rule show").contains("512:\tfrom all to fd00:21::2 lookup main"));
    let ping6 = |ns: &Netns, ip: &str| (0..5).any(|_| ns.sh(&format!("ping -6 -c1 -W1 {ip}")).0);
    assert!(ping6(&p1, "fd00:21::3"), "pod 1 -> pod 2 over IPv6");
    assert!(p2.ping("198.18.21.2", 1), "pod 2 -> pod 1 over IPv4");
    tool(&node, &env(&n1), &["check", "vpc6", &p1.path_str()]).expect_ok("check p1");
    tool(&node, &env(&n1), &["del", "vpc6", &p1.path_str()]).expect_ok("del p1");
    assert!(!node.ok("ip -6 rule show").contains("fd00:21::2"));
    assert_eq!(node.ok("ip -6 route show fd00:21::2"), "");
    tool(&node, &env(&n2), &["del", "vpc6", &p2.path_str()]).expect_ok("del p2");
}

/// A failed ADD (the pod already has `eth0`) releases the address and leaves no rule, route or veth.
#[test]
fn vpc_routed_failed_add_rolls_back() {
    let tmp = Tmp::new("vpcrb");
    let node = Netns::up("vn");
    let pod = Netns::up("vp");
    pod.ok("ip link add eth0 type veth peer name other0");
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    let list = serde_json::json!({"cniVersion": "1.0.0", "name": "vpcrb", "plugins": [
        {"type": "vpc-routed", "ipam": {"type": "host-local", "dataDir": tmp.s("ipam"),
            "ranges": [[{"subnet": "198.18.22.0/24"}]]}}]});
    std::fs::write(netconf.join("10.conflist"), list.to_string()).unwrap();
    let env = tool_env(&netconf, &tmp, None);
    let out = tool(&node, &env, &["add", "vpcrb", &pod.path_str()]);
    assert!(!out.ok);
    assert!(out.json()["msg"].as_str().unwrap().contains("already exists"), "{}", out.stdout);
    assert!(tmp.join("ipam/vpcrb/last_reserved_ip.0").exists(), "IPAM did allocate");
    assert!(!tmp.join("ipam/vpcrb/198.18.22.2").exists(), "lease released on rollback");
    assert!(!node.ok("ip rule show").contains("512:"));
    assert_eq!(node.ok("ip -o link show | grep -c eni || true").trim(), "0");
    assert!(!tmp.join("cache/results").exists() || std::fs::read_dir(tmp.join("cache/results")).unwrap().count() == 0);
}

/// GC is passed on to IPAM (in-process and by exec): two pods, GC naming one as valid releases
/// the other's lease only.
#[test]
fn vpc_routed_gc_is_forwarded_to_ipam() {
    crate::iface::gc_releases_only_stale_leases("vpg", "vpc-routed", "eth0", &|_, _| {}, &|w, _| {
        serde_json::json!({"cniVersion": "1.1.0", "name": "vpcgc", "type": "vpc-routed", "mtu": 1500,
                           "ipam": w.ipam("d", "198.18.23.0/24")})
    });
}

/// A pod whose netns was deleted without DEL leaves its node rules behind (the kernel removes
/// the veth pair and the host route); GC removes them and releases the lease, and keeps the
/// live pod's rules, route and lease.
#[test]
fn vpc_routed_gc_removes_rules_of_pods_gone_without_del() {
    use crate::harness::{topo::NsSet, Impl};
    let mut w = NsSet::new("vpr");
    w.use_our_ipam();
    let host = w.netns("h");
    let (c0, c1) = (w.netns("c0"), w.netns("c1"));
    let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "vpcgc", "type": "vpc-routed", "mtu": 1500,
        "deviceNumber": 2, "ipam": {"type": "host-local", "dataDir": w.dir.join("d"),
        "ranges": [[{"subnet": "198.18.24.0/24"}], [{"subnet": "fd00:24::/64"}]]}});
    for c in [&c0, &c1] {
        w.cni(Impl::Ours, &host, "vpc-routed", "ADD", Some(c), "eth0", "", &conf).expect_ok("ADD");
    }
    let rules = |v6: bool| w.ip(&host, &[if v6 { "-6" } else { "-4" }, "rule", "show"]);
    for (v6, ip0, ip1) in [(false, "198.18.24.2", "198.18.24.3"), (true, "fd00:24::2", "fd00:24::3")] {
        let r = rules(v6);
        for ip in [ip0, ip1] {
            assert!(r.contains(&format!("512:\tfrom all to {ip} lookup main")), "{r}");
            assert!(r.contains(&format!("1536:\tfrom {ip} lookup 3")), "{r}");
        }
    }
    // pod 1 vanishes without DEL
    crate::harness::world::must(&["ip", "netns", "del", &c1]);
    // the kernel tears a namespace down asynchronously: wait for the veth pair to go
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        w.ip(&host, &["route", "show", "198.18.24.3"]).is_empty()
    });
    assert!(gone, "the kernel removed the host route with the veth pair");
    assert!(rules(false).contains("198.18.24.3"), "the rules stay behind");
    // GC without a list removes nothing
    w.cni(Impl::Ours, &host, "vpc-routed", "GC", None, "", "", &conf).expect_ok("GC without list");
    assert!(rules(false).contains("198.18.24.3") && rules(true).contains("fd00:24::3"));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": format!("ctr-{c0}"), "ifname": "eth0"}]);
    w.cni(Impl::Ours, &host, "vpc-routed", "GC", None, "", "", &gc).expect_ok("GC");
    for (v6, ip0, ip1) in [(false, "198.18.24.2", "198.18.24.3"), (true, "fd00:24::2", "fd00:24::3")] {
        let r = rules(v6);
        assert!(!r.contains(ip1), "rules of the vanished pod left: {r}");
        assert!(r.contains(&format!("512:\tfrom all to {ip0} lookup main")), "{r}");
        assert!(r.contains(&format!("1536:\tfrom {ip0} lookup 3")), "{r}");
        let fam = if v6 { "-6" } else { "-4" };
        assert!(!w.ip(&host, &[fam, "route", "show", ip0]).is_empty(), "the live pod's route is kept");
    }
    let mut leases = w.leases("d");
    leases.sort();
    assert_eq!(leases, vec!["198.18.24.2".to_string(), "fd00:24::2".to_string()]);
    w.cni(Impl::Ours, &host, "vpc-routed", "DEL", Some(&c0), "eth0", "", &conf).expect_ok("DEL");
    assert!(w.leases("d").is_empty());
    assert!(!rules(false).contains("198.18.24.") && !rules(true).contains("fd00:24::"));
}

/// setup-host reads its keys without regard to case, as every plugin config, and refuses a key it
/// does not know (a typo) or an interface that does not exist before it changes anything: no
/// rp_filter, no fwmark rule, no ENI route.
#[test]
fn setup_host_keys_in_any_case_and_refuses_typos_before_any_change() {
    let tmp = Tmp::new("vpcsh");
    let node = Netns::up("vs");
    node.ok("ip link add prim0 type veth peer name prim1 && ip link set prim0 up && ip link set prim1 up");
    node.ok(
        "ip link add eni2 type veth peer name eni2p && ip addr add 198.19.12.10/24 dev eni2 && ip link set eni2p up",
    );
    let state = || {
        (
            node.ok("cat /proc/sys/net/ipv4/conf/prim0/rp_filter").trim().to_string(),
            node.ok("ip rule show pref 1024"),
            node.ok("ip route show table 3 2>/dev/null || true"),
            node.ok("ip -o link show eni2 | grep -o 'mtu [0-9]*'"),
        )
    };
    let setup = |conf: &str| {
        std::fs::write(tmp.join("host.json"), conf).unwrap();
        run_in(&node, bin(), &["vpc-routed", "setup-host"], &[], &["--config", &tmp.s("host.json")])
    };
    let before = state();
    for (conf, says) in [
        (r#"{"primaryInterfac": "prim0"}"#, r#"unknown key "primaryInterfac""#),
        (
            r#"{"primaryInterface": "prim0", "enis": [{"interface": "eni2", "deviceNumber": 2, "gw": "198.19.12.1"}]}"#,
            "unknown key enis[0].gw",
        ),
        (r#"{"primaryInterface": "prim0", "enis": [{"interface": "eni9"}]}"#, r#"ENI interface "eni9" not found"#),
        (r#"{"primaryInterface": "prim9"}"#, r#"primary interface "prim9" not found"#),
    ] {
        let out = setup(conf);
        assert!(!out.ok && out.stderr.contains(says), "{conf}: {} {}", out.code, out.stderr);
        assert_eq!(state(), before, "{conf} changed the node");
    }
    // the half-done case of the audit: lower-case keys, a capitalised ENI key
    let out = setup(
        r#"{"primaryinterface": "prim0", "RPFILTER": 1, "enis": [{"Interface": "eni2", "DeviceNumber": 2,
            "MTU": 1400, "Gateway": "198.19.12.1", "SUBNET": "198.19.12.0/24"}]}"#,
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(node.ok("cat /proc/sys/net/ipv4/conf/prim0/rp_filter").trim(), "1");
    assert_eq!(node.ok("ip rule show pref 1024").trim(), "1024:\tfrom all fwmark 0x80/0x80 lookup main");
    assert_eq!(
        node.ok("ip route show table 3"),
        "default via 198.19.12.1 dev eni2 \n198.19.12.1 dev eni2 scope link \n"
    );
    assert!(node.ok("ip -o link show eni2").contains("mtu 1400"));
}
