//! A small self-contained namespace-world harness for the runtime-side tests (tool, flannel,
//! vpc-routed): named netns created by the test and deleted on drop, temp dirs, running
//! `cni-multi tool` inside a "host" namespace.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn uniq(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id() % 100000, SEQ.fetch_add(1, Ordering::SeqCst))
}

pub fn root() -> bool {
    let ok = nix::unistd::geteuid().is_root();
    if !ok {
        eprintln!("skipping: needs root");
    }
    ok
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!("cmrt-{}", uniq(tag));
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(st.success(), "ip netns add {name}");
        let ns = Ns { name };
        ns.ok("ip link set lo up");
        ns
    }
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    /// Run a shell command inside; (success, stdout+stderr).
    pub fn sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), s)
    }
    pub fn ok(&self, cmd: &str) -> String {
        let (ok, out) = self.sh(cmd);
        assert!(ok, "in {}: `{cmd}` failed: {out}", self.name);
        out
    }
    pub fn ping(&self, ip: &str) -> bool {
        self.sh(&format!("ping -c1 -W2 {ip}")).0
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A temp directory removed on drop.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("cni-multi-it-{}", uniq(tag)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
    pub fn s(&self, sub: &str) -> String {
        self.join(sub).display().to_string()
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cni-multi")
}

/// A CNI_PATH directory of symlinks to our binary (so plugins run in-process).
pub fn our_plugin_dir(tmp: &Tmp, names: &[&str]) -> String {
    let d = tmp.join("bin");
    std::fs::create_dir_all(&d).unwrap();
    for n in names {
        let _ = std::os::unix::fs::symlink(bin(), d.join(n));
    }
    d.display().to_string()
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {:?} / {}", self.stdout, self.stderr))
    }
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(self.ok, "{what} failed: stdout={} stderr={}", self.stdout, self.stderr);
        self
    }
}

/// Run `cni-multi tool ARGS` inside `host` with exactly `env` (plus PATH).
pub fn tool(host: &Ns, env: &[(&str, String)], args: &[&str]) -> Out {
    run_in(host, bin(), &["tool"], env, args)
}

pub fn run_in(host: &Ns, prog: &str, pre: &[&str], env: &[(&str, String)], args: &[&str]) -> Out {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.name, prog]).args(pre).args(args);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run tool");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// cnitool's container id, computed with coreutils (an independent implementation).
pub fn cnitool_id(netns_path: &str) -> String {
    let out = Command::new("sh").args(["-c", &format!("printf %s '{netns_path}' | sha512sum")]).output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout);
    format!("cnitool-{}", &hex[..20])
}

pub fn sha1_hex(s: &str) -> String {
    let out = Command::new("sh").args(["-c", &format!("printf %s '{s}' | sha1sum")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..40].to_string()
}
