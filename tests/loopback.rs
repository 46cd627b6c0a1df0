//! loopback behaviour against our binary (reference-features.md §2.8).

use crate::harness::*;
use serde_json::json;

fn lo_up(ns: &Netns) -> bool {
    let l = ns.link("lo").expect("lo exists");
    l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"))
}

#[test]
fn loopback_add_check_del() {
    let w = World::new("lo", 1, Impl::Ours);
    let conf = json!({"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"});
    assert!(!lo_up(w.c(0)), "a fresh netns has lo down");
    let r = w.add(&conf).run().ok();
    assert!(lo_up(w.c(0)));
    let ifs = r["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 1, "{r:#}");
    assert_eq!(ifs[0]["name"], "lo");
    assert_eq!(ifs[0]["mac"], "00:00:00:00:00:00");
    assert_eq!(ifs[0]["sandbox"], w.c(0).path_str());
    let ips: Vec<&str> = r["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(ips, vec!["127.0.0.1/8", "::1/128"]);
    for ip in r["ips"].as_array().into_iter().flatten() {
        assert_eq!(ip["interface"], 0);
    }
    assert!(w.c(0).ping("127.0.0.1", 1));

    w.check(&conf, &r).run().ok();
    w.del(&conf).run().ok();
    assert!(!lo_up(w.c(0)), "DEL sets lo down");
    // CHECK now sees lo down
    w.check(&conf, &r).run().err();
    w.del(&conf).run().ok();
}

#[test]
fn loopback_ignores_ifname_and_works_at_0_2_0() {
    let w = World::new("lo2", 1, Impl::Ours);
    let conf = json!({"cniVersion": "0.2.0", "name": "lo-net", "type": "loopback"});
    let r = w.add(&conf).ifname("eth7").run().ok();
    assert!(lo_up(w.c(0)), "lo is configured whatever CNI_IFNAME says");
    assert!(w.c(0).link("eth7").is_none());
    assert_eq!(r["cniVersion"], "0.2.0");
    // The reference prints its result unconverted (1.x shape, `ips` without `version`) with the
    // requested version as label; differential::loopback pins the exact bytes. Here: the addresses.
    let text = r.to_string();
    assert!(text.contains("127.0.0.1/8") && text.contains("::1/128"), "{r:#}");
    w.del(&conf).ifname("eth7").run().ok();
    assert!(!lo_up(w.c(0)));
}

#[test]
fn loopback_del_after_netns_is_gone() {
    let mut w = World::new("lo3", 1, Impl::Ours);
    let conf = json!({"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"});
    let r = w.add(&conf).run().ok();
    assert_eq!(r["interfaces"][0]["name"], "lo", "{r:#}");
    assert!(lo_up(w.c(0)));
    let path = w.c(0).path_str();
    w.containers[0].delete();
    w.del(&conf).netns_path(&path).run().ok();
    w.del(&conf).unset("CNI_NETNS").run().ok();
}

/// `lo` with a non-loopback address fails ADD with the reference's text: the address quoted,
/// without its prefix, IPv4 before IPv6 (ours said `… address 198.18.73.1/32`).
#[test]
fn loopback_non_loopback_address_message_is_the_references() {
    each_impl("lo4", 1, &["loopback"], |w, imp, _| {
        let conf = json!({"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"});
        w.c(0).must(&["ip", "addr", "add", "fd00:73::1/128", "dev", "lo"]);
        let e = w.add(&conf).run().err_code(999);
        assert_eq!(e.msg, "loopback interface found with non-loopback address \"fd00:73::1\"", "{imp:?}");
        // an IPv4 one is named first, whatever the order the addresses came in
        w.c(0).must(&["ip", "addr", "add", "198.18.73.1/32", "dev", "lo"]);
        let e = w.add(&conf).run().err_code(999);
        assert_eq!(e.msg, "loopback interface found with non-loopback address \"198.18.73.1\"", "{imp:?}");
    });
}

/// `lo` without addresses has no 0.2.0 result: ADD fails with code 7 and leaves `lo` up as it
/// was before (ours set it down through the rollback; the reference 1.1.1 prints its 1.x result
/// unconverted, see differential::loopback). Only an `lo` that
/// was up can lack addresses after the ADD: setting it up gives it 127.0.0.1 and ::1.
#[test]
fn loopback_unprintable_result_keeps_lo_as_it_was() {
    let w = World::new("lo5", 1, Impl::Ours);
    let conf = json!({"cniVersion": "0.2.0", "name": "lo-net", "type": "loopback"});
    w.c(0).must(&["ip", "link", "set", "lo", "up"]);
    w.c(0).must(&["ip", "addr", "flush", "dev", "lo"]);
    let e = w.add(&conf).run().err_code(7);
    assert_eq!(e.msg, "cannot convert: no valid IP addresses");
    assert!(lo_up(w.c(0)), "lo was up before the ADD and stays up");
}

/// A prevResult that does not parse fails ADD before `lo` is touched, as the reference's
/// parseNetConf runs before it enters the namespace (the ADD used to set `lo` up first).
#[test]
fn loopback_unreadable_prev_result_fails_before_lo_is_touched() {
    let w = World::new("lo6", 1, Impl::Ours);
    let conf = json!({"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback", "prevResult": {"ips": "bogus"}});
    let e = w.add(&conf).run().err_code(999);
    assert!(e.msg.contains("prevResult"), "{}", e.msg);
    assert!(!lo_up(w.c(0)), "lo stays down");
}
