//! Running a CNI plugin process the way a runtime does: CNI_* environment, config on stdin,
//! result or error on stdout — with the process inside the world's host netns.

use super::world::World;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// Every applet name of the multicall binary (and of the upstream plugin set): the per-world plugin
/// dir holds one symlink per name, so CNI_PATH lookups (IPAM delegation) resolve to our binary.
pub const APPLET_NAMES: &[&str] = &[
    "bandwidth",
    "bridge",
    "dhcp",
    "dummy",
    "firewall",
    "host-device",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tap",
    "tuning",
    "vlan",
    "vrf",
];

/// Where the oracle lives (Debian containernetworking-plugins 1.1.1).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Whether the reference `plugin` is installed; without it a test skips its reference side (and
/// fails when `CI=true`: CI installs the reference plugins).
pub fn have_reference(plugin: &str) -> bool {
    let ok = std::path::Path::new(REFERENCE_DIR).join(plugin).is_file();
    if !ok {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "the reference plugins (package containernetworking-plugins) are missing in CI"
        );
        eprintln!("skipping the reference side: no {REFERENCE_DIR}/{plugin}");
    }
    ok
}

/// Set to a plugin directory (e.g. `/usr/lib/cni`) to run the "ours" side of every test with those
/// binaries instead. `CNI_MULTI_TEST_OURS=/usr/lib/cni cargo test --test tests` proves the harness:
/// differential runs become reference-vs-reference and must show no difference, and the behaviour
/// tests must pass against the reference.
pub const OURS_OVERRIDE_ENV: &str = "CNI_MULTI_TEST_OURS";

/// Which implementation a world runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Reference,
}

/// What the binaries behind an `Impl` actually are (version-aware expectations hang on this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// cni-multi: spec up to 1.1.0, newest upstream behaviour
    CniMulti,
    /// the Debian 1.1.1 oracle: spec up to 1.0.0, see reference-features.md §0
    Debian,
}

impl Impl {
    pub fn label(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Reference => "reference",
        }
    }

    pub fn plugin_dir_override(self) -> Option<PathBuf> {
        match self {
            Impl::Reference => Some(PathBuf::from(REFERENCE_DIR)),
            Impl::Ours => std::env::var_os(OURS_OVERRIDE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }

    pub fn flavor(self) -> Flavor {
        match (self, self.plugin_dir_override()) {
            (Impl::Reference, _) => Flavor::Debian,
            (Impl::Ours, Some(dir)) if dir == std::path::Path::new(REFERENCE_DIR) => Flavor::Debian,
            (Impl::Ours, _) => Flavor::CniMulti,
        }
    }
}

impl Flavor {
    /// The cniVersions this implementation accepts.
    pub fn supported_versions(self) -> &'static [&'static str] {
        match self {
            Flavor::Debian => &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"],
            Flavor::CniMulti => &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        }
    }

    /// The exact bytes of a VERSION reply.
    pub fn version_reply(self) -> String {
        let sv = self.supported_versions();
        let list: Vec<String> = sv.iter().map(|v| format!("\"{v}\"")).collect();
        format!("{{\"cniVersion\":\"{}\",\"supportedVersions\":[{}]}}\n", sv[sv.len() - 1], list.join(","))
    }
}

/// One plugin invocation being prepared. Defaults: container 0's netns, ifname `eth0`,
/// container id `cid-<tag>`, CNI_PATH = the world's plugin dir, plugin = config `type`.
pub struct Call<'w> {
    world: &'w World,
    plugin: String,
    env: BTreeMap<String, Option<String>>,
    stdin: Vec<u8>,
    timeout: Duration,
    cwd: Option<PathBuf>,
}

