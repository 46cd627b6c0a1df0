//! host-local and static run as processes, side by side with the reference binaries in
//! /usr/lib/cni: shared data directories, identical stores, identical results.
//!
//! IPAM never enters the netns, so no namespaces are needed: CNI_NETNS points at our own.
//! Every test works in its own temp directory, removed on drop.
//!
//! Setting `CNI_MULTI_TEST_OURS_IS_REFERENCE=1` runs the reference binary in place of ours,
//! which checks the harness itself (every test must then pass).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::runtime::{Out, Tmp};
use crate::harness::{have_reference, Impl};

const REF_DIR: &str = "/usr/lib/cni";
/// cni-multi's index beside the reference's files (not part of the compared store)
const INDEX: &str = ".cni-multi-index";

fn ours_is_reference() -> bool {
    std::env::var("CNI_MULTI_TEST_OURS_IS_REFERENCE").is_ok_and(|v| v == "1")
}

struct Call<'a> {
    plugin: &'a str,
    command: &'a str,
    id: &'a str,
    ifname: &'a str,
    args: &'a str,
    conf: &'a Value,
}

/// The command running `plugin` of `which`.
fn command(which: Impl, plugin: &str) -> Command {
    if which == Impl::Reference || ours_is_reference() {
        Command::new(Path::new(REF_DIR).join(plugin))
    } else {
        let mut cmd = Command::new(crate::harness::runtime::bin());
        cmd.arg(plugin);
        cmd
    }
}

fn call(which: Impl, c: &Call) -> Out {
    run(&mut command(which, c.plugin), c)
}

fn run(cmd: &mut Command, c: &Call) -> Out {
    run_env(cmd, c, &[])
}

fn run_env(cmd: &mut Command, c: &Call, env: &[(&str, &str)]) -> Out {
    cmd.env_clear()
        .envs(env.iter().copied())
        .env("CNI_COMMAND", c.command)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_NETNS_OVERRIDE", "1")
        .env("CNI_PATH", REF_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !c.args.is_empty() {
        cmd.env("CNI_ARGS", c.args);
    }
    // GC and STATUS carry no attachment
    if !c.id.is_empty() {
        cmd.env("CNI_CONTAINERID", c.id);
    }
    if !c.ifname.is_empty() {
        cmd.env("CNI_IFNAME", c.ifname);
    }
    let mut child = cmd.spawn().expect("spawn plugin");
    let stdin = serde_json::to_vec(c.conf).unwrap();
    child.stdin.take().unwrap().write_all(&stdin).unwrap();
    child.wait_with_output().unwrap().into()
}

fn hl<'a>(command: &'a str, id: &'a str, ifname: &'a str, conf: &'a Value) -> Call<'a> {
    Call { plugin: "host-local", command, id, ifname, args: "", conf }
}

fn net_conf(version: &str, data_dir: &Path, ranges: Value) -> Value {
    json!({
        "cniVersion": version,
        "name": "itnet",
        "type": "bridge",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": ranges,
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.19.0.0/16", "gw": "198.18.0.1"}]
        }
    })
}

fn v4() -> Value {
    json!([[{"subnet": "198.18.0.0/24"}]])
}
fn v6() -> Value {
    json!([[{"subnet": "fd00:10::/64", "rangeStart": "fd00:10::10"}]])
}
fn dual() -> Value {
    json!([[{"subnet": "198.18.0.0/28"}, {"subnet": "198.18.1.0/28"}], [{"subnet": "fd00:10::/120"}]])
}

/// name → (content, mode) of every file in the network directory
fn store(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut m = BTreeMap::new();
    let Ok(rd) = fs::read_dir(dir.join("itnet")) else { return m };
    for e in rd {
        let e = e.unwrap();
        if e.file_name() == INDEX {
            continue;
        }
        let meta = e.metadata().unwrap();
        m.insert(
            e.file_name().into_string().unwrap(),
            (fs::read(e.path()).unwrap_or_default(), meta.permissions().mode() & 0o777),
        );
    }
    m
}

fn names(dir: &Path) -> Vec<String> {
    store(dir).into_keys().collect()
}

/// Results compared modulo what the reference's old library prints differently
/// (key order — `Value` maps are ordered — and the empty `"dns": {}` of 1.x).
fn normalize(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if o.get("dns").is_some_and(|d| d.as_object().is_some_and(|m| m.is_empty())) {
            let version = o.get("cniVersion").and_then(Value::as_str).unwrap_or("");
            if version.starts_with("1.") {
                o.remove("dns");
            }
        }
    }
    v
}

