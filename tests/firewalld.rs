//! The firewall plugin's firewalld backend against a real firewalld (Debian package `firewalld`).
//!
//! Each test starts, inside its world's "host" netns, its own `dbus-daemon` (config file and
//! socket in the world's temp dir) and a firewalld on that bus:
//! - `--system-config` / `--default-config` are temp dirs (the defaults are copied from
//!   /usr/lib/firewalld), `--nofork --nopid`, the log in the temp dir;
//! - firewalld runs in a private mount namespace (`unshare --mount`) with a tmpfs on /run, so its
//!   /run/firewalld temp dir never appears on the machine; PYTHONDONTWRITEBYTECODE=1;
//! - its nftables tables (`inet firewalld`) exist only in the world's host netns.
//!
//! The plugins reach it through `DBUS_SYSTEM_BUS_ADDRESS`; the test reads firewalld's state with
//! our own D-Bus client (`getSources`) and once with `firewall-cmd` on the private bus.
//! The guard kills both daemons on every exit path (and the world's drop kills whatever is left
//! in the netns).

use crate::harness::*;
use cni_multi::dbus::{Address, Connection, Value as DValue};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const FWD: &str = "org.fedoraproject.FirewallD1";
const FWD_PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.zone";

/// A private dbus-daemon + firewalld in a world's host netns; both killed on drop.
struct Firewalld {
    dir: PathBuf,
    sock: PathBuf,
    address: String,
    /// the same bus on an abstract socket (abstract names belong to the netns: the host's)
    abstract_address: String,
    bus: Option<Child>,
    daemon: Option<Child>,
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        self.stop_firewalld();
        self.stop_bus();
    }
}

fn bus_config(sock: &Path, abstract_name: &str) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <listen>unix:abstract={abstract_name}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        sock.display()
    )
}

const FIREWALLD_CONF: &str = "DefaultZone=public
CleanupOnExit=yes
CleanupModulesOnExit=no
Lockdown=no
IPv6_rpfilter=yes
IndividualCalls=no
LogDenied=off
FirewallBackend=nftables
FlushAllOnReload=yes
RFC3964_IPv4=yes
";

