//! flannel in a namespace world: a hand-written subnet.env, two containers on one "node" get
//! addresses from FLANNEL_SUBNET, reach each other and a "remote" host through the cluster route;
//! the delegate config is saved under dataDir and DEL removes it.

use crate::harness::runtime::*;
use crate::harness::Netns;
use serde_json::{json, Value};

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

// ---- runs against a recorder delegate: what flannel hands its delegate, saves and answers -------

/// A recorder delegate: saves each stdin as `$REC_DIR/<n>-<command>`, fails the command named
/// by `REC_FAIL` (code 11), answers ADD with a result of `REC_RESULT_VERSION` or of the config's
/// cniVersion (0.1.0 when it has none).
const REC: &str = r#"#!/bin/sh
n=$(ls "$REC_DIR" | wc -l)
f="$REC_DIR/$(printf %03d "$n")-$CNI_COMMAND"
cat > "$f"
if [ "$CNI_COMMAND" = "$REC_FAIL" ]; then printf '{"code":11,"msg":"recorder fails %s"}' "$CNI_COMMAND"; exit 1; fi
[ "$CNI_COMMAND" = ADD ] || exit 0
v=$(sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p' "$f")
v=${REC_RESULT_VERSION:-${v:-0.1.0}}
case "$v" in
0.1.0|0.2.0) printf '{"cniVersion":"%s","ip4":{"ip":"198.18.5.2/24","gateway":"198.18.5.1"}}' "$v" ;;
0.*) printf '{"cniVersion":"%s","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","interface":0,"address":"198.18.5.2/24","gateway":"198.18.5.1"}]}' "$v" ;;
*) printf '{"cniVersion":"%s","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"interface":0,"address":"198.18.5.2/24","gateway":"198.18.5.1"}]}' "$v" ;;
esac
"#;

const SUBNET_ENV: &str =
    "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// A node: a "host" netns where flannel runs (and the bridge lives when a test uses it), one
/// container netns, a temp dir with subnet.env, the dataDir `flannel/`, IPAM's `ipam/`, and a
/// CNI_PATH of our applets plus `rec`.
struct Node {
    tmp: Tmp,
    host: Netns,
    c: Netns,
    bin: String,
}

impl Node {
    fn new(tag: &str) -> Node {
        use std::os::unix::fs::PermissionsExt;
        let tmp = Tmp::new(tag);
        let bin = our_plugin_dir(&tmp, &["flannel", "bridge", "host-local"]);
        let rec = std::path::Path::new(&bin).join("rec");
        std::fs::write(&rec, REC).unwrap();
        std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(tmp.join("rec")).unwrap();
        std::fs::write(tmp.join("subnet.env"), SUBNET_ENV).unwrap();
        Node { host: Netns::up("fh"), c: Netns::up("fc"), tmp, bin }
    }

    /// A flannel config (text, so members may repeat) with this node's subnetFile and dataDir
    /// followed by `rest` (`,"key":value…`).
    fn conf(&self, rest: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","subnetFile":"{}","dataDir":"{}"{rest}}}"#,
            self.tmp.s("subnet.env"),
            self.tmp.s("flannel")
        )
    }

    /// Run our flannel in the host netns with `stdin`, for container `cid`.
    fn run(&self, cmd: &str, cid: &str, stdin: &str, env: &[(&str, &str)]) -> Out {
        use std::io::Write;
        use std::process::Stdio;
        let mut c = self.host.command(format!("{}/flannel", self.bin));
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", self.c.path_str())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.bin)
            .env("REC_DIR", self.tmp.s("rec"))
            .current_dir(self.tmp.dir());
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn flannel");
        let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
        child.wait_with_output().expect("wait for flannel").into()
    }

    /// The delegate runs recorded since the last call: (command, stdin).
    fn recorded(&self) -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(self.tmp.join("rec")).unwrap().flatten().map(|e| e.path()).collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let cmd = p.file_name().unwrap().to_string_lossy().split('-').nth(1).unwrap_or_default().to_string();
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::remove_file(&p).unwrap();
                (cmd, text)
            })
            .collect()
    }

    fn saved_path(&self, cid: &str) -> std::path::PathBuf {
        self.tmp.join(&format!("flannel/{cid}"))
    }

    fn saved(&self, cid: &str) -> Option<String> {
        std::fs::read_to_string(self.saved_path(cid)).ok()
    }

    fn write_saved(&self, cid: &str, text: &str) {
        std::fs::create_dir_all(self.tmp.join("flannel")).unwrap();
        std::fs::write(self.saved_path(cid), text).unwrap();
    }
}