impl<'w> Call<'w> {
    /// Run the plugin in `dir` (default: the test's working directory).
    pub fn current_dir(mut self, dir: &std::path::Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), Some(value.to_string()));
        self
    }
    pub fn unset(mut self, key: &str) -> Self {
        self.env.insert(key.to_string(), None);
        self
    }
    pub fn cid(self, cid: &str) -> Self {
        self.env("CNI_CONTAINERID", cid)
    }
    pub fn ifname(self, ifname: &str) -> Self {
        self.env("CNI_IFNAME", ifname)
    }
    pub fn netns_path(self, path: &str) -> Self {
        self.env("CNI_NETNS", path)
    }
    pub fn container(self, i: usize) -> Self {
        let p = self.world.c(i).path_str();
        self.env("CNI_NETNS", &p)
    }
    pub fn cni_args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }
    pub fn plugin(mut self, name: &str) -> Self {
        self.plugin = name.to_string();
        self
    }
    /// How long the run may take before it is killed and the test fails (default 60 s).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }
    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Self {
        self.stdin = bytes.to_vec();
        self
    }
    /// Exec the plugin inside the world's host netns and collect everything it printed.
    pub fn run(self) -> Outcome {
        let exe = self.world.bin_dir.join(&self.plugin);
        let mut cmd = self.world.host.command(&exe);
        cmd.env_clear().env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let mut shown = vec![];
        for (k, v) in &self.env {
            if let Some(v) = v {
                cmd.env(k, v);
                shown.push(format!("{k}={v}"));
            }
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        if let Some(mut stdin) = child.stdin.take() {
            // a plugin may exit before reading stdin (e.g. env errors): ignore EPIPE
            let _ = stdin.write_all(&self.stdin);
        }
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(self.timeout) {
            Ok(r) => r.expect("wait for plugin"),
            Err(_) => {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                panic!("{} {} timed out after {:?}", self.world.imp.label(), self.plugin, self.timeout);
            }
        };
        let command = self.env.get("CNI_COMMAND").cloned().flatten().unwrap_or_default();
        Outcome {
            imp: self.world.imp,
            plugin: self.plugin,
            command,
            env: shown.join(" "),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub imp: Impl,
    pub plugin: String,
    pub command: String,
    pub env: String,
    /// exit status (-1 when killed by a signal)
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A CNI error object as printed by a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniErr {
    pub code: u64,
    pub msg: String,
    pub details: Option<String>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// stdout parsed as JSON (None when empty or not JSON).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    fn describe(&self) -> String {
        format!(
            "{} {} {} [{}] exit {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.imp.label(),
            self.plugin,
            self.command,
            self.env,
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Assert success; return the parsed result (Null when nothing was printed).
    pub fn ok(&self) -> Value {
        assert!(self.success(), "expected success: {}", self.describe());
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        self.json().unwrap_or_else(|| panic!("stdout is not JSON: {}", self.describe()))
    }

    /// The error object, if the run failed and printed one.
    pub fn error(&self) -> Option<CniErr> {
        if self.success() {
            return None;
        }
        let v = self.json()?;
        Some(CniErr {
            code: v.get("code")?.as_u64()?,
            msg: v.get("msg")?.as_str()?.to_string(),
            details: v.get("details").and_then(|d| d.as_str()).map(str::to_string),
        })
    }

    /// Assert failure with a well-formed error object (exit 1, `code` and `msg`, nothing else but
    /// `details`, no trailing newline); return it.
    pub fn err(&self) -> CniErr {
        assert!(!self.success(), "expected failure: {}", self.describe());
        assert_eq!(self.code, 1, "a CNI error exits 1: {}", self.describe());
        let v: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("error is not JSON ({e}): {}", self.describe()));
        let obj = v.as_object().unwrap_or_else(|| panic!("error is not an object: {}", self.describe()));
        for k in obj.keys() {
            assert!(["code", "msg", "details"].contains(&k.as_str()), "unexpected key {k:?} in {}", self.describe());
        }
        self.error().unwrap_or_else(|| panic!("error object lacks code/msg: {}", self.describe()))
    }

    /// Assert failure with the given CNI error code.
    pub fn err_code(&self, code: u64) -> CniErr {
        let e = self.err();
        assert_eq!(e.code, code, "wrong error code: {}", self.describe());
        e
    }
}

impl World {
    /// Prepare `CNI_COMMAND=<command>` for the plugin named by `conf.type`, with `conf` on stdin.
    pub fn cni(&self, command: &str, conf: &Value) -> Call<'_> {
        let plugin = conf.get("type").and_then(|t| t.as_str()).unwrap_or("unknown").to_string();
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".to_string(), Some(command.to_string()));
        env.insert("CNI_CONTAINERID".to_string(), Some(format!("cid-{}", self.tag)));
        if let Some(c) = self.containers.first() {
            env.insert("CNI_NETNS".to_string(), Some(c.path_str()));
        }
        env.insert("CNI_IFNAME".to_string(), Some("eth0".to_string()));
        env.insert("CNI_PATH".to_string(), Some(self.bin_dir.to_string_lossy().into_owned()));
        Call {
            world: self,
            plugin,
            env,
            stdin: serde_json::to_vec(conf).expect("serialize config"),
            timeout: Duration::from_secs(60),
            cwd: None,
        }
    }

    /// A bare call with no CNI_* variables at all (protocol tests).
    pub fn raw(&self, plugin: &str) -> Call<'_> {
        Call {
            world: self,
            plugin: plugin.to_string(),
            env: BTreeMap::new(),
            stdin: vec![],
            timeout: Duration::from_secs(30),
            cwd: None,
        }
    }

    pub fn add(&self, conf: &Value) -> Call<'_> {
        self.cni("ADD", conf)
    }
    pub fn del(&self, conf: &Value) -> Call<'_> {
        self.cni("DEL", conf)
    }
    /// Put the reference's `plugin` into this world's plugin dir as `ref-<plugin>` and return that
    /// name, for `.plugin(..)` (one implementation acting on the other's state). None when the
    /// reference lacks it or the plugin dir is not the world's own (CNI_MULTI_TEST_OURS).
    pub fn reference_applet(&self, plugin: &str) -> Option<String> {
        if !have_reference(plugin) || !self.bin_dir.starts_with(&self.tmp) {
            return None;
        }
        let name = format!("ref-{plugin}");
        let link = self.bin_dir.join(&name);
        if !link.exists() {
            std::os::unix::fs::symlink(std::path::Path::new(REFERENCE_DIR).join(plugin), &link)
                .expect("symlink the reference plugin");
        }
        Some(name)
    }

    /// CHECK with `prevResult` set to `prev`.
    pub fn check(&self, conf: &Value, prev: &Value) -> Call<'_> {
        let mut c = conf.clone();
        c["prevResult"] = prev.clone();
        let mut call = self.cni("CHECK", conf);
        call.stdin = serde_json::to_vec(&c).expect("serialize config");
        call
    }
}
