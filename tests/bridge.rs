//! bridge behaviour against our binary: real traffic between containers and to the gateway,
//! clean DEL (also twice, also after the netns is gone), failed ADD leaves nothing, and 50
//! concurrent ADD/DEL on one network.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

fn dual_conf(w: &World, s: &Subnets, name: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": "cmbr0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": w.data_dir,
            "ranges": [[{"subnet": s.net4()}], [{"subnet": s.net6()}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
        }
    })
}

fn v4_conf(w: &World, s: &Subnets, name: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": "cmbr0",
        "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]}
    })
}

/// The addresses of a 1.x result (`ips[].address`).
pub(crate) fn result_ips(r: &Value) -> Vec<String> {
    r["ips"].as_array().into_iter().flatten().filter_map(|i| i["address"].as_str().map(str::to_string)).collect()
}

fn host_veths(w: &World) -> Vec<String> {
    w.host.link_names().into_iter().filter(|n| n.starts_with("veth")).collect()
}

/// Result interfaces: bridge, host veth, container veth (in the netns), MACs matching the kernel.
fn assert_bridge_result(w: &World, r: &Value, container: usize) {
    let ifs = r["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 3, "{r:#}");
    assert_eq!(ifs[0]["name"], "cmbr0");
    let veth = ifs[1]["name"].as_str().expect("host veth name");
    assert!(veth.starts_with("veth") && veth.len() == 12, "host veth name {veth}");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], w.c(container).path_str());
    let br = w.host.link("cmbr0").expect("bridge exists");
    assert_eq!(ifs[0]["mac"], br["address"], "bridge MAC in result");
    let hv = w.host.link(veth).expect("host veth exists");
    assert_eq!(ifs[1]["mac"], hv["address"], "host veth MAC in result");
    assert_eq!(hv["master"], "cmbr0", "host veth is a port of the bridge");
    let cv = w.c(container).link("eth0").expect("container eth0 exists");
    assert_eq!(ifs[2]["mac"], cv["address"], "container MAC in result");
    assert_eq!(cv["linkinfo"]["info_kind"], "veth");
    for ip in r["ips"].as_array().into_iter().flatten() {
        assert_eq!(ip["interface"], 2, "ips point at the container interface: {r:#}");
    }
}

#[test]
fn bridge_two_containers_ping_v4_v6_and_gateway() {
    let w = World::new("brping", 2, Impl::Ours);
    let s = Subnets::alloc();
    let conf = dual_conf(&w, &s, "brping");
    let r0 = w.add(&conf).cid("c0").container(0).run().ok();
    let r1 = w.add(&conf).cid("c1").container(1).run().ok();
    assert_bridge_result(&w, &r0, 0);
    assert_bridge_result(&w, &r1, 1);
    assert_eq!(result_ips(&r0), vec![format!("{}/24", s.ip4(2)), format!("{}/64", s.ip6(2))]);
    assert_eq!(result_ips(&r1), vec![format!("{}/24", s.ip4(3)), format!("{}/64", s.ip6(3))]);
    assert_eq!(r0["ips"][0]["gateway"], s.ip4(1));
    assert_eq!(r0["ips"][1]["gateway"], s.ip6(1));

    // kernel state matches the result
    assert_eq!(w.c(0).addrs("eth0"), result_ips(&r0));
    assert_eq!(w.c(1).addrs("eth0"), result_ips(&r1));
    let mut br_addrs = w.host.addrs("cmbr0");
    br_addrs.sort();
    assert_eq!(
        br_addrs,
        vec![format!("{}/24", s.ip4(1)), format!("{}/64", s.ip6(1))],
        "gateway addresses on the bridge"
    );
    assert_eq!(w.host.sysctl("net/ipv4/ip_forward").as_deref(), Some("1"));
    assert_eq!(w.host.sysctl("net/ipv6/conf/all/forwarding").as_deref(), Some("1"));
    let routes = w.c(0).routes();
    assert!(routes.iter().any(|r| r["dst"] == "default" && r["gateway"] == s.ip4(1)), "v4 default route: {routes:?}");
    assert!(routes.iter().any(|r| r["dst"] == "default" && r["gateway"] == s.ip6(1)), "v6 default route: {routes:?}");
    assert_eq!(w.c(0).sysctl("net/ipv6/conf/eth0/accept_dad").as_deref(), Some("0"), "DAD off without enabledad");

    // traffic: container to container (v4, v6) and container to gateway (the bridge address may
    // still be in DAD for a moment, hence the retries)
    assert!(w.c(0).ping(&s.ip4(3), 2), "c0 -> c1 over IPv4");
    assert!(w.c(1).ping(&s.ip4(2), 2), "c1 -> c0 over IPv4");
    assert!(w.c(0).ping(&s.ip6(3), 3), "c0 -> c1 over IPv6");
    assert!(w.c(0).ping(&s.ip4(1), 2), "c0 -> gateway over IPv4");
    assert!(w.c(1).ping(&s.ip6(1), 10), "c1 -> gateway over IPv6");

    // CHECK passes for both attachments
    w.check(&conf, &r0).cid("c0").container(0).run().ok();
    w.check(&conf, &r1).cid("c1").container(1).run().ok();

    // DEL removes container link, host veth and lease; the bridge stays
    w.del(&conf).cid("c0").container(0).run().ok();
    assert!(w.c(0).link("eth0").is_none(), "container eth0 removed");
    assert_eq!(host_veths(&w).len(), 1, "only c1's veth is left");
    assert_eq!(w.leases("brping"), vec![s.ip4(3), s.ip6(3)], "only c1's leases are left");
    assert!(!w.c(1).ping(&s.ip4(2), 1), "c0's address is gone");
    w.del(&conf).cid("c0").container(0).run().ok();
    w.del(&conf).cid("c1").container(1).run().ok();
    assert!(host_veths(&w).is_empty());
    assert!(w.leases("brping").is_empty(), "no lease left: {:?}", w.store("brping"));
    assert!(w.c(1).routes().is_empty(), "no route left in the container");
    assert!(w.host.link("cmbr0").is_some(), "the bridge is never removed");
}

/// A second ADD on a bridge that has its gateway leaves the bridge's MAC alone, as the
/// reference does: setting it, even to the same value, makes the kernel announce an address
/// change, which flushes the bridge's ARP entries (the host's entry for the first pod is gone).
#[test]
fn bridge_second_add_keeps_the_bridges_neighbours() {
    let w = World::new("brneigh", 2, Impl::Ours);
    let s = Subnets::alloc();
    let mut conf = v4_conf(&w, &s, "brneigh");
    conf["isGateway"] = json!(true);
    let r0 = w.add(&conf).cid("c0").container(0).run().ok();
    assert!(w.host.ping(&s.ip4(2), 3), "host -> c0");
    let neigh = |w: &World| -> Vec<String> {
        let v = w.host.ip_json(&["neigh", "show", "dev", "cmbr0"]);
        v.as_array().into_iter().flatten().filter_map(|n| n["dst"].as_str().map(str::to_string)).collect()
    };
    assert!(neigh(&w).contains(&s.ip4(2)), "the host learnt c0: {:?}", neigh(&w));
    let r1 = w.add(&conf).cid("c1").container(1).run().ok();
    assert!(neigh(&w).contains(&s.ip4(2)), "c0's entry survives the second ADD: {:?}", neigh(&w));
    assert_eq!(r1["interfaces"][0]["mac"], r0["interfaces"][0]["mac"], "the bridge keeps its MAC");
    assert_bridge_result(&w, &r1, 1);
}

