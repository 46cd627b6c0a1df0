//! Protocol layer seen from outside: the real binary under applet names, the CLI, and the
//! delegation paths (exec vs in-process) giving identical answers. No root needed.

use cni_multi::cni::delegate::delegate_with;
use cni_multi::cni::{CniError, Command, Ctx};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_cni-multi");

static SEQ: AtomicUsize = AtomicUsize::new(0);

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "cni-multi-proto-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the binary as `name` (a symlink), with exactly `env`, `stdin`, and `args`.
fn run_as(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let link = dir.join(name);
    if !link.exists() {
        symlink(BIN, &link).unwrap();
    }
    let mut child = Proc::new(&link)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // a plugin may exit without reading stdin (VERSION): a broken pipe is fine
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn proto_binary_speaks_version_and_about() {
    let d = TempDir::new("ver");
    let (rc, out, _) = run_as(&d.0, "host-local", &[], &[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(rc, 0);
    assert_eq!(
        out,
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
    let (rc, out, err) = run_as(&d.0, "host-local", &[], &[], "");
    assert_eq!((rc, out.as_str()), (0, ""));
    assert!(err.starts_with("CNI host-local plugin"), "{err}");
    let (rc, out, _) = run_as(&d.0, "host-local", &[], &[("CNI_COMMAND", "ADD")], "{}");
    assert_eq!(rc, 1);
    assert_eq!(
        out,
        "{\n    \"code\": 4,\n    \"msg\": \"required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing\"\n}"
    );
}

#[test]
fn proto_cli_multi_entry() {
    let d = TempDir::new("cli");
    let (rc, out, _) = run_as(&d.0, "cni-multi", &["--list"], &[], "");
    assert_eq!(rc, 0);
    assert!(out.lines().any(|l| l == "host-local"), "{out}");
    let (rc, _, err) = run_as(&d.0, "cni-multi", &["no-such-plugin"], &[], "");
    assert_eq!(rc, 2);
    assert!(err.contains("unknown applet") && err.contains("host-local"), "{err}");
    let (rc, out, _) = run_as(&d.0, "cni-multi", &["loopback", "--help"], &[], "");
    assert_eq!(rc, 0);
    assert!(out.contains("--container-id") && out.contains("CNI loopback plugin"), "{out}");
    let (rc, out, _) = run_as(&d.0, "cni-multi", &["loopback", "--command", "VERSION"], &[], "");
    assert_eq!((rc, out.starts_with("{\"cniVersion\":\"1.1.0\"")), (0, true));
    let (rc, out, _) = run_as(&d.0, "cni-multi", &["--version"], &[], "");
    assert!(rc == 0 && out.starts_with("cni-multi "));
    // flags override the environment; --config replaces stdin
    let conf = d.0.join("c.json");
    std::fs::write(&conf, r#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap();
    let (rc, out, _) = run_as(
        &d.0,
        "cni-multi",
        &[
            "loopback",
            "--command",
            "CHECK",
            "--container-id",
            "c",
            "--ifname",
            "eth0",
            "--netns",
            "/nonexistent",
            "--cni-path",
            "/x",
            "--config",
            conf.to_str().unwrap(),
        ],
        &[("CNI_COMMAND", "ADD")],
        "",
    );
    assert_eq!(rc, 1);
    assert!(out.contains("config version does not allow CHECK"), "{out}");
}

/// Delegation to our own binary runs in-process and answers exactly like exec'ing it.
/// With the stub IPAMs this compares errors; once host-local is real it compares results
/// (each path gets its own dataDir, so both allocate the same first address).
#[test]
fn proto_delegate_exec_equals_in_process() {
    let d = TempDir::new("deleg");
    symlink(BIN, d.0.join("host-local")).unwrap();
    for version in ["0.2.0", "0.4.0", "1.0.0", "1.1.0"] {
        let mut outcomes = Vec::new();
        for (tag, self_exe) in [("exec", Path::new("/nonexistent")), ("inproc", Path::new(BIN))] {
            let data = d.0.join(format!("data-{tag}-{version}"));
            let stdin = format!(
                r#"{{"cniVersion":"{version}","name":"net1","type":"bridge","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"198.18.0.0/24"}}]]}}}}"#,
                data.display()
            );
            let ctx = Ctx {
                container_id: "ctr1".into(),
                ifname: "eth0".into(),
                netns: Some("/nonexistent/netns".into()),
                path: vec![d.0.clone()],
                conf: cni_multi::cni::config::parse_folded(stdin.as_bytes()).unwrap(),
                stdin: stdin.into_bytes(),
                version: version.into(),
                name: "net1".into(),
                ..Ctx::new(Command::Add)
            };
            let r = delegate_with(&ctx, "host-local", Command::Add, self_exe, cni_multi::applets::find);
            outcomes.push(match r {
                Ok(res) => Ok(res.map(|r| r.to_json(version).unwrap())),
                Err(e) => Err(CniError::from_anyhow(&e)),
            });
        }
        assert_eq!(outcomes[0], outcomes[1], "version {version}");
    }
}

#[test]
fn proto_logging_to_stderr_env_file_and_config_file() {
    let d = TempDir::new("log");
    let base = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr1"),
        ("CNI_NETNS", "/nonexistent/netns"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
        ("CNI_MULTI_LOG", "debug"),
    ];
    let conf = r#"{"cniVersion":"1.0.0","name":"n"}"#;
    // default: stderr, every line tagged with applet, command and container id
    let (_, _, err) = run_as(&d.0, "loopback", &[], &base, conf);
    assert!(err.lines().any(|l| l.contains(" DEBUG loopback ADD ctr1: ")), "{err}");
    // quiet at the default level
    let quiet: Vec<_> = base.iter().copied().filter(|(k, _)| *k != "CNI_MULTI_LOG").collect();
    let (_, _, err) = run_as(&d.0, "loopback", &[], &quiet, conf);
    assert!(!err.contains("DEBUG"), "{err}");
    // CNI_MULTI_LOG_FILE
    let file = d.0.join("env.log");
    let mut env = base.to_vec();
    let file_s = file.display().to_string();
    env.push(("CNI_MULTI_LOG_FILE", &file_s));
    let (_, _, err) = run_as(&d.0, "loopback", &[], &env, conf);
    let logged = std::fs::read_to_string(&file).unwrap();
    assert!(logged.contains("DEBUG loopback ADD ctr1: "), "{logged}");
    assert!(!err.contains("DEBUG"), "{err}");
    // the config's `log` key
    let file2 = d.0.join("conf.log");
    let conf2 = format!(r#"{{"cniVersion":"1.0.0","name":"n","log":"{}"}}"#, file2.display());
    run_as(&d.0, "loopback", &[], &base, &conf2);
    let logged = std::fs::read_to_string(&file2).unwrap();
    assert!(logged.contains("DEBUG loopback ADD ctr1: "), "{logged}");
}