#[test]
fn ipam_reference_allocates_ours_releases() {
    if !have_reference("host-local") {
        return;
    }
    let t = Tmp::new("r2o");
    let conf = net_conf("1.0.0", t.dir(), dual());
    call(Impl::Reference, &hl("ADD", "c1", "eth0", &conf)).expect_ok("ref ADD c1");
    call(Impl::Reference, &hl("ADD", "c2", "eth0", &conf)).expect_ok("ref ADD c2");
    call(Impl::Reference, &hl("ADD", "c1", "eth1", &conf)).expect_ok("ref ADD c1/eth1");
    assert_eq!(names(t.dir()).len(), 6 + 3);
    // our CHECK sees the reference's reservation
    let check = json!({"cniVersion": "1.0.0", "name": "itnet", "ipam": conf["ipam"].clone()});
    call(Impl::Ours, &hl("CHECK", "c2", "eth0", &check)).expect_ok("ours CHECK c2");
    call(Impl::Ours, &hl("DEL", "c1", "eth0", &conf)).expect_ok("ours DEL c1");
    let left = names(t.dir());
    assert!(!left.contains(&"198.18.0.2".to_string()) && !left.contains(&"fd00:10::2".to_string()), "{left:?}");
    assert!(left.contains(&"198.18.0.4".to_string()), "c1/eth1 kept: {left:?}");
    // ours allocates next, continuing the reference's round robin
    let r = call(Impl::Ours, &hl("ADD", "c3", "eth0", &conf)).expect_ok("ours ADD c3").json();
    assert_eq!(r["ips"][0]["address"], "198.18.0.5/28");
    assert_eq!(r["ips"][1]["address"], "fd00:10::5/120");
    for (id, ifname) in [("c2", "eth0"), ("c1", "eth1"), ("c3", "eth0")] {
        call(Impl::Ours, &hl("DEL", id, ifname, &conf)).expect_ok("ours DEL");
    }
    assert_eq!(names(t.dir()), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
}

#[test]
fn ipam_ours_allocates_reference_releases() {
    if !have_reference("host-local") {
        return;
    }
    let t = Tmp::new("o2r");
    let conf = net_conf("0.4.0", t.dir(), dual());
    call(Impl::Ours, &hl("ADD", "c1", "eth0", &conf)).expect_ok("ours ADD c1");
    call(Impl::Ours, &hl("ADD", "c2", "eth0", &conf)).expect_ok("ours ADD c2");
    call(Impl::Reference, &hl("CHECK", "c1", "eth0", &conf)).expect_ok("ref CHECK c1");
    // the reference refuses a duplicate allocation it reads from our files
    let dup = call(Impl::Reference, &hl("ADD", "c1", "eth0", &conf));
    assert!(!dup.ok && dup.stdout.contains("duplicate allocation is not allowed"), "{}", dup.stdout);
    let r = call(Impl::Reference, &hl("ADD", "c3", "eth0", &conf)).expect_ok("ref ADD c3").json();
    assert_eq!(r["ips"][0]["address"], "198.18.0.4/28", "reference continues our round robin");
    for id in ["c1", "c2", "c3"] {
        call(Impl::Reference, &hl("DEL", id, "eth0", &conf)).expect_ok("ref DEL");
    }
    assert_eq!(names(t.dir()), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
}

/// One scripted sequence of ADD/DEL run by both implementations in separate directories.
fn sequence(which: Impl, dir: &Path) -> Vec<Value> {
    let conf = net_conf("1.0.0", dir, dual());
    let mut results = Vec::new();
    let steps: &[(&str, &str, &str, &str)] = &[
        ("ADD", "c1", "eth0", ""),
        ("ADD", "c2", "eth0", ""),
        ("ADD", "c3", "eth0", "IP=198.18.1.9"),
        ("DEL", "c1", "eth0", ""),
        ("ADD", "c4", "net1", "IgnoreUnknown=1;K8S_POD_NAME=x;IP=fd00:10::77"),
        ("ADD", "c5", "eth0", ""),
        ("DEL", "c2", "eth0", ""),
        ("ADD", "c6", "eth0", ""),
    ];
    for (cmd, id, ifname, args) in steps {
        let out = call(which, &Call { plugin: "host-local", command: cmd, id, ifname, args, conf: &conf });
        let out = out.expect_ok(&format!("{which:?} {cmd} {id} {args}"));
        if *cmd == "ADD" {
            results.push(normalize(out.json()));
        }
    }
    results
}

#[test]
fn ipam_same_sequence_same_store() {
    if !have_reference("host-local") {
        return;
    }
    let (a, b) = (Tmp::new("seq-ref"), Tmp::new("seq-ours"));
    let ra = sequence(Impl::Reference, a.dir());
    let rb = sequence(Impl::Ours, b.dir());
    assert_eq!(ra, rb, "results differ");
    let (sa, sb) = (store(a.dir()), store(b.dir()));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>(), "file names differ");
    for (name, (content, mode)) in &sb {
        assert_eq!(Some(content), sa.get(name).map(|x| &x.0), "content of {name}");
        if name != "lock" && !ours_is_reference() {
            assert_eq!(*mode, 0o600, "mode of {name}");
        }
    }
    assert_eq!(sb["198.18.1.9"].0, b"c3\r\neth0");
    assert_eq!(sb["fd00:10::77"].0, b"c4\r\nnet1");
}

#[test]
fn ipam_results_match_reference_all_versions() {
    if !have_reference("host-local") {
        return;
    }
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0"] {
        for (fam, ranges) in [("v4", v4()), ("v6", v6()), ("dual", dual())] {
            let (a, b) = (Tmp::new("ver-ref"), Tmp::new("ver-ours"));
            let ca = net_conf(version, a.dir(), ranges.clone());
            let cb = net_conf(version, b.dir(), ranges.clone());
            for id in ["c1", "c2"] {
                let ra = call(Impl::Reference, &hl("ADD", id, "eth0", &ca)).expect_ok("ref ADD");
                let rb = call(Impl::Ours, &hl("ADD", id, "eth0", &cb)).expect_ok("ours ADD");
                assert_eq!(normalize(ra.json()), normalize(rb.json()), "{version} {fam} {id}");
            }
            // errors agree on failure too: the same attachment twice
            let ea = call(Impl::Reference, &hl("ADD", "c1", "eth0", &ca));
            let eb = call(Impl::Ours, &hl("ADD", "c1", "eth0", &cb));
            assert!(!ea.ok && !eb.ok, "{version} {fam}: duplicate must fail");
            assert_eq!(ea.json()["msg"], eb.json()["msg"], "{version} {fam}");
        }
    }
}

#[test]
fn ipam_argv0_symlink_dispatch() {
    let t = Tmp::new("argv0");
    let link = t.join("host-local");
    let target = if ours_is_reference() {
        PathBuf::from(REF_DIR).join("host-local")
    } else {
        crate::harness::runtime::bin().into()
    };
    std::os::unix::fs::symlink(target, &link).unwrap();
    let conf = net_conf("1.0.0", &t.join("data"), v4());
    let out = run(&mut Command::new(&link), &hl("ADD", "c1", "eth0", &conf)).expect_ok("ADD via symlink");
    assert_eq!(out.json()["ips"][0]["address"], "198.18.0.2/24");
    assert_eq!(fs::read(t.join("data/itnet/198.18.0.2")).unwrap(), b"c1\r\neth0");
    run(&mut Command::new(&link), &hl("DEL", "c1", "eth0", &conf)).expect_ok("DEL via symlink");
    assert!(!t.join("data/itnet/198.18.0.2").exists());
}