#[test]
fn bridge_del_after_netns_is_gone() {
    let mut w = World::new("brgone", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = v4_conf(&w, &s, "brgone");
    let r = w.add(&conf).run().ok();
    assert_eq!(result_ips(&r), vec![format!("{}/24", s.ip4(2))]);
    assert_eq!(w.leases("brgone").len(), 1);
    let path = w.c(0).path_str();
    w.containers[0].delete();
    w.del(&conf).netns_path(&path).run().ok();
    assert!(w.leases("brgone").is_empty(), "DEL without netns still releases the lease");
    assert!(wait_for(5, || host_veths(&w).is_empty()), "the veth dies with the netns (asynchronously)");
    // and without CNI_NETNS at all
    w.del(&conf).unset("CNI_NETNS").run().ok();
}

#[test]
fn bridge_add_existing_ifname_fails_and_leaves_nothing() {
    let w = World::new("brexist", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = v4_conf(&w, &s, "brexist");
    w.c(0).must(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let e = w.add(&conf).run().err();
    assert!(!e.msg.is_empty(), "error has a message");
    assert!(host_veths(&w).is_empty(), "no host veth left: {:?}", w.host.link_names());
    assert!(w.leases("brexist").is_empty(), "no lease left: {:?}", w.store("brexist"));
    // the pre-existing link is untouched
    let l = w.c(0).link("eth0").expect("pre-existing eth0 still there");
    assert_eq!(l["linkinfo"]["info_kind"], "veth");
    assert!(w.c(0).link("other0").is_some());

    // the same for a second attachment on an ifname a previous ADD created
    let w2 = World::new("brexis2", 1, Impl::Ours);
    let conf2 = v4_conf(&w2, &s, "brexis2");
    w2.add(&conf2).cid("first").run().ok();
    w2.add(&conf2).cid("second").run().err();
    assert_eq!(w2.leases("brexis2"), vec![s.ip4(2)], "only the first attachment holds a lease");
    assert_eq!(host_veths(&w2).len(), 1, "no extra host veth");
    w2.del(&conf2).cid("first").run().ok();
    assert!(w2.leases("brexis2").is_empty());
}

#[test]
fn bridge_l2_only_has_link_up_and_no_addresses() {
    let w = World::new("brl2", 1, Impl::Ours);
    let conf = json!({"cniVersion": "1.0.0", "name": "brl2", "type": "bridge", "bridge": "cmbr0"});
    let r = w.add(&conf).run().ok();
    assert_bridge_result(&w, &r, 0);
    assert!(r.get("ips").is_none() || r["ips"].as_array().is_some_and(|a| a.is_empty()), "no ips: {r:#}");
    let l = w.c(0).link("eth0").expect("eth0");
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "L2 container end is up");
    assert!(w.c(0).addrs("eth0").is_empty());
    w.del(&conf).run().ok();
    w.del(&conf).run().ok();
    assert!(w.c(0).link("eth0").is_none());
    assert!(host_veths(&w).is_empty());
}

/// 50 ADDs racing on one network (8 at a time) get 50 distinct addresses; 50 DELs leave only
/// `lock` and `last_reserved_ip.*` in the store.
#[test]
fn bridge_50_concurrent_adds_get_distinct_addresses() {
    const N: usize = 50;
    const WORKERS: usize = 8;
    let w = World::new("brconc", N, Impl::Ours);
    let s = Subnets::alloc();
    let conf = v4_conf(&w, &s, "brconc");
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(vec![]);
    let next = AtomicUsize::new(0);
    let run_all = |verb: &'static str| {
        next.store(0, Ordering::SeqCst);
        std::thread::scope(|sc| {
            for _ in 0..WORKERS {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= N {
                        break;
                    }
                    let o = w.cni(verb, &conf).cid(&format!("conc{i}")).container(i).run();
                    results.lock().unwrap().push((i, o));
                });
            }
        });
        std::mem::take(&mut *results.lock().unwrap())
    };

    let adds = run_all("ADD");
    assert_eq!(adds.len(), N);
    let mut ips = BTreeSet::new();
    for (i, o) in &adds {
        let r = o.ok();
        let a = result_ips(&r);
        assert_eq!(a.len(), 1, "container {i}: {r:#}");
        assert!(ips.insert(a[0].clone()), "address {} handed out twice", a[0]);
        assert_eq!(w.c(*i).addrs("eth0"), a, "container {i} kernel address");
    }
    assert_eq!(ips.len(), N);
    assert_eq!(w.leases("brconc").len(), N);
    let ports = w.host.links().iter().filter(|l| l["master"] == "cmbr0").count();
    assert_eq!(ports, N, "every host veth is attached to the bridge");

    let dels = run_all("DEL");
    for (_, o) in &dels {
        o.ok();
    }
    let left: Vec<String> = w.store("brconc").into_keys().collect();
    assert!(
        left.iter().all(|f| f == "lock" || f.starts_with("last_reserved_ip.")),
        "store after 50 DELs holds only lock/last_reserved_ip.*: {left:?}"
    );
    assert!(host_veths(&w).is_empty());
}

/// ipMasq with the iptables backend: DEL's `iptables-restore` commits the teardown before the
/// plugin answers (no rule left), and the tool's netfilter socket was parked (`sys::feed`),
/// so the plugin did not wait for the deleting commit's grace period; ADD again works.
#[test]
fn bridge_ipmasq_iptables_add_and_del_run_no_iptables_tool() {
    let w = World::new("brfeed", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut conf = v4_conf(&w, &s, "brfeed");
    conf["ipMasq"] = json!(true);
    conf["ipMasqBackend"] = json!("iptables");
    let nat = || w.host.ok("iptables-save -t nat");
    for round in 0..2 {
        // iptables-nft holds the table: the rules are written, read and torn down over netlink,
        // committed (and in effect) before the plugin answers
        let add = w.add(&conf).env("CNI_MULTI_LOG", "debug").run();
        add.ok();
        assert!(nat().contains("MASQUERADE"), "round {round}: masquerade rule after ADD:\n{}", nat());
        assert!(add.stderr.contains("iptables-nft rules committed over netlink"), "{}", add.stderr);
        assert!(!add.stderr.contains("iptables-restore"), "ADD ran the tool: {}", add.stderr);
        let del = w.del(&conf).env("CNI_MULTI_LOG", "debug").run();
        del.ok();
        assert!(!nat().contains("CNI-"), "round {round}: no CNI chain or rule after DEL:\n{}", nat());
        assert!(del.stderr.contains("iptables-nft teardown committed over netlink"), "{}", del.stderr);
        assert!(!del.stderr.contains("iptables-restore"), "DEL ran the tool: {}", del.stderr);
    }
    // the operator's switch: the tools do everything, as before
    let add = w.add(&conf).env("CNI_MULTI_LOG", "debug").env("CNI_MULTI_IPTABLES_NATIVE", "0").run();
    add.ok();
    assert!(nat().contains("MASQUERADE"));
    assert!(add.stderr.contains("iptables-restore done"), "{}", add.stderr);
    assert!(!add.stderr.contains("over netlink"), "{}", add.stderr);
    let del = w.del(&conf).env("CNI_MULTI_LOG", "debug").env("CNI_MULTI_IPTABLES_NATIVE", "0").run();
    del.ok();
    assert!(!nat().contains("CNI-"), "{}", nat());
    assert!(del.stderr.contains("iptables-restore done"), "{}", del.stderr);
}

/// When the last port leaves a bridge whose MAC was never pinned, the kernel gives the bridge
/// the all-zero MAC (it takes the lowest port MAC, and there is none). That happens after a
/// failed first ADD, or after an L2-only network's pods are gone. A gateway ADD on it must
/// still work: ours pins the MAC the bridge has once the new port is attached (the port's),
/// never the zero MAC. The reference fails there ("could not set bridge's mac: invalid
/// argument") until someone deletes the bridge; shown here too (docs/differences.md).
#[test]
fn bridge_gateway_add_on_a_bridge_left_with_the_zero_mac() {
    each_impl("brzm", 2, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        // an L2-only attachment creates the bridge (MAC not pinned); its DEL leaves no port
        let mut l2 = v4_conf(w, &s, tag);
        l2.as_object_mut().unwrap().remove("ipam");
        w.add(&l2).run().ok();
        w.del(&l2).run().ok();
        let br = w.host.link("cmbr0").expect("the bridge stays");
        assert_eq!(br["address"], "00:00:00:00:00:00", "{which:?}: the kernel zeroes a portless bridge's MAC");
        let mut conf = v4_conf(w, &s, tag);
        conf["isGateway"] = json!(true);
        let add = w.add(&conf).cid("gw1").container(1).run();
        if which == Impl::Reference {
            let e = add.err();
            assert!(e.msg.contains("mac"), "the reference fails on the zero MAC: {}", e.msg);
            return;
        }
        let r = add.ok();
        let br = w.host.link("cmbr0").expect("bridge");
        assert_ne!(br["address"], "00:00:00:00:00:00", "bridge MAC pinned non-zero");
        assert_eq!(r["interfaces"][0]["mac"], br["address"], "result has the bridge MAC");
        assert_eq!(br["address"], r["interfaces"][1]["mac"], "the bridge took its port's MAC");
        // pinned: a second port does not move it
        let r2 = w.add(&conf).cid("gw2").container(0).run().ok();
        assert_eq!(r2["interfaces"][0]["mac"], br["address"]);
        assert_eq!(w.host.link("cmbr0").expect("bridge")["address"], br["address"]);
        assert!(w.c(1).exec(&["ping", "-c1", "-W2", &s.ip4(1)]).status.success(), "gateway answers");
        w.del(&conf).cid("gw2").container(0).run().ok();
        w.del(&conf).cid("gw1").container(1).run().ok();
    });
}

