//! flannel in a namespace world: a hand-written subnet.env, two containers on one "node" get
//! addresses from FLANNEL_SUBNET, reach each other and a "remote" host through the cluster route;
//! the delegate config is saved under dataDir and DEL removes it.

use crate::harness::runtime::*;
use crate::harness::Netns;
use serde_json::Value;

#[test]
fn flannel_two_containers_reach_each_other_and_the_cluster() {
    let tmp = Tmp::new("flannel");
    let node = Netns::up("fn");
    let remote = Netns::up("fr");
    let c1 = Netns::up("fc");
    let c2 = Netns::up("fc");
    // the "rest of the cluster": a remote host at 198.18.200.2, inside FLANNEL_NETWORK but outside
    // this node's subnet, reached over a link from the node
    node.ok(&format!("ip link add flr0 type veth peer name eth0 netns {}", remote.name));
    node.ok("ip addr add 198.18.200.1/24 dev flr0 && ip link set flr0 up");
    remote.ok(
        "ip addr add 198.18.200.2/24 dev eth0 && ip link set eth0 up && ip route add 198.18.5.0/24 via 198.18.200.1",
    );

    std::fs::write(
        tmp.join("subnet.env"),
        "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    let list = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "plugins": [{
            "type": "flannel",
            "subnetFile": tmp.s("subnet.env"),
            "dataDir": tmp.s("flannel"),
            "ipam": {"dataDir": tmp.s("ipam")},
            "delegate": {"bridge": "cni0", "hairpinMode": true}
        }]
    });
    std::fs::write(netconf.join("10-flannel.conflist"), list.to_string()).unwrap();
    let env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", our_plugin_dir(&tmp, &["flannel", "bridge", "host-local"])),
        ("CNI_CACHE_DIR", tmp.s("cache")),
    ];
    let r1 = tool(&node, &env, &["add", "cbr0", &c1.path_str()]).expect_ok("add c1").json();
    let r2 = tool(&node, &env, &["add", "cbr0", &c2.path_str()]).expect_ok("add c2").json();
    let ip = |r: &Value| r["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!((ip(&r1).as_str(), ip(&r2).as_str()), ("198.18.5.2/24", "198.18.5.3/24"));
    assert_eq!(r1["ips"][0]["gateway"], "198.18.5.1");
    assert_eq!(r1["routes"], serde_json::json!([{"dst": "198.18.0.0/16"}]));

    // the delegate config flannel saved: bridge + host-local over the node subnet
    let id1 = cnitool_id(&c1.path_str());
    let saved: Value = serde_json::from_slice(&std::fs::read(tmp.join(&format!("flannel/{id1}"))).unwrap()).unwrap();
    assert_eq!(saved["type"], "bridge");
    assert_eq!(saved["name"], "cbr0");
    assert_eq!(saved["mtu"], 1450);
    assert_eq!(saved["ipMasq"], false);
    assert_eq!(saved["isGateway"], true);
    assert_eq!(saved["hairpinMode"], true);
    assert_eq!(saved["ipam"]["ranges"], serde_json::json!([[{"subnet": "198.18.5.0/24"}]]));

    // kernel: the bridge holds the gateway, mtu from FLANNEL_MTU, cluster route in the containers
    assert!(node.ok("ip -4 -o addr show dev cni0").contains("198.18.5.1/24"));
    assert!(c1.ok("ip -o link show eth0").contains("mtu 1450"));
    assert!(c1.ok("ip -4 route show").contains("198.18.0.0/16 via 198.18.5.1 dev eth0"));
    assert!(c2.ping("198.18.5.2", 1), "c2 -> c1");
    assert!(c1.ping("198.18.5.3", 1), "c1 -> c2");
    assert!(c1.ping("198.18.200.2", 1), "c1 -> remote host over the cluster route");
    assert!(!c1.ping("198.19.0.1", 1), "no default route: only the cluster is routed");

    // DEL from the saved config; the file goes, a second DEL is fine
    tool(&node, &env, &["del", "cbr0", &c1.path_str()]).expect_ok("del c1");
    assert!(!tmp.join(&format!("flannel/{id1}")).exists());
    assert!(!c1.sh("ip link show eth0").0);
    assert!(!tmp.join("ipam/cbr0/198.18.5.2").exists(), "lease released");
    tool(&node, &env, &["del", "cbr0", &c1.path_str()]).expect_ok("second del");
    tool(&node, &env, &["check", "cbr0", &c2.path_str()]).expect_ok("check c2");
    tool(&node, &env, &["del", "cbr0", &c2.path_str()]).expect_ok("del c2");
}

#[test]
fn flannel_missing_subnet_env_is_an_error() {
    let tmp = Tmp::new("flannelerr");
    let node = Netns::up("fn");
    let c = Netns::up("fc");
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    std::fs::write(tmp.join("subnet.env"), "FLANNEL_SUBNET=198.18.6.1/24\n").unwrap();
    let list = serde_json::json!({"cniVersion": "1.0.0", "name": "fl", "plugins": [{"type": "flannel",
        "subnetFile": tmp.s("subnet.env"), "dataDir": tmp.s("flannel")}]});
    std::fs::write(netconf.join("f.conflist"), list.to_string()).unwrap();
    let env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", our_plugin_dir(&tmp, &["flannel", "bridge", "host-local"])),
        ("CNI_CACHE_DIR", tmp.s("cache")),
    ];
    let out = tool(&node, &env, &["add", "fl", &c.path_str()]);
    assert!(!out.ok);
    let msg = out.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_MTU, FLANNEL_IPMASQ"), "{msg}");
    // nothing saved, nothing created; DEL of an unknown container succeeds
    assert!(!tmp.join("flannel").exists());
    tool(&node, &env, &["del", "fl", &c.path_str()]).expect_ok("del");
}
