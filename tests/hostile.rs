//! Hostile input: a table of more than 100 bad invocations across plugins (environment, stdin,
//! plugin and IPAM config). Each must fail with the right CNI error code and a message that says
//! what is wrong, and must change nothing: the world's host and container namespaces (links,
//! addresses, routes, nftables ruleset) and the dataDir are fingerprinted before and after
//! every case.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What goes on stdin.
enum Stdin {
    /// the base config of the case's plugin with a mutation applied
    Conf(Box<dyn Fn(&mut Value)>),
    /// raw bytes instead of a config
    Bytes(Vec<u8>),
}

struct Case {
    name: &'static str,
    /// which base config: bridge, ptp, host-local, static, loopback
    plugin: &'static str,
    /// environment overrides (`None` = unset)
    env: Vec<(&'static str, Option<String>)>,
    stdin: Stdin,
    code: u64,
    /// substrings the error msg (or msg + details) must contain, case-insensitively
    says: &'static [&'static str],
}

fn conf_case(
    name: &'static str,
    plugin: &'static str,
    f: impl Fn(&mut Value) + 'static,
    code: u64,
    says: &'static [&'static str],
) -> Case {
    Case { name, plugin, env: vec![], stdin: Stdin::Conf(Box::new(f)), code, says }
}

/// A CHECK config case: `prev` as prevResult, no `ipam`.
fn without_ipam_with_prev(prev: Value) -> impl Fn(&mut Value) + 'static {
    move |c: &mut Value| {
        c["prevResult"] = prev.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("ipam");
        }
    }
}

fn env_case(
    name: &'static str,
    plugin: &'static str,
    env: Vec<(&'static str, Option<&str>)>,
    code: u64,
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        plugin,
        env: env.into_iter().map(|(k, v)| (k, v.map(str::to_string))).collect(),
        stdin: Stdin::Conf(Box::new(|_| {})),
        code,
        says,
    }
}

fn bytes_case(name: &'static str, bytes: Vec<u8>, code: u64, says: &'static [&'static str]) -> Case {
    Case { name, plugin: "bridge", env: vec![], stdin: Stdin::Bytes(bytes), code, says }
}

fn base_conf(plugin: &str, w: &World, s: &Subnets) -> Value {
    let ipam = json!({"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]});
    match plugin {
        "bridge" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "bridge", "bridge": "cmhb0",
                           "isGateway": true, "ipam": ipam}),
        "ptp" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "ptp", "ipam": ipam}),
        "host-local" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "host-local", "ipam": ipam}),
        "static" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "static",
                           "ipam": {"type": "static", "addresses": [{"address": format!("{}/24", s.ip4(5))}]}}),
        "loopback" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "loopback"}),
        "host-device" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "host-device", "device": "cmhd0"}),
        "macvlan" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "macvlan", "master": "lo", "ipam": ipam}),
        "tap" => json!({"cniVersion": "1.0.0", "name": "hostile", "type": "tap", "ipam": ipam}),
        other => panic!("no base config for {other}"),
    }
}

const C_VERSION: u64 = 1;
const C_ENV: u64 = 4;
const C_IO: u64 = 5;
const C_DECODE: u64 = 6;
const C_CONFIG: u64 = 7;
const C_NETNS: u64 = 8;
const C_INTERNAL: u64 = 999;

fn set(path: &[&str], v: Value) -> impl Fn(&mut Value) + 'static {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    move |c: &mut Value| {
        let mut cur = c;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[p.as_str()];
        }
        cur[path[path.len() - 1].as_str()] = v.clone();
    }
}

/// host-device named by `key` instead of `device`.
fn instead_of_device(key: &'static str, v: &'static str) -> impl Fn(&mut Value) + 'static {
    move |c: &mut Value| {
        c.as_object_mut().expect("object").remove("device");
        c[key] = json!(v);
    }
}

fn remove(key: &'static str) -> impl Fn(&mut Value) + 'static {
    move |c: &mut Value| {
        c.as_object_mut().expect("object").remove(key);
    }
}

/// The case counts docs/hardening.md gives (`| hostile input, N + M cases |`, the one place
/// README and security.md point to): (N, M). The tests below hold them to their tables.
fn documented_counts() -> (usize, usize) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hardening.md")).expect("hardening.md");
    let row = doc.lines().find_map(|l| l.strip_prefix("| hostile input, ")).expect("the hostile input row");
    let counts = row.split(" cases").next().unwrap_or_default();
    let (n, m) = counts.split_once(" + ").expect("N + M");
    (n.trim().parse().expect("N"), m.trim().parse().expect("M"))
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = String::from("{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"bridge\",\"x\":");
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    s.push('}');
    s.into_bytes()
}