#[test]
fn ipam_concurrent_adds_get_distinct_addresses() {
    let t = Tmp::new("conc");
    let conf = net_conf("1.0.0", t.dir(), json!([[{"subnet": "198.18.0.0/24"}], [{"subnet": "fd00:20::/64"}]]));
    let n = 50;
    let spawn_all = |cmd: &'static str| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let conf = conf.clone();
                std::thread::spawn(move || {
                    let id = format!("conc{i}");
                    call(Impl::Ours, &hl(cmd, &id, "eth0", &conf)).expect_ok(&format!("{cmd} {id}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    };
    let outs = spawn_all("ADD");
    let mut v4s = std::collections::HashSet::new();
    let mut v6s = std::collections::HashSet::new();
    for o in &outs {
        let j = o.json();
        assert!(v4s.insert(j["ips"][0]["address"].as_str().unwrap().to_string()), "duplicate v4 {j}");
        assert!(v6s.insert(j["ips"][1]["address"].as_str().unwrap().to_string()), "duplicate v6 {j}");
    }
    assert_eq!((v4s.len(), v6s.len()), (n, n));
    assert_eq!(names(t.dir()).len(), 2 * n + 3);
    spawn_all("DEL");
    assert_eq!(names(t.dir()), ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]);
}

#[test]
fn ipam_gc_releases_stale_reservations() {
    if ours_is_reference() {
        return; // the reference has no GC
    }
    let t = Tmp::new("gc");
    let conf = net_conf("1.1.0", t.dir(), v4());
    for id in ["a", "b", "c"] {
        call(Impl::Ours, &hl("ADD", id, "eth0", &conf)).expect_ok("ADD");
    }
    let mut gc = json!({"cniVersion": "1.1.0", "name": "itnet", "ipam": conf["ipam"].clone()});
    // absent list: nothing released
    call(Impl::Ours, &hl("GC", "", "", &gc)).expect_ok("GC without list");
    assert_eq!(names(t.dir()).len(), 3 + 2);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    call(Impl::Ours, &hl("GC", "", "", &gc)).expect_ok("GC");
    assert_eq!(names(t.dir()), ["198.18.0.3", "last_reserved_ip.0", "lock"]);
    call(Impl::Ours, &hl("STATUS", "", "", &gc)).expect_ok("STATUS");
}

fn st<'a>(command: &'a str, args: &'a str, conf: &'a Value) -> Call<'a> {
    Call { plugin: "static", command, id: "c1", ifname: "eth0", args, conf }
}

#[test]
fn ipam_static_results_match_reference() {
    if !have_reference("static") {
        return;
    }
    let ipam = json!({
        "type": "static",
        "addresses": [{"address": "198.18.0.5/24", "gateway": "198.18.0.1"}, {"address": "fd00:30::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00:40::/64", "gw": "fd00:30::1"}],
        "dns": {"nameservers": ["198.18.0.53"], "search": ["example"]}
    });
    for version in ["0.2.0", "0.3.1", "0.4.0", "1.0.0"] {
        let conf = json!({"cniVersion": version, "name": "st", "ipam": ipam});
        for args in ["", "IP=198.19.0.4/24;GATEWAY=198.19.0.1"] {
            if version == "0.2.0" && !args.is_empty() {
                continue; // two v4 addresses need 0.3.0: both must fail
            }
            let a = call(Impl::Reference, &st("ADD", args, &conf)).expect_ok("ref static ADD");
            let b = call(Impl::Ours, &st("ADD", args, &conf)).expect_ok("ours static ADD");
            assert_eq!(normalize(a.json()), normalize(b.json()), "{version} {args}");
        }
    }
    let old = json!({"cniVersion": "0.2.0", "name": "st", "ipam": ipam});
    let args = "IP=198.19.0.4/24";
    assert!(!call(Impl::Reference, &st("ADD", args, &old)).ok);
    assert!(!call(Impl::Ours, &st("ADD", args, &old)).ok);
    // capability and args.cni.ips replace the configured addresses
    let conf = json!({"cniVersion": "1.0.0", "name": "st", "ipam": ipam,
                      "args": {"cni": {"ips": ["198.21.0.1/24"]}},
                      "runtimeConfig": {"ips": ["198.22.0.1/24"]}});
    let a = call(Impl::Reference, &st("ADD", "", &conf)).expect_ok("ref");
    let b = call(Impl::Ours, &st("ADD", "", &conf)).expect_ok("ours");
    assert_eq!(normalize(a.json()), normalize(b.json()));
    call(Impl::Ours, &st("DEL", "", &conf)).expect_ok("static DEL");
}

/// Every CIDR of a config goes through Go's `net.ParseCIDR` in the reference, whose prefix length
/// may have leading zeros (`198.18.0.0/016` is a /16). Ours refused them (the `ipnet` parser
/// takes at most two digits for IPv4): a config the reference runs failed with code 7.
#[test]
fn cidrs_with_leading_zeros_in_the_prefix_are_read_as_go_reads_them() {
    if !have_reference("host-local") || !have_reference("static") {
        return;
    }
    let (a, b) = (Tmp::new("zp-ref"), Tmp::new("zp-ours"));
    let hl_conf = |dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "zp", "type": "bridge",
               "ipam": {"type": "host-local", "dataDir": dir,
                        "ranges": [[{"subnet": "198.18.0.0/016"}], [{"subnet": "fd00:10::/0064"}]],
                        "routes": [{"dst": "198.19.0.0/0016"}, {"dst": "fd00:20::/000064"}]}})
    };
    let (ca, cb) = (hl_conf(a.dir()), hl_conf(b.dir()));
    let ra = call(Impl::Reference, &hl("ADD", "c1", "eth0", &ca)).expect_ok("ref ADD");
    let rb = call(Impl::Ours, &hl("ADD", "c1", "eth0", &cb)).expect_ok("ours ADD");
    assert_eq!(normalize(ra.json()), normalize(rb.json()));
    assert_eq!(rb.json()["routes"][0]["dst"], "198.19.0.0/16");
    let st_conf = json!({"cniVersion": "1.0.0", "name": "zp", "ipam": {"type": "static",
        "addresses": [{"address": "198.18.3.5/024"}], "routes": [{"dst": "198.20.0.0/016"}]}});
    let ra = call(Impl::Reference, &st("ADD", "", &st_conf)).expect_ok("ref static ADD");
    let rb = call(Impl::Ours, &st("ADD", "", &st_conf)).expect_ok("ours static ADD");
    assert_eq!(normalize(ra.json()), normalize(rb.json()));
    assert_eq!(rb.json()["ips"][0]["address"], "198.18.3.5/24");
    // a prefix beyond the family's bits is still refused by both
    let bad = json!({"cniVersion": "1.0.0", "name": "zp", "ipam": {"type": "static",
        "addresses": [{"address": "198.18.3.5/033"}]}});
    assert!(!call(Impl::Reference, &st("ADD", "", &bad)).ok);
    assert_eq!(call(Impl::Ours, &st("ADD", "", &bad)).err_code(), 7);
}

