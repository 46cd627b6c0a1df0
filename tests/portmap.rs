//! portmap: one container with two attachments, the host interface that gets `route_localnet`,
//! DEL of configs ADD refuses, protocols, messages; against the reference (iptables) where it
//! has the case, ours alone (nftables) where it has not.

use crate::harness::*;
use serde_json::{json, Value};

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

fn first_ip(prev: &Value) -> String {
    prev["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
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