fn cases(w: &World, s: &Subnets) -> Vec<Case> {
    let long16 = "abcdefghijklmnop";
    let host_ns = w.host.path_str();
    let not_a_file = w.tmp.join("plainfile").to_string_lossy().into_owned();
    let ranges = |v: Value| set(&["ipam", "ranges"], v);
    let net4 = s.net4();
    let gw6 = s.ip6(1);
    let ip4 = |h: u32| s.ip4(h);
    let mut v = vec![
        // ---- CNI_IFNAME
        env_case("ifname-slash", "bridge", vec![("CNI_IFNAME", Some("eth/0"))], C_ENV, &["interface name"]),
        env_case("ifname-dotdot", "bridge", vec![("CNI_IFNAME", Some(".."))], C_ENV, &["interface name"]),
        env_case("ifname-dot", "ptp", vec![("CNI_IFNAME", Some("."))], C_ENV, &["interface name"]),
        env_case("ifname-traversal", "bridge", vec![("CNI_IFNAME", Some("../../etc"))], C_ENV, &["interface name"]),
        env_case("ifname-space", "bridge", vec![("CNI_IFNAME", Some("eth 0"))], C_ENV, &["interface name"]),
        env_case("ifname-tab", "ptp", vec![("CNI_IFNAME", Some("eth\t0"))], C_ENV, &["interface name"]),
        env_case("ifname-newline", "bridge", vec![("CNI_IFNAME", Some("eth\n0"))], C_ENV, &["interface name"]),
        env_case("ifname-colon", "bridge", vec![("CNI_IFNAME", Some("eth0:1"))], C_ENV, &["interface name"]),
        env_case("ifname-16-bytes", "bridge", vec![("CNI_IFNAME", Some(long16))], C_ENV, &["too long"]),
        env_case("ifname-16-bytes-ptp", "ptp", vec![("CNI_IFNAME", Some(long16))], C_ENV, &["too long"]),
        env_case("ifname-16-bytes-loopback", "loopback", vec![("CNI_IFNAME", Some(long16))], C_ENV, &["too long"]),
        env_case("ifname-16-bytes-host-local", "host-local", vec![("CNI_IFNAME", Some(long16))], C_ENV, &["too long"]),
        env_case("ifname-multibyte-16", "bridge", vec![("CNI_IFNAME", Some("ééééééééé"))], C_ENV, &["too long"]),
        env_case("ifname-empty", "bridge", vec![("CNI_IFNAME", Some(""))], C_ENV, &["CNI_IFNAME"]),
        env_case("ifname-unset", "ptp", vec![("CNI_IFNAME", None)], C_ENV, &["CNI_IFNAME"]),
        env_case("ifname-lo-exists", "ptp", vec![("CNI_IFNAME", Some("lo"))], C_INTERNAL, &["lo"]),
        env_case("ifname-lo-exists-bridge", "bridge", vec![("CNI_IFNAME", Some("lo"))], C_INTERNAL, &["lo"]),
        // ---- CNI_CONTAINERID
        env_case(
            "cid-traversal",
            "bridge",
            vec![("CNI_CONTAINERID", Some("../../etc/passwd"))],
            C_ENV,
            &["containerID"],
        ),
        env_case("cid-slash", "host-local", vec![("CNI_CONTAINERID", Some("a/b"))], C_ENV, &["containerID"]),
        env_case("cid-space", "bridge", vec![("CNI_CONTAINERID", Some("a b"))], C_ENV, &["containerID"]),
        env_case("cid-leading-dash", "bridge", vec![("CNI_CONTAINERID", Some("-rf"))], C_ENV, &["containerID"]),
        env_case("cid-equals-semicolon", "ptp", vec![("CNI_CONTAINERID", Some("a=b;c=d"))], C_ENV, &["containerID"]),
        env_case("cid-newline", "host-local", vec![("CNI_CONTAINERID", Some("a\nb"))], C_ENV, &["containerID"]),
        env_case(
            "cid-crlf-store-format",
            "host-local",
            vec![("CNI_CONTAINERID", Some("a\r\nb"))],
            C_ENV,
            &["containerID"],
        ),
        env_case("cid-unset", "bridge", vec![("CNI_CONTAINERID", None)], C_ENV, &["CNI_CONTAINERID"]),
        env_case("cid-unicode", "static", vec![("CNI_CONTAINERID", Some("ctr\u{202e}x"))], C_ENV, &["containerID"]),
        // ---- CNI_COMMAND
        env_case("command-lowercase", "bridge", vec![("CNI_COMMAND", Some("add"))], C_ENV, &["CNI_COMMAND"]),
        env_case("command-semicolon", "bridge", vec![("CNI_COMMAND", Some("ADD;DEL"))], C_ENV, &["CNI_COMMAND"]),
        env_case("command-equals", "ptp", vec![("CNI_COMMAND", Some("ADD=1"))], C_ENV, &["CNI_COMMAND"]),
        env_case("command-space", "host-local", vec![("CNI_COMMAND", Some("ADD "))], C_ENV, &["CNI_COMMAND"]),
        // ---- CNI_NETNS
        env_case("netns-unset", "bridge", vec![("CNI_NETNS", None)], C_ENV, &["CNI_NETNS"]),
        env_case(
            "netns-regular-file",
            "bridge",
            vec![("CNI_NETNS", Some("/etc/hostname"))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case(
            "netns-plain-file-ptp",
            "ptp",
            vec![("CNI_NETNS", Some(&not_a_file))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case("netns-directory", "bridge", vec![("CNI_NETNS", Some("/tmp"))], C_NETNS, &["not a network namespace"]),
        env_case(
            "netns-dev-null",
            "ptp",
            vec![("CNI_NETNS", Some("/dev/null"))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case(
            "netns-missing",
            "bridge",
            vec![("CNI_NETNS", Some("/run/netns/cm-does-not-exist"))],
            C_NETNS,
            &["netns"],
        ),
        env_case("netns-relative", "ptp", vec![("CNI_NETNS", Some("run/netns/x"))], C_NETNS, &["netns"]),
        env_case(
            "netns-own-proc-self",
            "bridge",
            vec![("CNI_NETNS", Some("/proc/self/ns/net"))],
            C_NETNS,
            &["should not be the same"],
        ),
        env_case(
            "netns-own-thread-self",
            "ptp",
            vec![("CNI_NETNS", Some("/proc/thread-self/ns/net"))],
            C_NETNS,
            &["should not be the same"],
        ),
        env_case(
            "netns-own-by-name",
            "bridge",
            vec![("CNI_NETNS", Some(&host_ns))],
            C_NETNS,
            &["should not be the same"],
        ),
        env_case(
            "netns-own-loopback",
            "loopback",
            vec![("CNI_NETNS", Some("/proc/self/ns/net"))],
            C_NETNS,
            &["should not be the same"],
        ),
        env_case(
            "netns-ipc-namespace",
            "bridge",
            vec![("CNI_NETNS", Some("/proc/self/ns/ipc"))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case(
            "netns-uts-namespace",
            "ptp",
            vec![("CNI_NETNS", Some("/proc/self/ns/uts"))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case(
            "netns-proc-file",
            "bridge",
            vec![("CNI_NETNS", Some("/proc/self/status"))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case(
            "netns-proc-file-loopback",
            "loopback",
            vec![("CNI_NETNS", Some("/proc/self/status"))],
            C_NETNS,
            &["not a network namespace"],
        ),
        env_case(
            "netns-semicolon-equals",
            "bridge",
            vec![("CNI_NETNS", Some("/run/netns/a=b;c"))],
            C_NETNS,
            &["netns"],
        ),
        // ---- CNI_ARGS
        env_case("args-unknown-key", "bridge", vec![("CNI_ARGS", Some("FOO=bar"))], C_INTERNAL, &["unknown args"]),
        env_case(
            "args-value-with-equals",
            "host-local",
            vec![("CNI_ARGS", Some("IP=a=b"))],
            C_INTERNAL,
            &["invalid pair"],
        ),
        env_case("args-no-equals", "bridge", vec![("CNI_ARGS", Some("IgnoreUnknown"))], C_INTERNAL, &["invalid pair"]),
        env_case(
            "args-bad-bool",
            "ptp",
            vec![("CNI_ARGS", Some("IgnoreUnknown=maybe"))],
            C_INTERNAL,
            &["IgnoreUnknown"],
        ),
        env_case(
            "args-empty-pair",
            "bridge",
            vec![("CNI_ARGS", Some("IgnoreUnknown=1;;"))],
            C_INTERNAL,
            &["invalid pair"],
        ),
        env_case(
            "args-bad-ip",
            "host-local",
            vec![("CNI_ARGS", Some("IgnoreUnknown=1;IP=not-an-ip"))],
            C_INTERNAL,
            &["not-an-ip"],
        ),
        env_case(
            "args-ip-wrong-family",
            "host-local",
            vec![("CNI_ARGS", Some("IgnoreUnknown=1;IP=fd00::5"))],
            C_INTERNAL,
            &["fd00::5"],
        ),
        env_case(
            "args-ip-outside-range",
            "bridge",
            vec![("CNI_ARGS", Some("IgnoreUnknown=1;IP=198.19.255.77"))],
            C_INTERNAL,
            &["198.19.255.77"],
        ),
        env_case(
            "args-bad-mac",
            "bridge",
            vec![("CNI_ARGS", Some("IgnoreUnknown=1;MAC=zz:zz:zz:zz:zz:zz"))],
            C_CONFIG,
            &["invalid MAC address", "zz:zz"],
        ),
        // ---- CNI_PATH
        env_case("path-unset", "bridge", vec![("CNI_PATH", None)], C_ENV, &["CNI_PATH"]),
        env_case("path-no-ipam", "bridge", vec![("CNI_PATH", Some("/nonexistent-cm"))], C_INTERNAL, &["host-local"]),
        env_case(
            "path-shell-metachars",
            "ptp",
            vec![("CNI_PATH", Some("/nonexistent;rm -rf /"))],
            C_INTERNAL,
            &["host-local"],
        ),
        // ---- stdin: size, syntax, encoding, nesting
        bytes_case("stdin-empty", vec![], C_DECODE, &["unexpected end of JSON input"]),
        bytes_case("stdin-not-json", b"not json".to_vec(), C_DECODE, &["unmarshall"]),
        bytes_case("stdin-truncated", b"{\"cniVersion\":\"1.0.0\",\"name\":\"x\"".to_vec(), C_DECODE, &["end of JSON"]),
        bytes_case("stdin-top-level-array", b"[1,2]".to_vec(), C_DECODE, &["cannot unmarshal array"]),
        bytes_case("stdin-top-level-string", b"\"bridge\"".to_vec(), C_DECODE, &["cannot unmarshal string"]),
        bytes_case("stdin-top-level-number", b"42".to_vec(), C_DECODE, &["cannot unmarshal number"]),
        bytes_case(
            "stdin-trailing-garbage",
            b"{\"name\":\"x\",\"type\":\"bridge\"} x".to_vec(),
            C_DECODE,
            &["trailing"],
        ),
        bytes_case("stdin-two-objects", b"{\"name\":\"x\"}{\"name\":\"y\"}".to_vec(), C_DECODE, &["trailing"]),
        bytes_case("stdin-nul-byte", b"{\"name\":\"x\"\0}".to_vec(), C_DECODE, &["unmarshall"]),
        bytes_case("stdin-bom", b"\xef\xbb\xbf{\"name\":\"x\"}".to_vec(), C_DECODE, &["unmarshall"]),
        bytes_case(
            "stdin-invalid-utf8-in-string",
            b"{\"cniVersion\":\"1.0.0\",\"name\":\"a\xff\xfe\"}".to_vec(),
            C_DECODE,
            &["unicode"],
        ),
        bytes_case("stdin-invalid-utf8-outside", b"{\xff\"name\":\"a\"}".to_vec(), C_DECODE, &["unmarshall"]),
        bytes_case(
            "stdin-lone-surrogate",
            b"{\"cniVersion\":\"1.0.0\",\"name\":\"\\ud800\"}".to_vec(),
            C_DECODE,
            &["escape"],
        ),
        bytes_case("stdin-nested-100", nested(100), C_DECODE, &["nesting deeper than 64"]),
        bytes_case("stdin-nested-100000", nested(100_000), C_DECODE, &["nesting deeper than 64"]),
        bytes_case(
            "stdin-100MB",
            {
                let mut b = b"{\"cniVersion\":\"1.0.0\",\"name\":\"big\",\"type\":\"bridge\",\"pad\":\"".to_vec();
                b.resize(100 << 20, b'a');
                b
            },
            C_IO,
            &["larger than 16 MiB"],
        ),
        bytes_case(
            "stdin-huge-number",
            b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"bridge\",\"mtu\":1e999}".to_vec(),
            C_DECODE,
            &["number"],
        ),
        // ---- network name: path traversal and friends (the name becomes dataDir/<name>)
        conf_case("name-missing", "bridge", remove("name"), C_CONFIG, &["missing network name"]),
        conf_case("name-empty", "host-local", set(&["name"], json!("")), C_CONFIG, &["missing network name"]),
        conf_case("name-dotdot", "host-local", set(&["name"], json!("..")), C_CONFIG, &["network name"]),
        conf_case("name-traversal", "host-local", set(&["name"], json!("../../../etc")), C_CONFIG, &["network name"]),
        conf_case("name-slash", "bridge", set(&["name"], json!("a/b")), C_CONFIG, &["network name"]),
        conf_case("name-absolute", "ptp", set(&["name"], json!("/etc/cni")), C_CONFIG, &["network name"]),
        conf_case("name-nul", "host-local", set(&["name"], json!("a\u{0}b")), C_CONFIG, &["network name"]),
        conf_case("name-space", "bridge", set(&["name"], json!("a b")), C_CONFIG, &["network name"]),
        conf_case("name-unicode", "static", set(&["name"], json!("réseau")), C_CONFIG, &["network name"]),
        conf_case("name-number", "bridge", set(&["name"], json!(7)), C_DECODE, &["name"]),
        conf_case("name-300-bytes", "host-local", set(&["name"], json!("n".repeat(300))), C_CONFIG, &["network name"]),
        conf_case("name-dup-key-last-wins", "host-local", |_| {}, C_CONFIG, &["network name"]),
        conf_case("name-case-fold-dup", "bridge", |_| {}, C_CONFIG, &["network name"]),
        // ---- cniVersion
        conf_case("version-unknown", "bridge", set(&["cniVersion"], json!("9.9.9")), C_VERSION, &["9.9.9"]),
        conf_case("version-number", "ptp", set(&["cniVersion"], json!(1.0)), C_DECODE, &["cniVersion"]),
        conf_case("version-traversal", "host-local", set(&["cniVersion"], json!("../..")), C_VERSION, &["../.."]),
        conf_case("version-short", "bridge", set(&["cniVersion"], json!("1.0")), C_VERSION, &["1.0"]),
        // ---- host-local config
        // a relative dataDir is accepted as the reference accepts it (against the working
        // directory): ipam::ipam_relative_data_dir_resolves_against_the_working_directory
        conf_case(
            "datadir-nul",
            "host-local",
            set(&["ipam", "dataDir"], json!("/tmp/a\u{0}b")),
            C_CONFIG,
            &["dataDir"],
        ),
        conf_case(
            "datadir-is-a-file",
            "host-local",
            set(&["ipam", "dataDir"], json!(not_a_file.clone())),
            C_INTERNAL,
            &["plainfile"],
        ),
        conf_case(
            "datadir-number",
            "host-local",
            set(&["ipam", "dataDir"], json!(5)),
            C_INTERNAL,
            &["datadir", "expected a string"],
        ),
        conf_case(
            "subnet-garbage",
            "host-local",
            ranges(json!([[{"subnet": "not-a-cidr"}]])),
            C_CONFIG,
            &["not-a-cidr"],
        ),
        conf_case(
            "subnet-prefix-33",
            "host-local",
            ranges(json!([[{"subnet": "198.18.0.0/33"}]])),
            C_CONFIG,
            &["198.18.0.0/33"],
        ),
        conf_case(
            "subnet-prefix-129",
            "bridge",
            ranges(json!([[{"subnet": "fd00::/129"}]])),
            C_CONFIG,
            &["fd00::/129"],
        ),
        conf_case(
            "subnet-negative-prefix",
            "host-local",
            ranges(json!([[{"subnet": "198.18.0.0/-1"}]])),
            C_CONFIG,
            &["198.18.0.0/-1"],
        ),
        conf_case(
            "subnet-v4-slash-32",
            "host-local",
            ranges(json!([[{"subnet": "198.18.0.1/32"}]])),
            C_CONFIG,
            &["198.18.0.1/32"],
        ),
        conf_case("subnet-missing", "host-local", ranges(json!([[{"rangeStart": ip4(5)}]])), C_CONFIG, &["subnet"]),
        conf_case("ranges-empty", "host-local", ranges(json!([])), C_CONFIG, &["range"]),
        conf_case("ranges-empty-set", "bridge", ranges(json!([[]])), C_CONFIG, &["range"]),
        conf_case(
            "ranges-not-array",
            "host-local",
            ranges(json!("198.18.0.0/24")),
            C_INTERNAL,
            &["ranges", "expected a sequence"],
        ),
        conf_case(
            "gateway-wrong-family",
            "host-local",
            ranges(json!([[{"subnet": net4, "gateway": gw6}]])),
            C_CONFIG,
            &["gateway"],
        ),
        conf_case(
            "rangestart-wrong-family",
            "bridge",
            ranges(json!([[{"subnet": s.net4(), "rangeStart": "fd00::5"}]])),
            C_CONFIG,
            &["fd00::5"],
        ),
        conf_case(
            "rangestart-outside",
            "host-local",
            ranges(json!([[{"subnet": s.net4(), "rangeStart": "198.19.255.1"}]])),
            C_CONFIG,
            &["198.19.255.1"],
        ),
        conf_case(
            "rangeend-before-start",
            "host-local",
            ranges(json!([[{"subnet": s.net4(), "rangeStart": ip4(50), "rangeEnd": ip4(10)}]])),
            C_CONFIG,
            &["range"],
        ),
        conf_case(
            "ranges-overlap",
            "host-local",
            ranges(json!([[{"subnet": s.net4()}], [{"subnet": s.net4()}]])),
            C_CONFIG,
            &["overlap"],
        ),
        conf_case("route-dst-garbage", "host-local", set(&["ipam", "routes"], json!([{"dst": "x"}])), C_CONFIG, &["x"]),
        conf_case(
            "route-gw-garbage",
            "bridge",
            set(&["ipam", "routes"], json!([{"dst": "0.0.0.0/0", "gw": "nope"}])),
            C_CONFIG,
            &["nope"],
        ),
        conf_case(
            "ipam-type-traversal",
            "bridge",
            set(&["ipam", "type"], json!("../../../bin/sh")),
            C_INTERNAL,
            &["../../../bin/sh"],
        ),
        conf_case("ipam-type-absolute", "ptp", set(&["ipam", "type"], json!("/bin/sh")), C_INTERNAL, &["/bin/sh"]),
        conf_case(
            "ipam-type-missing",
            "ptp",
            |c| {
                c["ipam"].as_object_mut().expect("ipam").remove("type");
            },
            C_CONFIG,
            &["ipam"],
        ),
        conf_case("ipam-missing-ptp", "ptp", remove("ipam"), C_CONFIG, &["ipam"]),
        conf_case(
            "ipam-not-object",
            "bridge",
            set(&["ipam"], json!("host-local")),
            C_INTERNAL,
            &["ipam: expected an object"],
        ),
        // ---- static config
        conf_case(
            "static-no-prefix",
            "static",
            set(&["ipam", "addresses"], json!([{"address": ip4(5)}])),
            C_CONFIG,
            &["address"],
        ),
        conf_case(
            "static-gw-wrong-family",
            "static",
            set(&["ipam", "addresses"], json!([{"address": format!("{}/24", ip4(5)), "gateway": "fd00::1"}])),
            C_CONFIG,
            &["gateway"],
        ),
        conf_case(
            "static-garbage",
            "static",
            set(&["ipam", "addresses"], json!([{"address": "../../x"}])),
            C_CONFIG,
            &["../../x"],
        ),
        conf_case(
            "static-not-array",
            "static",
            set(&["ipam", "addresses"], json!({"address": "x"})),
            C_INTERNAL,
            &["ipam.addresses"],
        ),
        conf_case(
            "static-prefix-99",
            "static",
            set(&["ipam", "addresses"], json!([{"address": format!("{}/99", ip4(5))}])),
            C_CONFIG,
            &["/99"],
        ),
        // ---- plugin config
        conf_case("bridge-name-slash", "bridge", set(&["bridge"], json!("br/0")), C_CONFIG, &["bridge name", "br/0"]),
        conf_case("bridge-name-dotdot", "bridge", set(&["bridge"], json!("..")), C_CONFIG, &["bridge name", ".."]),
        conf_case(
            "bridge-name-16-bytes",
            "bridge",
            set(&["bridge"], json!(long16)),
            C_CONFIG,
            &["bridge name", "abcdefghijklmnop"],
        ),
        conf_case("bridge-name-space", "bridge", set(&["bridge"], json!("br 0")), C_CONFIG, &["bridge name", "br 0"]),
        conf_case("bridge-name-is-lo", "bridge", set(&["bridge"], json!("lo")), C_INTERNAL, &["lo", "bridge"]),
        conf_case("bridge-name-empty", "bridge", set(&["bridge"], json!("")), C_CONFIG, &["bridge name"]),
        conf_case("bridge-mtu-huge", "bridge", set(&["mtu"], json!(1u64 << 40)), C_CONFIG, &["MTU", "1099511627776"]),
        conf_case("bridge-mtu-string", "bridge", set(&["mtu"], json!("1500")), C_INTERNAL, &["mtu", "expected i64"]),
        conf_case(
            "bridge-vlan-and-trunk",
            "bridge",
            |c: &mut Value| {
                c["vlan"] = json!(5);
                c["vlanTrunk"] = json!([{"id": 6}]);
            },
            C_CONFIG,
            &["vlan and vlanTrunk"],
        ),
        conf_case(
            "bridge-trunk-min-missing",
            "bridge",
            set(&["vlanTrunk"], json!([{"maxID": 6}])),
            C_CONFIG,
            &["minID is missing"],
        ),
        conf_case("bridge-vlan-4095", "bridge", set(&["vlan"], json!(5000)), C_CONFIG, &["vlan"]),
        conf_case("bridge-vlan-negative", "bridge", set(&["vlan"], json!(-1)), C_CONFIG, &["vlan"]),
        conf_case(
            "bridge-isgateway-string",
            "bridge",
            set(&["isGateway"], json!("yes")),
            C_INTERNAL,
            &["isgateway", "expected a boolean"],
        ),
        conf_case(
            "bridge-ipmasq-backend",
            "bridge",
            |c| {
                c["ipMasq"] = json!(true);
                c["ipMasqBackend"] = json!("../x");
            },
            C_INTERNAL,
            &["unknown ipmasq backend", "../x"],
        ),
        conf_case(
            "bridge-runtime-mac-garbage",
            "bridge",
            |c| {
                c["capabilities"] = json!({"mac": true});
                c["runtimeConfig"] = json!({"mac": "zz"});
            },
            C_CONFIG,
            &["invalid MAC address", "zz"],
        ),
        conf_case("ptp-mtu-huge", "ptp", set(&["mtu"], json!(99_999_999_999u64)), C_CONFIG, &["MTU", "99999999999"]),
        conf_case(
            "bridge-ipmasq-backend-pf",
            "bridge",
            |c| {
                c["ipMasq"] = json!(true);
                c["ipMasqBackend"] = json!("pf");
            },
            C_INTERNAL,
            &["unknown ipmasq backend \"pf\""],
        ),
        // ---- host-device: what names the device must stay where it belongs
        conf_case("hostdev-nothing-named", "host-device", remove("device"), C_CONFIG, &["specify either"]),
        conf_case(
            "hostdev-kernelpath-relative",
            "host-device",
            instead_of_device("kernelpath", "sys/devices/x"),
            C_CONFIG,
            &["/sys/devices/"],
        ),
        conf_case(
            "hostdev-kernelpath-outside",
            "host-device",
            instead_of_device("kernelpath", "/etc"),
            C_CONFIG,
            &["/sys/devices/"],
        ),
        conf_case(
            "hostdev-kernelpath-climbs-at-the-end",
            "host-device",
            instead_of_device("kernelpath", "/sys/devices/virtual/.."),
            C_CONFIG,
            &["/sys/devices/"],
        ),
        conf_case(
            "hostdev-kernelpath-climbs",
            "host-device",
            instead_of_device("kernelpath", "/sys/devices/../../etc"),
            C_CONFIG,
            &["/sys/devices/"],
        ),
        conf_case(
            "hostdev-pci-traversal",
            "host-device",
            instead_of_device("pciBusID", "../../../../etc"),
            C_CONFIG,
            &["PCI address"],
        ),
        conf_case("hostdev-pci-dotdot", "host-device", instead_of_device("pciBusID", ".."), C_CONFIG, &["PCI address"]),
        conf_case("macvlan-mode-bogus", "macvlan", set(&["mode"], json!("bogus")), C_CONFIG, &["mode", "bogus"]),
        conf_case(
            "macvlan-master-traversal",
            "macvlan",
            set(&["master"], json!("../x")),
            C_CONFIG,
            // the reference's words (v1.9.1's loadConf returns its netlink library's error as is)
            &["Link not found"],
        ),
        conf_case("tap-owner-negative", "tap", set(&["owner"], json!(-1)), C_INTERNAL, &["owner"]),
        conf_case("tap-group-huge", "tap", set(&["group"], json!(1u64 << 40)), C_INTERNAL, &["group"]),
        conf_case("tap-multiqueue-string", "tap", set(&["multiQueue"], json!("yes")), C_INTERNAL, &["multiqueue"]),
        conf_case("tap-mac-garbage", "tap", set(&["mac"], json!("zz")), C_CONFIG, &["zz"]),
        conf_case("tap-mtu-huge", "tap", set(&["mtu"], json!(1u64 << 40)), C_CONFIG, &["MTU", "1099511627776"]),
        conf_case("tap-bridge-traversal", "tap", set(&["bridge"], json!("../x")), C_CONFIG, &["../x"]),
        // ---- prevResult on CHECK (without IPAM: the interface plugins run their IPAM's CHECK
        // first, as the reference, and host-local finds no reservation before prevResult is read)
        conf_case("prevresult-wrong-type", "bridge", without_ipam_with_prev(json!([1])), C_INTERNAL, &["prevResult"]),
        conf_case(
            "prevresult-bad-ip",
            "bridge",
            without_ipam_with_prev(json!({"cniVersion": "1.0.0", "ips": [{"address": "x"}]})),
            C_INTERNAL,
            &["prevResult"],
        ),
        conf_case(
            "prevresult-bad-version",
            "bridge",
            without_ipam_with_prev(json!({"cniVersion": "0.0.1"})),
            C_INTERNAL,
            &["prevResult"],
        ),
    ];
    // raw-byte variants of a config that cannot be written as a serde_json Value
    let dup = format!(
        "{{\"cniVersion\":\"1.0.0\",\"name\":\"ok\",\"name\":\"../x\",\"type\":\"host-local\",\"ipam\":{{\"type\":\"host-local\",\"dataDir\":{:?},\"subnet\":{:?}}}}}",
        w.data_dir,
        s.net4()
    );
    let fold = format!(
        "{{\"cniVersion\":\"1.0.0\",\"name\":\"ok\",\"NAME\":\"a/b\",\"type\":\"bridge\",\"ipam\":{{\"type\":\"host-local\",\"dataDir\":{:?},\"subnet\":{:?}}}}}",
        w.data_dir,
        s.net4()
    );
    for c in v.iter_mut() {
        match c.name {
            "name-dup-key-last-wins" => c.stdin = Stdin::Bytes(dup.clone().into_bytes()),
            "name-case-fold-dup" => c.stdin = Stdin::Bytes(fold.clone().into_bytes()),
            _ => {}
        }
    }
    v
}

/// What must not change: links, addresses and routes of both namespaces, the nftables and
/// iptables rulesets of the host, and every file under the world's temp dir.
fn fingerprint(w: &World) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (label, ns) in [("host", &w.host), ("ctr", w.c(0))] {
        m.insert(format!("{label}.links"), ns.link_names().join(","));
        for l in ns.link_names() {
            m.insert(format!("{label}.addrs.{l}"), ns.addrs(&l).join(","));
        }
        let routes: Vec<String> =
            ns.routes().iter().map(|r| format!("{} {} {}", r["dst"], r["dev"], r["gateway"])).collect();
        m.insert(format!("{label}.routes"), routes.join(";"));
    }
    m.insert("host.nft".into(), String::from_utf8_lossy(&w.host.exec(&["nft", "list", "ruleset"]).stdout).into_owned());
    m.insert(
        "host.iptables".into(),
        String::from_utf8_lossy(&w.host.exec(&["iptables-save"]).stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // the allocation cursor may move on a failed ADD (as in the reference); leases may not
    let store: Vec<String> = state::read_store(&w.data_dir)
        .into_iter()
        .filter(|(k, _)| !k.contains("last_reserved_ip."))
        .map(|(k, (mode, content))| format!("{k} {mode:o} {content:?}"))
        .collect();
    m.insert("data".into(), store.join("\n"));
    m.insert("plainfile".into(), std::fs::read_to_string(w.tmp.join("plainfile")).unwrap_or_default());
    m
}

#[test]
fn hostile_inputs_fail_cleanly_and_change_nothing() {
    let w = World::new("hostile", 1, Impl::Ours);
    let s = Subnets::alloc();
    std::fs::write(w.tmp.join("plainfile"), b"not a directory").expect("write plain file");
    let table = cases(&w, &s);
    assert!(table.len() >= 100, "only {} hostile cases", table.len());
    assert_eq!(table.len(), documented_counts().0, "docs/hardening.md gives another count: update it");
    let mut names = std::collections::BTreeSet::new();
    for c in &table {
        assert!(names.insert(c.name), "duplicate case name {}", c.name);
    }
    // the baseline: one good ADD + DEL, so the shared bridge exists as on a node in use
    let good = base_conf("bridge", &w, &s);
    w.add(&good).cid("baseline").run().ok();
    w.del(&good).cid("baseline").run().ok();
    let mut before = fingerprint(&w);
    let mut failures = vec![];
    for c in &table {
        let mut conf = base_conf(c.plugin, &w, &s);
        let command = if c.name.starts_with("prevresult-") { "CHECK" } else { "ADD" };
        let mut call = w.cni(command, &conf).cid(&format!("hostile-{}", c.name.len()));
        match &c.stdin {
            Stdin::Conf(f) => {
                f(&mut conf);
                call = call.stdin_bytes(&serde_json::to_vec(&conf).expect("serialize"));
            }
            Stdin::Bytes(b) => call = call.stdin_bytes(b),
        }
        for (k, v) in &c.env {
            call = match v {
                Some(v) => call.env(k, v),
                None => call.unset(k),
            };
        }
        let out = call.run();
        let problem = match out.error() {
            None => Some(format!("exit {} stdout {:?} stderr {:?}", out.code, out.stdout, out.stderr)),
            Some(e) => {
                let text = format!("{} {}", e.msg, e.details.clone().unwrap_or_default()).to_lowercase();
                let missing: Vec<_> = c.says.iter().filter(|w| !text.contains(&w.to_lowercase())).collect();
                if e.code != c.code || !missing.is_empty() || out.code != 1 {
                    Some(format!(
                        "code {} (want {}), msg {:?}, details {:?}, lacks {missing:?}",
                        e.code, c.code, e.msg, e.details
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{} [{}]: {p}", c.name, c.plugin));
        }
        let after = fingerprint(&w);
        if after != before {
            let changed: Vec<_> =
                after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {v}")).collect();
            failures.push(format!("{} [{}] CHANGED THE SYSTEM:\n{}", c.name, c.plugin, changed.join("\n")));
            before = after;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehaved:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

// ---- regressions found by the table above, one test each

#[test]
fn netns_path_of_another_namespace_type_or_a_proc_file_is_refused() {
    use cni_multi::sys::netns::{NetNs, NsError};
    for p in ["/proc/self/ns/ipc", "/proc/self/ns/uts", "/proc/self/ns/mnt", "/proc/self/status", "/proc/self/stat"] {
        match NetNs::open(p) {
            Err(NsError::NotNetns(_)) => {}
            other => panic!("{p} accepted as a network namespace: {other:?}"),
        }
    }
    assert!(NetNs::open("/proc/self/ns/net").is_ok(), "a real netns is still accepted");
}

/// A FIFO as CNI_NETNS: the plugins opened the path (blocking until a writer came, i.e. forever)
/// before they looked at its filesystem. Now every verb that opens the namespace answers at
/// once with code 8, as for any other file that is not a namespace, and changes nothing.
#[test]
fn netns_path_that_is_a_fifo_is_refused_at_once() {
    let w = World::new("hfifo", 1, Impl::Ours);
    let s = Subnets::alloc();
    let fifo = w.tmp.join("netns-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo = fifo.to_str().expect("utf-8 path").to_string();
    let ipam = json!({"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]});
    let mut confs: Vec<Value> =
        ["bridge", "ptp", "loopback", "host-device", "macvlan", "tap"].iter().map(|p| base_conf(p, &w, &s)).collect();
    confs.push(json!({"cniVersion": "1.0.0", "name": "hostile", "type": "dummy", "ipam": ipam}));
    confs.push(json!({"cniVersion": "1.0.0", "name": "hostile", "type": "ipvlan", "master": "lo", "ipam": ipam}));
    confs.push(json!({"cniVersion": "1.0.0", "name": "hostile", "type": "vlan", "master": "lo", "vlanId": 5,
                      "ipam": ipam}));
    confs.push(json!({"cniVersion": "1.0.0", "name": "hostile", "type": "vpc-routed", "ipam": ipam}));
    // (not one of the upstream applet names the world links)
    std::os::unix::fs::symlink(runtime::bin(), w.bin_dir.join("vpc-routed")).expect("link vpc-routed");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": fifo}],
                      "ips": [{"address": format!("{}/24", s.ip4(2)), "interface": 0}]});
    let before = fingerprint(&w);
    let mut failures = vec![];
    for conf in &confs {
        let plugin = conf["type"].as_str().expect("type").to_string();
        for verb in ["ADD", "DEL", "CHECK"] {
            // ptp's and vpc-routed's CHECK ask IPAM first (which finds no reservation); the others
            // reach the namespace on CHECK when they have no IPAM
            if verb == "CHECK" && (plugin == "ptp" || plugin == "vpc-routed") {
                continue;
            }
            let call = if verb == "CHECK" {
                let mut l2 = conf.clone();
                if plugin != "dummy" && plugin != "ipvlan" && plugin != "vlan" {
                    l2.as_object_mut().expect("object").remove("ipam");
                }
                w.check(&l2, &prev)
            } else {
                w.cni(verb, conf)
            };
            let out = call.netns_path(&fifo).timeout(std::time::Duration::from_secs(10)).run();
            // vpc-routed's DEL goes on with the host side and reports every error together (999)
            let want = if plugin == "vpc-routed" && verb == "DEL" { C_INTERNAL } else { C_NETNS };
            match out.error() {
                Some(e) if e.code == want && e.msg.contains("is not a network namespace") => {}
                _ => failures.push(format!("{plugin} {verb}: exit {} {}", out.code, out.stdout.replace('\n', " "))),
            }
        }
    }
    // sbr's DEL opens the namespace too
    let sbr = json!({"cniVersion": "1.0.0", "name": "hostile", "type": "sbr", "prevResult": prev});
    let out = w.del(&sbr).netns_path(&fifo).timeout(std::time::Duration::from_secs(10)).run();
    if out.error().is_none_or(|e| e.code != C_NETNS) {
        failures.push(format!("sbr DEL: exit {} {}", out.code, out.stdout));
    }
    assert!(failures.is_empty(), "not refused with code 8:\n{}", failures.join("\n"));
    assert_eq!(fingerprint(&w), before, "a refused FIFO changed the system");
}

/// CNI_IFNAME with a `%` (`b%d`): the kernel took it as a name template and named the interface
/// `b0`, after which ADD failed looking up `b%d` and left the links behind (bridge, ptp, macvlan
/// and tap leaked them, host-device left the device in the container renamed). ADD and CHECK now
/// refuse it with code 4 before any change; DEL succeeds (nothing of that name can exist).
/// The reference accepts it and leaks (shown for ptp).
#[test]
fn ifname_with_a_percent_is_refused_and_leaves_nothing() {
    let w = World::new("hpct", 1, Impl::Ours);
    let s = Subnets::alloc();
    w.host.must(&["ip", "link", "add", "cmup0", "type", "veth", "peer", "name", "cmup1"]);
    w.host.must(&["ip", "link", "set", "cmup0", "up"]);
    w.host.must(&["ip", "link", "add", "cmhd0", "type", "veth", "peer", "name", "cmhd1"]);
    let mut macvlan = base_conf("macvlan", &w, &s);
    macvlan["master"] = json!("cmup0");
    let confs = [
        base_conf("bridge", &w, &s),
        base_conf("ptp", &w, &s),
        macvlan,
        base_conf("tap", &w, &s),
        base_conf("host-device", &w, &s),
    ];
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "b%d", "sandbox": w.c(0).path_str()}],
                      "ips": [{"address": format!("{}/24", s.ip4(2)), "interface": 0}]});
    let before = fingerprint(&w);
    for conf in &confs {
        let plugin = conf["type"].as_str().expect("type");
        let e = w.add(conf).ifname("b%d").run().err_code(C_ENV);
        assert_eq!(e.msg, "interface name contains %", "{plugin}");
        assert_eq!(fingerprint(&w), before, "{plugin}: a refused ADD changed the system");
        assert_eq!(w.check(conf, &prev).ifname("b%d").run().err_code(C_ENV).msg, e.msg, "{plugin} CHECK");
        w.del(conf).ifname("b%d").run().ok();
        assert_eq!(fingerprint(&w), before, "{plugin}: DEL changed the system");
    }
    if have_reference("ptp") {
        let r = World::new("hpctr", 1, Impl::Reference);
        let conf = base_conf("ptp", &r, &Subnets::alloc());
        let out = r.add(&conf).ifname("b%d").run();
        assert!(!out.success(), "the reference's ADD fails: {}", out.stdout);
        assert!(r.c(0).link("b0").is_some(), "the reference leaves the expanded b0 in the container");
    }
}

#[test]
fn ipam_that_is_not_an_object_is_an_error_not_l2_mode() {
    let w = World::new("hipam", 1, Impl::Ours);
    let conf =
        json!({"cniVersion": "1.0.0", "name": "hipam", "type": "bridge", "bridge": "cmhi0", "ipam": "host-local"});
    let e = w.add(&conf).run().err_code(999);
    assert!(e.msg.contains("ipam: expected an object, got string"), "{e:?}");
    assert!(w.c(0).link("eth0").is_none(), "nothing was created in the container");
    assert!(w.host.link("cmhi0").is_none(), "no bridge was created");
}

/// DEL and GC of a config whose `ipam` is not an object (`"ipam": "host-local"`) succeed with the
/// real plugins, as differences.md promises for mistyped common keys: such an `ipam` names no
/// IPAM plugin, so there is nothing of IPAM to release, and the rest of the attachment is still
/// removed. They failed with 999 in ptp, bridge, macvlan, host-device and vpc-routed. ADD,
/// CHECK and STATUS still fail (999, as the reference's).
#[test]
fn ipam_that_is_not_an_object_fails_add_check_status_but_not_del_gc() {
    let w = World::new("hipamdel", 1, Impl::Ours);
    std::os::unix::fs::symlink(runtime::bin(), w.bin_dir.join("vpc-routed")).expect("link vpc-routed");
    w.host.must(&["ip", "link", "add", "cmup0", "type", "veth", "peer", "name", "cmup1"]);
    w.host.must(&["ip", "link", "set", "cmup0", "up"]);
    w.host.must(&["ip", "link", "add", "cmhd0", "type", "veth", "peer", "name", "cmhd1"]);
    let confs = [
        json!({"type": "bridge", "bridge": "cmhid0"}),
        json!({"type": "ptp"}),
        json!({"type": "macvlan", "master": "cmup0"}),
        json!({"type": "host-device", "device": "cmhd0"}),
        json!({"type": "vpc-routed"}),
    ];
    for base in confs {
        let mut conf = base.clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["name"] = json!("hipamdel");
        let plugin = conf["type"].as_str().expect("type").to_string();
        // bridge, macvlan and host-device make an attachment without IPAM: DEL must remove it
        let l2 = plugin == "bridge" || plugin == "macvlan" || plugin == "host-device";
        if l2 {
            w.add(&conf).run().ok();
            assert!(w.c(0).link("eth0").is_some(), "{plugin}: the L2 ADD made eth0");
        }
        conf["ipam"] = json!("host-local");
        let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": w.c(0).path_str()}]});
        for call in [w.add(&conf).cid("other"), w.check(&conf, &prev), w.cni("STATUS", &conf)] {
            let e = call.run().err_code(C_INTERNAL);
            assert!(e.msg.contains("ipam: expected an object, got string"), "{plugin}: {e:?}");
        }
        w.del(&conf).run().ok();
        assert!(w.c(0).link("eth0").is_none(), "{plugin}: DEL removed eth0");
        w.del(&conf).run().ok();
        w.cni("GC", &conf).run().ok();
    }
    assert!(w.host.link("cmhd0").is_some(), "host-device's DEL gave the device back");
}

/// A key of the plugin's own with the wrong JSON type: STATUS fails as the reference's (it decodes
/// its whole config first: 999 `failed to load netconf: …`), GC goes on (it needs none of those
/// keys; the reference's plugins have no GC) and still releases the stale lease of this network.
/// Before, bridge/ptp/macvlan/ipvlan/vlan STATUS passed and their GC failed.
#[test]
fn mistyped_plugin_keys_fail_status_but_not_gc() {
    let w = World::new("hmistype", 1, Impl::Ours);
    let s = Subnets::alloc();
    w.host.must(&["ip", "link", "add", "cmmt0", "type", "veth", "peer", "name", "cmmt1"]);
    w.host.must(&["ip", "link", "set", "cmmt0", "up"]);
    let confs = [
        json!({"type": "bridge", "bridge": "cmmtb0", "mtu": "x", "isGateway": "yes"}),
        json!({"type": "ptp", "mtu": "x", "ipMasq": "x"}),
        json!({"type": "macvlan", "master": 5}),
        json!({"type": "ipvlan", "mode": 5}),
        json!({"type": "vlan", "master": "cmmt0", "vlanId": "x"}),
    ];
    for base in confs {
        let plugin = base["type"].as_str().expect("type").to_string();
        let mut conf = base.clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["name"] = json!("hmistype");
        conf["ipam"] = json!({"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]});
        let e = w.cni("STATUS", &conf).run().err_code(999);
        assert!(e.msg.starts_with("failed to load netconf: "), "{plugin}: {e:?}");
        // a stale reservation of this network, made by host-local itself
        let hl = json!({"cniVersion": "1.1.0", "name": "hmistype", "type": "host-local",
            "ipam": conf["ipam"].clone()});
        w.cni("ADD", &hl).cid(&format!("stale-{plugin}")).run().ok();
        assert_eq!(w.leases("hmistype").len(), 1, "{plugin}: the stale reservation");
        conf["cni.dev/valid-attachments"] = json!([]);
        w.cni("GC", &conf).run().ok();
        assert!(w.leases("hmistype").is_empty(), "{plugin}: GC released the stale lease: {:?}", w.store("hmistype"));
    }
}

#[test]
fn netconf_type_error_names_the_key() {
    let w = World::new("hkey", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = json!({"cniVersion": "1.0.0", "name": "hkey", "type": "bridge", "bridge": "cmhk0", "mtu": "1500",
                      "ipam": {"type": "host-local", "dataDir": w.data_dir, "subnet": s.net4()}});
    let e = w.add(&conf).run().err_code(999);
    assert!(e.msg.starts_with("failed to load netconf: mtu: "), "{e:?}");
    let mut hl = conf.clone();
    hl["type"] = json!("host-local");
    hl["ipam"]["dataDir"] = json!(5);
    let e = w.add(&hl).run().err_code(999);
    assert!(e.msg.starts_with("failed to load netconf: datadir: "), "{e:?}");
}

#[test]
fn bridge_name_the_kernel_would_refuse_is_a_config_error_before_any_change() {
    let w = World::new("hbrname", 1, Impl::Ours);
    let s = Subnets::alloc();
    // (and bytes the kernel's Latin-1 isspace takes as space: 0xA0, also inside "à" = C3 A0; and a
    // `%`, which the kernel expands as a name template, so the bridge made would be `br0`)
    for bad in ["br/0", "..", "br 0", "abcdefghijklmnop", "br:0", "br\u{a0}", "brà", "br%d"] {
        let conf = json!({"cniVersion": "1.0.0", "name": "hbrname", "type": "bridge", "bridge": bad,
                          "ipam": {"type": "host-local", "dataDir": w.data_dir, "subnet": s.net4()}});
        let e = w.add(&conf).run().err_code(7);
        assert!(e.msg.contains("invalid bridge name"), "{bad}: {e:?}");
        if bad == "br\u{a0}" {
            assert!(e.msg.contains(r#"invalid bridge name "br\u00a0": "#), "named as Go's %q quotes it: {e:?}");
        }
        assert_eq!(w.host.link_names(), vec!["lo".to_string()], "{bad}: host unchanged");
        assert!(w.leases("hbrname").is_empty(), "{bad}: no lease taken");
    }
}

#[test]
fn netconf_type_error_in_a_huge_config_is_reported_fast() {
    // the key search behind "netconf_type_error_names_the_key" clones the config per key: a
    // config of 15 MiB with 300 000 keys and one bad value must still fail at once
    let w = World::new("hhuge", 1, Impl::Ours);
    let mut c = serde_json::Map::new();
    c.insert("cniVersion".into(), json!("1.0.0"));
    c.insert("name".into(), json!("hhuge"));
    c.insert("type".into(), json!("bridge"));
    c.insert("bridge".into(), json!("cmhh0"));
    for i in 0..300_000 {
        c.insert(format!("k{i:07}"), json!("x".repeat(40)));
    }
    c.insert("mtu".into(), json!("not a number"));
    let started = std::time::Instant::now();
    let e = w.add(&Value::Object(c)).run().err_code(999);
    assert!(e.msg.contains("failed to load netconf"), "{e:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(w.host.link("cmhh0").is_none());
}

// ---- the meta plugins (chained after a real attachment)

/// A chained plugin's base config: the attachment's result as prevResult.
fn meta_base(plugin: &str, w: &World, prev: &Value) -> Value {
    let mut c = match plugin {
        "portmap" => json!({"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true},
                            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
        "portmap-ipt" => json!({"type": "portmap", "backend": "iptables", "capabilities": {"portMappings": true},
                                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}),
        "bandwidth" => json!({"type": "bandwidth", "ingressRate": 1_000_000, "ingressBurst": 100_000,
                              "egressRate": 1_000_000, "egressBurst": 100_000}),
        "tuning" => json!({"type": "tuning", "dataDir": w.tmp.join("tuning"), "sysctl": {"net.core.somaxconn": "500"}}),
        "firewall" => json!({"type": "firewall", "backend": "iptables"}),
        "sbr" => json!({"type": "sbr"}),
        other => panic!("no base config for {other}"),
    };
    c["cniVersion"] = json!("1.0.0");
    c["name"] = json!("hostile");
    c["prevResult"] = prev.clone();
    c
}

/// What a meta plugin could change besides [`fingerprint`]: qdiscs, the container interface's
/// attributes, the sysctls the cases name, tuning's saved state.
fn meta_fingerprint(w: &World) -> BTreeMap<String, String> {
    let mut m = fingerprint(w);
    for (label, ns) in [("host", &w.host), ("ctr", w.c(0))] {
        let q = String::from_utf8_lossy(&ns.exec(&["tc", "qdisc", "show"]).stdout).into_owned();
        m.insert(format!("{label}.qdiscs"), q);
        let l = String::from_utf8_lossy(&ns.exec(&["ip", "-o", "-d", "link", "show"]).stdout).into_owned();
        m.insert(format!("{label}.linkdetails"), l);
    }
    for key in ["net/core/somaxconn", "net/ipv4/ip_forward", "kernel/hostname"] {
        m.insert(format!("ctr.sysctl.{key}"), w.c(0).sysctl(key).unwrap_or_default());
    }
    let saved: Vec<String> = std::fs::read_dir(w.tmp.join("tuning"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    m.insert("tuning.saved".into(), saved.join(","));
    m
}

/// (name, base config, mutation, code, words the message must hold)
type MetaCase = (&'static str, &'static str, Box<dyn Fn(&mut Value)>, u64, &'static [&'static str]);

#[test]
fn meta_plugin_hostile_inputs_fail_cleanly_and_change_nothing() {
    let w = World::new("hostmeta", 1, Impl::Ours);
    let s = Subnets::alloc();
    let prev = w.add(&ptp_conf(&w, &s, "hostile", None)).run().ok();
    let pm = |k: &str, v: Value| {
        let k = k.to_string();
        move |c: &mut Value| c["runtimeConfig"]["portMappings"][0][k.as_str()] = v.clone()
    };
    let long_chain = "C".repeat(40);
    let injected = "198.18.0.1\n-I INPUT 1 -j DROP";
    let cases: Vec<MetaCase> = vec![
        ("pm-hostport-0", "portmap", Box::new(pm("hostPort", json!(0))), C_CONFIG, &["host port"]),
        ("pm-hostport-70000", "portmap", Box::new(pm("hostPort", json!(70000))), C_CONFIG, &["host port", "70000"]),
        ("pm-hostport-negative", "portmap", Box::new(pm("hostPort", json!(-1))), C_CONFIG, &["host port", "-1"]),
        ("pm-containerport-0", "portmap", Box::new(pm("containerPort", json!(0))), C_CONFIG, &["container port"]),
        ("pm-protocol-icmp", "portmap", Box::new(pm("protocol", json!("icmp"))), C_CONFIG, &["protocol", "icmp"]),
        ("pm-protocol-icmp-ipt", "portmap-ipt", Box::new(pm("protocol", json!("icmp"))), C_CONFIG, &["protocol"]),
        ("pm-protocol-traversal", "portmap", Box::new(pm("protocol", json!("../x"))), C_CONFIG, &["protocol", "../x"]),
        (
            "pm-hostip-garbage",
            "portmap",
            Box::new(pm("hostIP", json!("not-an-ip"))),
            C_CONFIG,
            &["host IP", "not-an-ip"],
        ),
        (
            "pm-mappings-not-a-list",
            "portmap",
            Box::new(set(&["runtimeConfig", "portMappings"], json!("8080:80"))),
            C_INTERNAL,
            &["portmappings", "expected a sequence"],
        ),
        ("pm-backend-pf", "portmap", Box::new(set(&["backend"], json!("pf"))), C_CONFIG, &["backend", "pf"]),
        ("pm-markmasqbit-32", "portmap-ipt", Box::new(set(&["markMasqBit"], json!(32))), C_CONFIG, &["MasqMarkBit"]),
        (
            "pm-markmasq-and-external",
            "portmap-ipt",
            Box::new(|c: &mut Value| {
                c["markMasqBit"] = json!(5);
                c["externalSetMarkChain"] = json!("X");
            }),
            C_CONFIG,
            &["externalSetMarkChain"],
        ),
        (
            "pm-external-chain-too-long",
            "portmap-ipt",
            Box::new(set(&["externalSetMarkChain"], json!(long_chain.clone()))),
            C_CONFIG,
            &["externalSetMarkChain", "chain name"],
        ),
        (
            "pm-external-chain-injection",
            "portmap-ipt",
            Box::new(set(&["externalSetMarkChain"], json!("X\n-I INPUT 1 -j DROP"))),
            C_CONFIG,
            &["externalSetMarkChain"],
        ),
        (
            "pm-conditions-injection",
            "portmap-ipt",
            Box::new(set(&["conditionsV4"], json!(["-s", injected]))),
            C_CONFIG,
            &["control character"],
        ),
        (
            "pm-conditions-statement",
            "portmap",
            Box::new(set(&["conditionsV4"], json!(["drop"]))),
            C_CONFIG,
            &["supported"],
        ),
        (
            "pm-conditions-unbalanced-set",
            "portmap",
            Box::new(set(&["conditionsV4"], json!(["ip saddr { 198.18.0.1"]))),
            C_CONFIG,
            &["unbalanced"],
        ),
        (
            "pm-conditions-mixed-syntax",
            "portmap",
            Box::new(|c: &mut Value| {
                c.as_object_mut().expect("object").remove("backend");
                c["conditionsV4"] = json!(["-s", "198.18.0.1"]);
                c["conditionsV6"] = json!(["ip6 saddr fd00::1"]);
            }),
            C_CONFIG,
            &["syntax"],
        ),
        ("pm-no-prevresult", "portmap", Box::new(remove("prevResult")), C_INTERNAL, &["chained plugin"]),
        ("bw-rate-without-burst", "bandwidth", Box::new(remove("ingressBurst")), C_INTERNAL, &["burst"]),
        ("bw-burst-over-4gb", "bandwidth", Box::new(set(&["egressBurst"], json!(1u64 << 36))), C_INTERNAL, &["4GB"]),
        ("bw-rate-negative", "bandwidth", Box::new(set(&["ingressRate"], json!(-1))), C_INTERNAL, &["-1"]),
        ("bw-rate-string", "bandwidth", Box::new(set(&["ingressRate"], json!("1mbit"))), C_INTERNAL, &["1mbit"]),
        ("bw-no-prevresult", "bandwidth", Box::new(remove("prevResult")), C_INTERNAL, &["chained plugin"]),
        (
            "tu-sysctl-traversal",
            "tuning",
            Box::new(set(&["sysctl"], json!({"net/../kernel/hostname": "x"}))),
            C_INTERNAL,
            &["/proc/sys/net/kernel/hostname"],
        ),
        (
            "tu-sysctl-dot-traversal",
            "tuning",
            Box::new(set(&["sysctl"], json!({"net.core..kernel.hostname": "x"}))),
            C_INTERNAL,
            &["/proc/sys/net/core/kernel/hostname"],
        ),
        (
            "tu-sysctl-not-net",
            "tuning",
            Box::new(set(&["sysctl"], json!({"kernel.hostname": "x"}))),
            C_INTERNAL,
            &["invalid net sysctl key"],
        ),
        (
            "tu-sysctl-absent",
            "tuning",
            Box::new(set(&["sysctl"], json!({"net.core.no_such_key": "1"}))),
            C_INTERNAL,
            &["no_such_key"],
        ),
        ("tu-mac-garbage", "tuning", Box::new(set(&["mac"], json!("zz"))), C_INTERNAL, &["MAC", "zz"]),
        ("tu-mtu-huge", "tuning", Box::new(set(&["mtu"], json!(1u64 << 40))), C_INTERNAL, &["mtu", "1099511627776"]),
        ("tu-mtu-negative", "tuning", Box::new(set(&["mtu"], json!(-1))), C_INTERNAL, &["mtu", "-1"]),
        ("tu-promisc-string", "tuning", Box::new(set(&["promisc"], json!("yes"))), C_INTERNAL, &["promisc"]),
        ("tu-txqlen-negative", "tuning", Box::new(set(&["txQLen"], json!(-1))), C_INTERNAL, &["txQLen", "-1"]),
        (
            "fw-ingress-policy-bogus",
            "firewall",
            Box::new(set(&["ingressPolicy"], json!("bogus"))),
            C_CONFIG,
            &["ingress policy", "bogus"],
        ),
        (
            "fw-admin-chain-too-long",
            "firewall",
            Box::new(set(&["iptablesAdminChainName"], json!(long_chain.clone()))),
            C_CONFIG,
            &["iptablesAdminChainName", "chain name"],
        ),
        (
            "fw-admin-chain-space",
            "firewall",
            Box::new(set(&["iptablesAdminChainName"], json!("A B"))),
            C_CONFIG,
            &["iptablesAdminChainName"],
        ),
        (
            "fw-admin-chain-injection",
            "firewall",
            Box::new(set(&["iptablesAdminChainName"], json!("X\n-I INPUT 1 -j DROP"))),
            C_CONFIG,
            &["iptablesAdminChainName"],
        ),
        (
            "fw-bridge-name-injection",
            "firewall",
            Box::new(|c: &mut Value| {
                c["ingressPolicy"] = json!("same-bridge");
                c["prevResult"]["interfaces"][0]["name"] = json!("br0\n-I INPUT 1 -j DROP");
            }),
            C_CONFIG,
            &["bridge interface"],
        ),
        ("fw-no-prevresult", "firewall", Box::new(remove("prevResult")), C_INTERNAL, &["prevResult"]),
        ("sbr-table-negative", "sbr", Box::new(set(&["table"], json!(-1))), C_CONFIG, &["invalid table", "-1"]),
        ("sbr-table-string", "sbr", Box::new(set(&["table"], json!("main"))), C_INTERNAL, &["table"]),
        ("sbr-gateway-garbage", "sbr", Box::new(set(&["gateways"], json!(["x"]))), C_INTERNAL, &["gateways", "x"]),
        (
            "sbr-three-gateways",
            "sbr",
            Box::new(set(&["gateways"], json!(["198.18.0.1", "198.18.0.2", "fd00::1"]))),
            C_INTERNAL,
            &["gateways"],
        ),
        ("sbr-no-prevresult", "sbr", Box::new(remove("prevResult")), C_INTERNAL, &["chained plugin"]),
    ];
    assert_eq!(cases.len(), documented_counts().1, "docs/hardening.md gives another count: update it");
    let mut before = meta_fingerprint(&w);
    let mut failures = vec![];
    for (name, plugin, f, code, says) in &cases {
        let mut conf = meta_base(plugin, &w, &prev);
        f(&mut conf);
        let out = w.cni("ADD", &conf).stdin_bytes(&serde_json::to_vec(&conf).expect("serialize")).run();
        let problem = match out.error() {
            None => Some(format!("exit {} stdout {:?}", out.code, out.stdout)),
            Some(e) => {
                let text = format!("{} {}", e.msg, e.details.clone().unwrap_or_default()).to_lowercase();
                let missing: Vec<_> = says.iter().filter(|w| !text.contains(&w.to_lowercase())).collect();
                (e.code != *code || !missing.is_empty() || out.code != 1)
                    .then(|| format!("code {} (want {code}), msg {:?}, lacks {missing:?}", e.code, e.msg))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{name} [{plugin}]: {p}"));
        }
        let after = meta_fingerprint(&w);
        if after != before {
            let changed: Vec<_> =
                after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {v}")).collect();
            failures.push(format!("{name} [{plugin}] CHANGED THE SYSTEM:\n{}", changed.join("\n")));
            before = after;
        }
    }
    assert!(failures.is_empty(), "{} of {} cases misbehaved:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// GC reports a delegate's failure with the delegate's code: bridge over the dhcp IPAM with no
/// daemon is code 11 (try again), as the dhcp IPAM's own GC is, not 999.
#[test]
fn gc_keeps_the_delegates_error_code() {
    let w = World::new("hgccode", 1, Impl::Ours);
    let sock = w.tmp.join("no-daemon.sock");
    let conf = json!({"cniVersion": "1.1.0", "name": "hgccode", "type": "bridge", "bridge": "cmgcb0",
        "ipam": {"type": "dhcp", "daemonSocketPath": sock}, "cni.dev/valid-attachments": []});
    let e = w.cni("GC", &conf).run().err_code(11);
    assert!(e.msg.starts_with("GC failed: ipam: "), "{e:?}");
}
