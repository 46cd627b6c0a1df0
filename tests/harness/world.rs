//! Throwaway network-namespace worlds: one "host" netns plus N container netnses, a temp dir with
//! the plugin dir and the IPAM dataDir. Everything is removed by `Drop` on every exit path.
//! Nothing is ever created in the machine's root network namespace: plugins and helper commands
//! run with their process moved into a world netns before `exec`.

use super::plugin::{Impl, APPLET_NAMES};
use nix::sched::CloneFlags;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A process-unique short name: `cm-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!("cm-{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

/// A named network namespace (`ip netns add`), deleted on drop after killing every process in it.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
    deleted: bool,
}

impl Netns {
    pub fn create(name: &str) -> Netns {
        let out = Command::new("ip").args(["netns", "add", name]).output().expect("run ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        Netns { name: name.to_string(), path: Path::new("/run/netns").join(name), deleted: false }
    }

    /// A fresh netns named from `tag` (see [`unique`]) with `lo` up: the runtime-side tests'
    /// "host" and pod namespaces.
    pub fn up(tag: &str) -> Netns {
        let ns = Netns::create(&unique(tag));
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a test-written shell command inside (`ip netns exec … sh -c`, so /sys is this netns's);
    /// (success, stdout + stderr).
    pub fn sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ip netns exec");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), s)
    }

    /// [`Netns::sh`] that must succeed; its output.
    pub fn ok(&self, cmd: &str) -> String {
        let (ok, out) = self.sh(cmd);
        assert!(ok, "in {}: `{cmd}` failed: {out}", self.name);
        out
    }

    /// The path handed to plugins as CNI_NETNS.
    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Kill every process inside (all of them were started by this test) and delete the netns.
    /// Used by tests that need "the netns is already gone"; also run by `Drop`.
    pub fn delete(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// A `Command` whose process enters this netns right before `exec`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        enter_before_exec(&mut cmd, &self.path, CloneFlags::CLONE_NEWNET);
        cmd
    }

    /// Run a command inside this netns and return its output (never panics on a non-zero exit).
    pub fn exec(&self, argv: &[&str]) -> Output {
        let (prog, args) = argv.split_first().expect("argv must not be empty");
        self.command(prog).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("exec {argv:?}: {e}"))
    }

    /// Run a command inside this netns; panic with its stderr unless it succeeds.
    pub fn must(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a fresh thread that has joined this netns (reads of /proc/sys/net then see it).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(&self.path, f)
    }

    /// Read a sysctl (path under /proc/sys, with `/` separators) in this netns; None if absent.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        let key = key.to_string();
        self.run_in(move || {
            std::fs::read_to_string(Path::new("/proc/sys").join(key)).ok().map(|s| s.trim().to_string())
        })
    }

    /// Write a sysctl in this netns.
    pub fn set_sysctl(&self, key: &str, value: &str) {
        let (key, value) = (key.to_string(), value.to_string());
        let k2 = key.clone();
        let res = self.run_in(move || std::fs::write(Path::new("/proc/sys").join(&key), value));
        res.unwrap_or_else(|e| panic!("write sysctl {k2} in {}: {e}", self.name));
    }

    /// `ip -j <args>` in this netns, parsed; panics if `ip` fails.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        self.try_ip_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip -j <args>` in this netns, parsed; Err with ip's message if it fails (e.g. no such device).
    pub fn try_ip_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut argv = vec!["ip", "-n", &self.name, "-j"];
        argv.extend_from_slice(args);
        let out = Command::new("ip").args(&argv[1..]).output().expect("run ip");
        if !out.status.success() {
            return Err(format!("{argv:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Array(vec![]));
        }
        serde_json::from_str(&text).map_err(|e| format!("{argv:?} printed bad JSON ({e}): {text}"))
    }

    /// Links in this netns (`ip -d -j link show`).
    pub fn links(&self) -> Vec<serde_json::Value> {
        match self.ip_json(&["-d", "link", "show"]) {
            serde_json::Value::Array(a) => a,
            _ => vec![],
        }
    }

    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links().iter().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect()
    }

    /// Addresses (`local/prefixlen`) of one link, link-local v6 excluded (none if it does not exist).
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        let v = self.try_ip_json(&["addr", "show", "dev", ifname]).unwrap_or_default();
        let mut out = vec![];
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                let local = a["local"].as_str().unwrap_or_default();
                if local.starts_with("fe80:") {
                    continue;
                }
                out.push(format!("{local}/{}", a["prefixlen"]));
            }
        }
        out
    }

    /// All routes of the main table, both families.
    pub fn routes(&self) -> Vec<serde_json::Value> {
        let mut all = vec![];
        for fam in ["-4", "-6"] {
            if let serde_json::Value::Array(a) = self.ip_json(&[fam, "route", "show"]) {
                all.extend(a);
            }
        }
        all
    }

    /// Wait (up to 5 s) until no address in this netns is tentative (IPv6 DAD finished) and every
    /// link's operstate caught up with its carrier (linkwatch applies it asynchronously).
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.ip_json(&["addr", "show"]);
            let links = v.as_array().cloned().unwrap_or_default();
            let tentative = links
                .iter()
                .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
                .any(|a| a.get("tentative").is_some());
            let lagging = links.iter().any(|l| {
                let flags = l["flags"].as_array().cloned().unwrap_or_default();
                let has = |f: &str| flags.iter().any(|x| x == f);
                has("UP") && has("LOWER_UP") && l["operstate"] == "DOWN"
            });
            if !(tentative || lagging) || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connect over TCP from this netns to `dst` (2 s timeouts); what the server sent until it
    /// closed, or None when nothing connected.
    pub fn tcp_read(&self, dst: std::net::SocketAddr) -> Option<String> {
        use std::io::Read;
        self.run_in(move || {
            let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
    }

    /// `ping -c1 -W2` from this netns; retried up to `tries` times (for addresses still in DAD).
    pub fn ping(&self, addr: &str, tries: u32) -> bool {
        for i in 0..tries.max(1) {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            if self.exec(&["ping", "-n", "-q", "-c1", "-W2", addr]).status.success() {
                return true;
            }
        }
        false
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A test world: a host netns (where plugins run), container netnses, a temp dir holding the
/// plugin dir (symlinks to our binary) and the IPAM dataDir.
pub struct World {
    pub tag: String,
    pub imp: Impl,
    /// `/tmp/cm-<tag>-<pid>-<n>`
    pub tmp: PathBuf,
    /// `<tmp>/data`, handed to host-local as dataDir
    pub data_dir: PathBuf,
    /// the plugin directory used as CNI_PATH
    pub bin_dir: PathBuf,
    pub host: Netns,
    pub containers: Vec<Netns>,
}

/// Run `f` once per implementation, ours first, each in a world of its own with `n` containers
/// (tags `<tag>o` and `<tag>r`, passed to `f`); the reference only when it has every plugin in
/// `needs`.
pub fn each_impl(tag: &str, n: usize, needs: &[&str], f: impl Fn(&World, Impl, &str)) {
    for (suffix, which) in [("o", Impl::Ours), ("r", Impl::Reference)] {
        if which == Impl::Reference && !needs.iter().all(|p| super::plugin::have_reference(p)) {
            continue;
        }
        let tag = format!("{tag}{suffix}");
        let w = World::new(&tag, n, which);
        f(&w, which, &tag);
    }
}

impl World {
    /// A world with `n` container netnses whose plugins are those of `imp`.
    pub fn new(tag: &str, n: usize, imp: Impl) -> World {
        let base = unique(tag);
        let tmp = PathBuf::from("/tmp").join(&base);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("data")).expect("create world temp dir");
        let bin_dir = match imp.plugin_dir_override() {
            Some(dir) => dir,
            None => {
                let bin = tmp.join("bin");
                std::fs::create_dir_all(&bin).expect("create plugin dir");
                let exe = Path::new(super::runtime::bin());
                for name in APPLET_NAMES {
                    std::os::unix::fs::symlink(exe, bin.join(name)).expect("symlink applet");
                }
                bin
            }
        };
        let host = Netns::create(&format!("{base}-h"));
        let mut w =
            World { tag: tag.to_string(), imp, data_dir: tmp.join("data"), tmp, bin_dir, host, containers: vec![] };
        for _ in 0..n {
            w.add_container();
        }
        w
    }

    /// Add one more container netns; returns its index.
    pub fn add_container(&mut self) -> usize {
        let i = self.containers.len();
        let name = format!("{}-c{i}", self.host.name.trim_end_matches("-h"));
        self.containers.push(Netns::create(&name));
        i
    }

    pub fn c(&self, i: usize) -> &Netns {
        &self.containers[i]
    }

    /// Turn IPv6 DAD off for links created later in the host netns (keeps snapshots stable and
    /// fast; both sides of a differential run get the same setting).
    pub fn host_nodad(&self) {
        self.host.set_sysctl("net/ipv6/conf/default/accept_dad", "0");
        self.host.set_sysctl("net/ipv6/conf/all/accept_dad", "0");
    }

    /// Files in the host-local store of network `name`: file name → (mode, content).
    pub fn store(&self, name: &str) -> std::collections::BTreeMap<String, (u32, String)> {
        super::state::read_store(&self.data_dir.join(name))
    }

    /// Lease files (everything but `lock` and `last_reserved_ip.*`) of network `name`.
    pub fn leases(&self, name: &str) -> Vec<String> {
        self.store(name).into_keys().filter(|f| f != "lock" && !f.starts_with("last_reserved_ip.")).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in self.containers.iter_mut() {
            c.delete();
        }
        self.host.delete();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// The one namespace pre_exec helper: `cmd`'s process joins the namespace at `ns` (a netns file
/// such as /run/netns/NAME, or /proc/PID/ns/mnt with `CLONE_NEWNS`) right before `exec`.
pub fn enter_before_exec(cmd: &mut Command, ns: &Path, kind: CloneFlags) {
    let file = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    // SAFETY: the closure runs in the forked child before exec. It only calls setns(2), a plain
    // syscall that is async-signal-safe, on an fd owned by the closure (opened O_CLOEXEC in the
    // parent, so it is closed again by exec). No allocation or locking happens in the child.
    // (the child runs no cni-multi code before exec, so nothing it remembers can go stale)
    #[allow(clippy::disallowed_methods)]
    unsafe {
        cmd.pre_exec(move || nix::sched::setns(&file, kind).map_err(|e| std::io::Error::from_raw_os_error(e as i32)));
    }
}

/// Run `f` on a fresh thread that has joined the netns at `ns` (a /run/netns path); the thread
/// ends right after `f`, so no other thread ever changes namespace.
pub fn run_in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    std::thread::spawn(move || {
        #[allow(clippy::disallowed_methods)]
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into world netns");
        // a new thread remembers nothing yet; forgetting keeps the rule of clippy.toml plain
        cni_multi::sys::netns::forget();
        f()
    })
    .join()
    .expect("netns helper thread panicked")
}

/// Run a command of the test itself (`ip netns add`, `ip -n NS …`); (success, stdout + stderr).
pub fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().expect("spawn");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// [`sh`] that must succeed; its stdout (stderr only goes into the failure message).
pub fn must(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `cond` every 50 ms until it holds or `secs` elapse; returns whether it held. For kernel
/// work that completes asynchronously (a deleted netns is torn down by a workqueue).
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
