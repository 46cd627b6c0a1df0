//! Request order and rollback of the veth plugins, without root: the plugins run through the
//! protocol entry point (`cni::io::run`) against the recording fake of `netlink::fake` (fake
//! namespaces, sysctls and rtnetlink objects; host-local's store in a temp dir, delegated
//! in-process). For bridge and ptp, ADD is failed at EVERY netlink request index and the exact
//! rollback is checked: which requests undo what, in which order relative to the IPAM release,
//! and that nothing but the bridge remains (kept, as with the reference, but down again and
//! without the gateway address this ADD gave it).

use crate::cni::io::{self, Io};
use crate::netlink::fake::FakeKernel;
use std::path::PathBuf;

const CONT: &str = "/fake/netns/cont";
const EIO: i32 = 5;

/// A temp dir (IPAM store, CNI_PATH) removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cni-order-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("bin")).unwrap();
        // host-local resolves to this test binary, so it is delegated in-process
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), p.join("bin/host-local")).unwrap();
        TempDir(p)
    }
    fn store(&self) -> PathBuf {
        self.0.join("ipam")
    }
    fn leases(&self) -> Vec<String> {
        leases_in(&self.store())
    }
}

/// The IPs host-local holds a reservation for in `store` (file names that parse as an IP).
fn leases_in(store: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.join("ordnet"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.retain(|n| n.parse::<std::net::IpAddr>().is_ok());
    v.sort();
    v
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn conf(plugin: &str, extra: &str, dir: &TempDir) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"ordnet","type":"{plugin}"{extra},
            "ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"198.18.7.0/24"}}]]}}}}"#,
        dir.store().display()
    )
}

