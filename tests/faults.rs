//! Fault injection.
//!
//! - **Crash points**: the plugin runs under ptrace (the test is its tracer); at the exit of
//!   the N-th state-changing syscall (`sendto`/`sendmsg` — every netlink and nftables request —
//!   the store's `link`/`rename`/`unlink`, and the index's in-place `pwrite64`/`ftruncate`) it is
//!   killed with SIGKILL, for N = 1..k where k
//!   is the number of such syscalls in a whole ADD. After each kill, DEL must succeed and leave
//!   the world exactly as before the ADD (links, addresses, routes, rules, qdiscs, nftables and
//!   iptables rules, host-local leases and temp files), and a fresh ADD of the same container
//!   must succeed (then is deleted again). Bridge + host-local with ipMasq on nftables, ptp, and
//!   the chained portmap and firewall (nftables and iptables), bandwidth and tuning after
//!   a ptp attachment that stays.
//! - **Index**: host-local killed between a reservation and the index update (and in the middle
//!   of the index update) leaves a store that the next ADD, CHECK and DEL read exactly.
//! - **Lock**: a plugin stopped while holding the store's flock blocks a second ADD; killing it
//!   releases the lock and the second ADD completes.
//! - **Read-only dataDir** and **disk full** (a tiny tmpfs), each inside a private mount
//!   namespace held by a helper process: a clean CNI error, no partial store files, and the
//!   next ADD works once the condition is gone.
//! - **Torn store files**: a lease and `last_reserved_ip.0` truncated mid-file are tolerated.
//! - **File modes**: 0600 files, no temp files left behind, the network dir 0755 (reference).

use crate::harness::world::enter_before_exec;
use crate::harness::*;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// x86_64 syscall numbers of the stop points.
const SYS_WRITE: u64 = 1;
const SYS_PWRITE64: u64 = 18;
const SYS_SENDTO: u64 = 44;
const SYS_SENDMSG: u64 = 46;
const SYS_FLOCK: u64 = 73;
const SYS_FTRUNCATE: u64 = 77;
const SYS_RENAME: u64 = 82;
const SYS_LINK: u64 = 86;
const SYS_UNLINK: u64 = 87;
const SYS_UNLINKAT: u64 = 263;
const SYS_RENAMEAT: u64 = 264;
const SYS_LINKAT: u64 = 265;
const SYS_SENDMMSG: u64 = 307;
const SYS_RENAMEAT2: u64 = 316;

const MUTATING: &[u64] = &[
    SYS_SENDTO,
    SYS_SENDMSG,
    SYS_SENDMMSG,
    SYS_RENAME,
    SYS_LINK,
    SYS_UNLINK,
    SYS_UNLINKAT,
    SYS_RENAMEAT,
    SYS_LINKAT,
    SYS_RENAMEAT2,
    // the host-local index and allocation cursor, rewritten in place
    SYS_PWRITE64,
    SYS_FTRUNCATE,
];

/// How a traced run ended.
#[derive(Debug)]
enum Traced {
    /// killed at the exit of the N-th stop-point syscall
    Killed,
    /// ran to the end: exit status, stdout, number of stop-point syscalls seen
    Finished { code: i32, stdout: String, stops: usize },
}

impl Traced {
    #[allow(dead_code)]
    fn stdout(&self) -> &str {
        match self {
            Traced::Finished { stdout, .. } => stdout,
            Traced::Killed => "",
        }
    }
}

/// A plugin process prepared the way the harness runs one (env, stdin, host netns).
struct Plugin<'w> {
    w: &'w World,
    plugin: String,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    mntns: Option<PathBuf>,
}