/// static's address errors say what the reference says for each source (codes: ours 7, the
/// reference 999), and an IPv4-mapped CNI_ARGS address takes an IPv4 GATEWAY as there.
#[test]
fn ipam_static_address_errors_and_mapped_addresses_match_reference() {
    if !have_reference("static") || ours_is_reference() {
        return;
    }
    let conf = |ipam: Value, extra: Value| {
        let mut c = json!({"cniVersion": "1.0.0", "name": "st", "ipam": ipam});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let plain = || json!({"type": "static"});
    let cases = [
        (conf(plain(), json!({})), "IP=198.18.3.5"),
        (conf(plain(), json!({})), "IP=bogus"),
        (conf(json!({"type": "static", "addresses": [{"address": "bogus"}]}), json!({})), ""),
        (conf(json!({"type": "static", "addresses": [{"gateway": "198.18.3.1"}]}), json!({})), ""),
        (conf(plain(), json!({"runtimeConfig": {"ips": ["198.18.3.5"]}})), ""),
        (conf(plain(), json!({"args": {"cni": {"ips": ["198.18.3.6/24", "198.18.3.5"]}}})), ""),
    ];
    for (c, args) in &cases {
        let (r, o) = (call(Impl::Reference, &st("ADD", args, c)), call(Impl::Ours, &st("ADD", args, c)));
        assert_eq!((r.err_code(), o.err_code()), (999, 7), "{c} {args}: {} / {}", r.stdout, o.stdout);
        assert_eq!(o.json()["msg"], r.json()["msg"], "{c} {args}");
    }
    let c = conf(plain(), json!({}));
    let args = "IP=::ffff:198.18.3.5/120;GATEWAY=198.18.3.1";
    let r = call(Impl::Reference, &st("ADD", args, &c)).expect_ok("ref static ADD");
    let o = call(Impl::Ours, &st("ADD", args, &c)).expect_ok("ours static ADD");
    assert_eq!(o.json()["ips"], json!([{"address": "198.18.3.5/24", "gateway": "198.18.3.1"}]));
    assert_eq!(normalize(r.json()), normalize(o.json()));
}

#[test]
fn ipam_reference_honours_the_same_lock() {
    if !have_reference("host-local") {
        return;
    }
    use nix::fcntl::{Flock, FlockArg};
    let t = Tmp::new("lock");
    let conf = net_conf("1.0.0", t.dir(), v4());
    // create the directory and lock file the way ours does
    call(Impl::Ours, &hl("ADD", "c0", "eth0", &conf)).expect_ok("ours ADD c0");
    let lock = fs::File::open(t.join("itnet/lock")).unwrap();
    let held = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    let conf2 = conf.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let out = call(Impl::Reference, &hl("ADD", "c1", "eth0", &conf2));
        tx.send(()).unwrap();
        out
    });
    assert!(rx.recv_timeout(std::time::Duration::from_millis(500)).is_err(), "reference ADD must wait for our lock");
    drop(held);
    rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    let out = h.join().unwrap().expect_ok("ref ADD c1");
    assert_eq!(out.json()["ips"][0]["address"], "198.18.0.3/24");
}