/// Run one verb; returns the exit code and stdout.
fn run(plugin: &str, command: &str, conf: &str, dir: &TempDir) -> (i32, String) {
    let env = [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", "ctr-order-1".to_string()),
        ("CNI_NETNS", CONT.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", dir.0.join("bin").display().to_string()),
    ];
    let mut io = Io::new(env, conf.as_bytes().to_vec());
    // the registry makes host-local run in-process; without it the delegation would exec this
    // test binary as `host-local`, which would run the whole test suite again
    io.plugins = crate::applets::find;
    let applet = crate::applets::find(plugin).unwrap();
    let code = io::run(applet, &mut io);
    (code, io.stdout_str())
}

fn print(log: &[String]) -> String {
    log.iter().enumerate().map(|(i, l)| format!("{i:3} {l}\n")).collect()
}

const BRIDGE: &str = r#","bridge":"cni-o0","isDefaultGateway":true"#;

/// Entries of the log without the " [..]" annotation.
fn plain(log: &[String]) -> Vec<String> {
    log.iter().map(|l| l.split(" [").next().unwrap_or(l).to_string()).collect()
}

#[track_caller]
fn assert_log(got: &[String], want: &[&str]) {
    assert_eq!(plain(got), want, "request log:\n{}", print(got));
}

const BRIDGE_ADD: &[&str] = &[
    "host: get link cni-o0",
    "host: create bridge cni-o0",
    "host: get link cni-o0",
    "host: sysctl net/ipv6/conf/cni-o0/accept_ra=0",
    "host: set link cni-o0 up",
    "cont: create veth eth0 peer veth*",
    "host: get link veth*",
    "host: sysctl net/ipv6/conf/veth*/accept_ra=0",
    "host: set link veth* up master cni-o0",
    "host: get link cni-o0",
    "cont: sysctl net/ipv6/conf/eth0/accept_dad=0",
    "cont: set link eth0 ipv4 conf arp_notify=1",
    "cont: add addr 198.18.7.2/24 dev eth0",
    "cont: set link eth0 up",
    "cont: add route default via 198.18.7.1 dev eth0",
    "host: dump addrs",
    "host: dump links",
    "host: add addr 198.18.7.1/24 dev cni-o0",
    "host: set link cni-o0 address",
    "host: get netconf inet",
    "host: sysctl net/ipv4/ip_forward=1",
    "host: get link veth*",
];
const PTP_ADD: &[&str] = &[
    "host: get netconf inet",
    "host: sysctl net/ipv4/ip_forward=1",
    "cont: create veth eth0 peer veth*",
    "host: get link veth*",
    "host: sysctl net/ipv6/conf/veth*/accept_ra=0",
    "host: set link veth* up",
    "cont: add addr 198.18.7.2/24 dev eth0",
    "cont: set link eth0 up",
    "cont: delete route 198.18.7.0/24 dev eth0",
    "cont: add route 198.18.7.1/32 dev eth0",
    "cont: add route 198.18.7.0/24 via 198.18.7.1 dev eth0",
    "host: add addr 198.18.7.1/32 dev veth*",
    "host: add route 198.18.7.2/32 dev veth*",
];
const VPC_ROUTED_ADD: &[&str] = &[
    "host: get netconf inet",
    "host: sysctl net/ipv4/ip_forward=1",
    "host: get link eni87b98059725",
    "cont: create veth eth0 peer eni87b98059725",
    "host: get link eni87b98059725",
    "host: sysctl net/ipv6/conf/eni87b98059725/accept_ra=0",
    "host: set link eni87b98059725 up",
    "cont: set link eth0 up",
    "cont: add addr 198.18.7.2/32 dev eth0",
    "cont: add route 169.254.1.1/32 dev eth0",
    "cont: add route default via 169.254.1.1 dev eth0",
    "cont: add neigh",
    "host: add route 198.18.7.2/32 dev eni87b98059725",
    "host: delete rule pref 512 to 198.18.7.2/32",
    "host: add rule pref 512 to 198.18.7.2/32",
];

#[test]
fn bridge_add_request_order() {
    let dir = TempDir::new("bridge");
    let k = FakeKernel::install(&[CONT]);
    let (code, out) = run("bridge", "ADD", &conf("bridge", BRIDGE, &dir), &dir);
    assert_eq!(code, 0, "{out}");
    assert_log(&k.log(), BRIDGE_ADD);
    assert_eq!(k.links(), ["cni-o0@host", "eth0@cont", "veth*@host"]);
    assert_eq!(dir.leases(), ["198.18.7.2"]);
    assert_container_end(&out); // as the kernel echoed its creation
}

/// The result names the container end, with its MAC.
#[track_caller]
fn assert_container_end(out: &str) {
    let r: serde_json::Value = serde_json::from_str(out).unwrap();
    assert_eq!(r["interfaces"][2]["name"], "eth0", "{out}");
    assert!(r["interfaces"][2]["mac"].as_str().is_some_and(|m| m.len() == 17), "{out}");
}

/// A kernel that does not echo the new veth (before 6.2) costs one lookup of the container end,
/// right after the creation; the rest is the same.
#[test]
fn bridge_add_on_a_kernel_without_echo_looks_the_container_end_up() {
    let dir = TempDir::new("bridge-noecho");
    let k = FakeKernel::install(&[CONT]);
    k.without_echo();
    let (code, out) = run("bridge", "ADD", &conf("bridge", BRIDGE, &dir), &dir);
    assert_eq!(code, 0, "{out}");
    let mut want = BRIDGE_ADD.to_vec();
    let at = want.iter().position(|l| l.starts_with("host: sysctl net/ipv6/conf/veth*")).unwrap() + 1;
    want.insert(at, "cont: get link eth0");
    assert_log(&k.log(), &want);
    assert_container_end(&out);
}

/// On a bridge that has its settings (made by an earlier ADD), an ADD writes no bridge sysctl,
/// does not write forwarding again (what the link dump and netconf say is already so), and does
/// not set the bridge's MAC again, as the reference sets it only after adding a gateway address
/// (the kernel announces even an unchanged MAC as a change, which flushes the bridge's
/// neighbours); the result's bridge MAC is then the one looked up once the port has joined.
#[test]
fn bridge_add_on_a_configured_bridge_skips_settings_already_made() {
    let dir = TempDir::new("bridge2");
    let k = FakeKernel::install(&[CONT]);
    let c = conf("bridge", BRIDGE, &dir);
    let (code, first_out) = run("bridge", "ADD", &c, &dir);
    assert_eq!(code, 0, "{first_out}");
    assert_eq!(run("bridge", "DEL", &c, &dir).0, 0);
    let n = k.log().len();
    let (code, out) = run("bridge", "ADD", &c, &dir);
    assert_eq!(code, 0, "{out}");
    let second = plain(&k.log()[n..]);
    assert_eq!(second.first().map(String::as_str), Some("host: get link cni-o0"));
    assert!(second.iter().any(|l| l == "host: get netconf inet"), "{second:?}");
    assert!(!second.iter().any(|l| l.contains("cni-o0 address")), "{second:?}");
    let joined = second.iter().position(|l| l == "host: set link veth* up master cni-o0").unwrap();
    assert_eq!(second.get(joined + 1).map(String::as_str), Some("host: get link cni-o0"), "{second:?}");
    assert_eq!(second.last().map(String::as_str), Some("host: get link veth*"), "{second:?}");
    let first: serde_json::Value = serde_json::from_str(&first_out).unwrap();
    let now: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(now["interfaces"][0]["mac"], first["interfaces"][0]["mac"], "{out}");
    let sysctls: Vec<&String> = second.iter().filter(|l| l.contains(": sysctl ")).collect();
    assert_eq!(
        sysctls,
        ["host: sysctl net/ipv6/conf/veth*/accept_ra=0", "cont: sysctl net/ipv6/conf/eth0/accept_dad=0"],
        "{second:?}"
    );
}

/// A bridge at the kernel's port limit refuses the port with EXFULL, for which musl has no
/// text: the error names the limit, and the ADD rolls back.
#[test]
fn bridge_add_on_a_full_bridge_says_so() {
    const EXFULL: i32 = 54;
    let dir = TempDir::new("bridgefull");
    let k = FakeKernel::install(&[CONT]);
    let n = BRIDGE_ADD.iter().filter(|l| !l.contains(": sysctl ")).position(|l| l.contains("up master")).unwrap();
    k.fail_at(n, EXFULL);
    let (code, out) = run("bridge", "ADD", &conf("bridge", BRIDGE, &dir), &dir);
    assert_ne!(code, 0);
    assert!(out.contains("maximum of 1023 ports") && out.contains("Exchange full (os error 54)"), "{out}");
    assert!(!out.contains("No error information"), "{out}");
    assert_eq!(k.links(), ["cni-o0@host"], "the veth pair is rolled back");
    assert!(dir.leases().is_empty());
}

/// The errors are v1.9.1's words, the kernel's errno as Go prints it (`operation not
/// supported`, not our `Not supported (os error 95)`), the request's own description left out:
/// a bridge the kernel cannot make (no bridge support: EOPNOTSUPP), one it cannot set up, and a
/// veth pair it refuses (a multicast MAC: EADDRNOTAVAIL). Each ADD rolls back.
#[test]
fn bridge_add_errors_are_the_references_words() {
    const EOPNOTSUPP: i32 = 95;
    const EADDRNOTAVAIL: i32 = 99;
    for (req, errno, want) in [
        (
            "host: create bridge cni-o0",
            EOPNOTSUPP,
            "failed to create bridge \"cni-o0\": could not add \"cni-o0\": operation not supported",
        ),
        ("host: set link cni-o0 up", EIO, "failed to create bridge \"cni-o0\": input/output error"),
        (
            "cont: create veth eth0 peer veth*",
            EADDRNOTAVAIL,
            "failed to make veth pair: cannot assign requested address",
        ),
    ] {
        let dir = TempDir::new("bridgewords");
        let k = FakeKernel::install(&[CONT]);
        let n = BRIDGE_ADD.iter().filter(|l| !l.contains(": sysctl ")).position(|l| *l == req).unwrap();
        k.fail_at(n, errno);
        let (code, out) = run("bridge", "ADD", &conf("bridge", BRIDGE, &dir), &dir);
        assert_eq!(code, 1, "{out}");
        let e: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((e["code"].as_u64(), e["msg"].as_str()), (Some(999), Some(want)), "{req}");
        assert!(k.links().iter().all(|l| l == "cni-o0@host") && dir.leases().is_empty(), "{req}: {:?}", k.links());
    }
}

/// A concurrent ADD that brought the bridge up and failed takes it down again when no port had
/// joined it when it looked: our port may join just after. The bridge, looked up once our port
/// has joined, is then set up again, so the pod is not left on a bridge that is down.
#[test]
fn bridge_add_sets_up_a_bridge_that_went_down_meanwhile() {
    let dir = TempDir::new("bridgedown");
    let k = FakeKernel::install(&[CONT]);
    let n = BRIDGE_ADD.iter().filter(|l| !l.contains(": sysctl ")).position(|l| l.contains("up master")).unwrap();
    k.down_after(n, "cni-o0");
    let (code, out) = run("bridge", "ADD", &conf("bridge", BRIDGE, &dir), &dir);
    assert_eq!(code, 0, "{out}");
    let mut want = BRIDGE_ADD.to_vec();
    let looked = want.iter().position(|l| l.contains("up master")).unwrap() + 2;
    want.insert(looked, "host: set link cni-o0 up");
    assert_log(&k.log(), &want);
}

#[test]
fn ptp_add_request_order() {
    let dir = TempDir::new("ptp");
    let k = FakeKernel::install(&[CONT]);
    let (code, out) = run("ptp", "ADD", &conf("ptp", "", &dir), &dir);
    assert_eq!(code, 0, "{out}");
    assert_log(&k.log(), PTP_ADD);
    assert_eq!(k.links(), ["eth0@cont", "veth*@host"]);
}

#[test]
fn vpc_routed_add_request_order() {
    let dir = TempDir::new("vpc");
    let k = FakeKernel::install(&[CONT]);
    let (code, out) = run("vpc-routed", "ADD", &conf("vpc-routed", "", &dir), &dir);
    assert_eq!(code, 0, "{out}");
    assert_log(&k.log(), VPC_ROUTED_ADD);
}

/// What a failed ADD left, per failure index: the log up to and including the failed request,
/// the rollback after it, and the state at the end.
struct Failed {
    /// Log entries before the failed request (annotations dropped).
    before: Vec<String>,
    /// The rollback: log entries after the failed request, with their IPAM annotation.
    rollback: Vec<String>,
    /// Leases held when the failed request was sent.
    leases_at_failure: String,
    links: Vec<String>,
    addrs: Vec<String>,
    leases: Vec<String>,
}

/// ADD of `plugin` with netlink request `n` failing (EIO); every log entry is annotated with
/// the IPAM store's leases at the time.
fn add_failing_at(plugin: &str, extra: &str, n: usize) -> Failed {
    let dir = TempDir::new(plugin);
    let k = FakeKernel::install(&[CONT]);
    k.fail_at(n, EIO);
    let store = dir.store();
    k.annotate(move || {
        let l = leases_in(&store);
        format!("leases: {}", if l.is_empty() { "-".to_string() } else { l.join(",") })
    });
    let (code, out) = run(plugin, "ADD", &conf(plugin, extra, &dir), &dir);
    let log = k.log();
    assert_ne!(code, 0, "{plugin} ADD succeeded with request {n} failing:\n{out}\n{}", print(&log));
    assert!(out.contains("\"code\""), "{plugin}: a CNI error on stdout: {out}");
    let at = log.iter().position(|l| l.ends_with(&format!("-> error {EIO}"))).unwrap();
    let note = log[at].split(" [").nth(1).unwrap_or_default();
    Failed {
        before: plain(&log[..at]),
        rollback: log[at + 1..].to_vec(),
        leases_at_failure: note.split(']').next().unwrap_or_default().to_string(),
        links: k.links(),
        addrs: k.addrs(),
        leases: dir.leases(),
    }
}

/// Netlink requests of a successful ADD (the sysctl writes in the log are not requests).
fn requests(log: &[&str]) -> usize {
    log.iter().filter(|l| !l.contains(": sysctl ")).count()
}

/// Requests whose failure an ADD rides out, as the reference ignores its sysctl errors:
/// arp_notify (set over rtnetlink) and the forwarding read (read again through /proc/sys).
fn tolerated(log: &[&str], n: usize) -> bool {
    let req = log.iter().filter(|l| !l.contains(": sysctl ")).nth(n).copied().unwrap_or_default();
    req.contains("ipv4 conf arp_notify=1") || req.contains("get netconf")
}

/// ADD of `plugin` with request `n` failing succeeds and leaves what a good ADD leaves.
fn add_riding_out(plugin: &str, extra: &str, n: usize, good: &[&str]) {
    let dir = TempDir::new(plugin);
    let k = FakeKernel::install(&[CONT]);
    k.fail_at(n, EIO);
    let (code, out) = run(plugin, "ADD", &conf(plugin, extra, &dir), &dir);
    assert_eq!(code, 0, "{plugin} ADD with request {n} failing:\n{out}\n{}", print(&k.log()));
    let mut log = plain(&k.log());
    let failed = log.iter().position(|l| l.ends_with(&format!("-> error {EIO}"))).unwrap();
    let what = log.remove(failed);
    // every other step as in a good ADD (the forwarding read falls back to /proc/sys)
    let mut want: Vec<&str> = good.to_vec();
    want.retain(|l| format!("{l} -> error {EIO}") != what);
    assert_eq!(log, want, "{plugin}, request {n} failing:\n{}", print(&k.log()));
    assert_eq!(dir.leases().len(), 1, "{plugin}, request {n} failing");
}

#[test]
fn bridge_add_rolls_back_at_every_request() {
    let total = requests(BRIDGE_ADD);
    assert_eq!(total, 18);
    for n in 0..total {
        if tolerated(BRIDGE_ADD, n) {
            add_riding_out("bridge", BRIDGE, n, BRIDGE_ADD);
            continue;
        }
        let f = add_failing_at("bridge", BRIDGE, n);
        let at = f.before.len();
        // the same steps as a good ADD, up to the failed request
        assert_eq!(f.before, BRIDGE_ADD[..at], "failure at request {n}");
        let done = |req: &str| f.before.iter().any(|l| l == req);
        // undo in reverse: the gateway address goes (no port joined the bridge since it was
        // added), the IPAM reservation is released (it was made after the veth), the container
        // veth (with its host peer) is deleted, and the bridge this ADD brought up goes down
        // again (no port joined it); the bridge stays, as with the reference
        let mut want: Vec<&str> = vec![];
        if done("host: add addr 198.18.7.1/24 dev cni-o0") {
            want.extend([
                "host: dump links [leases: 198.18.7.2]",
                "host: delete addr 198.18.7.1/24 dev cni-o0 [leases: 198.18.7.2]",
            ]);
        }
        if done("cont: create veth eth0 peer veth*") {
            want.extend([
                "cont: get link eth0 [leases: -]",
                "cont: dump addrs [leases: -]",
                "cont: delete link eth0 [leases: -]",
            ]);
        }
        if done("host: set link cni-o0 up") {
            want.extend([
                "host: dump links [leases: -]",
                "host: set link cni-o0 down [leases: -]",
                "host: dump links [leases: -]",
            ]);
        }
        assert_eq!(f.rollback, want, "rollback after a failure at request {n}");
        let links: &[&str] = if done("host: create bridge cni-o0") { &["cni-o0@host"] } else { &[] };
        assert_eq!(f.links, links, "links left after a failure at request {n}");
        assert!(f.addrs.is_empty(), "addresses left after a failure at request {n}: {:?}", f.addrs);
        assert!(f.leases.is_empty(), "lease left after a failure at request {n}: {:?}", f.leases);
        // IPAM runs between the port coming up and the container sysctls
        let ipam = f.before.iter().any(|l| l.starts_with("cont: sysctl"));
        assert_eq!(f.leases_at_failure != "leases: -", ipam, "request {n}: {}", f.leases_at_failure);
    }
}

#[test]
fn ptp_add_rolls_back_at_every_request() {
    let total = requests(PTP_ADD);
    assert_eq!(total, 11);
    for n in 0..total {
        if tolerated(PTP_ADD, n) {
            add_riding_out("ptp", "", n, PTP_ADD);
            continue;
        }
        let f = add_failing_at("ptp", "", n);
        let at = f.before.len();
        assert_eq!(f.before, PTP_ADD[..at], "failure at request {n}");
        // ptp allocates first, so the reservation is held at every failure and released last:
        // the container veth (and with it the host end, its address and routes) goes first
        assert_eq!(f.leases_at_failure, "leases: 198.18.7.2", "request {n}");
        let veth = f.before.iter().any(|l| l == "cont: create veth eth0 peer veth*");
        let want: &[&str] = if veth {
            &[
                "cont: get link eth0 [leases: 198.18.7.2]",
                "cont: dump addrs [leases: 198.18.7.2]",
                "cont: delete link eth0 [leases: 198.18.7.2]",
            ]
        } else {
            &[]
        };
        assert_eq!(f.rollback, want, "rollback after a failure at request {n}");
        assert!(f.links.is_empty(), "links left after a failure at request {n}: {:?}", f.links);
        assert!(f.addrs.is_empty(), "addresses left after a failure at request {n}: {:?}", f.addrs);
        assert!(f.leases.is_empty(), "lease left after a failure at request {n}: {:?}", f.leases);
    }
}

#[test]
fn bridge_and_ptp_del_undo_the_add_and_repeat_as_no_ops() {
    for (plugin, extra, left) in [("bridge", BRIDGE, &["cni-o0@host"][..]), ("ptp", "", &[][..])] {
        let dir = TempDir::new(plugin);
        let k = FakeKernel::install(&[CONT]);
        let c = conf(plugin, extra, &dir);
        let (code, out) = run(plugin, "ADD", &c, &dir);
        assert_eq!(code, 0, "{out}");
        let n = k.log().len();
        let (code, out) = run(plugin, "DEL", &c, &dir);
        assert_eq!((code, out.as_str()), (0, ""), "{plugin} DEL");
        let del = k.log()[n..].to_vec();
        assert_log(&del, &["cont: get link eth0", "cont: dump addrs", "cont: delete link eth0"]);
        assert_eq!(k.links(), left, "{plugin}: links after DEL");
        assert!(dir.leases().is_empty(), "{plugin}: leases after DEL");
        // DEL again: the link is gone, which is success
        let n = k.log().len();
        let (code, out) = run(plugin, "DEL", &c, &dir);
        assert_eq!((code, out.as_str()), (0, ""), "{plugin} second DEL");
        assert_log(&k.log()[n..], &["cont: get link eth0"]);
    }
}