impl Firewalld {
    fn start(w: &World) -> Firewalld {
        let dir = w.tmp.join("firewalld");
        let (sys, def) = (dir.join("etc"), dir.join("usrlib"));
        std::fs::create_dir_all(&sys).unwrap();
        let out = std::process::Command::new("cp").arg("-r").arg("/usr/lib/firewalld").arg(&def).output().unwrap();
        assert!(out.status.success(), "copy /usr/lib/firewalld: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(sys.join("firewalld.conf"), FIREWALLD_CONF).unwrap();
        let sock = dir.join("bus.sock");
        let abstract_name = format!("{}/bus", w.tmp.display());
        std::fs::write(dir.join("bus.conf"), bus_config(&sock, &abstract_name)).unwrap();
        let address = format!("unix:path={}", sock.display());
        let abstract_address = format!("unix:abstract={abstract_name}");
        let mut f = Firewalld { dir: dir.clone(), sock, address, abstract_address, bus: None, daemon: None };

        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let bus = w
            .host
            .command("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .args(["--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .stdout(log("bus.out"))
            .stderr(log("bus.err"))
            .spawn()
            .expect("spawn dbus-daemon (package dbus-daemon)");
        f.bus = Some(bus);
        assert!(wait_for(10, || f.connect().is_ok()), "private dbus-daemon did not come up: {}", f.logs());

        let script = "mount -t tmpfs -o mode=0755 tmpfs /run && exec \"$@\"";
        let daemon = w
            .host
            .command("unshare")
            .args(["--mount", "--", "sh", "-c", script, "sh", "firewalld", "--nofork", "--nopid"])
            .arg("--system-config")
            .arg(&sys)
            .arg("--default-config")
            .arg(&def)
            .args(["--log-target", "file", "--log-file"])
            .arg(dir.join("firewalld.log"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &f.address)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log("firewalld.out"))
            .stderr(log("firewalld.err"))
            .spawn()
            .expect("spawn firewalld (package firewalld)");
        f.daemon = Some(daemon);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if f.call("org.fedoraproject.FirewallD1", "getDefaultZone", &[]).is_ok() {
                break;
            }
            if let Some(st) = f.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten()) {
                panic!("firewalld exited ({st}) during startup: {}", f.logs());
            }
            assert!(Instant::now() < deadline, "firewalld did not answer within 90 s: {}", f.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
        f
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["bus.err", "firewalld.err", "firewalld.out"] {
            s += &format!("\n--- {name}\n{}", std::fs::read_to_string(self.dir.join(name)).unwrap_or_default());
        }
        let log = std::fs::read_to_string(self.dir.join("firewalld.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
        s += &format!("\n--- firewalld.log (non-debug)\n{}", tail.join("\n"));
        s
    }

    fn connect(&self) -> anyhow::Result<Connection> {
        Connection::open(&Address::Path(self.sock.clone()), Duration::from_secs(30))
    }

    fn call(&self, iface: &str, member: &str, args: &[&str]) -> anyhow::Result<Vec<DValue>> {
        self.connect()?.call(FWD, FWD_PATH, iface, member, args)
    }

    /// The zone's sources, read with our own client (`getSources`).
    fn sources(&self, zone: &str) -> Vec<String> {
        let r = self.call(ZONE_IFACE, "getSources", &[zone]).unwrap_or_else(|e| panic!("getSources({zone}): {e:#}"));
        let mut v = r[0].as_strings().expect("getSources returns `as`");
        v.sort();
        v
    }

    /// The same through firewalld's own client on the private bus.
    fn cmd_sources(&self, w: &World, zone: &str) -> Vec<String> {
        let out = w
            .host
            .command("firewall-cmd")
            .arg(format!("--zone={zone}"))
            .arg("--list-sources")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "firewall-cmd: {}", String::from_utf8_lossy(&out.stderr));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    }

    fn stop_firewalld(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    fn stop_bus(&mut self) {
        if let Some(mut b) = self.bus.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }
}

fn chained(name: &str, plugin: Value, prev: &Value) -> Value {
    let mut c = plugin;
    c["cniVersion"] = json!("1.0.0");
    c["name"] = json!(name);
    c["type"] = json!("firewall");
    c["prevResult"] = prev.clone();
    c
}

/// `IP/32` / `IP/128` of every address in a result, sorted.
fn host_sources(prev: &Value) -> Vec<String> {
    let mut v: Vec<String> = prev["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let a = i["address"].as_str().unwrap().split('/').next().unwrap();
            format!("{a}/{}", if a.contains(':') { 128 } else { 32 })
        })
        .collect();
    v.sort();
    v
}

/// A world with one container on a dual-stack bridge (ADDed), and a firewalld.
fn setup(tag: &str) -> (World, Firewalld, String, Value) {
    let w = World::new(tag, 1, Impl::Ours);
    w.host_nodad();
    let fw = Firewalld::start(&w);
    let s = Subnets::alloc();
    let name = format!("{tag}-net");
    let prev = w.add(&bridge_conf(&w, &name, &format!("{tag}br"), &[&s.net4(), &s.net6()])).run().ok();
    assert_eq!(host_sources(&prev).len(), 2, "v4 + v6: {prev}");
    (w, fw, name, prev)
}

#[test]
fn firewalld_add_check_del_twice_default_zone_trusted() {
    let (w, fw, name, prev) = setup("fwd1");
    // deliberate differences from the reference are asserted for cni-multi only
    // (CNI_MULTI_TEST_OURS=/usr/lib/cni runs this file against the reference)
    let ours = w.imp.flavor() == Flavor::CniMulti;
    let conf = chained(&name, json!({"backend": "firewalld"}), &prev);
    let bus = fw.address.clone();
    assert!(fw.sources("trusted").is_empty());

    let r = w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert_eq!(r, prev, "firewall passes prevResult through");
    let want = host_sources(&prev);
    assert_eq!(fw.sources("trusted"), want, "sources are exactly IP/32 and IP/128");
    assert_eq!(fw.cmd_sources(&w, "trusted"), want, "firewall-cmd sees the same");
    assert!(fw.sources("public").is_empty());
    // a second ADD (ZONE_ALREADY_SET) is fine
    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    // the same bus through its abstract socket, after an unusable entry of the address list
    let list = format!("tcp:host=localhost,port=1;{}", fw.abstract_address);
    w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &list).run().ok();
    // no bus there: CHECK fails, with "try again"
    let e = w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", "unix:abstract=cm-no-such-bus").run().err();
    assert!(!ours || e.code == 11, "{e:?}");

    // a source removed behind the plugin's back: CHECK fails (the reference's CHECK passes)
    fw.call(ZONE_IFACE, "removeSource", &["trusted", &want[0]]).unwrap();
    if ours {
        let e = w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().err();
        assert!(e.msg.contains(&want[0]) && e.msg.contains("trusted"), "{e:?}");
    }
    fw.call(ZONE_IFACE, "addSource", &["trusted", &want[0]]).unwrap();

    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(fw.sources("trusted").is_empty(), "DEL removed the sources");
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok(); // UNKNOWN_SOURCE ignored
    if ours {
        let e = w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().err();
        assert!(e.msg.contains("not a source"), "{e:?}");
    }
    // firewalld alone writes no iptables rule: an admin chain name iptables could not take is
    // not used, so not refused (the reference ignores it too)
    let long_admin = chained(&name, json!({"backend": "firewalld", "iptablesAdminChainName": "A".repeat(40)}), &prev);
    w.add(&long_admin).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.del(&long_admin).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    // without prevResult DEL has nothing to remove, and succeeds
    let mut bare = conf.clone();
    bare.as_object_mut().unwrap().remove("prevResult");
    w.del(&bare).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();

    // ingressPolicy same-bridge: zone sources plus the isolation rules of the iptables/nftables choice
    let iso = chained(&name, json!({"backend": "firewalld", "ingressPolicy": "same-bridge"}), &prev);
    w.add(&iso).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert_eq!(fw.sources("trusted"), want);
    let rules = w.host.must(&["nft", "list", "ruleset"]) + &w.host.must(&["iptables-save"]);
    assert!(rules.contains("isolation_stage_1") || rules.contains("CNI-ISOLATION-STAGE-1"), "{rules}");
    w.check(&iso, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.del(&iso).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(fw.sources("trusted").is_empty());
}

#[test]
fn firewalld_zone_auto_selection_and_firewalld_gone() {
    let (w, mut fw, name, prev) = setup("fwd2");
    let ours = w.imp.flavor() == Flavor::CniMulti; // see firewalld_add_check_del_twice_…
    let bus = fw.address.clone();
    // no backend key: firewalld owns its name on the bus, so it is used
    let conf = chained(&name, json!({"firewalldZone": "internal"}), &prev);
    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    let want = host_sources(&prev);
    assert_eq!(fw.sources("internal"), want, "auto-selected firewalld, zone firewalldZone");
    assert!(fw.sources("trusted").is_empty());
    let rules = w.host.must(&["nft", "list", "ruleset"]);
    assert!(!rules.contains("cni_firewall"), "no nftables table of our own when firewalld is used:\n{rules}");
    w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    // an unknown zone is a config error
    let bad = chained(&name, json!({"backend": "firewalld", "firewalldZone": "no-such-zone"}), &prev);
    let e = w.add(&bad).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().err();
    assert!(!ours || e.code == 7, "{e:?}");

    // firewalld gone (bus still there): explicit DEL succeeds, ADD/CHECK say "try again"
    let explicit = chained(&name, json!({"backend": "firewalld", "firewalldZone": "internal"}), &prev);
    fw.stop_firewalld();
    w.del(&explicit).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    let e = w.add(&explicit).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().err();
    assert!(!ours || e.code == 11, "{e:?}");
    // ... and with no backend key the plugin falls back to the iptables/nftables choice
    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    // no bus at all: DEL succeeds (the reference's fails: it cannot connect)
    fw.stop_bus();
    if ours {
        w.del(&explicit).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    }
    let e = w.add(&explicit).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().err();
    assert!(!ours || e.code == 11, "{e:?}");
}

/// A second netns "outside" behind the host (veth), routing back to the container subnet: the
/// container's traffic to it is forwarded by the host, through firewalld's forward chain.
#[test]
fn firewalld_forwarded_traffic_accepted_after_add() {
    let (mut w, fw, name, prev) = setup("fwd3");
    let bus = fw.address.clone();
    let o = w.add_container(); // used as the "outside" netns, not as a container
    let s = Subnets::alloc();
    let (host_end, out_end) = (format!("fwd3o{}", std::process::id() % 10000), "eth0");
    w.host.must(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", out_end, "netns", &w.c(o).name]);
    w.host.must(&["ip", "addr", "add", &format!("{}/24", s.ip4(1)), "dev", &host_end]);
    w.host.must(&["ip", "link", "set", &host_end, "up"]);
    let outside = w.c(o);
    outside.must(&["ip", "addr", "add", &format!("{}/24", s.ip4(2)), "dev", out_end]);
    outside.must(&["ip", "link", "set", out_end, "up"]);
    outside.must(&["ip", "link", "set", "lo", "up"]);
    let c_ip = prev["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let c_net = format!("{}.0/24", c_ip.rsplit_once('.').unwrap().0);
    outside.must(&["ip", "route", "add", &c_net, "via", &s.ip4(1)]);
    assert_eq!(w.host.sysctl("net/ipv4/ip_forward").as_deref(), Some("1"), "bridge isGateway enables forwarding");
    let target = s.ip4(2);
    assert!(w.c(0).ping(prev["ips"][0]["gateway"].as_str().unwrap(), 3), "container reaches its gateway");
    assert!(!w.c(0).ping(&target, 1), "firewalld's default zone rejects the forwarded traffic before ADD");

    let conf = chained(&name, json!({}), &prev); // no backend key: auto-selects firewalld
    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    let rules = w.host.must(&["nft", "list", "ruleset"]);
    assert!(w.c(0).ping(&target, 3), "forwarded traffic accepted after ADD\n{rules}");
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(!w.c(0).ping(&target, 1), "rejected again after DEL");
}

/// Same firewalld, the reference's firewall plugin (/usr/lib/cni/firewall 1.1.1) and ours.
#[test]
fn firewalld_interop_with_reference() {
    let (w, fw, name, prev) = setup("fwd4");
    let bus = fw.address.clone();
    let reference = if w.bin_dir.starts_with(&w.tmp) {
        std::os::unix::fs::symlink(Path::new(plugin::REFERENCE_DIR).join("firewall"), w.bin_dir.join("ref-firewall"))
            .unwrap();
        "ref-firewall"
    } else {
        "firewall" // CNI_MULTI_TEST_OURS set (the plugin dir is not ours to change): it stands in for both
    };
    let conf = chained(&name, json!({"backend": "firewalld"}), &prev);
    let want = host_sources(&prev);

    // the reference ADDs, we CHECK and DEL
    w.add(&conf).plugin(reference).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    let theirs = fw.sources("trusted");
    assert_eq!(theirs, want, "the reference writes IP/32 and IP/128");
    w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(fw.sources("trusted").is_empty(), "our DEL removed the reference's sources");

    // we ADD, the reference CHECKs and DELs
    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert_eq!(fw.sources("trusted"), theirs, "same sources as the reference's ADD");
    w.check(&conf, &prev).plugin(reference).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.del(&conf).plugin(reference).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(fw.sources("trusted").is_empty(), "the reference's DEL removed our sources");

    // auto-selection agrees: with no backend key both pick firewalld
    let auto = chained(&name, json!({}), &prev);
    w.add(&auto).plugin(reference).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert_eq!(fw.sources("trusted"), want);
    w.del(&auto).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(fw.sources("trusted").is_empty());
}

/// The iptables-save and ip6tables-save lines of the world's host netns (counters cut off).
fn save_lines(w: &World) -> Vec<String> {
    crate::harness::state::netfilter(&w.host).save.into_iter().map(|(tool, l)| format!("{tool}: {l}")).collect()
}

/// `backend: firewalld` with an `ingressPolicy`: the addresses become zone sources and the rules
/// backend writes the policy's isolation chains only, as the reference does (its firewalld
/// backend's Add, then `setupIngressPolicy`): no `CNI-FORWARD`, no `CNI-ADMIN`, no per-IP accept
/// (regression: ours wrote those as well). CHECK and DEL are about the zone only; the isolation
/// chains stay after DEL, as always. The reference's ADD of the same config leaves the same
/// iptables rules.
#[test]
fn firewalld_ingress_policy_writes_only_the_isolation_rules_as_the_reference() {
    let (w, fw, name, prev) = setup("fwd5");
    let bus = fw.address.clone();
    let conf = chained(&name, json!({"backend": "firewalld", "ingressPolicy": "same-bridge"}), &prev);
    let want = host_sources(&prev);
    let cid = format!("cid-{}", w.tag);

    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert_eq!(fw.sources("trusted"), want);
    let ours = save_lines(&w);
    let text = ours.join("\n");
    assert!(text.contains("CNI-ISOLATION-STAGE-1") && text.contains("CNI-ISOLATION-STAGE-2"), "{text}");
    assert!(!text.contains("CNI-FORWARD") && !text.contains("CNI-ADMIN"), "per-IP chains with firewalld:\n{text}");
    for src in &want {
        assert!(!text.contains(src.as_str()), "a rule for {src} with firewalld:\n{text}");
    }
    let nft = w.host.must(&["nft", "list", "ruleset"]);
    assert!(!nft.contains(&format!("comment \"{cid}\"")), "an nftables rule of the container:\n{nft}");

    w.check(&conf, &prev).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert!(fw.sources("trusted").is_empty(), "DEL removed the sources");
    assert_eq!(save_lines(&w), ours, "the isolation chains stay after DEL, and nothing else changed");
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();

    // the reference's ADD of the same config, on a filter table without the isolation chains
    if !have_reference("firewall") || !w.bin_dir.starts_with(&w.tmp) {
        return; // (CNI_MULTI_TEST_OURS: the plugin dir is not ours to add the reference to)
    }
    std::os::unix::fs::symlink(Path::new(plugin::REFERENCE_DIR).join("firewall"), w.bin_dir.join("ref-firewall"))
        .unwrap();
    w.host.ok("for t in iptables ip6tables; do $t-save -t filter | grep -v ISOLATION | $t-restore -T filter; done");
    assert!(!save_lines(&w).iter().any(|l| l.contains("ISOLATION")), "isolation chains cleared");
    w.add(&conf).plugin("ref-firewall").env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    assert_eq!(fw.sources("trusted"), want);
    assert_eq!(save_lines(&w), ours, "the reference writes the same iptables rules");
    w.del(&conf).plugin("ref-firewall").env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
}

/// The per-IP accept rules cni-multi wrote with firewalld and an ingressPolicy before
/// 2026-12-07 (the iptables backend's, made here by an iptables ADD of the attachment) go with
/// the firewalld DEL, so a node that upgrades keeps nothing of a deleted pod.
#[test]
fn firewalld_del_removes_accept_rules_an_older_version_left() {
    let (w, fw, name, prev) = setup("fwd7");
    let bus = fw.address.clone();
    let conf = chained(&name, json!({"backend": "firewalld", "ingressPolicy": "same-bridge"}), &prev);
    let want = host_sources(&prev);
    w.add(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();

    let ipt = chained(&name, json!({"backend": "iptables"}), &prev);
    w.add(&ipt).run().ok();
    let left = save_lines(&w).join("\n");
    assert!(want.iter().all(|src| left.contains(src.as_str())), "the old accept rules are there:\n{left}");
    w.del(&conf).env("DBUS_SYSTEM_BUS_ADDRESS", &bus).run().ok();
    let after = save_lines(&w).join("\n");
    for src in &want {
        assert!(!after.contains(src.as_str()), "an accept rule for {src} left by the firewalld DEL:\n{after}");
    }
    assert!(fw.sources("trusted").is_empty(), "DEL removed the sources");
}

/// Error codes of the firewalld backend against the reference (/usr/lib/cni/firewall 1.1.1): a
/// zone firewalld does not have (`INVALID_ZONE`) is code 7 (invalid config) and a system bus that
/// cannot be reached code 11 (try again); the reference answers 999 for both ("failed to add the
/// address … to … zone: INVALID_ZONE: …", "dial unix …: connect: no such file or directory").
#[test]
fn firewalld_error_codes_vs_reference() {
    let (w, fw, name, prev) = setup("fwd6");
    let bus = fw.address.clone();
    let reference = have_reference("firewall") && w.bin_dir.starts_with(&w.tmp);
    if reference {
        std::os::unix::fs::symlink(Path::new(plugin::REFERENCE_DIR).join("firewall"), w.bin_dir.join("ref-firewall"))
            .unwrap();
    }
    let no_bus = format!("unix:path={}", w.tmp.join("no-such-bus.sock").display());
    let bad_zone = chained(&name, json!({"backend": "firewalld", "firewalldZone": "no-such-zone"}), &prev);
    let conf = chained(&name, json!({"backend": "firewalld"}), &prev);
    // (what, config, bus, our code, our message, the reference's message)
    let cases = [
        ("unknown zone", &bad_zone, bus.as_str(), 7, "INVALID_ZONE: no-such-zone", "failed to add the address"),
        ("unreachable bus", &conf, no_bus.as_str(), 11, "cannot reach the system bus", "dial unix"),
    ];
    for (what, c, address, code, ours_msg, ref_msg) in cases {
        let e = w.add(c).env("DBUS_SYSTEM_BUS_ADDRESS", address).run().err_code(code);
        assert!(e.msg.contains(ours_msg), "ours, {what}: {e:?}");
        if reference {
            let r = w.add(c).plugin("ref-firewall").env("DBUS_SYSTEM_BUS_ADDRESS", address).run().err_code(999);
            assert!(r.msg.contains(ref_msg), "reference, {what}: {r:?}");
        }
    }
    assert!(fw.sources("trusted").is_empty(), "a failed ADD leaves no source");
}