/// A node whose iptables is iptables-legacy keeps its rules in x_tables, as the reference's
/// would, even before any legacy table exists (nothing goes to nf_tables natively); DEL then
/// finds and removes them there with the tools.
/// A failed ADD leaves no masquerade rule: with iptables each family is its own commit, and here
/// the IPv6 one fails for real (someone made the container's masquerade chain a base chain in
/// `ip6 nat`, which the kernel refuses as a jump target) after the IPv4 one went in. The IPv4
/// rules come out again, and the bridge's own undo removes the rest.
#[test]
fn bridge_ipmasq_failing_family_leaves_no_rules_of_the_other() {
    let w = World::new("brmasqhalf", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut conf = dual_conf(&w, &s, "brmasqhalf");
    conf["bridge"] = json!("cmbrmh0");
    conf["ipMasq"] = json!(true);
    conf["ipMasqBackend"] = json!("iptables");
    let chain = cni_multi::names::ipmasq_chain("brmasqhalf", &format!("cid-{}", w.tag));
    w.host.must(&[
        "nft",
        &format!("add table ip6 nat; add chain ip6 nat {chain} {{ type nat hook postrouting priority 100; }}"),
    ]);
    let e = w.add(&conf).run().err();
    assert!(e.msg.contains("masquerading"), "{e:?}");
    let nat4 = w.host.ok("iptables-save -t nat");
    assert!(!nat4.contains("CNI-"), "IPv4 masquerade left behind:\n{nat4}");
    assert!(host_veths(&w).is_empty(), "the bridge's undo left a veth: {:?}", host_veths(&w));
}

#[test]
fn bridge_ipmasq_iptables_legacy_node_uses_x_tables() {
    let legacy = std::path::Path::new("/usr/sbin/xtables-legacy-multi");
    if !legacy.exists() {
        eprintln!("skip: no iptables-legacy");
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    for tool in ["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"] {
        std::os::unix::fs::symlink(legacy, bin.path().join(tool)).unwrap();
    }
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let w = World::new("brlegacy", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut conf = v4_conf(&w, &s, "brlegacy");
    conf["ipMasq"] = json!(true);
    conf["ipMasqBackend"] = json!("iptables");
    let chain = cni_multi::firewall::iptables::chain_name("brlegacy", "cid-brlegacy");
    w.add(&conf).cid("cid-brlegacy").env("PATH", &path).run().ok();
    let legacy_nat = || w.host.must(&["iptables-legacy-save", "-t", "nat"]);
    assert!(legacy_nat().contains(&chain), "the chain is in x_tables:\n{}", legacy_nat());
    let nft = w.host.must(&["nft", "list", "ruleset"]);
    assert!(!nft.contains(&chain), "nothing of it in nf_tables:\n{nft}");
    w.del(&conf).cid("cid-brlegacy").env("PATH", &path).run().ok();
    assert!(!legacy_nat().contains(&chain), "DEL removed it:\n{}", legacy_nat());
}

/// A bridge the ADD creates keeps the random MAC the kernel gave it at creation: the gateway
/// step pins the MAC the bridge had before this ADD attached its port, as the reference pins
/// `br.Attrs().HardwareAddr` from its lookup before `setupVeth`. (Until 2026-12-07 ours pinned
/// the port's MAC, which the bridge had taken from its first port.) Both implementations.
#[test]
fn bridge_new_bridge_keeps_its_own_mac_as_the_reference() {
    each_impl("brown", 2, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let mut conf = v4_conf(w, &s, tag);
        conf["isGateway"] = json!(true);
        let r = w.add(&conf).run().ok();
        let br = w.host.link("cmbr0").expect("bridge");
        assert_eq!(r["interfaces"][0]["mac"], br["address"], "{which:?}: the result has the bridge's MAC");
        assert_ne!(br["address"], r["interfaces"][1]["mac"], "{which:?}: the bridge kept its own MAC, not its port's");
        let assign = w.host.ok("cat /sys/class/net/cmbr0/addr_assign_type");
        assert_eq!(assign.trim(), "3", "{which:?}: the MAC was set (NET_ADDR_SET), so ports cannot move it");
        // a second port (a lower MAC or not) leaves it where it is, and DEL of the first too
        w.add(&conf).cid("second").container(1).run().ok();
        w.del(&conf).run().ok();
        assert_eq!(w.host.link("cmbr0").expect("bridge")["address"], br["address"], "{which:?}: pinned");
        w.del(&conf).cid("second").container(1).run().ok();
    });
}

/// The container's routes from IPAM go in front of existing ones for the same destination
/// (RTM_NEWROUTE with NLM_F_CREATE only, as the reference's `RouteAddEcmp`): a container
/// attached twice to networks that both give a default route uses the newest interface's,
/// as with the reference. Until 2026-12-07 ours appended (NLM_F_APPEND) and the first
/// interface's route stayed in use. Both implementations.
#[test]
fn bridge_second_interface_default_route_comes_first_as_the_reference() {
    each_impl("brrt", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let mut conf = v4_conf(w, &s, tag);
        conf["isGateway"] = json!(true);
        conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        w.add(&conf).run().ok();
        w.add(&conf).cid("again").ifname("eth1").run().ok();
        let got = w.c(0).must(&["ip", "-4", "route", "get", "198.19.250.1"]);
        assert!(got.contains("dev eth1"), "{which:?}: the newest default route is used: {got}");
        let defaults = w.c(0).must(&["ip", "-4", "route", "show", "default"]);
        let first = defaults.lines().next().unwrap_or_default();
        assert!(first.contains("dev eth1"), "{which:?}: eth1's default route is listed first:\n{defaults}");
        w.del(&conf).cid("again").ifname("eth1").run().ok();
        w.del(&conf).run().ok();
    });
}

/// CHECK finds what the reference's CHECK finds missing: the container's subnet route (the
/// kernel's `local` route of the address does not stand in for it), the host veth's MAC, and
/// the bridge's entry in prevResult. Each case fails in both implementations.
#[test]
fn bridge_check_fails_on_a_missing_subnet_route_a_changed_host_mac_or_no_bridge_entry() {
    each_impl("brck", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let mut conf = v4_conf(w, &s, tag);
        conf["isGateway"] = json!(true);
        let prev = w.add(&conf).run().ok();
        w.check(&conf, &prev).run().ok();

        // 1. the bridge's entry gone from prevResult
        let mut no_br = prev.clone();
        no_br["interfaces"].as_array_mut().unwrap().remove(0);
        for ip in no_br["ips"].as_array_mut().unwrap() {
            ip["interface"] = json!(1);
        }
        let e = w.check(&conf, &no_br).run().err();
        assert!(!e.msg.is_empty(), "{which:?}: CHECK without the bridge in prevResult fails");

        // 2. the host veth's MAC changed
        let veth = prev["interfaces"][1]["name"].as_str().unwrap().to_string();
        let mac = prev["interfaces"][1]["mac"].as_str().unwrap().to_string();
        w.host.must(&["ip", "link", "set", &veth, "address", "02:00:00:00:aa:01"]);
        let e = w.check(&conf, &prev).run().err();
        assert!(e.msg.contains("Mac") || e.msg.contains("MAC"), "{which:?}: {}", e.msg);
        w.host.must(&["ip", "link", "set", &veth, "address", &mac]);
        w.check(&conf, &prev).run().ok();

        // 3. the subnet route deleted (the address and its local route stay)
        w.c(0).must(&["ip", "route", "del", &s.net4(), "dev", "eth0"]);
        let e = w.check(&conf, &prev).run().err();
        assert!(!e.msg.is_empty(), "{which:?}: CHECK without the subnet route fails");
        w.del(&conf).run().ok();
    });
}

