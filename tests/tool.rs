//! `cni-multi tool` in namespace worlds: the same conflists driven over our binary and over the
//! reference plugins in /usr/lib/cni leave the same kernel state; the result cache has libcni's
//! layout; GC deletes stale cached attachments; validate and the `cnitool` argv[0] work.
//!
//! The runtime side of the harness is tests/harness/runtime.rs.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

use crate::harness::runtime::*;
use crate::harness::Netns;

const REF_DIR: &str = "/usr/lib/cni";

/// Replace host-side veth names (random) by a placeholder.
fn norm_veth(s: &str) -> String {
    s.split_whitespace()
        .map(|t| {
            let base = t.split('@').next().unwrap_or(t);
            if base.starts_with("veth") && base.len() == 12 {
                "vethX".to_string()
            } else {
                t.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kernel state a conflist leaves: container addresses/routes/links, host addresses/routes/links.
/// (stderr dropped: `ip` warns "Peer netns reference is invalid" while other tests churn namespaces)
fn snapshot(host: &Netns, cont: &Netns) -> Vec<String> {
    let mut s = Vec::new();
    for l in cont.ok("ip -4 -o addr show 2>/dev/null | awk '{print $2, $3, $4}'").lines() {
        s.push(format!("c addr {l}"));
    }
    for l in cont.ok("ip -4 route show table all 2>/dev/null | grep -v '^local\\|^broadcast' || true").lines() {
        s.push(format!("c route {l}"));
    }
    for l in cont.ok("ip -o link show 2>/dev/null | awk '{print $2, $3, $4, $5}'").lines() {
        s.push(format!("c link {}", norm_veth(l)));
    }
    for l in host.ok("ip -4 -o addr show 2>/dev/null | awk '{print $2, $3, $4}'").lines() {
        s.push(format!("h addr {}", norm_veth(l)));
    }
    for l in host.ok("ip -4 route show table all 2>/dev/null | grep -v '^local\\|^broadcast' || true").lines() {
        s.push(format!("h route {}", norm_veth(l)));
    }
    for l in host.ok("ip -o link show 2>/dev/null | awk '{print $2, $3, $4, $5, $8, $9}'").lines() {
        s.push(format!("h link {}", norm_veth(l)));
    }
    s.push(format!("h ip_forward {}", host.ok("cat /proc/sys/net/ipv4/ip_forward 2>/dev/null").trim()));
    s.sort();
    s
}

struct Run {
    add: Value,
    state: Vec<String>,
    after_del: Vec<String>,
}

fn drive(conflist: &str, name: &str, cni_path: Option<&str>, check: bool) -> Run {
    let tmp = Tmp::new("tooldiff");
    let host = Netns::up("h");
    let cont = Netns::up("c");
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    let text = conflist.replace("@DATADIR@", &tmp.s("ipam"));
    std::fs::write(netconf.join("10-test.conflist"), &text).unwrap();
    let path = match cni_path {
        Some(p) => p.to_string(),
        None => our_plugin_dir(&tmp, &["bridge", "ptp", "host-local", "loopback"]),
    };
    let env =
        vec![("NETCONFPATH", netconf.display().to_string()), ("CNI_PATH", path), ("CNI_CACHE_DIR", tmp.s("cache"))];
    let add = tool(&host, &env, &["add", name, &cont.path_str()]).expect_ok("tool add").json();

    // the cache entry, exactly libcni's layout
    let id = cnitool_id(&cont.path_str());
    let cache_file = tmp.join(&format!("cache/results/{name}-{id}-eth0"));
    let raw = std::fs::read_to_string(&cache_file).unwrap_or_else(|e| panic!("{}: {e}", cache_file.display()));
    let v: Value = serde_json::from_str(&raw).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut order: Vec<(usize, &str)> = keys.iter().map(|k| (raw.find(&format!("\"{k}\":")).unwrap(), *k)).collect();
    order.sort();
    assert_eq!(
        order.iter().map(|x| x.1).collect::<Vec<_>>(),
        ["kind", "containerId", "config", "ifName", "networkName", "netns", "result"]
    );
    assert_eq!(v["kind"], "cniCacheV1");
    assert_eq!(v["containerId"], id.as_str());
    assert_eq!(v["ifName"], "eth0");
    assert_eq!(v["networkName"], name);
    assert_eq!(v["netns"], cont.path_str().as_str());
    let decoded = Command::new("sh")
        .args(["-c", &format!("printf %s '{}' | base64 -d", v["config"].as_str().unwrap())])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(String::from_utf8(decoded).unwrap(), text, "config is base64 of the conflist bytes");
    assert_eq!(v["result"]["ips"], add["ips"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cache_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!raw.contains('\n'), "compact JSON");

    if check {
        tool(&host, &env, &["check", name, &cont.path_str()]).expect_ok("tool check");
    }
    let state = snapshot(&host, &cont);
    tool(&host, &env, &["del", name, &cont.path_str()]).expect_ok("tool del");
    assert!(!cache_file.exists(), "DEL removes the cache entry");
    // the bridge's carrier loss reaches routes through linkwatch, up to a second later
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let after_del = snapshot(&host, &cont);
    // DEL again: still fine, nothing cached
    tool(&host, &env, &["del", name, &cont.path_str()]).expect_ok("second tool del");
    Run { add, state, after_del }
}

fn strip_result(v: &Value) -> Value {
    // MACs and host veth names are random; compare addresses, routes and dns
    serde_json::json!({"ips": v["ips"], "routes": v["routes"], "n_interfaces": v["interfaces"].as_array().map(|a| a.len())})
}

const BRIDGE: &str = r#"{"cniVersion":"1.0.0","name":"difbr","plugins":[{"type":"bridge","bridge":"cnibr0","isGateway":true,"ipam":{"type":"host-local","dataDir":"@DATADIR@","ranges":[[{"subnet":"198.18.40.0/24"}]],"routes":[{"dst":"198.18.0.0/16"}]}}]}"#;
const PTP: &str = r#"{"cniVersion":"1.0.0","name":"difptp","plugins":[{"type":"ptp","mtu":1400,"ipam":{"type":"host-local","dataDir":"@DATADIR@","ranges":[[{"subnet":"198.18.41.0/24"}]],"routes":[{"dst":"198.18.0.0/16"}]}}]}"#;

#[test]
fn tool_over_ours_and_reference_same_kernel_state() {
    assert!(
        Path::new(REF_DIR).join("bridge").is_file(),
        "the reference plugins (containernetworking-plugins) are missing"
    );
    for (list, name) in [(BRIDGE, "difbr"), (PTP, "difptp")] {
        let ours = drive(list, name, None, true);
        let theirs = drive(list, name, Some(REF_DIR), false);
        assert_eq!(ours.state, theirs.state, "{name}: kernel state after ADD");
        assert_eq!(ours.after_del, theirs.after_del, "{name}: kernel state after DEL");
        assert_eq!(strip_result(&ours.add), strip_result(&theirs.add), "{name}: results");
        assert!(ours.state.iter().any(|l| l.starts_with("c addr eth0 inet 198.18.")), "{:?}", ours.state);
        assert!(!ours.after_del.iter().any(|l| l.starts_with("c addr eth0")), "{:?}", ours.after_del);
    }
}

#[test]
fn tool_gc_dels_stale_cached_attachments_and_status() {
    let tmp = Tmp::new("toolgc");
    let host = Netns::up("h");
    let c1 = Netns::up("c");
    let c2 = Netns::up("c");
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    let list = r#"{"cniVersion":"1.1.0","name":"gcnet","plugins":[{"type":"ptp","ipam":{"type":"host-local","dataDir":"@D@","ranges":[[{"subnet":"198.18.42.0/24"}]]}}]}"#
        .replace("@D@", &tmp.s("ipam"));
    std::fs::write(netconf.join("gc.conflist"), list).unwrap();
    let env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", our_plugin_dir(&tmp, &["ptp", "host-local"])),
        ("CNI_CACHE_DIR", tmp.s("cache")),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=x".to_string()),
        ("CAP_ARGS", r#"{"portMappings":[]}"#.to_string()),
    ];
    tool(&host, &env, &["add", "gcnet", &c1.path_str()]).expect_ok("add c1");
    tool(&host, &env, &["add", "gcnet", &c2.path_str()]).expect_ok("add c2");
    let (id1, id2) = (cnitool_id(&c1.path_str()), cnitool_id(&c2.path_str()));
    let cached: Value =
        serde_json::from_slice(&std::fs::read(tmp.join(&format!("cache/results/gcnet-{id2}-eth0"))).unwrap()).unwrap();
    assert_eq!(cached["cniArgs"], serde_json::json!([["IgnoreUnknown", "1"], ["K8S_POD_NAME", "x"]]));
    assert_eq!(cached["capabilityArgs"], serde_json::json!({"portMappings": []}));
    let store = |d: &str| {
        std::fs::read_dir(tmp.join(d))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".cni-multi-index") // host-local's private index (docs/differences.md)
            .count()
    };
    assert_eq!(store("ipam/gcnet"), 4, "2 leases + last_reserved + lock");

    tool(&host, &env, &["status", "gcnet"]).expect_ok("status");
    // keep c1: c2 is stale and gets a DEL built from its cache entry
    tool(&host, &env, &["gc", "gcnet", "--keep", &format!("{id1}/eth0")]).expect_ok("gc");
    assert!(tmp.join(&format!("cache/results/gcnet-{id1}-eth0")).exists());
    assert!(!tmp.join(&format!("cache/results/gcnet-{id2}-eth0")).exists());
    assert!(c1.sh("ip link show eth0").0, "valid attachment kept");
    assert!(!c2.sh("ip link show eth0").0, "stale attachment deleted");
    assert_eq!(store("ipam/gcnet"), 3, "c2's lease released");
    // cnitool-style gc (no list): everything cached for the network is stale
    tool(&host, &env, &["gc", "gcnet"]).expect_ok("gc all");
    assert!(!c1.sh("ip link show eth0").0);
    assert_eq!(std::fs::read_dir(tmp.join("cache/results")).unwrap().count(), 0);
}

#[test]
fn tool_errors_are_cni_errors_and_cnitool_argv0() {
    let tmp = Tmp::new("toolerr");
    let host = Netns::up("h");
    let c = Netns::up("c");
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    // a lone .conf is up-converted
    std::fs::write(netconf.join("01-lo.conf"), r#"{"cniVersion":"0.4.0","name":"lonet","type":"loopback"}"#).unwrap();
    std::fs::write(
        netconf.join("02-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"badnet","plugins":[{"type":"nosuch"}]}"#,
    )
    .unwrap();
    let dir = our_plugin_dir(&tmp, &["loopback", "cnitool"]);
    let env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", dir.clone()),
        ("CNI_CACHE_DIR", tmp.s("cache")),
    ];
    let cnitool = format!("{dir}/cnitool");
    let out = run_in(&host, &cnitool, &[], &env, &["add", "lonet", &c.path_str()]).expect_ok("cnitool add loopback");
    assert_eq!(out.json()["cniVersion"], "0.4.0");
    assert!(c.ok("ip -o link show lo").contains("UP"));
    let out = tool(&host, &env, &["add", "badnet", &c.path_str()]);
    assert!(!out.ok);
    let e = out.json();
    assert_eq!(e["code"], 999);
    assert!(e["msg"].as_str().unwrap().contains("failed to find plugin \"nosuch\""), "{e}");
    let out = tool(&host, &env, &["add", "nonet", &c.path_str()]);
    assert!(!out.ok && out.json()["msg"].as_str().unwrap().contains("no net configuration with name \"nonet\""));
    // CHECK below 0.4.0 is refused, as libcni does
    std::fs::write(
        netconf.join("03-old.conflist"),
        r#"{"cniVersion":"0.3.1","name":"old","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    let out = tool(&host, &env, &["check", "old", &c.path_str()]);
    assert!(!out.ok && out.stdout.contains("does not support the CHECK command"), "{}", out.stdout);

    // validate: by file and by network name, problems with JSON paths
    let out = tool(&host, &env, &["validate", &netconf.join("02-bad.conflist").display().to_string()]);
    assert!(!out.ok);
    assert!(out.stdout.contains("$.plugins[0].type: unknown plugin \"nosuch\""), "{}", out.stdout);
    let out = tool(&host, &env, &["validate", "lonet"]);
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(out.stdout, "network lonet: OK\n");
}

/// Recording plugins (shell scripts on CNI_PATH, so the exec path) show what libcni semantics
/// mean on the wire: name/cniVersion injection, prevResult threading, runtimeConfig only for
/// declared capabilities, DEL in reverse with the cached final result, CHECK in order,
/// disableCheck/disableGC. No kernel state is involved.
#[test]
fn tool_chain_semantics_on_the_wire() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = Tmp::new("toolwire");
    let plugins = tmp.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let log = tmp.s("log");
    for (name, result) in [
        ("rec1", r#"{"cniVersion":"1.0.0","ips":[{"address":"198.18.50.2/24"}]}"#),
        ("rec2", r#"{"cniVersion":"1.0.0","ips":[{"address":"198.18.50.2/24"}],"routes":[{"dst":"198.19.0.0/16"}]}"#),
    ] {
        let script = format!(
            "#!/bin/sh\nin=$(cat)\necho \"$CNI_COMMAND {name} $CNI_CONTAINERID $CNI_IFNAME $CNI_ARGS\" >> {log}\n\
             printf '%s\\n' \"$in\" >> {log}\n[ \"$CNI_COMMAND\" = ADD ] && printf '%s' '{result}'\nexit 0\n"
        );
        std::fs::write(plugins.join(name), script).unwrap();
        std::fs::set_permissions(plugins.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    std::fs::write(
        netconf.join("a.conflist"),
        r#"{"cniVersion":"1.0.0","name":"wire","plugins":[{"type":"rec1","name":"overridden"},{"type":"rec2","capabilities":{"portMappings":true,"mac":false}}]}"#,
    )
    .unwrap();
    std::fs::write(
        netconf.join("b.conflist"),
        r#"{"cniVersion":"0.3.1","cniVersions":["0.3.1"],"name":"old","disableGC":"true","plugins":[{"type":"rec1"}]}"#,
    )
    .unwrap();
    std::fs::write(
        netconf.join("c.conflist"),
        r#"{"cniVersion":"1.1.0","name":"nocheck","disableCheck":true,"plugins":[{"type":"rec1"}]}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("tool")
            .args(args)
            .env_clear()
            .env("NETCONFPATH", &netconf)
            .env("CNI_PATH", &plugins)
            .env("CNI_CACHE_DIR", tmp.join("cache"))
            .env("CNI_ARGS", "A=1;B=2")
            .env("CAP_ARGS", r#"{"portMappings":[{"hostPort":80}],"mac":"c2:00:00:00:00:01"}"#)
            .env("CNI_IFNAME", "net1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let take_log = || {
        let s = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        s.lines()
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|c| (c[0].to_string(), serde_json::from_str::<Value>(c[1]).unwrap()))
            .collect::<Vec<_>>()
    };
    let id = cnitool_id("/run/netns/wire");
    let out = run(&["add", "wire", "/run/netns/wire"]);
    let res: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(res["routes"], serde_json::json!([{"dst": "198.19.0.0/16"}]), "the last plugin's result is printed");
    let l = take_log();
    assert_eq!(l[0].0, format!("ADD rec1 {id} net1 A=1;B=2"));
    assert_eq!(l[1].0, format!("ADD rec2 {id} net1 A=1;B=2"));
    assert_eq!(l[0].1["name"], "wire");
    assert_eq!(l[0].1["cniVersion"], "1.0.0");
    assert!(l[0].1.get("prevResult").is_none() && l[0].1.get("runtimeConfig").is_none());
    assert_eq!(l[1].1["prevResult"]["ips"][0]["address"], "198.18.50.2/24");
    assert_eq!(l[1].1["runtimeConfig"], serde_json::json!({"portMappings": [{"hostPort": 80}]}));

    run(&["check", "wire", "/run/netns/wire"]);
    let l = take_log();
    assert_eq!(
        (l[0].0.as_str(), l[1].0.as_str()),
        (&*format!("CHECK rec1 {id} net1 A=1;B=2"), &*format!("CHECK rec2 {id} net1 A=1;B=2"))
    );
    assert_eq!(
        l[0].1["prevResult"]["routes"],
        serde_json::json!([{"dst": "198.19.0.0/16"}]),
        "CHECK gets the cached final result"
    );

    run(&["del", "wire", "/run/netns/wire"]);
    let l = take_log();
    assert_eq!(l[0].0, format!("DEL rec2 {id} net1 A=1;B=2"), "DEL in reverse order");
    assert_eq!(l[1].0, format!("DEL rec1 {id} net1 A=1;B=2"));
    assert_eq!(l[1].1["prevResult"]["routes"], serde_json::json!([{"dst": "198.19.0.0/16"}]));
    run(&["del", "wire", "/run/netns/wire"]);
    let l = take_log();
    assert!(l.iter().all(|(_, v)| v.get("prevResult").is_none()), "nothing cached any more");

    // 0.3.1: no prevResult on DEL; disableGC: GC does nothing
    run(&["add", "old", "/run/netns/wire"]);
    run(&["gc", "old"]);
    run(&["del", "old", "/run/netns/wire"]);
    let l = take_log();
    assert_eq!(l.iter().map(|x| x.0.split(' ').next().unwrap()).collect::<Vec<_>>(), ["ADD", "DEL"]);
    assert!(l[1].1.get("prevResult").is_none());
    // disableCheck: CHECK runs nothing; STATUS and GC reach the plugin at 1.1.0
    run(&["add", "nocheck", "/run/netns/wire"]);
    run(&["check", "nocheck", "/run/netns/wire"]);
    run(&["status", "nocheck"]);
    run(&["gc", "nocheck", "--keep", &format!("{id}/net1")]);
    let l = take_log();
    assert_eq!(l.iter().map(|x| x.0.split(' ').next().unwrap()).collect::<Vec<_>>(), ["ADD", "STATUS", "GC"]);
    assert_eq!(l[2].1["cni.dev/valid-attachments"], serde_json::json!([{"containerID": id, "ifname": "net1"}]));
    assert_eq!(l[2].1["cni.dev/attachments"], l[2].1["cni.dev/valid-attachments"]);
}
