//! The runtime side of a world: `cni-multi tool` (our cnitool) and the real `cnitool` run inside a
//! "host" namespace with exactly the environment a runtime gives them, temp dirs for their state,
//! and CNI_PATH directories of symlinks to our binary. Used by the tool, flannel and vpc-routed tests.

use super::world::Netns;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A temp directory removed on drop.
pub struct Tmp(tempfile::TempDir);

impl Tmp {
    pub fn new(tag: &str) -> Tmp {
        Tmp(tempfile::Builder::new().prefix(&format!("cni-multi-it-{tag}-")).tempdir().expect("temp dir"))
    }
    pub fn dir(&self) -> &Path {
        self.0.path()
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.path().join(s)
    }
    pub fn s(&self, sub: &str) -> String {
        self.join(sub).display().to_string()
    }
}

/// The cni-multi binary the integration tests run: the static release artifact when
/// `CNI_MULTI_RELEASE_BIN` names it (`make test` sets it: the file we ship is the file tested),
/// else cargo's build of this test run. A variable naming a missing file is an error, not a
/// silent fall-back.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("CNI_MULTI_RELEASE_BIN") {
        Ok(p) if !p.is_empty() => {
            let abs = std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("CNI_MULTI_RELEASE_BIN={p}: {e}"));
            abs.to_str().expect("a UTF-8 path").to_string()
        }
        _ => env!("CARGO_BIN_EXE_cni-multi").to_string(),
    })
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

/// What a process printed and how it ended.
pub struct Out {
    pub ok: bool,
    /// the exit status
    pub code: i32,
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
    /// The CNI error code of a failed run.
    pub fn err_code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.stdout);
        assert_eq!(self.code, 1, "a CNI error exits with status 1: {}", self.stdout);
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }
}

impl From<std::process::Output> for Out {
    fn from(out: std::process::Output) -> Out {
        Out {
            ok: out.status.success(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Run `cni-multi tool ARGS` inside `host` with exactly `env` (plus PATH).
pub fn tool(host: &Netns, env: &[(&str, String)], args: &[&str]) -> Out {
    run_in(host, bin(), &["tool"], env, args)
}

pub fn run_in(host: &Netns, prog: &str, pre: &[&str], env: &[(&str, String)], args: &[&str]) -> Out {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.name, prog]).args(pre).args(args);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().expect("run tool").into()
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