/// `"bridge": ""` names no bridge: the reference fails creating a bridge called "" (it does
/// not fall back to cni0, which may belong to another network). Ours refuses it before any
/// change (code 7); a missing `bridge` key still means cni0.
#[test]
fn bridge_empty_bridge_name_is_refused_not_cni0() {
    let w = World::new("brempty", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut conf = v4_conf(&w, &s, "brempty");
    conf["bridge"] = json!("");
    let e = w.add(&conf).run().err_code(7);
    assert!(e.msg.contains("bridge name"), "{}", e.msg);
    assert!(w.host.link("cni0").is_none(), "no cni0 made");
    assert!(w.leases("brempty").is_empty(), "no lease taken");
    w.del(&conf).run().ok();
    if have_reference("bridge") {
        let r = World::new("bremptyr", 1, Impl::Reference);
        let mut conf = v4_conf(&r, &s, "bremptyr");
        conf["bridge"] = json!("");
        r.add(&conf).run().err();
        assert!(r.host.link("cni0").is_none(), "the reference makes no cni0 either");
    }
}

/// `mtu` is a Go int in the reference: a negative value is not sent (the kernel's default
/// applies), and DEL of such a config works. Until 2026-12-07 ours refused it on ADD and on
/// DEL (a u32). bridge and ptp, both implementations.
#[test]
fn negative_mtu_means_the_kernel_default_as_the_reference() {
    each_impl("mtun", 2, &["bridge", "ptp"], |w, which, tag| {
        let s = Subnets::alloc();
        let mut conf = v4_conf(w, &s, tag);
        conf["mtu"] = json!(-1);
        let r = w.add(&conf).run().ok();
        assert_eq!(w.c(0).link("eth0").expect("eth0")["mtu"], 1500, "{which:?}: {r:#}");
        w.del(&conf).run().ok();
        let s2 = Subnets::alloc();
        let mut ptp = ptp_conf(w, &s2, &format!("{tag}p"), None);
        ptp["mtu"] = json!(-5);
        w.add(&ptp).container(1).run().ok();
        assert_eq!(w.c(1).link("eth0").expect("eth0")["mtu"], 1500, "{which:?}");
        w.del(&ptp).container(1).run().ok();
    });
}

/// A /32 (or /128) address is its own subnet: the kernel makes no route for it in `main`, only
/// the `local` one, so CHECK wants none for it. The reference's CHECK looks for a `main` route
/// to the address's subnet and fails on every such attachment (docs/differences.md).
#[test]
fn bridge_check_of_a_host_address_needs_no_subnet_route() {
    each_impl("brh32", 1, &["bridge", "static"], |w, which, tag| {
        let s = Subnets::alloc();
        let conf = json!({
            "cniVersion": "1.0.0", "name": tag, "type": "bridge", "bridge": "cmbr0",
            "ipam": {"type": "static", "addresses": [{"address": format!("{}/32", s.ip4(5))}]}
        });
        let prev = w.add(&conf).run().ok();
        let check = w.check(&conf, &prev).run();
        match which {
            Impl::Ours => {
                check.ok();
            }
            Impl::Reference => {
                let e = check.err();
                assert!(e.msg.contains("Failed to find Gateway"), "the reference wants a subnet route: {}", e.msg);
            }
        }
        w.del(&conf).run().ok();
    });
}

/// Two interfaces of one container on one ipMasq network share the masquerade chain (its name
/// and comment hold the network and container id, not the interface, as the reference's). DEL
/// of one removes only its own POSTROUTING jump; the other keeps masquerading; the chain goes
/// with the last jump. (Until 2026-12-07 ours removed every jump and the chain; the
/// reference's DEL fails, "Device or resource busy", after flushing the chain.)
#[test]
fn bridge_ipmasq_del_of_one_interface_keeps_the_other_masqueraded() {
    let w = World::new("brmasq2", 1, Impl::Ours);
    let s = Subnets::alloc();
    let mut conf = v4_conf(&w, &s, "brmasq2");
    conf["ipMasq"] = json!(true);
    conf["ipMasqBackend"] = json!("iptables");
    let nat = || w.host.ok("iptables-save -t nat");
    let jumps = |nat: &str| nat.lines().filter(|l| l.starts_with("-A POSTROUTING") && l.contains("CNI-")).count();
    let a = w.add(&conf).run().ok();
    let b = w.add(&conf).ifname("eth1").run().ok();
    let (ip_a, ip_b) = (result_ips(&a)[0].split('/').next().unwrap().to_string(), result_ips(&b)[0].clone());
    assert_eq!(jumps(&nat()), 2, "{}", nat());
    w.del(&conf).ifname("eth1").run().ok();
    let after = nat();
    assert_eq!(jumps(&after), 1, "only eth1's jump went:\n{after}");
    assert!(after.contains(&format!("-s {ip_a}/32")), "eth0's jump stays:\n{after}");
    assert!(!after.contains(&format!("-s {}", ip_b.split('/').next().unwrap())), "{after}");
    assert!(after.contains("-j MASQUERADE"), "the chain keeps its rules:\n{after}");
    w.del(&conf).run().ok();
    assert!(!nat().contains("CNI-"), "the last DEL removes the chain:\n{}", nat());
}

/// One container on one ipMasq network (iptables) through two bridges with their own subnets,
/// eth0 then eth1; `nat` after each step. Both share the chain of network + container id.
fn ipmasq_two_subnets_side(imp: Impl, tag: &str, s: &Subnets) -> (World, Vec<String>, Vec<Value>) {
    let w = World::new(tag, 1, imp);
    w.host_nodad();
    let nets = [s.net4(), format!("{}.0/24", s.v4b)];
    let confs: Vec<Value> = ["cmbr0", "cmbr1"]
        .iter()
        .zip(&nets)
        .map(|(br, net)| {
            let mut c = bridge_conf(&w, "brmasqsub", br, &[net]);
            c["ipMasq"] = json!(true);
            c["ipMasqBackend"] = json!("iptables");
            c["ipam"].as_object_mut().unwrap().remove("routes"); // one default route is enough
            c
        })
        .collect();
    let nat = || {
        let t = w.host.ok("iptables-save -t nat");
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string() + "\n")
            .collect()
    };
    let mut steps = vec![];
    w.add(&confs[0]).cid("c4").run().ok();
    steps.push(nat());
    w.add(&confs[1]).cid("c4").ifname("eth1").run().ok();
    steps.push(nat());
    (w, steps, confs)
}

/// Regression: the second interface's ADD redeclared (flushed) the shared masquerade chain, so
/// the first subnet's ACCEPT (traffic inside it is not masqueraded) was lost. As the reference's
/// `SetupIPMasq` (append what is missing), the nat table after both ADDs equals the reference's.
/// DEL of eth1 removes its jump and its subnet's ACCEPT (no other jump comes from that subnet):
/// the table is the one after eth0's ADD alone (the reference's DEL flushes the chain and fails,
/// "Device or resource busy", see docs/differences.md); the last DEL removes the chain.
#[test]
fn bridge_ipmasq_second_subnet_of_a_container_keeps_the_first_ones_rules() {
    let s = Subnets::alloc();
    let (w, ours, confs) = ipmasq_two_subnets_side(Impl::Ours, "brmsubo", &s);
    let chain = cni_multi::names::ipmasq_chain("brmasqsub", "c4");
    let rules: Vec<&str> = ours[1].lines().filter(|l| l.starts_with(&format!("-A {chain} "))).collect();
    assert_eq!(rules.len(), 3, "ACCEPT of each subnet and one MASQUERADE:\n{}", ours[1]);
    assert!(rules[0].contains(&format!("-d {} ", s.net4())) && rules[2].contains(&format!("-d {}.0/24 ", s.v4b)));
    if have_reference("bridge") {
        let (theirs_w, theirs, theirs_confs) = ipmasq_two_subnets_side(Impl::Reference, "brmsubr", &s);
        assert_eq!(ours, theirs, "nat after each ADD: ours, then the reference's");
        let del = theirs_w.del(&theirs_confs[1]).cid("c4").ifname("eth1").run();
        assert!(!del.success(), "the reference's DEL of eth1 fails (the chain is busy)");
    }
    w.del(&confs[1]).cid("c4").ifname("eth1").run().ok();
    let after: String = w
        .host
        .ok("iptables-save -t nat")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string() + "\n")
        .collect();
    assert_eq!(after, ours[0], "after DEL of eth1: as after eth0's ADD alone");
    w.del(&confs[0]).cid("c4").run().ok();
    assert!(!w.host.ok("iptables-save -t nat").contains("CNI-"), "{}", w.host.ok("iptables-save -t nat"));
    // the nftables backend keeps each interface's rule apart (its comment names the interface)
    let mut nft: Vec<Value> = confs.clone();
    for c in &mut nft {
        c["ipMasqBackend"] = json!("nftables");
    }
    w.add(&nft[0]).cid("c4").run().ok();
    w.add(&nft[1]).cid("c4").ifname("eth1").run().ok();
    let t = w.host.ok("nft list chain inet cni_plugins_masquerade masq_checks");
    assert!(t.contains(&format!("daddr != {}", s.net4())) && t.contains(&format!("daddr != {}.0/24", s.v4b)), "{t}");
    w.del(&nft[1]).cid("c4").ifname("eth1").run().ok();
    let t = w.host.ok("nft list chain inet cni_plugins_masquerade masq_checks");
    assert!(t.contains(&format!("daddr != {}", s.net4())) && !t.contains(&format!("{}.0/24", s.v4b)), "{t}");
    w.del(&nft[0]).cid("c4").run().ok();
}