impl<'w> Plugin<'w> {
    fn new(w: &'w World, command: &str, conf: &Value, cid: &str, container: usize) -> Plugin<'w> {
        let plugin = conf["type"].as_str().expect("type").to_string();
        let env = vec![
            ("CNI_COMMAND".to_string(), command.to_string()),
            ("CNI_CONTAINERID".to_string(), cid.to_string()),
            ("CNI_NETNS".to_string(), w.c(container).path_str()),
            ("CNI_IFNAME".to_string(), "eth0".to_string()),
            ("CNI_PATH".to_string(), w.bin_dir.to_string_lossy().into_owned()),
        ];
        Plugin { w, plugin, env, stdin: serde_json::to_vec(conf).expect("conf"), mntns: None }
    }

    /// Run inside the mount namespace of a helper process (`/proc/<pid>/ns/mnt`).
    fn in_mntns(mut self, ns: &Path) -> Self {
        self.mntns = Some(ns.to_path_buf());
        self
    }

    fn command(&self, trace: bool) -> std::process::Command {
        let exe = self.w.bin_dir.join(&self.plugin);
        let mut cmd = self.w.host.command(&exe);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        if let Some(ns) = &self.mntns {
            enter_before_exec(&mut cmd, ns, nix::sched::CloneFlags::CLONE_NEWNS);
        }
        if trace {
            // SAFETY: runs in the forked child before exec: PTRACE_TRACEME is one plain syscall.
            unsafe {
                cmd.pre_exec(|| ptrace::traceme().map_err(|e| std::io::Error::from_raw_os_error(e as i32)));
            }
        }
        cmd
    }

    /// Run to completion without tracing.
    fn run(&self) -> (i32, String) {
        let mut child = self.command(false).spawn().expect("spawn plugin");
        child.stdin.take().expect("stdin").write_all(&self.stdin).expect("write stdin");
        let out = child.wait_with_output().expect("wait plugin");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run under ptrace; SIGKILL at the exit of the `kill_at`-th syscall in `stops`
    /// (never when `kill_at` is 0). Also returns early with `Killed` if `on_stop` says so.
    // the child is reaped with waitpid(2), which std's Child cannot see
    #[allow(clippy::zombie_processes)]
    fn traced(&self, stops: &[u64], kill_at: usize) -> Traced {
        let mut child = self.command(true).spawn().expect("spawn traced plugin");
        let pid = Pid::from_raw(child.id() as i32);
        // the child stops with SIGTRAP at exec
        match waitpid(pid, None).expect("wait for exec stop") {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
            other => panic!("unexpected first stop {other:?}"),
        }
        ptrace::setoptions(pid, ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL)
            .expect("ptrace options");
        // a small config fits the pipe buffer: write all of stdin, then close it
        {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&self.stdin).expect("write stdin");
        }
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0usize;
        let mut entering = true;
        let mut current = 0u64;
        ptrace::syscall(pid, None).expect("resume");
        loop {
            assert!(Instant::now() < deadline, "traced plugin did not finish");
            match waitpid(pid, None).expect("waitpid") {
                WaitStatus::PtraceSyscall(_) => {
                    if entering {
                        current = ptrace::getregs(pid).map(|r| r.orig_rax).unwrap_or(u64::MAX);
                    } else if stops.contains(&current) {
                        seen += 1;
                        if seen == kill_at {
                            kill(pid, Signal::SIGKILL).expect("kill");
                            loop {
                                match waitpid(pid, None) {
                                    Ok(WaitStatus::Signaled(..)) | Ok(WaitStatus::Exited(..)) | Err(_) => break,
                                    _ => {}
                                }
                            }
                            let _ = reader.join();
                            return Traced::Killed;
                        }
                    }
                    entering = !entering;
                    ptrace::syscall(pid, None).expect("resume");
                }
                WaitStatus::Exited(_, code) => {
                    let stdout = reader.join().unwrap_or_default();
                    return Traced::Finished { code, stdout, stops: seen };
                }
                WaitStatus::Signaled(_, sig, _) => panic!("plugin died of {sig:?}"),
                WaitStatus::Stopped(_, sig) => {
                    // deliver other signals unchanged
                    ptrace::syscall(pid, Some(sig)).expect("resume with signal");
                }
                _ => ptrace::syscall(pid, None).expect("resume"),
            }
        }
    }

    /// Run under ptrace and leave it stopped at the exit of its first `flock(2)`.
    #[allow(clippy::zombie_processes)]
    fn stopped_holding_lock(&self) -> (Pid, std::process::Child) {
        let mut child = self.command(true).spawn().expect("spawn traced plugin");
        let pid = Pid::from_raw(child.id() as i32);
        assert!(matches!(waitpid(pid, None), Ok(WaitStatus::Stopped(_, Signal::SIGTRAP))));
        ptrace::setoptions(pid, ptrace::Options::PTRACE_O_TRACESYSGOOD | ptrace::Options::PTRACE_O_EXITKILL)
            .expect("ptrace options");
        child.stdin.take().expect("stdin").write_all(&self.stdin).expect("write stdin");
        let mut entering = true;
        let mut current = 0;
        ptrace::syscall(pid, None).expect("resume");
        loop {
            match waitpid(pid, None).expect("waitpid") {
                WaitStatus::PtraceSyscall(_) => {
                    if entering {
                        current = ptrace::getregs(pid).map(|r| r.orig_rax).unwrap_or(u64::MAX);
                    } else if current == SYS_FLOCK {
                        return (pid, child);
                    }
                    entering = !entering;
                    ptrace::syscall(pid, None).expect("resume");
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => panic!("plugin ended before taking the lock"),
                _ => ptrace::syscall(pid, None).expect("resume"),
            }
        }
    }
}

/// Everything a plugin may leave behind, in the host and container namespaces and the store.
fn world_state(w: &World) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let text = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    for (label, ns) in [("host", &w.host), ("ctr", w.c(0))] {
        // links with their qdisc and addresses (IPv6 link-local ones are the kernel's, skipped)
        for l in ns.ip_json(&["addr", "show"]).as_array().into_iter().flatten() {
            let addrs: Vec<String> = l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| !a["local"].as_str().unwrap_or_default().starts_with("fe80:"))
                .map(|a| format!("{}/{}", a["local"], a["prefixlen"]))
                .collect();
            // administrative flags only (UP, PROMISC, ...): carrier comes and goes with the kernel's timing
            let flags: Vec<&str> = l["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|f| !matches!(*f, "NO-CARRIER" | "LOWER_UP" | "M-DOWN"))
                .collect();
            m.insert(
                format!("{label}.link.{}", l["ifname"]),
                format!("qdisc {} mtu {} mac {} flags {flags:?} addrs {addrs:?}", l["qdisc"], l["mtu"], l["address"]),
            );
        }
        let routes: Vec<String> =
            ns.routes().iter().map(|r| format!("{} {} {}", r["dst"], r["dev"], r["gateway"])).collect();
        m.insert(format!("{label}.routes"), routes.join(";"));
        m.insert(format!("{label}.tc"), text(ns.exec(&["tc", "qdisc", "show"])));
        m.insert(
            format!("{label}.rules"),
            text(ns.exec(&["ip", "rule", "show"])) + &text(ns.exec(&["ip", "-6", "rule", "show"])),
        );
    }
    m.insert("host.nft".into(), text(w.host.exec(&["nft", "list", "ruleset"])));
    let ipt = text(w.host.exec(&["iptables-save"]));
    m.insert("host.iptables".into(), ipt.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n"));
    // leases and temp files; the allocation cursor (last_reserved_ip.*) may move
    let store: Vec<String> = state::read_store(&w.data_dir)
        .into_iter()
        .filter(|(k, _)| !k.contains("last_reserved_ip."))
        .map(|(k, (mode, content))| format!("{k} {mode:o} {content:?}"))
        .collect();
    m.insert("store".into(), store.join("\n"));
    m
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut out = vec![];
    for k in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
        if a.get(k) != b.get(k) {
            out.push(format!("{k}:\n  before: {:?}\n  after:  {:?}", a.get(k), b.get(k)));
        }
    }
    out.join("\n")
}

/// Kill ADD at every stop point, DEL, compare with the baseline, ADD again, DEL again.
fn crash_points(tag: &str, conf: &Value) {
    let w = World::new(tag, 1, Impl::Ours);
    let conf = {
        let mut c = conf.clone();
        c["name"] = json!(tag);
        c["ipam"]["dataDir"] = json!(w.data_dir);
        c
    };
    crash_points_in(&w, tag, &conf);
}

/// [`crash_points`] for a chained plugin: its ADD and DEL are killed and repeated after a ptp
/// attachment of the same container (made first, and part of the baseline), with that
/// attachment's result as prevResult.
fn crash_points_chained(tag: &str, plugin: &Value) {
    let w = World::new(tag, 1, Impl::Ours);
    let s = Subnets::alloc();
    let cid = format!("{tag}-ctr");
    let prev = w.add(&ptp_conf(&w, &s, tag, None)).cid(&cid).run().ok();
    let mut conf = plugin.clone();
    conf["cniVersion"] = json!("1.0.0");
    conf["name"] = json!(tag);
    conf["prevResult"] = prev;
    crash_points_in(&w, tag, &conf);
}

fn crash_points_in(w: &World, tag: &str, conf: &Value) {
    let conf = conf.clone();
    let cid = format!("{tag}-ctr");
    let add = Plugin::new(w, "ADD", &conf, &cid, 0);
    let del = Plugin::new(w, "DEL", &conf, &cid, 0);
    // baseline: one full ADD + DEL (the bridge, the masquerade table and the store dir exist
    // from then on, as on a node in use)
    let (code, out) = add.run();
    assert_eq!(code, 0, "baseline ADD: {out}");
    let (code, out) = del.run();
    assert_eq!(code, 0, "baseline DEL: {out}");
    let baseline = world_state(w);
    // count the stop points of a whole traced ADD
    let total = match add.traced(MUTATING, 0) {
        Traced::Finished { code: 0, stops, .. } => stops,
        other => panic!("traced ADD failed: {other:?}"),
    };
    assert!(total >= 5, "only {total} stop points in an ADD");
    let (code, out) = del.run();
    assert_eq!(code, 0, "DEL: {out}");
    let mut report = vec![];
    let mut reached = 0;
    // every crash point with CNI_MULTI_FAULT_STRIDE=1 (`make stress`); every 4th in `make test`
    let stride: usize =
        std::env::var("CNI_MULTI_FAULT_STRIDE").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(4);
    let mut tested = 0;
    for n in (1..).step_by(stride) {
        match add.traced(MUTATING, n) {
            Traced::Killed => {
                reached = n;
                tested += 1;
            }
            // the number of steps varies between runs (address search, retries, how many polls
            // DAD takes on a loaded machine): past this run's last one the ADD simply completes
            Traced::Finished { code: 0, stops, .. } if stops < n => {
                let (code, out) = del.run();
                assert_eq!(code, 0, "DEL: {out}");
                break;
            }
            other => panic!("ADD was not killed at stop {n}/{total}: {other:?}"),
        }
        let (code, out) = del.run();
        if code != 0 {
            report.push(format!("stop {n}: DEL after the kill failed: {out}"));
        }
        // (leftovers of the previous iteration's ADD + DEL show up here too)
        let after = world_state(w);
        if after != baseline {
            report.push(format!("stop {n}: left behind after DEL:\n{}", diff(&baseline, &after)));
            break;
        }
        let (code, out) = add.run();
        if code != 0 {
            report.push(format!("stop {n}: the next ADD failed: {out}"));
        }
        let (code, out) = del.run();
        if code != 0 {
            report.push(format!("stop {n}: the final DEL failed: {out}"));
        }
    }
    let after = world_state(w);
    if after != baseline {
        report.push(format!("at the end: left behind:\n{}", diff(&baseline, &after)));
    }
    assert!(report.is_empty(), "{tag}: {} problems over {tested} crash points:\n{}", report.len(), report.join("\n"));
    eprintln!("{tag}: {tested} of ~{reached} crash points (stride {stride}), DEL cleaned up after every one");
}

#[test]
fn faults_sigkill_at_every_step_of_bridge_add_with_ipmasq_nft() {
    let s = Subnets::alloc();
    let conf = json!({
        "cniVersion": "1.0.0", "type": "bridge", "bridge": "cmfb0", "isGateway": true,
        "ipMasq": true, "ipMasqBackend": "nftables",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": s.net4()}], [{"subnet": s.net6()}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    crash_points("fltbr", &conf);
}

/// portmap with a tcp and a udp mapping on `backend`.
fn portmap_two_mappings(backend: &str) -> Value {
    json!({"type": "portmap", "backend": backend, "capabilities": {"portMappings": true},
           "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                                              {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]}})
}

#[test]
fn faults_sigkill_at_every_step_of_portmap_add_nft() {
    crash_points_chained("fltpm", &portmap_two_mappings("nftables"));
}

#[test]
fn faults_sigkill_at_every_step_of_portmap_add_iptables() {
    crash_points_chained("fltpmi", &portmap_two_mappings("iptables"));
}

#[test]
fn faults_sigkill_at_every_step_of_firewall_add_nft() {
    let fw = json!({"type": "firewall", "backend": "nftables", "ingressPolicy": "isolated"});
    crash_points_chained("fltfwn", &fw);
}

#[test]
fn faults_sigkill_at_every_step_of_firewall_add_iptables() {
    let fw = json!({"type": "firewall", "backend": "iptables"});
    crash_points_chained("fltfw", &fw);
}

#[test]
fn faults_sigkill_at_every_step_of_bandwidth_add() {
    let bw = json!({"type": "bandwidth", "ingressRate": 1_000_000, "ingressBurst": 100_000,
                    "egressRate": 1_000_000, "egressBurst": 100_000});
    crash_points_chained("fltbw", &bw);
}

#[test]
fn faults_sigkill_at_every_step_of_tuning_add() {
    let tu = json!({"type": "tuning", "mtu": 1300, "mac": "02:00:00:00:12:34", "promisc": true,
                    "sysctl": {"net.core.somaxconn": "600"}});
    crash_points_chained("flttu", &tu);
}

#[test]
fn faults_sigkill_at_every_step_of_ptp_add() {
    let s = Subnets::alloc();
    let conf = json!({
        "cniVersion": "1.0.0", "type": "ptp", "mtu": 1400,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": s.net4()}], [{"subnet": s.net6()}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    crash_points("fltptp", &conf);
}

fn hl_conf(w: &World, s: &Subnets, name: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "host-local",
           "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]}})
}

const INDEX_FILE: &str = ".cni-multi-index";

#[test]
fn faults_sigkill_between_reservation_and_index_update() {
    let w = World::new("fltidx", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "fltidx");
    let dir = w.data_dir.join("fltidx");
    // (the syscalls to stop at, which one): right after the reservation's link, after the
    // last_reserved_ip overwrite (in place: the cursor grows or keeps its length here), after
    // the index's pwrite (content written, length not yet set), after its ftruncate (complete,
    // the plugin had not answered yet)
    let points: [(&[u64], usize, &str); 5] = [
        (&[SYS_LINK, SYS_LINKAT], 1, "after the reservation's link"),
        (&[SYS_UNLINK, SYS_UNLINKAT], 1, "after the temp file's unlink"),
        (&[SYS_PWRITE64], 1, "after the cursor's in-place write"),
        (&[SYS_PWRITE64], 2, "after the index's pwrite"),
        (&[SYS_FTRUNCATE], 1, "after the index's ftruncate"),
    ];
    let mut n = 0;
    for (stops, at, what) in points {
        // a store with an index that is current (the next ADD would trust it)
        n += 1;
        let keep = format!("keep{n}");
        let kept = w.add(&conf).cid(&keep).run().ok();
        let kept_ip = kept["ips"][0]["address"].as_str().expect("address").to_string();
        assert!(dir.join(INDEX_FILE).is_file(), "{what}: no index written");
        let victim = format!("victim{n}");
        match Plugin::new(&w, "ADD", &conf, &victim, 0).traced(stops, at) {
            Traced::Killed => {}
            other => panic!("{what}: not killed: {other:?}"),
        }
        let held: Vec<String> = w
            .leases("fltidx")
            .into_iter()
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            .filter(|ip| std::fs::read_to_string(dir.join(ip)).is_ok_and(|c| c == format!("{victim}\r\neth0")))
            .collect();
        assert_eq!(held.len(), 1, "{what}: the killed ADD's reservation is on disk: {:?}", w.store("fltidx"));
        let victim_ip = format!("{}/24", held[0]);
        // the next ADD of the same attachment sees the reservation (duplicate refused) ...
        let (code, out) = Plugin::new(&w, "ADD", &conf, &victim, 0).run();
        let (_, msg) = cni_error(code, &out);
        assert!(msg.contains("duplicate allocation is not allowed"), "{what}: {msg}");
        // ... CHECK finds it, another ADD does not get it, DEL releases exactly it
        let mut check = conf.clone();
        check["cniVersion"] = json!("1.0.0");
        let (code, out) = Plugin::new(&w, "CHECK", &check, &victim, 0).run();
        assert_eq!(code, 0, "{what}: CHECK of the killed ADD's lease: {out}");
        let other = w.add(&conf).cid(&format!("other{n}")).run().ok();
        let other_ip = other["ips"][0]["address"].as_str().expect("address").to_string();
        assert!(other_ip != victim_ip && other_ip != kept_ip, "{what}: {other_ip} handed out twice");
        let (code, out) = Plugin::new(&w, "DEL", &conf, &victim, 0).run();
        assert_eq!(code, 0, "{what}: DEL: {out}");
        assert!(!dir.join(&held[0]).exists(), "{what}: DEL left the lease");
        // the index now equals the directory: every lease in one, every line on disk
        let index = std::fs::read_to_string(dir.join(INDEX_FILE)).expect("index");
        let in_index: std::collections::BTreeSet<String> = index
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with("end "))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        let on_disk: std::collections::BTreeSet<String> = w.leases("fltidx").into_iter().collect();
        assert!(on_disk.iter().all(|f| !f.ends_with(".tmp")), "{what}: temp files left: {on_disk:?}");
        assert_eq!(in_index, on_disk, "{what}: index and directory differ");
        assert_eq!(std::fs::metadata(dir.join(INDEX_FILE)).expect("index").permissions().mode() & 0o777, 0o600);
        for c in [keep, format!("other{n}")] {
            w.del(&conf).cid(&c).run().ok();
        }
    }
    assert!(w.leases("fltidx").is_empty(), "{:?}", w.store("fltidx"));
}

/// The answer reaches the runtime in one `write(2)`: std's line-buffered stdout wrote a
/// pretty-printed result up to its last newline, then the closing brace (two wake-ups of the
/// runtime). loopback ADD writes nothing else.
#[test]
fn traced_the_answer_is_one_write() {
    let w = World::new("fltwr", 1, Impl::Ours);
    let conf = json!({"cniVersion": "1.0.0", "name": "fltwr", "type": "loopback"});
    match Plugin::new(&w, "ADD", &conf, "fltwr", 0).traced(&[SYS_WRITE], 0) {
        Traced::Finished { code, stdout, stops } => {
            assert_eq!(code, 0, "{stdout}");
            assert!(stdout.contains("\n    \"interfaces\"") && stdout.ends_with('}'), "{stdout}");
            assert_eq!(stops, 1, "write(2) calls for {stdout:?}");
        }
        Traced::Killed => panic!("not killed"),
    }
}

#[test]
fn faults_lock_of_a_killed_plugin_is_released() {
    let w = World::new("fltlock", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "fltlock");
    // the first ADD stops right after it took the flock
    let (pid, mut first) = Plugin::new(&w, "ADD", &conf, "holder", 0).stopped_holding_lock();
    let second = Plugin::new(&w, "ADD", &conf, "waiter", 0);
    // the second ADD (not traced) must wait for the lock
    let out = {
        let mut child = second.command(false).spawn().expect("spawn second");
        child.stdin.take().expect("stdin").write_all(&second.stdin).expect("stdin");
        std::thread::sleep(Duration::from_millis(700));
        assert!(child.try_wait().expect("try_wait").is_none(), "the second ADD did not wait for the lock");
        kill(pid, Signal::SIGKILL).expect("kill the lock holder");
        let _ = waitpid(pid, None);
        let _ = first.wait();
        let started = Instant::now();
        let out = child.wait_with_output().expect("second ADD");
        assert!(started.elapsed() < Duration::from_secs(10), "the second ADD took too long after the kill");
        out
    };
    assert!(out.status.success(), "second ADD: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(w.leases("fltlock"), vec![s.ip4(2)], "only the second ADD holds a lease");
}

/// A helper process in its own mount namespace with a tmpfs on the world's dataDir.
struct MountHelper {
    pid: u32,
    root: PathBuf,
    ns: PathBuf,
}

fn mount_helper(w: &World, script: &str) -> MountHelper {
    let data = w.data_dir.to_string_lossy().into_owned();
    let full = format!("set -e; {}; echo ready; exec sleep 600", script.replace("DATA", &data));
    let mut child = w
        .host
        .command("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &full])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mount helper");
    let mut buf = [0u8; 6];
    let mut out = child.stdout.take().expect("stdout");
    if out.read_exact(&mut buf).is_err() || &buf != b"ready\n" {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        panic!("mount helper failed: {err}");
    }
    let pid = child.id();
    std::mem::forget(child);
    MountHelper {
        pid,
        root: PathBuf::from(format!("/proc/{pid}/root")),
        ns: PathBuf::from(format!("/proc/{pid}/ns/mnt")),
    }
}

impl MountHelper {
    fn path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
    fn sh(&self, script: &str) {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "sh", "-c", script])
            .output()
            .expect("nsenter");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for MountHelper {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.pid as i32), None);
    }
}

fn store_files(dir: &Path) -> BTreeMap<String, String> {
    state::read_store(dir).into_iter().map(|(k, (m, c))| (k, format!("{m:o} {c:?}"))).collect()
}

fn cni_error(code: i32, out: &str) -> (u64, String) {
    assert_eq!(code, 1, "expected a CNI error, got exit {code}: {out}");
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("error is not JSON ({e}): {out}"));
    (v["code"].as_u64().expect("code"), v["msg"].as_str().expect("msg").to_string())
}

#[test]
fn faults_read_only_data_dir_is_a_clean_error() {
    let w = World::new("fltro", 2, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "fltro");
    let h = mount_helper(&w, "mount -t tmpfs -o size=1m tmpfs DATA");
    // one lease, then the file system goes read-only
    let (code, out) = Plugin::new(&w, "ADD", &conf, "first", 0).in_mntns(&h.ns).run();
    assert_eq!(code, 0, "{out}");
    let data = h.path(&w.data_dir);
    h.sh(&format!("mount -o remount,ro {}", w.data_dir.display()));
    let before = store_files(&data);
    let (code, out) = Plugin::new(&w, "ADD", &conf, "second", 1).in_mntns(&h.ns).run();
    let (c, msg) = cni_error(code, &out);
    assert!(msg.to_lowercase().contains("read-only file system"), "message says why: {msg}");
    assert!([5, 999, 11].contains(&c), "code {c}");
    assert_eq!(store_files(&data), before, "a failed ADD on a read-only dataDir changed the store");
    // DEL cannot release either: a clean error too, nothing changed
    let (code, out) = Plugin::new(&w, "DEL", &conf, "first", 0).in_mntns(&h.ns).run();
    let (_, msg) = cni_error(code, &out);
    assert!(msg.to_lowercase().contains("read-only"), "{msg}");
    assert_eq!(store_files(&data), before);
    // STATUS: not ready (code 50), for this network's directory and for a network without one
    // yet (its nearest existing ancestor, the dataDir, is read-only)
    let mut status = conf.clone();
    status["cniVersion"] = json!("1.1.0");
    for name in ["fltro", "fltro-new"] {
        status["name"] = json!(name);
        let (code, out) = Plugin::new(&w, "STATUS", &status, "", 0).in_mntns(&h.ns).run();
        let (c, msg) = cni_error(code, &out);
        assert_eq!(c, 50, "{name}: {msg}");
        assert!(msg.contains("is not writable") && msg.to_lowercase().contains("read-only"), "{name}: {msg}");
    }
    // writable again: everything works and nothing was corrupted
    h.sh(&format!("mount -o remount,rw {}", w.data_dir.display()));
    let (code, out) = Plugin::new(&w, "STATUS", &status, "", 0).in_mntns(&h.ns).run();
    assert_eq!(code, 0, "{out}");
    assert!(!data.join("fltro-new").exists(), "STATUS created a network directory");
    let (code, out) = Plugin::new(&w, "ADD", &conf, "second", 1).in_mntns(&h.ns).run();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{}/24", s.ip4(3))), "second gets the next address: {out}");
    for cid in ["first", "second"] {
        let (code, out) = Plugin::new(&w, "DEL", &conf, cid, 0).in_mntns(&h.ns).run();
        assert_eq!(code, 0, "{out}");
    }
    let left: Vec<String> = store_files(&data.join("fltro")).into_keys().collect();
    assert!(left.iter().all(|f| f == "lock" || f.starts_with("last_reserved_ip.")), "{left:?}");
}

#[test]
fn faults_disk_full_is_a_clean_error_and_leaves_no_partial_files() {
    let w = World::new("fltfull", 2, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "fltfull");
    let h = mount_helper(&w, "mount -t tmpfs -o size=64k tmpfs DATA");
    let (code, out) = Plugin::new(&w, "ADD", &conf, "first", 0).in_mntns(&h.ns).run();
    assert_eq!(code, 0, "{out}");
    // fill the file system
    h.sh(&format!("dd if=/dev/zero of={}/filler bs=4k 2>/dev/null || true", w.data_dir.display()));
    let data = h.path(&w.data_dir);
    let before = store_files(&data.join("fltfull"));
    let (code, out) = Plugin::new(&w, "ADD", &conf, "second", 1).in_mntns(&h.ns).run();
    let (_, msg) = cni_error(code, &out);
    assert!(msg.to_lowercase().contains("no space left"), "message says why: {msg}");
    assert_eq!(store_files(&data.join("fltfull")), before, "disk full left partial files in the store");
    // room again: the next ADD succeeds
    h.sh(&format!("rm {}/filler", w.data_dir.display()));
    let (code, out) = Plugin::new(&w, "ADD", &conf, "second", 1).in_mntns(&h.ns).run();
    assert_eq!(code, 0, "{out}");
    for cid in ["first", "second"] {
        let (code, out) = Plugin::new(&w, "DEL", &conf, cid, 0).in_mntns(&h.ns).run();
        assert_eq!(code, 0, "{out}");
    }
}

#[test]
fn faults_torn_store_files_are_tolerated() {
    let w = World::new("flttorn", 3, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "flttorn");
    let r0 = w.add(&conf).cid("c0").container(0).run().ok();
    let r1 = w.add(&conf).cid("c1").container(1).run().ok();
    let dir = w.data_dir.join("flttorn");
    // a lease torn mid-file ("c0\r" of "c0\r\neth0") and a torn cursor ("198.1")
    let lease0 = dir.join(s.ip4(2));
    let full = std::fs::read(&lease0).expect("lease of c0");
    std::fs::write(&lease0, &full[..3]).expect("tear lease");
    std::fs::write(dir.join("last_reserved_ip.0"), "198.1").expect("tear cursor");
    // an empty lease (a writer died between create and write)
    std::fs::write(dir.join(s.ip4(9)), "").expect("empty lease");
    let r2 = w.add(&conf).cid("c2").container(2).run().ok();
    let ip2 = r2["ips"][0]["address"].as_str().expect("address").to_string();
    for taken in [&r0, &r1] {
        assert_ne!(taken["ips"][0]["address"].as_str(), Some(ip2.as_str()), "torn store handed out a held address");
    }
    assert_ne!(ip2, format!("{}/24", s.ip4(9)), "an empty lease file still holds its address");
    // DEL of the torn owner and of the others succeed; GC removes what nobody owns
    for c in ["c0", "c1", "c2"] {
        w.del(&conf).cid(c).run().ok();
    }
    let mut g = conf.clone();
    g["cniVersion"] = json!("1.1.0");
    g["cni.dev/valid-attachments"] = json!([]);
    w.cni("GC", &g).unset("CNI_CONTAINERID").unset("CNI_IFNAME").unset("CNI_NETNS").run().ok();
    let left = w.leases("flttorn");
    assert!(left.is_empty(), "leases left after DEL + GC: {left:?}");
    let again = w.add(&conf).cid("c0").container(0).run().ok();
    assert!(again["ips"][0]["address"].is_string());
}

#[test]
fn faults_store_files_are_private_and_no_temp_files_remain() {
    let w = World::new("fltmode", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "fltmode");
    // a umask that would make files world-readable must not matter
    w.add(&conf).cid("c0").run().ok();
    let dir = w.data_dir.join("fltmode");
    let md = std::fs::metadata(&dir).expect("network dir");
    assert_eq!(md.permissions().mode() & 0o7777, 0o755, "the network dir keeps the reference's 0755");
    let store = state::read_store(&dir);
    assert!(!store.is_empty());
    for (name, (mode, _)) in &store {
        assert!(!name.starts_with('.') && !name.ends_with(".tmp"), "temp file left: {name}");
        assert_eq!(*mode, 0o600, "{name} has mode {mode:o}");
    }
}

#[test]
fn faults_temp_file_of_a_killed_writer_is_removed() {
    // a plugin killed between writing a reservation's temp file and linking it (or while
    // replacing last_reserved_ip) leaves a dot-file; the next lock holder removes it
    let w = World::new("flttmp", 1, Impl::Ours);
    let s = Subnets::alloc();
    let conf = hl_conf(&w, &s, "flttmp");
    w.add(&conf).cid("c0").run().ok();
    let dir = w.data_dir.join("flttmp");
    let stale = [format!(".{}.4242.tmp", s.ip4(7)), ".last_reserved_ip.0.tmp".to_string()];
    for f in &stale {
        std::fs::write(dir.join(f), "c9\r\neth0").expect("write temp file");
    }
    w.del(&conf).cid("c0").run().ok();
    for f in &stale {
        assert!(!dir.join(f).exists(), "{f} still there after the next DEL");
    }
}

#[test]
fn log_file_named_by_the_config_is_created_private() {
    // the `log` key's file was created 0644 (umask-dependent): container ids and configs
    // readable by every local user
    let w = World::new("fltlog", 1, Impl::Ours);
    let s = Subnets::alloc();
    let log = w.tmp.join("plugin.log");
    let mut conf = hl_conf(&w, &s, "fltlog");
    conf["log"] = json!(log);
    w.add(&conf).cid("c0").env("CNI_MULTI_LOG", "debug").run().ok();
    let md = std::fs::metadata(&log).expect("log file created");
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "log file mode {:o}", md.permissions().mode() & 0o777);
    assert!(md.len() > 0, "something was logged");
}
