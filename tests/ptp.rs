//! ptp behaviour against our binary: the container reaches the host side and back (v4, v6), the
//! routes and host addresses are as the reference lays them out, DEL cleans up (twice, and
//! after the netns is gone), and a failed ADD releases its lease.

use crate::bridge::result_ips;
use crate::harness::*;
use serde_json::{json, Value};

fn conf(w: &World, s: &Subnets, name: &str, mtu: Option<u32>) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "ptp",
        "ipam": {
            "type": "host-local",
            "dataDir": w.data_dir,
            "ranges": [[{"subnet": s.net4()}], [{"subnet": s.net6()}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        }
    });
    if let Some(m) = mtu {
        c["mtu"] = json!(m);
    }
    c
}

fn host_veths(w: &World) -> Vec<String> {
    w.host.link_names().into_iter().filter(|n| n.starts_with("veth")).collect()
}

#[test]
fn ptp_container_reaches_host_and_back() {
    let w = World::new("ptpping", 1, Impl::Ours);
    let s = Subnets::alloc();
    let c = conf(&w, &s, "ptpping", Some(1400));
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
    let c = conf(&w, &s, "ptpgone", None);
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
    let c = conf(&w, &s, "ptpexist", None);
    w.c(0).must(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let e = w.add(&c).run().err();
    assert!(!e.msg.is_empty());
    assert!(w.leases("ptpexist").is_empty(), "IPAM was released: {:?}", w.store("ptpexist"));
    assert!(host_veths(&w).is_empty());
    assert!(w.host.addrs("lo").is_empty(), "nothing added on the host");
    assert!(w.c(0).link("eth0").is_some(), "pre-existing link untouched");
}