#[test]
fn ipam_mixed_concurrent_adds_with_reference() {
    if !have_reference("host-local") {
        return;
    }
    let t = Tmp::new("mixed");
    let conf = net_conf("1.0.0", t.dir(), json!([[{"subnet": "198.18.0.0/24"}]]));
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let conf = conf.clone();
            std::thread::spawn(move || {
                let which = if i % 2 == 0 { Impl::Ours } else { Impl::Reference };
                let id = format!("mix{i}");
                let out = call(which, &hl("ADD", &id, "eth0", &conf)).expect_ok(&format!("{which:?} ADD {id}"));
                out.json()["ips"][0]["address"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let addrs: std::collections::HashSet<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(addrs.len(), 40, "every attachment got its own address");
    for i in 0..40 {
        let which = if i % 3 == 0 { Impl::Reference } else { Impl::Ours };
        call(which, &hl("DEL", &format!("mix{i}"), "eth0", &conf)).expect_ok("DEL");
    }
    assert_eq!(names(t.dir()), ["last_reserved_ip.0", "lock"]);
}

/// How our host-local loaded the store in one call (its debug log names it).
fn index_use(out: &Out) -> &'static str {
    ["Trusted", "Refreshed", "Rebuilt"].into_iter().find(|w| out.stderr.contains(&format!("how={w}"))).unwrap_or("?")
}

fn ours_dbg(c: &Call) -> Out {
    if ours_is_reference() {
        return call(Impl::Ours, c);
    }
    let mut cmd = Command::new(crate::harness::runtime::bin());
    cmd.arg(c.plugin);
    let mut out = run_env(&mut cmd, c, &[("CNI_MULTI_LOG", "debug")]);
    out.stderr = out.stderr.replace('\n', " ");
    out
}

/// Every lease as a scan of the directory reads it: ip → trimmed content.
fn leases_on_disk(dir: &Path) -> BTreeMap<String, String> {
    store(dir)
        .into_iter()
        .filter(|(n, _)| n.parse::<std::net::IpAddr>().is_ok())
        .map(|(n, (c, _))| (n, String::from_utf8_lossy(&c).trim().to_string()))
        .collect()
}

/// The index's leases: ip → owner as the lease file holds it.
fn leases_in_index(dir: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(dir.join("itnet").join(INDEX)).expect("index written");
    text.lines()
        .skip(2)
        .filter(|l| !l.starts_with("end "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let owner = match f[2] {
                "a" => format!("{}\r\n{}", f[3], f[4]),
                "l" => f[3].to_string(),
                _ => String::new(),
            };
            (f[0].to_string(), owner)
        })
        .collect()
}

#[test]
fn ipam_index_stays_exact_with_mixed_writers() {
    if !have_reference("host-local") || ours_is_reference() {
        return;
    }
    let t = Tmp::new("idxmix");
    let conf = net_conf("1.0.0", t.dir(), json!([[{"subnet": "198.18.0.0/24"}]]));
    let dir = t.join("itnet");
    // ours twice in a row: the second call reads only the index
    ours_dbg(&hl("ADD", "o1", "eth0", &conf)).expect_ok("ours ADD o1");
    let o2 = ours_dbg(&hl("ADD", "o2", "eth0", &conf)).expect_ok("ours ADD o2");
    assert_eq!(index_use(&o2), "Trusted", "{}", o2.stderr);
    for round in 0..6 {
        // the reference allocates and releases between ours, with no pause
        let r = format!("r{round}");
        call(Impl::Reference, &hl("ADD", &r, "eth0", &conf)).expect_ok("ref ADD");
        // ours must see the reference's lease at once: a duplicate is refused, CHECK passes
        let dup = ours_dbg(&hl("ADD", &r, "eth0", &conf));
        assert!(!dup.ok && dup.stdout.contains("duplicate allocation is not allowed"), "round {round}: {}", dup.stdout);
        assert_ne!(index_use(&dup), "Trusted", "the reference changed the directory: {}", dup.stderr);
        ours_dbg(&hl("CHECK", &r, "eth0", &conf)).expect_ok("ours CHECK of the reference's lease");
        let o = format!("o{}", round + 3);
        let add = ours_dbg(&hl("ADD", &o, "eth0", &conf)).expect_ok("ours ADD");
        let got = add.json()["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(!leases_on_disk(t.dir())
            .iter()
            .any(|(ip, owner)| got.starts_with(&format!("{ip}/")) && owner != &format!("{o}\r\neth0")));
        // the reference releases one of ours; ours then no longer finds it
        let victim = format!("o{}", round + 2);
        call(Impl::Reference, &hl("DEL", &victim, "eth0", &conf)).expect_ok("ref DEL of ours");
        let check = ours_dbg(&hl("CHECK", &victim, "eth0", &conf));
        assert!(!check.ok, "round {round}: ours still finds {victim} after the reference released it");
        // ours releases one of the reference's (reread from the index, not from every file)
        if round % 2 == 1 {
            let del = ours_dbg(&hl("DEL", &format!("r{}", round - 1), "eth0", &conf)).expect_ok("ours DEL of ref");
            assert_eq!(index_use(&del), "Trusted", "{}", del.stderr);
        }
        assert_eq!(leases_in_index(t.dir()), leases_on_disk(t.dir()), "round {round}: index and directory differ");
    }
    // hand edits: a lease removed, a legacy id-only file, a lease replaced under the same name
    let first = leases_on_disk(t.dir()).into_keys().next().unwrap();
    fs::remove_file(dir.join(&first)).unwrap();
    fs::write(dir.join("198.18.0.200"), "legacy1").unwrap();
    let some = leases_on_disk(t.dir()).into_keys().find(|ip| ip != "198.18.0.200").unwrap();
    fs::write(dir.join(".edit"), "handmade\r\neth0").unwrap();
    fs::rename(dir.join(".edit"), dir.join(&some)).unwrap();
    let check = ours_dbg(&hl("CHECK", "handmade", "eth0", &conf)).expect_ok("hand-made lease found");
    assert_eq!(index_use(&check), "Rebuilt", "{}", check.stderr);
    ours_dbg(&hl("DEL", "legacy1", "eth0", &conf)).expect_ok("legacy released");
    assert!(!dir.join("198.18.0.200").exists());
    assert_eq!(leases_in_index(t.dir()), leases_on_disk(t.dir()));
    // everything released by either side: nothing but the reference's files and our index left
    for (ip, owner) in leases_on_disk(t.dir()) {
        let (id, ifname) = owner.split_once("\r\n").unwrap();
        let which = if ip.ends_with('3') { Impl::Reference } else { Impl::Ours };
        call(which, &hl("DEL", id, ifname, &conf)).expect_ok("DEL");
    }
    assert_eq!(names(t.dir()), ["last_reserved_ip.0", "lock"]);
    let last = ours_dbg(&hl("ADD", "z", "eth0", &conf)).expect_ok("ours ADD z");
    assert_eq!(last.json()["ips"].as_array().unwrap().len(), 1);
    assert_eq!(leases_in_index(t.dir()), leases_on_disk(t.dir()));
}

#[test]
fn ipam_reference_ignores_our_index() {
    // the reference reads every file of the directory on DEL/CHECK: our index must never look
    // like a lease to it, and its DEL must not remove it
    if !have_reference("host-local") || ours_is_reference() {
        return;
    }
    let t = Tmp::new("idxref");
    let conf = net_conf("1.0.0", t.dir(), v4());
    call(Impl::Ours, &hl("ADD", "c1", "eth0", &conf)).expect_ok("ours ADD");
    assert!(t.join("itnet").join(INDEX).is_file());
    call(Impl::Reference, &hl("CHECK", "c1", "eth0", &conf)).expect_ok("ref CHECK");
    call(Impl::Reference, &hl("DEL", "c1", "eth0", &conf)).expect_ok("ref DEL");
    assert!(t.join("itnet").join(INDEX).is_file(), "the reference's DEL kept our index");
    let r = call(Impl::Reference, &hl("ADD", "c2", "eth0", &conf)).expect_ok("ref ADD");
    assert_eq!(r.json()["ips"][0]["address"], "198.18.0.3/24");
    let r = call(Impl::Ours, &hl("ADD", "c3", "eth0", &conf)).expect_ok("ours ADD");
    assert_eq!(r.json()["ips"][0]["address"], "198.18.0.4/24");
    assert_eq!(leases_in_index(t.dir()), leases_on_disk(t.dir()));
}

/// One call run from the working directory `cwd`.
fn call_in(which: Impl, cwd: &Path, c: &Call) -> Out {
    run(command(which, c.plugin).current_dir(cwd), c)
}

#[test]
fn ipam_relative_data_dir_resolves_against_the_working_directory() {
    // the reference joins dataDir and the network name and lets the kernel resolve the result
    // against the working directory: ours must find (and release) such leases where it does
    if !have_reference("host-local") {
        return;
    }
    for data_dir in ["cni-multi-rel-data", "../up/cni-multi-rel-data"] {
        let mut results = Vec::new();
        for which in [Impl::Reference, Impl::Ours] {
            let t = Tmp::new("reldir");
            let cwd = t.join("run");
            fs::create_dir(&cwd).unwrap();
            let mut conf = net_conf("1.0.0", Path::new(data_dir), dual());
            conf["ipam"]["dataDir"] = json!(data_dir);
            let lease = cwd.join(data_dir).join("itnet/198.18.0.2");
            let add = call_in(which, &cwd, &hl("ADD", "c1", "eth0", &conf)).expect_ok(&format!("{which:?} ADD"));
            assert_eq!(fs::read(&lease).unwrap(), b"c1\r\neth0", "{which:?} {data_dir}: lease under cwd/dataDir/net");
            if which == Impl::Ours && !ours_is_reference() {
                assert!(add.stderr.contains("dataDir is relative"), "warning on ADD: {}", add.stderr);
            }
            assert!(!Path::new(data_dir).exists(), "nothing under the test's own working directory");
            results.push(normalize(add.json()));
            call_in(which, &cwd, &hl("CHECK", "c1", "eth0", &conf)).expect_ok(&format!("{which:?} CHECK"));
            call_in(which, &cwd, &hl("DEL", "c1", "eth0", &conf)).expect_ok(&format!("{which:?} DEL"));
            assert!(!lease.exists(), "{which:?} {data_dir}: DEL released the lease");
            call_in(which, &cwd, &hl("DEL", "c1", "eth0", &conf)).expect_ok(&format!("{which:?} second DEL"));
        }
        assert_eq!(results[0], results[1], "{data_dir}: results differ");
        // a node switched from the reference tears down the reference's attachment
        let t = Tmp::new("reldir-switch");
        let cwd = t.join("run");
        fs::create_dir(&cwd).unwrap();
        let mut conf = net_conf("1.0.0", Path::new(data_dir), v4());
        conf["ipam"]["dataDir"] = json!(data_dir);
        call_in(Impl::Reference, &cwd, &hl("ADD", "c9", "eth0", &conf)).expect_ok("ref ADD");
        let lease = cwd.join(data_dir).join("itnet/198.18.0.2");
        assert!(lease.exists());
        call_in(Impl::Ours, &cwd, &hl("DEL", "c9", "eth0", &conf)).expect_ok("ours DEL of the reference's lease");
        assert!(!lease.exists(), "{data_dir}: ours released the reference's lease");
    }
}

#[test]
fn ipam_status_without_ranges_is_ready_and_creates_nothing() {
    // ranges only from the ipRanges capability: libcni's STATUS passes no runtimeConfig, so
    // STATUS sees no range at all; the network is still ready, and STATUS writes nothing
    if ours_is_reference() {
        return; // the reference has no STATUS
    }
    let t = Tmp::new("status");
    let data = t.join("data");
    let conf = json!({"cniVersion": "1.1.0", "name": "capnet", "type": "bridge", "capabilities": {"ipRanges": true},
                      "ipam": {"type": "host-local", "dataDir": data}});
    let status = |conf: &Value| {
        call(Impl::Ours, &Call { plugin: "host-local", command: "STATUS", id: "", ifname: "", args: "", conf })
    };
    status(&conf).expect_ok("STATUS without ranges");
    assert!(!data.exists(), "STATUS created the dataDir");
    let mut add = conf.clone();
    add["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "198.18.0.0/24"}]]});
    let r = call(Impl::Ours, &hl("ADD", "c1", "eth0", &add)).expect_ok("ADD with runtimeConfig.ipRanges").json();
    assert_eq!(r["ips"][0]["address"], "198.18.0.2/24");
    status(&conf).expect_ok("STATUS with the network directory present");
    // a store that cannot be made is not ready (code 50), and neither is an invalid config
    let mut blocked = conf.clone();
    fs::write(t.join("afile"), "").unwrap();
    blocked["ipam"]["dataDir"] = json!(t.join("afile/data"));
    assert_eq!(status(&blocked).err_code(), 50);
    let mut invalid = conf.clone();
    invalid["ipam"]["subnet"] = json!("198.18.0.1/24");
    assert_eq!(status(&invalid).err_code(), 50);
    // no `ipam` key at all: not ready either (v1.9.1's host-local has no STATUS: it always
    // succeeds; differences.md)
    let mut no_ipam = conf;
    no_ipam.as_object_mut().unwrap().remove("ipam");
    assert_eq!(status(&no_ipam).err_code(), 50);
    call(Impl::Ours, &hl("DEL", "c1", "eth0", &add)).expect_ok("DEL");
}

#[test]
fn ipam_del_with_two_range_sets_releases_legacy_files_like_the_reference() {
    // the reference's DEL releases once per range set; each round releases the (id, ifname)
    // files and, when none matched, the legacy files holding just the id: with two sets the
    // second round finds only the legacy file and removes it, with one set it stays
    if !have_reference("host-local") {
        return;
    }
    for (sets, ranges) in [(1, v4()), (2, dual())] {
        let mut left = Vec::new();
        for which in [Impl::Reference, Impl::Ours] {
            let t = Tmp::new("legacy");
            let conf = net_conf("1.0.0", t.dir(), ranges.clone());
            // outside every range, so ADD does not see a duplicate allocation
            let legacy = t.join("itnet/198.19.9.9");
            fs::create_dir_all(legacy.parent().unwrap()).unwrap();
            fs::write(&legacy, "c1").unwrap();
            call(which, &hl("ADD", "c1", "eth0", &conf)).expect_ok(&format!("{which:?} ADD"));
            call(which, &hl("DEL", "c1", "eth0", &conf)).expect_ok(&format!("{which:?} DEL"));
            assert_eq!(legacy.exists(), sets == 1, "{which:?} with {sets} range set(s)");
            left.push(names(t.dir()));
        }
        assert_eq!(left[0], left[1], "{sets} range set(s): stores differ");
    }
}

/// (name, plugin, config without `cniVersion`/`name`, CNI_ARGS) of configs both implementations
/// refuse: ours with code 7 (invalid network config), the reference with 999.
fn config_error_cases(data: &Path) -> Vec<(&'static str, &'static str, Value, &'static str)> {
    let hl = |ipam: Value| {
        let mut ipam = ipam;
        ipam["type"] = json!("host-local");
        ipam["dataDir"] = json!(data);
        json!({"ipam": ipam})
    };
    let v4 = || json!({"subnet": "198.18.0.0/24"});
    let with = |mut base: Value, k: &str, v: Value| {
        base[k] = v;
        base
    };
    let st = |ipam: Value| {
        let mut ipam = ipam;
        ipam["type"] = json!("static");
        json!({"ipam": ipam})
    };
    let addr = || json!([{"address": "198.18.0.5/24"}]);
    vec![
        ("no-ranges", "host-local", hl(json!({})), ""),
        ("empty-ranges", "host-local", hl(json!({"ranges": []})), ""),
        ("host-bits", "host-local", hl(json!({"subnet": "198.18.0.1/24"})), ""),
        ("bad-cidr", "host-local", hl(json!({"subnet": "bogus"})), ""),
        ("slash-31", "host-local", hl(json!({"subnet": "198.18.0.0/31"})), ""),
        ("slash-127", "host-local", hl(json!({"ranges": [[{"subnet": "fd00::/127"}]]})), ""),
        (
            "overlapping-sets",
            "host-local",
            hl(json!({"ranges": [[{"subnet": "198.18.0.0/24"}], [{"subnet": "198.18.0.0/25"}]]})),
            "",
        ),
        ("empty-range-set", "host-local", hl(json!({"ranges": [[]]})), ""),
        ("missing-ipam", "host-local", json!({}), ""),
        ("bad-range-start", "host-local", hl(with(v4(), "rangeStart", json!("bogus"))), ""),
        ("range-start-outside", "host-local", hl(with(v4(), "rangeStart", json!("198.19.0.5"))), ""),
        ("bad-route-dst", "host-local", hl(with(v4(), "routes", json!([{"dst": "bogus"}]))), ""),
        ("bad-route-gw", "host-local", hl(with(v4(), "routes", json!([{"dst": "0.0.0.0/0", "gw": "bogus"}]))), ""),
        ("bad-args-cni-ips", "host-local", with(hl(v4()), "args", json!({"cni": {"ips": ["bogus"]}})), ""),
        ("bad-runtime-ips", "host-local", with(hl(v4()), "runtimeConfig", json!({"ips": ["bogus"]})), ""),
        ("static-bad-ip-arg", "static", st(json!({})), "IP=bogus"),
        ("static-bad-gateway-arg", "static", st(json!({})), "IP=198.18.0.5/24;GATEWAY=bogus"),
        ("static-bad-address", "static", st(json!({"addresses": [{"address": "bogus"}]})), ""),
        ("static-address-no-prefix", "static", st(json!({"addresses": [{"address": "198.18.0.5"}]})), ""),
        (
            "static-bad-gateway",
            "static",
            st(json!({"addresses": [{"address": "198.18.0.5/24", "gateway": "bogus"}]})),
            "",
        ),
        ("static-bad-route", "static", st(json!({"addresses": addr(), "routes": [{"dst": "bogus"}]})), ""),
        ("static-bad-runtime-ips", "static", with(st(json!({})), "runtimeConfig", json!({"ips": ["bogus"]})), ""),
    ]
}

#[test]
fn ipam_config_errors_are_code_7_where_the_reference_says_999() {
    if !have_reference("host-local") || !have_reference("static") || ours_is_reference() {
        return;
    }
    let t = Tmp::new("cfgerr");
    let mut wrong = Vec::new();
    for (name, plugin, mut conf, args) in config_error_cases(t.dir()) {
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("itnet");
        let c = Call { plugin, command: "ADD", id: "c1", ifname: "eth0", args, conf: &conf };
        let (r, o) = (call(Impl::Reference, &c), call(Impl::Ours, &c));
        if r.ok || o.ok || r.err_code() != 999 || o.err_code() != 7 {
            wrong.push(format!("{name}: reference {} {}, ours {} {}", r.ok, r.stdout, o.ok, o.stdout));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(names(t.dir()).iter().all(|n| n.parse::<std::net::IpAddr>().is_err()), "a refused ADD left a lease");
}

/// `cni-multi tool validate` reads ranges with host-local's own code: every range or route that
/// host-local's ADD refuses (code 7) is a problem for validate, in host-local's words, never "OK".
#[test]
fn tool_validate_flags_what_host_local_add_refuses() {
    if ours_is_reference() {
        return;
    }
    let t = Tmp::new("validate");
    let mut checked = 0;
    for (name, plugin, mut conf, args) in config_error_cases(t.dir()) {
        // not for validate: CNI_ARGS and runtime values, and no ranges at all (the ipRanges
        // capability may bring them at ADD)
        let runtime_only = !args.is_empty() || conf.get("args").is_some() || conf.get("runtimeConfig").is_some();
        if plugin != "host-local" || runtime_only || ["no-ranges", "empty-ranges", "missing-ipam"].contains(&name) {
            continue;
        }
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("itnet");
        conf["type"] = json!("host-local");
        let add = call(Impl::Ours, &Call { plugin, command: "ADD", id: "c1", ifname: "eth0", args, conf: &conf });
        assert_eq!(add.err_code(), 7, "{name}: {}", add.stdout);
        let msg = add.json()["msg"].as_str().unwrap_or_default().to_string();
        let file = t.dir().join(format!("{name}.conf"));
        fs::write(&file, conf.to_string()).unwrap();
        let out = Command::new(crate::harness::runtime::bin())
            .args(["tool", "validate"])
            .arg(&file)
            .env_clear()
            .env("CNI_PATH", "/nonexistent")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && !text.contains(": OK"), "{name}: validate says {text:?}, ADD says {msg:?}");
        if let Some((_, why)) = msg.split_once(": ").filter(|(head, _)| head.starts_with("invalid range set")) {
            assert!(text.contains(why), "{name}: validate says {text:?}, ADD says {msg:?}");
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} cases");
}

#[test]
fn ipam_legacy_range_start_at_the_broadcast_address_is_refused() {
    // with no rangeEnd the range ends before the IPv4 broadcast address: a rangeStart there is
    // after the end; the reference checks no order and hands out the broadcast address
    if !have_reference("host-local") || ours_is_reference() {
        return;
    }
    let (a, b) = (Tmp::new("bcast-ref"), Tmp::new("bcast-ours"));
    let conf = |dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "itnet",
               "ipam": {"type": "host-local", "dataDir": dir, "subnet": "198.18.0.0/24", "rangeStart": "198.18.0.255"}})
    };
    let (ca, cb) = (conf(a.dir()), conf(b.dir()));
    let r = call(Impl::Reference, &hl("ADD", "c1", "eth0", &ca)).expect_ok("ref ADD").json();
    assert_eq!(r["ips"][0]["address"], "198.18.0.255/24", "the reference allocates the broadcast address");
    let o = call(Impl::Ours, &hl("ADD", "c1", "eth0", &cb));
    assert_eq!(o.err_code(), 7, "{}", o.stdout);
    assert!(o.stdout.contains("RangeStart 198.18.0.255 is after RangeEnd 198.18.0.254"), "{}", o.stdout);
    call(Impl::Reference, &hl("DEL", "c1", "eth0", &ca)).expect_ok("ref DEL");
    call(Impl::Ours, &hl("DEL", "c1", "eth0", &cb)).expect_ok("ours DEL of a refused config");
}

#[test]
fn ipam_leniencies_where_the_reference_refuses() {
    if !have_reference("host-local") || !have_reference("static") || ours_is_reference() {
        return;
    }
    // an empty legacy "subnet" beside `ranges`: ignored; the reference fails to parse it
    let t = Tmp::new("lenient");
    let mut conf = net_conf("1.0.0", t.dir(), v4());
    conf["ipam"]["subnet"] = json!("");
    let r = call(Impl::Reference, &hl("ADD", "c1", "eth0", &conf));
    assert_eq!((r.err_code(), r.json()["msg"].as_str()), (999, Some("invalid CIDR address: ")), "{}", r.stdout);
    let o = call(Impl::Ours, &hl("ADD", "c1", "eth0", &conf)).expect_ok("ours ADD with subnet \"\"");
    assert_eq!(o.json()["ips"][0]["address"], "198.18.0.2/24");
    // whitespace around host-local's CNI_ARGS IP
    let conf = net_conf("1.0.0", t.dir(), v4());
    let c =
        Call { plugin: "host-local", command: "ADD", id: "c2", ifname: "eth0", args: "IP= 198.18.0.9 ", conf: &conf };
    let r = call(Impl::Reference, &c);
    assert!(!r.ok && r.stdout.contains("invalid IP address"), "{}", r.stdout);
    assert_eq!(call(Impl::Ours, &c).expect_ok("ours ADD IP= 198.18.0.9 ").json()["ips"][0]["address"], "198.18.0.9/24");
    // whitespace around a static address
    let spaced = json!({"cniVersion": "1.0.0", "name": "st",
                        "ipam": {"type": "static", "addresses": [{"address": " 198.18.0.5/24 "}]}});
    let r = call(Impl::Reference, &st("ADD", "", &spaced));
    assert!(!r.ok && r.stdout.contains("CIDR notation"), "{}", r.stdout);
    let o = call(Impl::Ours, &st("ADD", "", &spaced)).expect_ok("ours static ADD");
    assert_eq!(o.json()["ips"][0]["address"], "198.18.0.5/24");
    // (around static's CNI_ARGS IP both accept it)
    let plain = json!({"cniVersion": "1.0.0", "name": "st", "ipam": {"type": "static"}});
    for which in [Impl::Reference, Impl::Ours] {
        let r = call(which, &st("ADD", "IP= 198.18.0.6/24 ", &plain)).expect_ok("static ADD IP= … ");
        assert_eq!(r.json()["ips"][0]["address"], "198.18.0.6/24", "{which:?}");
    }
    // a trailing newline in last_reserved_ip.0: ours continues after it, the reference cannot
    // parse it and starts over at rangeStart
    let mut next = Vec::new();
    for which in [Impl::Reference, Impl::Ours] {
        let t = Tmp::new("lastnl");
        let conf = net_conf("1.0.0", t.dir(), v4());
        fs::create_dir_all(t.join("itnet")).unwrap();
        fs::write(t.join("itnet/last_reserved_ip.0"), "198.18.0.5\n").unwrap();
        let r = call(which, &hl("ADD", "c1", "eth0", &conf)).expect_ok("ADD after a cursor with a newline");
        next.push(r.json()["ips"][0]["address"].as_str().unwrap().to_string());
    }
    assert_eq!(next, ["198.18.0.2/24", "198.18.0.6/24"]);
}

/// Whitespace around every address and CIDR host-local and static read from a config is taken
/// (trimmed); the reference refuses each of these (999, `invalid CIDR address` / `invalid IP
/// address` / `NOT in CIDR notation`).
#[test]
fn ipam_whitespace_around_config_addresses_is_taken() {
    if !have_reference("host-local") || !have_reference("static") || ours_is_reference() {
        return;
    }
    type Edit = Box<dyn Fn(&mut Value)>;
    let hl_cases: Vec<Edit> = vec![
        Box::new(|c| c["ipam"]["ranges"] = json!([[{"subnet": " 198.18.0.0/24 "}]])),
        Box::new(|c| c["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.0/24", "rangeStart": " 198.18.0.7"}]])),
        Box::new(|c| c["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.0/24", "gateway": "198.18.0.254 "}]])),
        Box::new(|c| c["ipam"]["routes"] = json!([{"dst": " 198.19.0.0/16", "gw": " 198.18.0.1"}])),
        Box::new(|c| c["args"] = json!({"cni": {"ips": [" 198.18.0.9"]}})),
        Box::new(|c| c["runtimeConfig"] = json!({"ips": ["198.18.0.9 "]})),
    ];
    for (i, edit) in hl_cases.iter().enumerate() {
        let (a, b) = (Tmp::new("ws-ref"), Tmp::new("ws-ours"));
        let (mut ca, mut cb) = (net_conf("1.0.0", a.dir(), v4()), net_conf("1.0.0", b.dir(), v4()));
        edit(&mut ca);
        edit(&mut cb);
        let r = call(Impl::Reference, &hl("ADD", "c1", "eth0", &ca));
        assert_eq!(r.err_code(), 999, "host-local case {i}: the reference took it: {}", r.stdout);
        let o = call(Impl::Ours, &hl("ADD", "c1", "eth0", &cb)).expect_ok("ours ADD with spaces");
        assert!(o.json()["ips"][0]["address"].as_str().is_some_and(|a| a.starts_with("198.18.0.")), "case {i}");
    }
    let st_cases = [
        json!({"type": "static", "addresses": [{"address": "198.18.0.5/24", "gateway": " 198.18.0.1"}]}),
        json!({"type": "static", "addresses": [{"address": "198.18.0.5/24"}], "routes": [{"dst": "0.0.0.0/0 "}]}),
    ];
    for (i, ipam) in st_cases.iter().enumerate() {
        let conf = json!({"cniVersion": "1.0.0", "name": "st", "ipam": ipam});
        assert_eq!(call(Impl::Reference, &st("ADD", "", &conf)).err_code(), 999, "static case {i}");
        let o = call(Impl::Ours, &st("ADD", "", &conf)).expect_ok("ours static ADD with spaces");
        assert_eq!(o.json()["ips"][0]["address"], "198.18.0.5/24");
    }
    let caps = json!({"cniVersion": "1.0.0", "name": "st", "ipam": {"type": "static"},
                      "runtimeConfig": {"ips": [" 198.18.0.5/24"]}});
    assert_eq!(call(Impl::Reference, &st("ADD", "", &caps)).err_code(), 999);
    assert_eq!(
        call(Impl::Ours, &st("ADD", "", &caps)).expect_ok("static ips").json()["ips"][0]["address"],
        "198.18.0.5/24"
    );
}