/// A POSTROUTING jump in the form very old plugins wrote (`-s <subnet>` instead of the address)
/// is removed by DEL with the chain, as the reference's `TeardownIPMasq` ("downward
/// compatibility"). Regression: ours took it for another interface's jump and left both.
#[test]
fn bridge_ipmasq_del_removes_a_legacy_subnet_jump_and_the_chain() {
    each_impl("brmleg", 1, &["bridge"], |w, _, tag| {
        let s = Subnets::alloc();
        let mut conf = v4_conf(w, &s, tag);
        conf["ipMasq"] = json!(true);
        conf["ipMasqBackend"] = json!("iptables");
        let r = w.add(&conf).run().ok();
        let addr = result_ips(&r)[0].clone();
        let ip = addr.split('/').next().unwrap();
        let nat = || w.host.ok("iptables-save -t nat");
        let jump = nat().lines().find(|l| l.starts_with("-A POSTROUTING") && l.contains("CNI-")).unwrap().to_string();
        let legacy = jump.replace(&format!("-s {ip}/32"), &format!("-s {addr}"));
        assert_ne!(legacy, jump);
        w.host.ok(&format!("iptables -t nat -D {}", &jump[3..]));
        w.host.ok(&format!("iptables -t nat -A {}", &legacy[3..]));
        assert!(nat().contains(&format!("-s {}", s.net4())), "{}", nat());
        w.del(&conf).run().ok();
        assert!(!nat().contains("CNI-"), "the legacy jump and the chain are gone:\n{}", nat());
    });
}

/// GC with `cni.dev/valid-attachments`, and no CNI_NETNS, CNI_IFNAME or CNI_CONTAINERID.
fn gc_call<'w>(w: &'w World, conf: &Value, valid: Value) -> plugin::Call<'w> {
    let mut c = conf.clone();
    c["cniVersion"] = json!("1.1.0");
    c["cni.dev/valid-attachments"] = valid;
    w.cni("GC", &c).unset("CNI_NETNS").unset("CNI_IFNAME").unset("CNI_CONTAINERID")
}