/// The CNI error of a failed run: (code, msg).
fn cni_err(out: &Out) -> (u64, String) {
    let code = out.err_code();
    (code, out.json()["msg"].as_str().unwrap_or_default().to_string())
}

/// The reference's cmdDel decodes the config and runs none of cmdAdd's checks: a runtime's DEL
/// after a refused ADD must not fail (it would wedge the sandbox).
#[test]
fn flannel_del_of_a_config_add_refuses_succeeds() {
    let n = Node::new("fldel");
    let good = n.conf(r#","delegate":{"type":"rec"}"#);
    for (rest, code) in [
        (r#","delegate":{"type":"rec","name":"x","ipam":{"type":"host-local"}}"#, 7),
        (r#","delegate":{"type":5}"#, 7),
        (r#","delegate":{"type":"rec","ipam":{"type":"host-local"}}"#, 7),
        (r#","ipam":{"routes":[{"dst":"bogus"}]},"delegate":{"type":"rec"}"#, 7),
        (r#","delegate":5"#, 999),
        (r#","subnetFile":5,"delegate":{"type":"rec"}"#, 999),
    ] {
        let conf = n.conf(rest);
        assert_eq!(n.run("ADD", "c1", &conf, &[]).err_code(), code, "ADD {rest}");
        assert_eq!(n.saved("c1"), None, "{rest}: a refused ADD saves nothing");
        n.run("DEL", "c1", &conf, &[]).expect_ok(&format!("DEL after a refused ADD: {rest}"));
        assert_eq!(n.recorded(), vec![], "{rest}");
        // with a saved config (an earlier ADD of a good config), DEL runs its delegate's DEL
        n.run("ADD", "c1", &good, &[]).expect_ok("ADD");
        let saved = n.saved("c1").expect("saved");
        n.recorded();
        n.run("DEL", "c1", &conf, &[]).expect_ok(&format!("DEL {rest}"));
        assert_eq!(n.recorded(), vec![("DEL".to_string(), saved)], "{rest}");
        assert_eq!(n.saved("c1"), None, "{rest}");
    }
}

/// The reference's doCmdDel logs a saved config that does not decode (as Go's types.NetConf)
/// and succeeds, keeping the file.
#[test]
fn flannel_del_of_an_unreadable_saved_config_succeeds_and_keeps_it() {
    let n = Node::new("fldelbad");
    let conf = n.conf(r#","delegate":{"type":"rec"}"#);
    for text in
        ["garbage", "", "[]", r#"{"type":5}"#, r#"{"type":"rec","ipam":{"type":5}}"#, r#"{"type":"rec","name":[]}"#]
    {
        n.write_saved("c1", text);
        let out = n.run("DEL", "c1", &conf, &[]).expect_ok(&format!("DEL with saved {text:?}"));
        assert!(out.stderr.contains("failed to parse netconf"), "{text:?}: {}", out.stderr);
        assert_eq!(n.saved("c1").as_deref(), Some(text), "kept");
        assert_eq!(n.recorded(), vec![], "{text:?}: no delegate run");
    }
}

/// Ours keeps the saved config when the delegate's DEL fails, so the runtime's retry runs the
/// delegate again (the reference removes it and the retry does nothing). A saved config that
/// names no plugin can never succeed: the reference's error, and it is removed.
#[test]
fn flannel_failed_delegate_del_keeps_the_saved_config_for_a_retry() {
    let n = Node::new("fldelre");
    let conf = n.conf(r#","delegate":{"type":"rec"}"#);
    n.run("ADD", "c1", &conf, &[]).expect_ok("ADD");
    let saved = n.saved("c1").expect("saved");
    n.recorded();
    let out = n.run("DEL", "c1", &conf, &[("REC_FAIL", "DEL")]);
    assert_eq!(cni_err(&out), (11, "recorder fails DEL".to_string()));
    assert_eq!(n.saved("c1").as_deref(), Some(saved.as_str()), "kept for the retry");
    n.run("DEL", "c1", &conf, &[]).expect_ok("retried DEL");
    assert_eq!(n.recorded(), vec![("DEL".to_string(), saved.clone()), ("DEL".to_string(), saved)]);
    assert_eq!(n.saved("c1"), None);

    n.write_saved("c2", r#"{"name":"cbr0"}"#);
    let out = n.run("DEL", "c2", &conf, &[]);
    assert_eq!(cni_err(&out), (999, "no plugin name provided".to_string()));
    assert_eq!(n.saved("c2"), None, "removed: no retry could run it");
    n.run("DEL", "c2", &conf, &[]).expect_ok("second DEL");
}

/// What the delegate reads and what is saved are Go's json.Marshal of the map: sorted keys,
/// numbers as float64 prints them, `<>&` escaped (bytes of flannel-io/cni-plugin built from
/// source). DEL hands the delegate a saved config in the same form, also one an older cni-multi
/// saved with `1400.0`.
#[test]
fn flannel_delegate_config_is_written_as_go_writes_it() {
    let n = Node::new("flgo");
    let conf = n.conf(
        r#","delegate":{"type":"rec","hairpinMode":true,"mtu":1400.0,"x":"a<b&c","big":1e21,"small":1.5e-7,"e3":1e3},"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]}"#,
    );
    let want = r#"{"big":1e+21,"cniVersion":"1.0.0","e3":1000,"hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"198.18.5.0/24"}]],"routes":[{"dst":"198.18.0.0/16"}],"type":"host-local"},"mtu":1400,"name":"cbr0","runtimeConfig":{"portMappings":[{"containerPort":8080,"hostPort":80,"protocol":"tcp"}]},"small":1.5e-7,"type":"rec","x":"a\u003cb\u0026c"}"#;
    n.run("ADD", "c1", &conf, &[]).expect_ok("ADD");
    assert_eq!(n.recorded(), vec![("ADD".to_string(), want.to_string())]);
    assert_eq!(n.saved("c1").as_deref(), Some(want));
    n.write_saved("c1", r#"{"type":"rec","mtu":1400.0,"x":"a<b","cniVersion":"1.0.0","name":"cbr0"}"#);
    n.run("DEL", "c1", &conf, &[]).expect_ok("DEL");
    assert_eq!(
        n.recorded(),
        vec![(
            "DEL".to_string(),
            r#"{"cniVersion":"1.0.0","mtu":1400,"name":"cbr0","type":"rec","x":"a\u003cb"}"#.to_string()
        )]
    );
    assert_eq!(n.saved("c1"), None);
}

/// A `delegate` (or `runtimeConfig`) given twice is decoded as Go decodes it into one map field:
/// the objects merge, `null` resets; the delegate's keys keep their case.
#[test]
fn flannel_repeated_keys_merge_as_go_decodes_them() {
    let n = Node::new("flrep");
    let conf = n.conf(
        r#","delegate":{"type":"rec"},"Delegate":{"mtu":1,"hairpinMode":true},"RuntimeConfig":{"a":1},"runtimeConfig":{"b":2}"#,
    );
    n.run("ADD", "c1", &conf, &[]).expect_ok("ADD");
    let rec = n.recorded();
    assert_eq!(rec.len(), 1, "the delegate is rec: {rec:?}");
    let d: Value = serde_json::from_str(&rec[0].1).unwrap();
    assert_eq!((&d["type"], &d["mtu"], &d["hairpinMode"]), (&json!("rec"), &json!(1), &json!(true)), "{d}");
    assert_eq!(d["runtimeConfig"], json!({"a": 1, "b": 2}));
    let conf = n.conf(r#","delegate":{"type":"bridge","x":1},"delegate":null,"delegate":{"type":"rec"}"#);
    n.run("ADD", "c2", &conf, &[]).expect_ok("ADD");
    let d: Value = serde_json::from_str(&n.recorded()[0].1).unwrap();
    assert_eq!((&d["type"], d.get("x")), (&json!("rec"), None), "{d}");
}

/// `ipam.routes` is decoded into Go's []types.Route before anything is saved or made: a bad one
/// fails ADD (our code 7: a config mistake) with the reference's message and leaves nothing,
/// not even the bridge; unknown route keys are dropped, `null` is no routes.
#[test]
fn flannel_ipam_routes_are_checked_before_anything_is_made() {
    let n = Node::new("flrt");
    let conf = n.conf(&format!(
        r#","ipam":{{"dataDir":"{}","routes":[{{"dst":"bogus"}}]}},"delegate":{{"bridge":"cni0"}}"#,
        n.tmp.s("ipam")
    ));
    let out = n.run("ADD", "c1", &conf, &[]);
    assert_eq!(
        cni_err(&out),
        (
            7,
            "failed to assemble Delegate IPAM: failed to read IPAM routes: failed to parse ipam.routes: invalid CIDR address: bogus"
                .to_string()
        )
    );
    assert_eq!(n.saved("c1"), None, "nothing saved");
    assert!(!n.host.sh("ip link show cni0").0, "no bridge made");
    n.run("DEL", "c1", &conf, &[]).expect_ok("DEL");

    let conf = n.conf(
        r#","ipam":{"routes":[{"dst":"198.19.0.5/16","foo":1,"GW":"198.18.5.1","mtu":1400.0,"table":0}]},"delegate":{"type":"rec"}"#,
    );
    n.run("ADD", "c1", &conf, &[]).expect_ok("ADD");
    let d: Value = serde_json::from_str(&n.recorded()[0].1).unwrap();
    assert_eq!(
        d["ipam"]["routes"],
        json!([{"dst": "198.19.0.5/16", "gw": "198.18.5.1", "mtu": 1400, "table": 0}, {"dst": "198.18.0.0/16"}])
    );
    let conf = n.conf(r#","ipam":{"routes":null},"delegate":{"type":"rec"}"#);
    n.run("ADD", "c2", &conf, &[]).expect_ok("ADD with routes null");
    let d: Value = serde_json::from_str(&n.recorded()[0].1).unwrap();
    assert_eq!(d["ipam"]["routes"], json!([{"dst": "198.18.0.0/16"}]));
}

/// The reference's order (config types, then subnet.env, then the delegate checks) and words;
/// its `FLANNEL_IPMASQ` is true only for exactly `true`.
#[test]
fn flannel_errors_come_in_the_references_order_and_words() {
    let n = Node::new("flerr");
    let missing = n.tmp.s("nonexist");
    let conf = n.conf(&format!(r#","subnetFile":"{missing}","delegate":{{"type":"rec","name":"x"}}"#));
    let want = format!("loadFlannelSubnetEnv failed: open {missing}: no such file or directory");
    assert_eq!(cni_err(&n.run("ADD", "c1", &conf, &[])), (999, want));
    let conf = n.conf(r#","subnetFile":5,"delegate":{"type":"rec","name":"x"}"#);
    let want = "loadFlannelNetConf failed: failed to load netconf: json: cannot unmarshal number into Go struct field NetConf.subnetFile of type string";
    assert_eq!(cni_err(&n.run("ADD", "c1", &conf, &[])), (999, want.to_string()));
    let conf = n.conf(r#","delegate":{"type":"rec","name":"x"}"#);
    let want = "'delegate' dictionary must not have 'name' field, it'll be set by flannel";
    assert_eq!(cni_err(&n.run("ADD", "c1", &conf, &[])), (7, want.to_string()));

    let conf = n.conf(r#","delegate":{"type":"rec"}"#);
    std::fs::write(n.tmp.join("subnet.env"), "FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\n").unwrap();
    let want = format!("loadFlannelSubnetEnv failed: {} is missing FLANNEL_MTU, FLANNEL_IPMASQ", n.tmp.s("subnet.env"));
    assert_eq!(cni_err(&n.run("ADD", "c1", &conf, &[])), (999, want));
    std::fs::write(n.tmp.join("subnet.env"), SUBNET_ENV.replace("FLANNEL_MTU=1450", "FLANNEL_MTU=+1450")).unwrap();
    let want = "loadFlannelSubnetEnv failed: strconv.ParseUint: parsing \"+1450\": invalid syntax";
    assert_eq!(cni_err(&n.run("ADD", "c1", &conf, &[])), (999, want.to_string()));
    assert_eq!(n.recorded(), vec![]);
    assert_eq!(n.saved("c1"), None);
    // "true " is not "true": flannel does not masquerade, so the delegate must
    std::fs::write(n.tmp.join("subnet.env"), SUBNET_ENV.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=true "))
        .unwrap();
    n.run("ADD", "c1", &conf, &[]).expect_ok("ADD");
    let d: Value = serde_json::from_str(&n.recorded()[0].1).unwrap();
    assert_eq!(d["ipMasq"], true);
}

/// Removes what a run that fell back to the default dataDir would leave there (only what did not
/// exist before), should the code under test do so.
struct DefaultDataDirGuard {
    file: std::path::PathBuf,
    made: Vec<std::path::PathBuf>,
}

impl DefaultDataDirGuard {
    fn new(cid: &str) -> Self {
        let dirs = ["/var/lib/cni", "/var/lib/cni/flannel"].map(std::path::PathBuf::from);
        let made = dirs.into_iter().filter(|d| !d.exists()).collect();
        DefaultDataDirGuard { file: std::path::Path::new("/var/lib/cni/flannel").join(cid), made }
    }
}

impl Drop for DefaultDataDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        for d in self.made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `"subnetFile": ""` and `"dataDir": ""` are the empty paths (Go's errors), not the defaults.
#[test]
fn flannel_empty_subnet_file_or_data_dir_is_an_error() {
    let n = Node::new("flempty");
    let cid = format!("flempty-{}", std::process::id());
    let _guard = DefaultDataDirGuard::new(&cid);
    let conf = n.conf(r#","subnetFile":"","delegate":{"type":"rec"}"#);
    let want = "loadFlannelSubnetEnv failed: open : no such file or directory";
    assert_eq!(cni_err(&n.run("ADD", &cid, &conf, &[])), (999, want.to_string()));
    let conf = n.conf(r#","dataDir":"","delegate":{"type":"rec"}"#);
    assert_eq!(cni_err(&n.run("ADD", &cid, &conf, &[])), (999, "mkdir : no such file or directory".to_string()));
    assert_eq!(n.recorded(), vec![], "the delegate did not run");
    assert!(!_guard.file.exists(), "nothing saved under the default dataDir");
    n.run("DEL", &cid, &conf, &[]).expect_ok("DEL");
}

/// Spec: a plugin answers in its config's cniVersion, 0.1.0 when it has none; the reference
/// prints its delegate's result as is (here 0.3.1).
#[test]
fn flannel_result_is_in_the_configs_version_not_the_delegates() {
    let n = Node::new("flver");
    let conf = format!(
        r#"{{"name":"cbr0","type":"flannel","subnetFile":"{}","dataDir":"{}","delegate":{{"type":"rec","cniVersion":"0.3.1"}}}}"#,
        n.tmp.s("subnet.env"),
        n.tmp.s("flannel")
    );
    let r = n.run("ADD", "c1", &conf, &[]).expect_ok("ADD").json();
    assert_eq!(r["cniVersion"], "0.1.0", "{r}");
    assert_eq!(r["ip4"]["ip"], "198.18.5.2/24", "{r}");
    assert!(r.get("interfaces").is_none(), "{r}");
    let d: Value = serde_json::from_str(&n.recorded()[0].1).unwrap();
    assert_eq!(d["cniVersion"], "0.3.1", "the delegate runs at its own version");
}

/// CHECK runs the delegate's CHECK on the saved config with the runtime's prevResult (the
/// reference's CHECK does nothing and always succeeds), also on a config saved by the reference.
#[test]
fn flannel_check_runs_the_delegates_check_on_the_saved_config() {
    let n = Node::new("flchk");
    let conf = n.conf(r#","delegate":{"type":"rec"}"#);
    let r = n.run("ADD", "c1", &conf, &[]).expect_ok("ADD").json();
    let saved = n.saved("c1").unwrap();
    n.recorded();
    let mut check: Value = serde_json::from_str(&conf).unwrap();
    check["prevResult"] = r.clone();
    let check = check.to_string();
    n.run("CHECK", "c1", &check, &[]).expect_ok("CHECK");
    let rec = n.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].0, "CHECK");
    let mut got: Value = serde_json::from_str(&rec[0].1).unwrap();
    assert_eq!(got["prevResult"]["ips"][0]["address"], "198.18.5.2/24", "{got}");
    got.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(got, serde_json::from_str::<Value>(&saved).unwrap(), "the saved config");
    // the delegate's failure is CHECK's; no saved config fails it
    assert_eq!(cni_err(&n.run("CHECK", "c1", &check, &[("REC_FAIL", "CHECK")])).0, 11);
    assert_eq!(n.recorded().len(), 1);
    let out = n.run("CHECK", "c2", &check, &[]);
    assert!(cni_err(&out).1.contains("no saved delegate config"), "{}", out.stdout);
    // a config the reference saved (its exact bytes)
    let reference = r#"{"cniVersion":"1.0.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"198.18.5.0/24"}]],"routes":[{"dst":"198.18.0.0/16"}],"type":"host-local"},"mtu":1450,"name":"cbr0","type":"rec"}"#;
    assert_eq!(saved, reference, "ours saves the reference's bytes");
    n.write_saved("c3", reference);
    n.run("CHECK", "c3", &check, &[]).expect_ok("CHECK of the reference's attachment");
    let rec = n.recorded();
    assert_eq!((rec.len(), rec[0].0.as_str()), (1, "CHECK"));
}

/// With the real bridge: a cluster network listed twice is one route (twice failed the
/// bridge's ADD, "file exists"), a repeated FLANNEL_NETWORK line replaces the earlier one, a
/// `1.0`-style number reaches the bridge as an integer, and DEL works from a saved config an
/// older cni-multi wrote with `1400.0`.
#[test]
fn flannel_bridge_with_repeated_networks_and_float_mtu() {
    let n = Node::new("flbr");
    std::fs::write(
        n.tmp.join("subnet.env"),
        "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_NETWORK=198.18.0.0/16,198.18.0.0/16\nFLANNEL_SUBNET=198.18.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let conf =
        n.conf(&format!(r#","ipam":{{"dataDir":"{}"}},"delegate":{{"bridge":"cni0","mtu":1400.0}}"#, n.tmp.s("ipam")));
    let r = n.run("ADD", "c1", &conf, &[]).expect_ok("ADD").json();
    assert_eq!(r["routes"], json!([{"dst": "198.18.0.0/16"}]), "{r}");
    let routes = n.c.ok("ip -4 route show");
    assert!(routes.contains("198.18.0.0/16 via 198.18.7.1 dev eth0"), "{routes}");
    assert!(!routes.contains("198.19."), "the earlier FLANNEL_NETWORK line is replaced: {routes}");
    assert!(n.c.ok("ip -o link show eth0").contains("mtu 1400"));
    let saved = n.saved("c1").unwrap();
    assert!(saved.contains(r#""mtu":1400,"#), "{saved}");
    n.write_saved("c1", &saved.replace(r#""mtu":1400,"#, r#""mtu":1400.0,"#));
    n.run("DEL", "c1", &conf, &[]).expect_ok("DEL of a config saved with 1400.0");
    assert!(!n.c.sh("ip link show eth0").0, "eth0 deleted");
    assert_eq!(n.saved("c1"), None);
    assert!(!n.tmp.join("ipam/cbr0/198.18.7.2").exists(), "lease released");
}