/// Store details that differ from the reference on purpose: DEL and CHECK of an unknown network
/// create nothing (the reference makes `<dataDir>/<name>/` and its `lock`), the lock is 0600 (the
/// reference's 0750), and only top-level files named by an address are leases (the reference
/// walks the directory recursively and takes any file whose content is `id\r\nifname`).
#[test]
fn ipam_store_details_that_differ_from_the_reference() {
    if !have_reference("host-local") || ours_is_reference() {
        return;
    }
    let (a, b) = (Tmp::new("sd-ref"), Tmp::new("sd-ours"));
    let (ca, cb) = (net_conf("1.0.0", a.dir(), v4()), net_conf("1.0.0", b.dir(), v4()));
    call(Impl::Reference, &hl("DEL", "c1", "eth0", &ca)).expect_ok("ref DEL");
    call(Impl::Ours, &hl("DEL", "c1", "eth0", &cb)).expect_ok("ours DEL");
    assert!(a.join("itnet/lock").exists(), "the reference's DEL makes the network directory and lock");
    assert!(!b.join("itnet").exists(), "ours makes nothing on DEL");
    call(Impl::Ours, &hl("ADD", "c1", "eth0", &cb)).expect_ok("ours ADD");
    call(Impl::Reference, &hl("ADD", "c1", "eth0", &ca)).expect_ok("ref ADD");
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(a.join("itnet/lock")), mode(b.join("itnet/lock"))), (0o750, 0o600));
    for t in [&a, &b] {
        fs::write(t.join("itnet/something"), "c1\r\neth0").unwrap();
        fs::create_dir_all(t.join("itnet/sub")).unwrap();
        fs::write(t.join("itnet/sub/198.18.0.9"), "c1\r\neth0").unwrap();
    }
    call(Impl::Reference, &hl("DEL", "c1", "eth0", &ca)).expect_ok("ref DEL");
    call(Impl::Ours, &hl("DEL", "c1", "eth0", &cb)).expect_ok("ours DEL");
    assert!(!a.join("itnet/something").exists() && !a.join("itnet/sub/198.18.0.9").exists());
    assert!(b.join("itnet/something").exists() && b.join("itnet/sub/198.18.0.9").exists());
    assert!(!b.join("itnet/198.18.0.2").exists(), "ours released its real lease");
    // a resolv.conf line beyond Go's bufio.Scanner limit (64 KiB): the reference fails, ours reads it
    let rc = a.join("resolv.conf");
    fs::write(&rc, format!("nameserver 198.18.0.53\nsearch {}\n", "a".repeat(90_000))).unwrap();
    let (mut ca, mut cb) = (ca, cb);
    ca["ipam"]["resolvConf"] = json!(rc);
    cb["ipam"]["resolvConf"] = json!(rc);
    let r = call(Impl::Reference, &hl("ADD", "c2", "eth0", &ca));
    assert!(!r.ok && r.stdout.contains("token too long"), "{}", r.stdout);
    let o = call(Impl::Ours, &hl("ADD", "c2", "eth0", &cb)).expect_ok("ours ADD with a long resolv.conf line");
    assert_eq!(o.json()["dns"]["nameservers"], json!(["198.18.0.53"]));
}