/// GC validates `cni.dev/valid-attachments` before it passes GC on to IPAM: an entry without its
/// ifname is code 7 and nothing is released. Our host-local refuses such a list itself; a foreign
/// IPAM (run by exec) need not, so the plugin must not call it (regression: bridge, ptp and
/// vpc-routed called IPAM GC first and answered 7 afterwards; macvlan, ipvlan, vlan, tap, dummy
/// and host-device never checked the list and answered success). The probe IPAM writes a file
/// when it gets a GC; a well-formed list shows that it is reached.
#[test]
fn gc_refuses_a_malformed_attachment_list_before_ipam_releases_anything() {
    let w = World::new("brgcbad", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = v4_conf(&w, &s, "brgcbad");
    w.add(&conf).run().ok();
    let leases = w.leases("brgcbad");
    assert_eq!(leases.len(), 1);
    gc_call(&w, &conf, json!([{"containerID": "x"}])).run().err_code(7);
    assert_eq!(w.leases("brgcbad"), leases, "the lease stays");

    let probe_dir = w.tmp.join("probe-bin");
    std::fs::create_dir_all(&probe_dir).unwrap();
    let marker = w.tmp.join("ipam-gc-called");
    let script = format!("#!/bin/sh\nif [ \"$CNI_COMMAND\" = GC ]; then cat > '{}'; fi\nexit 0\n", marker.display());
    let probe = probe_dir.join("gcprobe");
    std::fs::write(&probe, script).unwrap();
    std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cni_path = format!("{}:{}", probe_dir.display(), w.bin_dir.display());
    // vpc-routed is not among the world's applet links (the reference has no such plugin)
    let ours_dir = w.bin_dir.starts_with(&w.tmp);
    if ours_dir {
        std::os::unix::fs::symlink(runtime::bin(), w.bin_dir.join("vpc-routed")).unwrap();
    }
    let cases = [
        ("bridge", json!({"bridge": "cmbr0"})),
        ("ptp", json!({})),
        ("macvlan", json!({"master": "eth0"})),
        ("ipvlan", json!({"master": "eth0"})),
        ("vlan", json!({"master": "eth0", "vlanId": 5})),
        ("tap", json!({})),
        ("dummy", json!({})),
        ("host-device", json!({"device": "eth0"})),
        ("vpc-routed", json!({})),
    ];
    let mut wrong = Vec::new();
    for (plugin, extra) in cases {
        if plugin == "vpc-routed" && !ours_dir {
            continue; // CNI_MULTI_TEST_OURS: the plugin dir is not ours to add to
        }
        let mut c = extra;
        c["name"] = json!("brgcprobe");
        c["type"] = json!(plugin);
        c["ipam"] = json!({"type": "gcprobe"});
        let out = gc_call(&w, &c, json!([{"containerID": "x"}])).env("CNI_PATH", &cni_path).run();
        match out.error() {
            Some(e) if e.code == 7 && e.msg.contains("valid-attachments") => {}
            other => wrong.push(format!("{plugin}: want code 7 naming the list, got {other:?}")),
        }
        if std::fs::remove_file(&marker).is_ok() {
            wrong.push(format!("{plugin}: IPAM GC was called with a malformed attachment list"));
        }
        gc_call(&w, &c, json!([{"containerID": "x", "ifname": "eth0"}])).env("CNI_PATH", &cni_path).run().ok();
        let got: Value = serde_json::from_slice(&std::fs::read(&marker).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{plugin}: the probe IPAM was not reached with a valid list: {e}"));
        assert_eq!(got["cni.dev/valid-attachments"][0]["ifname"], "eth0", "{plugin}: {got}");
        std::fs::remove_file(&marker).unwrap();
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    w.del(&conf).run().ok();
}

/// Two networks on one bridge with `macspoofchk`: GC of one never removes the other's spoof check
/// (regression: GC of msA removed the live pB's `macspoofchk-pB-mb0` rules of msB, because bridge
/// GC took every port of its bridge for its own). Stale state still goes: an attachment of this
/// network that is not valid (its port may still exist), one whose port is gone, and a check the
/// reference made (no network comment) once its port is gone, not before.
#[test]
fn bridge_macspoofchk_gc_keeps_other_networks_spoof_checks_on_the_same_bridge() {
    let mut w = World::new("brmsgc", 3, Impl::Ours);
    let (sa, sb) = (Subnets::alloc(), Subnets::alloc());
    let conf = |net: &str, s: &Subnets| {
        json!({"cniVersion": "1.0.0", "name": net, "type": "bridge", "bridge": "br9", "macspoofchk": true,
               "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]}})
    };
    let (a, b) = (conf("msA", &sa), conf("msB", &sb));
    w.add(&a).cid("pA").ifname("ma0").run().ok();
    w.add(&b).cid("pB").ifname("mb0").container(1).run().ok();
    let table = |w: &World| w.host.must(&["nft", "list", "table", "bridge", "nat"]);
    let checks = |w: &World| {
        let t = table(w);
        let mut v: Vec<String> = ["pA-ma0", "pB-mb0", "pC-mc0"]
            .iter()
            .filter(|c| t.contains(&format!("comment \"macspoofchk-{c}\"")))
            .map(|c| c.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(checks(&w), vec!["pA-ma0", "pB-mb0"]);
    gc_call(&w, &a, json!([{"containerID": "pA", "ifname": "ma0"}])).run().ok();
    assert_eq!(checks(&w), vec!["pA-ma0", "pB-mb0"], "GC of msA removed msB's spoof check:\n{}", table(&w));
    gc_call(&w, &b, json!([{"containerID": "pB", "ifname": "mb0"}])).run().ok();
    assert_eq!(checks(&w), vec!["pA-ma0", "pB-mb0"], "GC of msB removed msA's spoof check:\n{}", table(&w));

    // a check the reference's bridge made on msA (no network comment): kept while its port exists
    let reference = have_reference("bridge") && w.bin_dir.starts_with(&w.tmp);
    if reference {
        std::os::unix::fs::symlink(
            std::path::Path::new(plugin::REFERENCE_DIR).join("bridge"),
            w.bin_dir.join("ref-bridge"),
        )
        .unwrap();
        w.add(&a).plugin("ref-bridge").cid("pC").ifname("mc0").container(2).run().ok();
        assert_eq!(checks(&w), vec!["pA-ma0", "pB-mb0", "pC-mc0"]);
    }
    // msA's GC with pA no longer valid: pA's check goes although its port exists; pC's stays
    gc_call(&w, &a, json!([])).run().ok();
    let want: Vec<&str> = if reference { vec!["pB-mb0", "pC-mc0"] } else { vec!["pB-mb0"] };
    assert_eq!(checks(&w), want, "{}", table(&w));
    // ports gone with their netns (no DEL): msA's GC takes the ownerless pC, msB's its own pB
    w.containers[1].delete();
    w.containers[2].delete();
    assert!(wait_for(5, || host_veths(&w).len() == 1), "the veths die with their netns: {:?}", host_veths(&w));
    gc_call(&w, &a, json!([])).run().ok();
    assert_eq!(checks(&w), vec!["pB-mb0"], "{}", table(&w));
    gc_call(&w, &b, json!([])).run().ok();
    assert!(checks(&w).is_empty(), "{}", table(&w));
    w.del(&a).cid("pA").ifname("ma0").run().ok();
}

/// `isDefaultGateway` with an IPAM default route that names no gateway: the reference counts
/// only a default route with a gateway as present, adds its own, and the second identical
/// default route fails its ADD ("file exists"). Ours keeps the IPAM route, routed via the
/// gateway as every route without one is, and adds no second (docs/differences.md).
#[test]
fn bridge_default_gateway_with_an_ipam_default_route_without_gw() {
    each_impl("brdgw", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let mut conf = v4_conf(w, &s, tag);
        conf["isDefaultGateway"] = json!(true);
        conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        let add = w.add(&conf).run();
        match which {
            Impl::Ours => {
                let r = add.ok();
                let defaults = w.c(0).must(&["ip", "-4", "route", "show", "default"]);
                assert_eq!(defaults.lines().count(), 1, "{defaults}");
                assert!(defaults.contains(&format!("via {}", s.ip4(1))), "{defaults}");
                assert_eq!(r["routes"].as_array().map(Vec::len), Some(1), "{r:#}");
            }
            Impl::Reference => {
                let e = add.err();
                assert!(e.msg.contains("exists"), "the reference adds a second default route: {}", e.msg);
            }
        }
        w.del(&conf).run().ok();
    });
}

/// A bridge name with a Unicode space that has no byte the kernel's Latin-1 `isspace` calls space
/// (`"b\u{2028}"` is E2 80 A8, `"b\u{85}"` C2 85) is a valid link name (`dev_valid_name` tests
/// bytes): the reference makes the bridge. Ours refused it (a `char::is_whitespace` test) until
/// 2026-12-07. Both implementations make the bridge, attach to it and delete the attachment.
#[test]
fn bridge_name_with_unicode_spaces_the_kernel_takes_works_as_in_the_reference() {
    each_impl("brus", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        for (i, name) in ["b\u{2028}", "b\u{85}"].into_iter().enumerate() {
            let mut conf = v4_conf(w, &s, tag);
            conf["bridge"] = json!(name);
            let cid = format!("us{i}");
            let r = w.add(&conf).cid(&cid).run().ok();
            assert_eq!(r["interfaces"][0]["name"], name, "{which:?}: {r}");
            assert!(w.host.link(name).is_some(), "{which:?}: bridge {name:?} exists: {:?}", w.host.link_names());
            w.del(&conf).cid(&cid).run().ok();
            assert_eq!(w.c(0).link_names(), vec!["lo".to_string()], "{which:?}: DEL removed the container end");
        }
    });
}

/// An L2-only bridge (no IPAM) at cniVersion 0.1.0/0.2.0: the result has no address, which those
/// versions cannot express. Ours rolls the ADD back and answers code 7 (a config the requested
/// version cannot express, as for two addresses of a family); the reference answers 999 with the
/// same message and leaves the veth pair behind.
#[test]
fn bridge_l2_at_0_2_0_is_code_7_and_leaves_nothing() {
    each_impl("brl2v", 1, &["bridge"], |w, which, tag| {
        for version in ["0.1.0", "0.2.0"] {
            let conf = json!({"cniVersion": version, "name": tag, "type": "bridge", "bridge": "cml2v0"});
            let o = w.add(&conf).run();
            match which {
                Impl::Ours => {
                    let e = o.err_code(7);
                    assert_eq!(e.msg, "cannot convert: no valid IP addresses");
                    assert_eq!(w.c(0).link_names(), vec!["lo".to_string()], "{version}: the container veth is gone");
                    assert!(host_veths(w).is_empty(), "{version}: the host veth is gone: {:?}", w.host.link_names());
                }
                Impl::Reference => {
                    assert_eq!(o.err_code(999).msg, "cannot convert: no valid IP addresses");
                    assert!(w.c(0).link("eth0").is_some(), "{version}: the reference leaves the container veth");
                }
            }
            w.del(&conf).run().ok();
        }
    });
}

/// An IPAM route whose `gw` is unspecified is on-link: `"gw": "0.0.0.0"` from host-local or
/// static is installed without a gateway by both implementations (the kernel takes a 0.0.0.0
/// gateway as none), beside a route without `gw`, which goes via the gateway. CHECK of that
/// attachment passes with ours; the reference's CHECK compares the kernel's missing gateway
/// with 0.0.0.0 and fails its own attachment ("Expected Route … GW:0.0.0.0 not found"). For
/// IPv6, `"gw": "::"` is on-link too with ours; the reference hands `::` to the kernel, which
/// refuses it (999 `invalid argument`). Until 2026-12-07 ours failed that ADD as well, and its
/// CHECK failed the v4 attachment ("Failed to find route … via 0.0.0.0").
#[test]
fn bridge_route_with_an_unspecified_gw_is_on_link() {
    each_impl("brgz", 1, &["bridge", "static", "host-local"], |w, which, tag| {
        w.host_nodad();
        let s = Subnets::alloc();
        let on_link4 = format!("{}.0/24", s.v4b);
        let v4_routes = json!([{"dst": on_link4, "gw": "0.0.0.0"}, {"dst": "198.19.250.0/24"}]);
        let host_local = json!({"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4(), "gateway": s.ip4(1)}]], "routes": v4_routes});
        let static_ = json!({"type": "static", "addresses": [{"address": format!("{}/24", s.ip4(9)), "gateway": s.ip4(1)}], "routes": v4_routes});
        for ipam in [host_local, static_] {
            let conf = json!({"cniVersion": "1.0.0", "name": tag, "type": "bridge", "bridge": "cmbr0", "ipam": ipam});
            let r = w.add(&conf).run().ok();
            assert_eq!(r["routes"][0], json!({"dst": on_link4, "gw": "0.0.0.0"}), "{which:?}: {r}");
            let routes = w.c(0).ip_json(&["-4", "route", "show", "dev", "eth0"]);
            let on_link = routes.as_array().unwrap().iter().find(|x| x["dst"] == on_link4.as_str());
            let on_link = on_link.unwrap_or_else(|| panic!("{which:?}: no route to {on_link4}: {routes}"));
            assert!(on_link.get("gateway").is_none(), "{which:?}: on-link, no gateway: {on_link}");
            let via = routes.as_array().unwrap().iter().find(|x| x["dst"] == "198.19.250.0/24");
            assert_eq!(via.map(|x| x["gateway"].clone()), Some(json!(s.ip4(1))), "{which:?}: {routes}");
            let check = w.check(&conf, &r).run();
            match which {
                Impl::Ours => {
                    check.ok();
                }
                Impl::Reference => {
                    let e = check.err_code(999);
                    assert!(e.msg.contains("GW:0.0.0.0} not found in routing table"), "{}", e.msg);
                }
            }
            w.del(&conf).run().ok();
        }
        let on_link6 = format!("{}::/64", s.v6b);
        let conf = json!({"cniVersion": "1.0.0", "name": tag, "type": "bridge", "bridge": "cmbr0", "ipam": {
            "type": "static",
            "addresses": [{"address": format!("{}/64", s.ip6(9)), "gateway": s.ip6(1)}],
            "routes": [{"dst": on_link6, "gw": "::"}]
        }});
        let out = w.add(&conf).run();
        match which {
            Impl::Ours => {
                let r = out.ok();
                assert_eq!(r["routes"][0], json!({"dst": on_link6, "gw": "::"}), "{r}");
                let routes = w.c(0).ip_json(&["-6", "route", "show", "dev", "eth0"]);
                let on_link = routes.as_array().unwrap().iter().find(|x| x["dst"] == on_link6.as_str());
                assert!(on_link.is_some_and(|x| x.get("gateway").is_none()), "on-link, no gateway: {routes}");
                w.check(&conf, &r).run().ok();
            }
            Impl::Reference => {
                let e = out.err_code(999);
                assert!(e.msg.contains("via :: dev eth0': invalid argument"), "{}", e.msg);
            }
        }
        w.del(&conf).run().ok();
    });
}

// ---------------------------------------------------------------- the veth pair as v1.9.1 makes it

/// A link's queue length as `ip -j` prints it (it leaves out a txqlen of 0).
pub(crate) fn txqlen(ns: &Netns, name: &str) -> u64 {
    let l = ns.link(name).unwrap_or_else(|| panic!("no {name} in {}", ns.name));
    l["txqlen"].as_u64().unwrap_or(0)
}

/// Both ends of the pod's veth pair keep the kernel's default txqueuelen (1000), as v1.9.1
/// makes the pair (`netlink.NewLinkAttrs()`: no IFLA_TXQLEN); the Debian 1.1.1 oracle sends 0
/// for both (a zero-length queue breaks FIFO shapers that take it as their packet limit).
#[test]
fn bridge_veth_ends_keep_the_kernel_default_txqueuelen() {
    each_impl("brqlen", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let conf = v4_conf(w, &s, tag);
        let r = w.add(&conf).run().ok();
        let host = r["interfaces"][1]["name"].as_str().expect("host veth");
        let want = if which.flavor() == Flavor::CniMulti { 1000 } else { 0 };
        assert_eq!((txqlen(w.c(0), "eth0"), txqlen(&w.host, host)), (want, want), "{which:?}: container, host end");
        w.del(&conf).run().ok();
    });
}

/// `disableContainerInterface`: the container end is created down and stays down, so the port
/// never has carrier: the host veth gets no IPv6 link-local address and no `fe80::/64` route,
/// as with v1.9.1. (While the pair was created up, the host end had carrier for a moment
/// during the ADD and kept a link-local address and a `linkdown` fe80::/64 route.)
#[test]
fn bridge_disabled_container_interface_leaves_the_host_veth_without_link_local() {
    let w = World::new("brdown", 1, Impl::Ours);
    let conf = json!({"cniVersion": "1.0.0", "name": "brdown", "type": "bridge", "bridge": "cmbr0",
                      "disableContainerInterface": true});
    let r = w.add(&conf).run().ok();
    let host = r["interfaces"][1]["name"].as_str().expect("host veth").to_string();
    let eth0 = w.c(0).link("eth0").expect("eth0");
    assert!(!eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "eth0 stays down: {eth0}");
    let hv = w.host.link(&host).expect("host veth");
    assert!(hv["flags"].as_array().unwrap().iter().any(|f| f == "NO-CARRIER"), "no carrier: {hv}");
    // give a late address event its chance to show
    std::thread::sleep(std::time::Duration::from_millis(200));
    let addrs = w.host.ip_json(&["-6", "addr", "show", "dev", &host]);
    let ll: Vec<&Value> = addrs[0]["addr_info"].as_array().into_iter().flatten().collect();
    assert!(ll.is_empty(), "no IPv6 address on the host veth: {ll:?}");
    let routes = w.host.ip_json(&["-6", "route", "show", "dev", &host]);
    assert!(routes.as_array().is_some_and(|a| a.is_empty()), "no IPv6 route over the host veth: {routes}");
    w.del(&conf).run().ok();
    assert!(host_veths(&w).is_empty());
}

/// With `enabledad` false (the default) DAD is off on the container end before it has carrier:
/// right after ADD its link-local address is usable, not `tentative` (v1.9.1 creates the end
/// down and sets accept_dad=0 before ConfigureIface sets it up). While the end was created up,
/// DAD had started with the default accept_dad=1 when the host end came up, so the link-local
/// address stayed tentative for a second after the ADD.
#[test]
fn bridge_without_enabledad_the_container_link_local_is_not_tentative() {
    let w = World::new("brdad", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = v4_conf(&w, &s, "brdad");
    for round in 0..3 {
        w.add(&conf).run().ok();
        let addrs = w.c(0).ip_json(&["-6", "addr", "show", "dev", "eth0"]);
        let infos: Vec<Value> = addrs[0]["addr_info"].as_array().cloned().unwrap_or_default();
        let tentative: Vec<&Value> = infos.iter().filter(|a| a["tentative"] == true).collect();
        assert!(tentative.is_empty(), "round {round}: tentative right after ADD: {infos:?}");
        assert_eq!(w.c(0).sysctl("net/ipv6/conf/eth0/accept_dad").as_deref(), Some("0"));
        w.del(&conf).run().ok();
    }
}

// ---------------------------------------------------------------- failed ADD, error words, CHECK, MAC

/// A failed ADD takes back the gateway address it put on the bridge, and takes down a bridge
/// that it brought up (the bridge itself stays, as with the reference). The reference (both
/// Debian 1.1.1 and v1.9.1) leaves its gateway address and the bridge up.
/// 1. The IPv6 gateway conflicts with an address already on the (down) bridge, after the IPv4
///    gateway was added: ours removes the IPv4 gateway. The bridge stays up: going down would
///    flush the IPv6 address that was there (the kernel's link-down flush).
/// 2. The IPv4 gateway conflicts with the (down) bridge's own IPv4 address: ours takes the
///    bridge down again, with its address.
#[test]
fn bridge_failed_add_takes_back_its_gateway_address_and_the_bridge_up() {
    each_impl("brgwb", 2, &["bridge"], |w, which, tag| {
        let ours = which.flavor() == Flavor::CniMulti;
        let s = Subnets::alloc();
        let is_up = |br: &str| {
            let l = w.host.link(br).expect("the bridge stays");
            l["flags"].as_array().unwrap().iter().any(|f| f == "UP")
        };
        // 1.
        let mut conf = dual_conf(w, &s, tag);
        conf["bridge"] = json!("cmbrg0");
        let v6 = format!("{}/64", s.ip6(5));
        w.host.must(&["ip", "link", "add", "cmbrg0", "type", "bridge"]);
        w.host.must(&["ip", "addr", "add", &v6, "dev", "cmbrg0", "nodad"]);
        let e = w.add(&conf).run().err_code(999);
        assert!(e.msg.starts_with("failed to set bridge addr: \"cmbrg0\" already has an IP address different from "));
        let gw4 = format!("{}/24", s.ip4(1));
        let addrs = w.host.addrs("cmbrg0");
        if ours {
            assert_eq!(addrs, vec![v6.clone()], "ours: the IPv4 gateway is gone, the IPv6 address stays");
            assert!(host_veths(w).is_empty() && w.leases(tag).is_empty(), "nothing else left");
        } else {
            assert!(addrs.contains(&gw4), "the reference leaves its IPv4 gateway: {addrs:?}");
        }
        assert!(is_up("cmbrg0"), "{which:?}: up (ours: going down would flush {v6})");
        // 2.
        conf["bridge"] = json!("cmbrg1");
        let v4 = format!("{}/24", s.ip4(254));
        w.host.must(&["ip", "link", "add", "cmbrg1", "type", "bridge"]);
        w.host.must(&["ip", "addr", "add", &v4, "dev", "cmbrg1"]);
        let e = w.add(&conf).cid("second").container(1).run().err_code(999);
        let want = format!("failed to set bridge addr: \"cmbrg1\" already has an IP address different from {gw4}");
        assert_eq!(e.msg, want, "{which:?}");
        assert_eq!(w.host.addrs("cmbrg1"), vec![v4.clone()], "{which:?}: the bridge's own address stays");
        assert_eq!(is_up("cmbrg1"), !ours, "{which:?}: ours takes the bridge it brought up down again");
    });
}

/// `text` with every random host veth name (`veth` + 8 hex digits) as `veth*`.
fn veth_star(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("veth") {
        let tail = &rest[i + 4..];
        let hex = tail.bytes().take(8).filter(|b| b.is_ascii_hexdigit()).count() == 8;
        out.push_str(&rest[..i]);
        out.push_str(if hex { "veth*" } else { "veth" });
        rest = if hex { &tail[8..] } else { tail };
    }
    out + rest
}

/// Bridge and veth errors are v1.9.1's words (the kernel's errno as Go prints it): a bridge name
/// taken by another kind of link, a bridge the kernel refuses, a VLAN on a bridge without VLAN
/// filtering, a MAC the kernel refuses for the container end, and an existing CNI_IFNAME (bridge
/// and ptp share the veth step). The Debian 1.1.1 oracle has the same words except for the
/// last, which v1.9.1 changed.
#[test]
fn bridge_and_veth_errors_are_the_references_words() {
    each_impl("brwords", 1, &["bridge", "ptp"], |w, which, tag| {
        let s = Subnets::alloc();
        let msg = |conf: &Value| {
            let o = w.add(conf).run();
            let e = o.err_code(999);
            // ours rolls back; the reference leaves the pair of a failure after its creation
            if which.flavor() == Flavor::CniMulti {
                assert!(w.c(0).link("eth0").is_none() || e.msg.contains("already exists"), "{e:?}: eth0 left");
            } else if !e.msg.contains("already exists") {
                let _ = w.c(0).exec(&["ip", "link", "del", "eth0"]);
            }
            // the random host veth name
            veth_star(&e.msg)
        };
        let l2 = |bridge: &str, extra: Value| {
            let mut c = json!({"cniVersion": "1.0.0", "name": tag, "type": "bridge", "bridge": bridge});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        w.host.must(&["ip", "link", "add", "cmvx0", "type", "veth", "peer", "name", "cmvx1"]);
        assert_eq!(
            msg(&l2("cmvx0", json!({}))),
            "failed to create bridge \"cmvx0\": \"cmvx0\" already exists but is not a bridge"
        );
        // ours appends the kernel's own reason (ext-ack) after the reference's words
        let refused = msg(&l2("cmbm0", json!({"mtu": 70000})));
        let words = "failed to create bridge \"cmbm0\": could not add \"cmbm0\": invalid argument";
        if which.flavor() == Flavor::CniMulti {
            assert_eq!(refused, format!("{words}: mtu greater than device maximum"));
        } else {
            assert_eq!(refused, words);
        }
        w.host.must(&["ip", "link", "add", "cmbv0", "type", "bridge"]);
        assert_eq!(
            msg(&l2("cmbv0", json!({"vlan": 5}))),
            "failed to setup vlan tag on interface \"veth*\": operation not supported"
        );
        assert_eq!(
            msg(&l2("cmbx0", json!({"runtimeConfig": {"mac": "01:00:5e:00:00:01"}}))),
            "failed to make veth pair: cannot assign requested address"
        );
        w.c(0).must(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
        let exists = if which.flavor() == Flavor::CniMulti {
            "container veth name (\"eth0\") peer provided (\"veth*\") already exists"
        } else {
            "container veth name provided (eth0) already exists"
        };
        assert_eq!(msg(&l2("cmbx0", json!({}))), exists, "{which:?} bridge");
        assert_eq!(msg(&ptp_conf(w, &s, tag, None)), exists, "{which:?} ptp");
    });
}

/// CHECK of an older pod passes after a later port gave the bridge a lower MAC: a bridge whose
/// MAC was never pinned (no gateway) takes the lowest MAC of its ports, so the bridge MAC in the
/// pod's prevResult is stale though nothing of the pod changed. The reference's CHECK compares
/// it and fails (reference-features.md: a reference bug not to copy).
#[test]
fn bridge_check_passes_after_a_later_port_lowers_the_bridge_mac() {
    each_impl("brlow", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let conf = v4_conf(w, &s, tag);
        let prev = w.add(&conf).run().ok();
        w.check(&conf, &prev).run().ok();
        w.host.must(&[
            "ip",
            "link",
            "add",
            "cmlow0",
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "cmlow1",
        ]);
        w.host.must(&["ip", "link", "set", "cmlow0", "master", "cmbr0"]);
        let br = w.host.link("cmbr0").expect("bridge");
        assert_eq!(br["address"], "02:00:00:00:00:01", "the bridge took the lower MAC");
        assert_ne!(prev["interfaces"][0]["mac"], br["address"], "prevResult's bridge MAC is stale");
        let check = w.check(&conf, &prev).run();
        if which.flavor() == Flavor::CniMulti {
            check.ok();
        } else {
            let e = check.err_code(999);
            assert!(e.msg.contains("Mac doesn't match"), "the reference compares the bridge MAC: {}", e.msg);
        }
        w.del(&conf).run().ok();
    });
}

/// A container MAC that does not parse (`zz:00`) or is not 6 octets (an EUI-64 Go's ParseMAC
/// takes) is a configuration error: code 7 before anything is made (no bridge, no lease), from
/// `runtimeConfig.mac`, `args.cni.mac` or CNI_ARGS `MAC`. The reference answers 999 after it
/// created the bridge (docs/differences.md, the code-7 row).
#[test]
fn bridge_bad_container_mac_is_code_7_before_the_bridge_is_made() {
    each_impl("brbadmac", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let cases: [(&str, Value, &str); 3] = [
            ("cmbm1", json!({"runtimeConfig": {"mac": "zz:00"}}), ""),
            ("cmbm2", json!({"args": {"cni": {"mac": "02:00:00:00:00:00:00:01"}}}), ""),
            ("cmbm3", json!({}), "IgnoreUnknown=1;MAC=zz:zz:zz:zz:zz:zz"),
        ];
        for (bridge, extra, args) in cases {
            let mut conf = v4_conf(w, &s, tag);
            conf["bridge"] = json!(bridge);
            for (k, v) in extra.as_object().unwrap() {
                conf[k] = v.clone();
            }
            let o = w.add(&conf).cni_args(args).run();
            if which.flavor() == Flavor::CniMulti {
                let e = o.err_code(7);
                assert!(e.msg.contains("MAC"), "{bridge}: {}", e.msg);
                assert!(w.host.link(bridge).is_none(), "{bridge}: no bridge made");
            } else {
                o.err_code(999);
                assert!(w.host.link(bridge).is_some(), "{bridge}: the reference made the bridge first");
            }
            assert!(w.c(0).link("eth0").is_none() && w.leases(tag).is_empty(), "{which:?} {bridge}: nothing left");
        }
    });
}

/// forceAddress replaces a different IPv4 address on the bridge with the gateway; when the ADD
/// then fails (here the IPv6 gateway: the bridge has IPv6 disabled), ours puts the replaced
/// address back, as it takes its own gateway address back. The reference leaves its gateway in
/// place of the address it removed.
#[test]
fn bridge_failed_force_address_add_puts_the_replaced_address_back() {
    each_impl("brfrc", 1, &["bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        let mut conf = dual_conf(w, &s, tag);
        conf["bridge"] = json!("cmbrf0");
        conf["forceAddress"] = json!(true);
        let old = format!("{}/24", s.ip4(254));
        w.host.must(&["ip", "link", "add", "cmbrf0", "type", "bridge"]);
        w.host.must(&["ip", "addr", "add", &old, "dev", "cmbrf0"]);
        w.host.must(&["sysctl", "-qw", "net.ipv6.conf.cmbrf0.disable_ipv6=1"]);
        w.add(&conf).run().err_code(999);
        let addrs = w.host.addrs("cmbrf0");
        if which.flavor() == Flavor::CniMulti {
            assert_eq!(addrs, vec![old.clone()], "ours: the replaced address is back, the gateway gone");
            assert!(host_veths(w).is_empty() && w.leases(tag).is_empty(), "nothing else left");
        } else {
            assert_eq!(addrs, vec![format!("{}/24", s.ip4(1))], "the reference leaves its gateway instead");
        }
    });
}

/// An IPv4 route whose `dst` has host bits set (`198.19.0.5/16`) fails the ADD as the
/// reference's does (the kernel refuses the prefix: 999 `failed to add route '{198.19.0.5
/// ffff0000} via 198.18.x.1 dev eth0': invalid argument`); ours then leaves no container link,
/// host veth or lease (the reference leaves them: the "failed ADD leaves nothing" row). Before,
/// ours installed the truncated 198.19.0.0/16 and succeeded, while the result said /16 with host
/// bits.
#[test]
fn bridge_route_dst_with_host_bits_fails_like_the_reference() {
    for imp in [Impl::Reference, Impl::Ours] {
        if imp.flavor() != Flavor::CniMulti && !have_reference("bridge") {
            continue;
        }
        let w = World::new("brhostbits", 1, imp);
        let s = Subnets::alloc();
        let mut conf = v4_conf(&w, &s, "brhostbits");
        conf["isGateway"] = json!(true);
        conf["ipam"]["routes"] = json!([{"dst": "198.19.0.5/16"}]);
        let e = w.add(&conf).run().err_code(999);
        let gw = s.ip4(1);
        assert_eq!(
            e.msg,
            format!("failed to add route '{{198.19.0.5 ffff0000}} via {gw} dev eth0': invalid argument"),
            "{}",
            imp.label()
        );
        if imp.flavor() == Flavor::CniMulti {
            assert!(w.c(0).link("eth0").is_none(), "container veth left");
            assert!(host_veths(&w).is_empty(), "host veth left: {:?}", w.host.link_names());
            assert!(w.leases("brhostbits").is_empty(), "lease left: {:?}", w.store("brhostbits"));
        }
        w.del(&conf).run().ok();
    }
}
