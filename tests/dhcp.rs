//! dhcp IPAM + lease daemon against a real DHCP server (Debian's dnsmasq).
//!
//! World per test: a "server" netns holding a bridge with dnsmasq on it (198.19.N.0/24),
//! and container netnses whose `eth0` is a veth enslaved to that bridge. Everything is
//! created by the test and removed by `World`'s Drop. Needs root.
//!
//! Most tests drive the daemon and the plugin's verb functions in-process (so they do not
//! depend on the CLI layer); the `process_*` tests run the real binary and skip (with a
//! message) while the CLI dispatch does not yet know `dhcp` / `dhcp daemon`.

use cni_multi::cni::{Command, Ctx};
use cni_multi::ipam::dhcp::client::ClientOptions;
use cni_multi::ipam::dhcp::daemon::{bind_socket, Daemon, DaemonConfig};
use cni_multi::ipam::dhcp::rpc::{Method, Request};
use cni_multi::ipam::dhcp::APPLET;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> String {
    let out = Proc::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(args: &[&str]) -> bool {
    Proc::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The test world. `subnet` is the third octet of 198.19.N.0/24, unique per test.
struct World {
    tag: String,
    subnet: u8,
    server: String,
    containers: Vec<String>,
    dir: PathBuf,
    dnsmasq: Option<Child>,
    daemons: Vec<(Arc<Daemon>, PathBuf)>,
    procs: Vec<Child>,
}

impl World {
    fn new(tag: &str, subnet: u8) -> World {
        let pid = std::process::id();
        let tag = format!("dh{tag}{pid}");
        let dir = std::env::temp_dir().join(format!("cni-multi-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = format!("{tag}s");
        let w = World {
            tag,
            subnet,
            server: server.clone(),
            containers: vec![],
            dir,
            dnsmasq: None,
            daemons: vec![],
            procs: vec![],
        };
        run(&["ip", "netns", "add", &server]);
        run(&["ip", "-n", &server, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &server, "link", "add", "br0", "type", "bridge", "forward_delay", "0"]);
        run(&["ip", "-n", &server, "addr", "add", &format!("198.19.{subnet}.1/24"), "dev", "br0"]);
        run(&["ip", "-n", &server, "link", "set", "br0", "up"]);
        w
    }

    fn server_ip(&self) -> String {
        format!("198.19.{}.1", self.subnet)
    }

    /// A container netns with `eth0` on the server's bridge; returns the netns path.
    fn container(&mut self, n: usize) -> String {
        let name = format!("{}c{n}", self.tag);
        run(&["ip", "netns", "add", &name]);
        self.containers.push(name.clone());
        let host = format!("vh{n}");
        run(&["ip", "-n", &self.server, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &name]);
        run(&["ip", "-n", &self.server, "link", "set", &host, "master", "br0", "up"]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &name, "link", "set", "eth0", "up"]);
        format!("/run/netns/{name}")
    }

    fn leases_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    fn start_dnsmasq(&mut self, extra: &[&str]) {
        let s = self.subnet;
        let mut cmd = Proc::new("ip");
        cmd.args(["netns", "exec", &self.server, "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .arg(format!("--pid-file={}", self.dir.join("dnsmasq.pid").display()))
            .arg(format!("--dhcp-leasefile={}", self.leases_file().display()))
            .arg(format!("--log-facility={}", self.dir.join("dnsmasq.log").display()))
            .args(["--port=0", "--no-resolv", "--no-hosts", "--bind-interfaces", "--interface=br0", "--user=root"])
            .args(["--no-ping", "--log-dhcp", "--dhcp-authoritative"])
            .arg(format!("--dhcp-range=198.19.{s}.10,198.19.{s}.50,2m"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.dnsmasq = Some(cmd.spawn().expect("dnsmasq"));
        // wait until it listens on port 67
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let out = Proc::new("ip").args(["netns", "exec", &self.server, "ss", "-uanl"]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(":67 ") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq did not start: {}", std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default());
    }

    /// dnsmasq's lease file lines: (expiry, ip, hostname)
    fn server_leases(&self) -> Vec<(u64, String, String)> {
        std::fs::read_to_string(self.leases_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.parse().ok()?, f.get(2)?.to_string(), f.get(3)?.to_string()))
            })
            .collect()
    }

    fn wait_for(&self, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; dnsmasq log:\n{}", self.dnsmasq_log());
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    fn daemon_config(&self) -> DaemonConfig {
        DaemonConfig {
            socket_path: self.dir.join("dhcp.sock"),
            state_dir: self.dir.join("state"),
            timeout: Duration::from_secs(5),
            resend_max: Duration::from_secs(4),
            link_check: Duration::from_secs(1),
            ..DaemonConfig::default()
        }
    }

    /// Start the daemon in-process, serving its socket.
    fn start_daemon(&mut self, cfg: DaemonConfig) -> Arc<Daemon> {
        let listener = bind_socket(&cfg.socket_path).unwrap();
        let d = Daemon::start(cfg.clone()).unwrap();
        let d2 = Arc::clone(&d);
        std::thread::spawn(move || d2.serve(listener));
        self.daemons.push((Arc::clone(&d), cfg.socket_path));
        d
    }

    fn stop_daemons(&mut self) {
        for (d, sock) in self.daemons.drain(..) {
            d.stop(Some(&sock));
            let _ = std::fs::remove_file(&sock);
        }
    }

    fn ctx(&self, command: Command, id: &str, netns: &str, ifname: &str, ipam: serde_json::Value) -> Ctx {
        let conf = serde_json::json!({"cniversion": "1.0.0", "name": "dhcpnet", "type": "x", "ipam": ipam});
        Ctx {
            command,
            container_id: id.to_string(),
            netns: Some(netns.to_string()),
            ifname: ifname.to_string(),
            args: vec![("K8S_POD_NAME".to_string(), format!("pod-{id}"))],
            stdin: serde_json::to_vec(&conf).unwrap(),
            conf,
            version: "1.0.0".into(),
            name: "dhcpnet".into(),
            ..Ctx::new(command)
        }
    }

    fn ipam(&self) -> serde_json::Value {
        serde_json::json!({"type": "dhcp", "daemonsocketpath": self.dir.join("dhcp.sock")})
    }

    fn state_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("state"))
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_daemons();
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in &self.containers {
            let _ = Proc::new("ip").args(["netns", "del", c]).status();
        }
        let _ = Proc::new("ip").args(["netns", "del", &self.server]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn addr_of(r: &cni_multi::cni::CniResult) -> String {
    r.ips.first().expect("an IP").address.to_string()
}

fn in_range(addr: &str, subnet: u8) -> bool {
    let ip = addr.split('/').next().unwrap();
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
    o[..3] == [198, 19, subnet] && (10..=50).contains(&o[3]) && addr.ends_with("/24")
}

fn configure(netns_path: &str, addr: &str) {
    let ns = Path::new(netns_path).file_name().unwrap().to_str().unwrap();
    run(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
}

#[test]
fn dhcp_add_ping_second_lease_options_and_release() {
    let mut w = World::new("a", 61);
    let srv = w.server_ip();
    w.start_dnsmasq(&[&format!(
        "--dhcp-option=option:classless-static-route,198.18.0.0/16,198.19.61.254,0.0.0.0/0,{srv}"
    )]);
    let c1 = w.container(1);
    let c2 = w.container(2);
    let _d = w.start_daemon(w.daemon_config());

    // ADD through the plugin's verb function (as the CLI will call it)
    let r1 = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).expect("ADD c1");
    let a1 = addr_of(&r1);
    assert!(in_range(&a1, 61), "{a1}");
    assert_eq!(r1.ips[0].gateway.map(|g| g.to_string()), Some(srv.clone()));
    assert_eq!(r1.routes.len(), 1, "default route via router: {:?}", r1.routes);
    assert_eq!(r1.routes[0].dst.to_string(), "0.0.0.0/0");
    configure(&c1, &a1);
    let ns1 = Path::new(&c1).file_name().unwrap().to_str().unwrap();
    assert!(ok(&["ip", "netns", "exec", ns1, "ping", "-c1", "-W2", &srv]), "container 1 cannot ping the server");

    // the second container asks for option 121 and provides a host name from CNI_ARGS
    let ipam2 = serde_json::json!({
        "type": "dhcp", "daemonsocketpath": w.dir.join("dhcp.sock"), "priority": 7,
        "request": [{"option": "121"}],
        "provide": [{"option": "host-name", "fromarg": "K8S_POD_NAME"}],
    });
    // ...and its interface is down: the daemon sets it up, like the reference
    let ns2 = Path::new(&c2).file_name().unwrap().to_str().unwrap().to_string();
    run(&["ip", "-n", &ns2, "link", "set", "eth0", "down"]);
    let r2 = (APPLET.add)(&w.ctx(Command::Add, "ctr2", &c2, "eth0", ipam2.clone())).expect("ADD c2");
    assert!(run(&["ip", "-n", &ns2, "link", "show", "eth0"]).contains(",UP"));
    let a2 = addr_of(&r2);
    assert!(in_range(&a2, 61), "{a2}");
    assert_ne!(a1, a2);
    let routes: Vec<String> = r2.routes.iter().map(|r| format!("{} {:?} {:?}", r.dst, r.gw, r.priority)).collect();
    assert_eq!(
        routes,
        vec!["198.18.0.0/16 Some(198.19.61.254) Some(7)".to_string(), format!("0.0.0.0/0 Some({srv}) Some(7)")]
    );
    let leases = w.server_leases();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert!(leases.iter().any(|(_, ip, host)| a2.starts_with(&format!("{ip}/")) && host == "pod-ctr2"), "{leases:?}");

    // ADD again returns the same lease; CHECK succeeds
    let again = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).unwrap();
    assert_eq!(addr_of(&again), a1);
    (APPLET.check)(&w.ctx(Command::Check, "ctr1", &c1, "eth0", w.ipam())).expect("CHECK");
    assert!((APPLET.check)(&w.ctx(Command::Check, "nope", &c1, "eth0", w.ipam())).is_err());
    (APPLET.status.unwrap())(&w.ctx(Command::Status, "", "", "", w.ipam())).expect("STATUS");

    // persisted: dir 0700, files 0600
    let files = w.state_files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(std::fs::metadata(w.dir.join("state")).unwrap().permissions().mode() & 0o777, 0o700);
    for f in &files {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // DEL releases at the server
    (APPLET.del)(&w.ctx(Command::Del, "ctr1", &c1, "eth0", w.ipam())).expect("DEL c1");
    let ip1 = a1.split('/').next().unwrap().to_string();
    // (dnsmasq rewrites its lease file in place: wait for the expected content, not just any)
    w.wait_for("dnsmasq to drop only the released lease", 5, || {
        let l = w.server_leases();
        l.len() == 1 && l.iter().all(|(_, ip, _)| *ip != ip1)
    });
    assert_eq!(w.state_files().len(), 1);
    // DEL again (and DEL of something never added) succeeds
    (APPLET.del)(&w.ctx(Command::Del, "ctr1", &c1, "eth0", w.ipam())).expect("second DEL");
    (APPLET.del)(&w.ctx(Command::Del, "ctr2", &c2, "eth0", ipam2)).expect("DEL c2");
    w.wait_for("dnsmasq to drop lease 2", 5, || w.server_leases().is_empty());
    assert!(w.state_files().is_empty());
}

#[test]
fn dhcp_daemon_restart_keeps_and_resumes_lease() {
    let mut w = World::new("r", 62);
    w.start_dnsmasq(&[]);
    let c1 = w.container(1);
    let cfg = w.daemon_config();
    w.start_daemon(cfg.clone());
    let r = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).expect("ADD");
    let a1 = addr_of(&r);
    w.stop_daemons();
    // nothing answers now: a fast code-11 error naming the socket
    let t = Instant::now();
    let e = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).unwrap_err();
    let ce = cni_multi::cni::CniError::from_anyhow(&e);
    assert_eq!(ce.code, 11, "{ce:?}");
    assert!(ce.msg.contains(&w.dir.join("dhcp.sock").display().to_string()), "{}", ce.msg);
    assert!(t.elapsed() < Duration::from_secs(1));
    let st = (APPLET.status.unwrap())(&w.ctx(Command::Status, "", "", "", w.ipam())).unwrap_err();
    assert_eq!(cni_multi::cni::CniError::from_anyhow(&st).code, 50);

    // restart: the lease is back, with the same address, and is maintained
    let d = w.start_daemon(cfg);
    assert_eq!(d.lease_keys(), vec!["ctr1/dhcpnet/eth0".to_string()]);
    let r = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).expect("ADD after restart");
    assert_eq!(addr_of(&r), a1);
    (APPLET.check)(&w.ctx(Command::Check, "ctr1", &c1, "eth0", w.ipam())).expect("CHECK after restart");
    // and the resumed lease can be released at the server
    configure(&c1, &a1);
    (APPLET.del)(&w.ctx(Command::Del, "ctr1", &c1, "eth0", w.ipam())).expect("DEL");
    w.wait_for("release after restart", 5, || w.server_leases().is_empty());
}

#[test]
fn dhcp_vanished_link_stops_maintenance() {
    let mut w = World::new("v", 63);
    w.start_dnsmasq(&[]);
    let c1 = w.container(1);
    let d = w.start_daemon(w.daemon_config());
    (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).expect("ADD");
    assert_eq!(d.lease_keys().len(), 1);
    run(&["ip", "-n", &w.server, "link", "del", "vh1"]);
    w.wait_for("the daemon to forget the lease of the vanished link", 10, || d.lease_keys().is_empty());
    assert!(w.state_files().is_empty());
}

#[test]
fn dhcp_bad_inputs_fail_fast_and_leave_nothing() {
    let mut w = World::new("b", 64);
    let c1 = w.container(1);
    let mut cfg = w.daemon_config();
    cfg.timeout = Duration::from_secs(2);
    let d = w.start_daemon(cfg);
    // silent server (no dnsmasq): error within the configured timeout, code 11
    let t = Instant::now();
    let e = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).unwrap_err();
    let ce = cni_multi::cni::CniError::from_anyhow(&e);
    assert_eq!(ce.code, 11, "{ce:?}");
    assert!(t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // wrong interface: fast error naming it
    let t = Instant::now();
    let e = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "nope0", w.ipam())).unwrap_err();
    assert!(format!("{e:#}").contains("nope0"), "{e:#}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // missing netns
    let e = (APPLET.add)(&w.ctx(Command::Add, "ctr1", "/run/netns/does-not-exist-dh", "eth0", w.ipam())).unwrap_err();
    assert!(format!("{e:#}").contains("does-not-exist-dh"), "{e:#}");
    // bad option name: config error before talking to anyone
    let bad = serde_json::json!({"type": "dhcp", "daemonsocketpath": w.dir.join("dhcp.sock"), "request": [{"option": "bogus"}]});
    assert!((APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", bad)).is_err());
    assert!(d.lease_keys().is_empty());
    assert!(w.state_files().is_empty());
    // the raw protocol: garbage and ping
    let resp = cni_multi::ipam::dhcp::rpc::call(
        &w.dir.join("dhcp.sock"),
        &Request {
            method: Method::Ping,
            container_id: String::new(),
            network: String::new(),
            ifname: String::new(),
            netns: String::new(),
            options: ClientOptions::default(),
            valid: None,
        },
        Duration::from_secs(2),
    );
    assert!(resp.is_ok());
}

/// T1 of dnsmasq's minimum (2 min) lease is 60 s: this test takes about 65 s.
#[test]
fn dhcp_slow_renews_at_t1() {
    let mut w = World::new("n", 65);
    w.start_dnsmasq(&[]);
    let c1 = w.container(1);
    let d = w.start_daemon(w.daemon_config());
    let r = (APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).expect("ADD");
    let a1 = addr_of(&r);
    configure(&c1, &a1); // renewals are unicast from the leased address, as after a real ADD
    let first = d.lease("ctr1/dhcpnet/eth0").unwrap();
    assert_eq!(first.lease_secs, 120);
    assert_eq!(first.t1_secs, 60);
    let expiry0 = w.server_leases().first().unwrap().0;
    std::thread::sleep(Duration::from_secs(58));
    w.wait_for("a renewal at T1", 15, || w.server_leases().first().is_some_and(|l| l.0 >= expiry0 + 55));
    let now = d.lease("ctr1/dhcpnet/eth0").unwrap();
    assert!(now.acquired_unix >= first.acquired_unix + 55, "{first:?} → {now:?}");
    assert_eq!(now.address, first.address);
    // the store follows the renewal
    let saved = std::fs::read_to_string(&w.state_files()[0]).unwrap();
    assert!(saved.contains(&format!("\"acquired_unix\": {}", now.acquired_unix)), "{saved}");
}

// ---- process level: the real binary (needs the CLI dispatch for `dhcp` and `dhcp daemon`)

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cni-multi")
}

/// Whether the binary already dispatches the `dhcp` applet (VERSION answers).
fn plugin(cmd: &str, id: &str, netns: &str, conf: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Proc::new(bin())
        .arg("dhcp")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn dhcp_process_daemon_and_plugin() {
    let mut w = World::new("p", 66);
    w.start_dnsmasq(&[]);
    let c1 = w.container(1);
    let sock = w.dir.join("d.sock");
    let pidfile = w.dir.join("d.pid");
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"dhcpnet","type":"dhcp","ipam":{{"type":"dhcp","daemonSocketPath":"{}"}}}}"#,
        sock.display()
    );
    // no daemon yet: fast error naming the socket; STATUS says 50
    let t = Instant::now();
    let (okk, out) = plugin("ADD", "ctr1", &c1, &conf);
    assert!(!okk && out.contains("\"code\": 11") && out.contains(&sock.display().to_string()), "{out}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let (okk, out) = plugin("STATUS", "", "", &conf.replace("1.0.0", "1.1.0"));
    assert!(!okk && out.contains("\"code\": 50"), "{out}");

    let daemon = Proc::new(bin())
        .args(["dhcp", "daemon", "-socketpath"])
        .arg(&sock)
        .arg("-pidfile")
        .arg(&pidfile)
        .arg("-statedir")
        .arg(w.dir.join("pstate"))
        .args(["-timeout", "5s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    w.procs.push(daemon);
    w.wait_for("the daemon socket", 5, || sock.exists());
    let (okk, out) = plugin("ADD", "ctr1", &c1, &conf);
    assert!(okk, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let addr = v["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(in_range(&addr, 66), "{out}");
    assert_eq!(v["ips"][0]["gateway"], "198.19.66.1");
    let (okk, out) = plugin("STATUS", "", "", &conf.replace("1.0.0", "1.1.0"));
    assert!(okk, "{out}");
    let (okk, out) = plugin("CHECK", "ctr1", &c1, &conf);
    assert!(okk, "{out}");
    let (okk, out) = plugin("DEL", "ctr1", &c1, &conf);
    assert!(okk, "{out}");
    w.wait_for("release", 5, || w.server_leases().is_empty());
    // SIGTERM: socket and pidfile removed
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), pid.to_string());
    run(&["kill", "-TERM", &pid.to_string()]);
    w.wait_for("daemon cleanup", 5, || !sock.exists() && !pidfile.exists());
}

/// Leases persisted by a stopped daemon that are past T2 (rebind) or expired (re-acquire)
/// when the daemon comes back: both end up renewed with the same address.
#[test]
fn dhcp_resume_rebinds_and_reacquires_after_restart() {
    let mut w = World::new("x", 67);
    w.start_dnsmasq(&[]);
    let c1 = w.container(1);
    let c2 = w.container(2);
    let cfg = w.daemon_config();
    w.start_daemon(cfg.clone());
    let a1 = addr_of(&(APPLET.add)(&w.ctx(Command::Add, "ctr1", &c1, "eth0", w.ipam())).unwrap());
    let a2 = addr_of(&(APPLET.add)(&w.ctx(Command::Add, "ctr2", &c2, "eth0", w.ipam())).unwrap());
    configure(&c1, &a1);
    configure(&c2, &a2);
    w.stop_daemons();
    // age the persisted leases: ctr1 into REBINDING (past T2 = 105 s), ctr2 past expiry
    for f in w.state_files() {
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let age = if v["key"] == "ctr1/dhcpnet/eth0" { 110 } else { 300 };
        let t = v["lease"]["acquired_unix"].as_u64().unwrap() - age;
        v["lease"]["acquired_unix"] = t.into();
        std::fs::write(&f, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    let started = cni_multi::ipam::dhcp::client::now_unix();
    let d = w.start_daemon(cfg);
    for (key, addr) in [("ctr1/dhcpnet/eth0", &a1), ("ctr2/dhcpnet/eth0", &a2)] {
        w.wait_for(key, 10, || d.lease(key).is_some_and(|l| l.acquired_unix >= started));
        let l = d.lease(key).unwrap();
        assert!(addr.starts_with(&format!("{}/", l.address)), "{key}: {addr} became {}", l.address);
    }
    let log = w.dnsmasq_log();
    assert!(log.matches("DHCPREQUEST").count() >= 4, "{log}");
}

/// Many containers at once: every ADD gets its own address, in parallel.
#[test]
fn dhcp_many_containers_in_parallel() {
    let mut w = World::new("m", 68);
    w.start_dnsmasq(&[]);
    let paths: Vec<String> = (1..=6).map(|n| w.container(n)).collect();
    let d = w.start_daemon(w.daemon_config());
    let w = &w;
    let addrs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                s.spawn(move || {
                    addr_of(&(APPLET.add)(&w.ctx(Command::Add, &format!("ctr{i}"), p, "eth0", w.ipam())).unwrap())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut uniq = addrs.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 6, "{addrs:?}");
    assert_eq!(d.lease_keys().len(), 6);
    assert!(addrs.iter().all(|a| in_range(a, 68)));

    // GC without a list releases nothing; with a list, only this network's stale leases go
    let gc_ctx = |valid: Option<serde_json::Value>, net: &str| {
        let mut c = w.ctx(Command::Gc, "", "", "", w.ipam());
        if let Some(v) = valid {
            c.conf["cni.dev/valid-attachments"] = v;
        }
        c.name = net.to_string();
        c
    };
    (APPLET.gc.unwrap())(&gc_ctx(None, "dhcpnet")).expect("GC without list");
    (APPLET.gc.unwrap())(&gc_ctx(Some(serde_json::json!([])), "othernet")).expect("GC other network");
    assert_eq!(d.lease_keys().len(), 6);
    let keep = serde_json::json!([
        {"containerid": "ctr0", "ifname": "eth0"}, {"containerid": "ctr1", "ifname": "eth0"},
        {"containerid": "ctr2", "ifname": "eth0"}, {"containerid": "ctr3", "ifname": "eth1"},
    ]);
    (APPLET.gc.unwrap())(&gc_ctx(Some(keep), "dhcpnet")).expect("GC");
    assert_eq!(d.lease_keys(), ["ctr0/dhcpnet/eth0", "ctr1/dhcpnet/eth0", "ctr2/dhcpnet/eth0"]);
    w.wait_for("dnsmasq to see 3 releases", 5, || w.server_leases().len() == 3);
    assert_eq!(w.state_files().len(), 3);
}

/// Socket activation: with LISTEN_FDS the daemon serves the passed socket and never binds
/// `-socketpath` itself.
#[test]
fn dhcp_process_socket_activation() {
    assert!(
        Path::new("/usr/bin/systemd-socket-activate").exists(),
        "systemd-socket-activate (package systemd) is needed: .ci/run installs it"
    );
    let mut w = World::new("s", 69);
    let sock = w.dir.join("act.sock");
    let own = w.dir.join("own.sock");
    let child = Proc::new("/usr/bin/systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .args([bin(), "dhcp", "daemon", "-socketpath"])
        .arg(&own)
        .arg("-statedir")
        .arg(w.dir.join("st"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    w.procs.push(child);
    w.wait_for("the activation socket", 5, || sock.exists());
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"n","type":"dhcp","ipam":{{"type":"dhcp","daemonSocketPath":"{}"}}}}"#,
        sock.display()
    );
    let (okk, out) = plugin("STATUS", "", "", &conf);
    assert!(okk, "{out}");
    assert!(!own.exists(), "the daemon bound its own socket despite LISTEN_FDS");
}
