//! The protocol seen from outside the process.
//!
//! - Ours and the reference side by side (reference-features.md §1.2): VERSION bytes, the error
//!   object's shape and codes. Expectations are version-aware: the Debian oracle speaks spec up to
//!   1.0.0, cni-multi up to 1.1.0.
//! - Ours alone, no root needed: the real binary under applet names, the CLI, and the delegation
//!   paths (exec vs in-process) giving identical answers.

use crate::harness::*;
use cni_multi::cni::delegate::delegate_with;
use cni_multi::cni::{CniError, Command, Ctx};
use serde_json::{json, Value};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command as Proc, Stdio};

const APPLETS: &[&str] = &["bridge", "ptp", "loopback", "host-local", "static"];

fn conf(plugin: &str, version: &str) -> Value {
    json!({"cniVersion": version, "name": "proto-net", "type": plugin})
}

/// Run `f` against both implementations, each in its own world.
fn both(tag: &str, f: impl Fn(&World, Flavor, &str)) {
    for imp in [Impl::Reference, Impl::Ours] {
        let w = World::new(tag, 1, imp);
        for applet in APPLETS {
            f(&w, imp.flavor(), applet);
        }
    }
}

#[test]
fn version_reply_bytes() {
    both("pver", |w, flavor, applet| {
        let o = w.raw(applet).env("CNI_COMMAND", "VERSION").stdin_bytes(b"{\"cniVersion\":\"0.4.0\"}").run();
        assert!(o.success(), "{applet} VERSION: {o:?}");
        assert_eq!(o.stdout, flavor.version_reply(), "{applet} VERSION bytes ({flavor:?})");
        // VERSION needs nothing else, not even a config on stdin
        let o = w.raw(applet).env("CNI_COMMAND", "VERSION").run();
        assert_eq!(o.stdout, flavor.version_reply(), "{applet} VERSION with empty stdin");
    });
}

#[test]
fn missing_env_is_code_4() {
    both("penv", |w, _, applet| {
        let o = w.raw(applet).env("CNI_COMMAND", "ADD").stdin_bytes(conf(applet, "1.0.0").to_string().as_bytes()).run();
        let e = o.err_code(4);
        assert_eq!(e.msg, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing", "{applet}");
        assert_eq!(e.details, None);
        assert!(!o.stdout.ends_with('\n'), "no trailing newline after an error");
        assert!(o.stdout.starts_with("{\n    \"code\": 4,\n    \"msg\": "), "4-space indented error: {:?}", o.stdout);
    });
}

#[test]
fn no_command_prints_about_to_stderr_and_exits_0() {
    both("pabout", |w, _, applet| {
        let o = w.raw(applet).run();
        assert!(o.success(), "{applet}: {o:?}");
        assert_eq!(o.stdout, "", "{applet}: stdout stays clean");
        assert!(o.stderr.contains(&format!("CNI {applet} plugin")), "{applet} about: {:?}", o.stderr);
        assert!(o.stderr.contains("CNI protocol versions supported: 0.1.0, 0.2.0"), "{applet}: {:?}", o.stderr);
    });
}

#[test]
fn bad_container_id_is_code_4() {
    both("pcid", |w, _, applet| {
        let o = w.add(&conf(applet, "1.0.0")).plugin(applet).cid("bad id!").run();
        let e = o.err_code(4);
        assert_eq!(e.msg, "invalid characters in containerID", "{applet}");
        assert_eq!(e.details.as_deref(), Some("bad id!"), "{applet}");
        let o = w.add(&conf(applet, "1.0.0")).plugin(applet).cid("-leading-dash").run();
        o.err_code(4);
    });
}

#[test]
fn bad_ifname_is_code_4() {
    both("pifn", |w, _, applet| {
        for bad in ["eth0/x", "a:b", "with space", "0123456789abcdefg", ".", ".."] {
            let o = w.add(&conf(applet, "1.0.0")).plugin(applet).ifname(bad).run();
            o.err_code(4);
        }
    });
}

#[test]
fn bad_cni_version_is_code_1() {
    both("pvers", |w, flavor, applet| {
        for v in ["9.9.9", "1.0", "0.3"] {
            let o = w.add(&conf(applet, v)).plugin(applet).run();
            let e = o.err_code(1);
            assert_eq!(e.msg, "incompatible CNI versions", "{applet}");
            let list: Vec<String> = flavor.supported_versions().iter().map(|v| format!("\"{v}\"")).collect();
            let want = format!("config is \"{v}\", plugin supports [{}]", list.join(" "));
            assert_eq!(e.details.as_deref(), Some(want.as_str()), "{applet} ({flavor:?})");
        }
        // 1.1.0 is refused by the oracle only (§0)
        let o = w.add(&conf(applet, "1.1.0")).plugin(applet).run();
        match flavor {
            Flavor::Debian => assert_eq!(o.err_code(1).msg, "incompatible CNI versions"),
            Flavor::CniMulti => {
                if let Some(e) = o.error() {
                    assert_ne!(e.code, 1, "{applet} must accept spec 1.1.0: {e:?}");
                }
            }
        }
    });
}

#[test]
fn check_before_0_4_0_is_code_1() {
    both("pchk", |w, _, applet| {
        for v in ["0.3.1", "0.3.0", "0.2.0"] {
            let o = w.cni("CHECK", &conf(applet, v)).plugin(applet).run();
            let e = o.err_code(1);
            assert_eq!(e.msg, "config version does not allow CHECK", "{applet} @ {v}");
        }
    });
}

#[test]
fn bad_json_is_code_6() {
    both("pjson", |w, _, applet| {
        for bad in [&b"{\"cniVersion\":"[..], b"not json", b""] {
            let o = w.add(&json!({})).plugin(applet).stdin_bytes(bad).run();
            let e = o.err_code(6);
            assert!(e.msg.starts_with("error unmarshall network config"), "{applet}: {e:?}");
        }
    });
}

#[test]
fn unknown_command_is_code_4() {
    both("pcmd", |w, _, applet| {
        let o = w.cni("FOO", &conf(applet, "1.0.0")).plugin(applet).run();
        let e = o.err_code(4);
        assert_eq!(e.msg, "unknown CNI_COMMAND: FOO", "{applet}");
    });
}

#[test]
fn bad_network_name_is_code_7() {
    both("pname", |w, _, applet| {
        let c = json!({"cniVersion": "1.0.0", "name": "bad name", "type": applet});
        let e = w.add(&c).plugin(applet).run().err_code(7);
        assert_eq!(e.msg, "invalid characters found in network name", "{applet}");
        assert_eq!(e.details.as_deref(), Some("bad name"));
    });
}

/// Ours and the reference give the same code for the same mistake (a cross-check of the above,
/// without hard-coding).
#[test]
fn ours_and_reference_agree_on_error_codes() {
    let r = World::new("pagr", 1, Impl::Reference);
    let o = World::new("pago", 1, Impl::Ours);
    type Mk = fn(&World, &str) -> Outcome;
    let cases: &[(&str, Mk)] = &[
        ("missing env", |w, a| w.raw(a).env("CNI_COMMAND", "DEL").run()),
        ("bad cid", |w, a| w.add(&conf(a, "0.4.0")).plugin(a).cid("a/b").run()),
        ("bad version", |w, a| w.add(&conf(a, "0.0.9")).plugin(a).run()),
        ("check 0.3.1", |w, a| w.cni("CHECK", &conf(a, "0.3.1")).plugin(a).run()),
        ("bad json", |w, a| w.add(&json!({})).plugin(a).stdin_bytes(b"[").run()),
        ("unknown verb", |w, a| w.cni("BOGUS", &conf(a, "0.4.0")).plugin(a).run()),
    ];
    for applet in APPLETS {
        for (what, mk) in cases {
            let (ro, oo) = (mk(&r, applet), mk(&o, applet));
            assert_eq!(ro.err().code, oo.err().code, "{applet} {what}: reference {ro:?} / ours {oo:?}");
        }
    }
}

// ---- ours alone: the binary under applet names, the CLI, delegation ----

const BIN: &str = env!("CARGO_BIN_EXE_cni-multi");

fn tmp(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("cni-multi-proto-{tag}-")).tempdir().unwrap()
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
    let d = tmp("ver");
    let (rc, out, _) = run_as(d.path(), "host-local", &[], &[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(rc, 0);
    assert_eq!(
        out,
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
    let (rc, out, err) = run_as(d.path(), "host-local", &[], &[], "");
    assert_eq!((rc, out.as_str()), (0, ""));
    assert!(err.starts_with("CNI host-local plugin"), "{err}");
    let (rc, out, _) = run_as(d.path(), "host-local", &[], &[("CNI_COMMAND", "ADD")], "{}");
    assert_eq!(rc, 1);
    assert_eq!(
        out,
        "{\n    \"code\": 4,\n    \"msg\": \"required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing\"\n}"
    );
}

#[test]
fn proto_cli_multi_entry() {
    let d = tmp("cli");
    let (rc, out, _) = run_as(d.path(), "cni-multi", &["--list"], &[], "");
    assert_eq!(rc, 0);
    assert!(out.lines().any(|l| l == "host-local"), "{out}");
    let (rc, _, err) = run_as(d.path(), "cni-multi", &["no-such-plugin"], &[], "");
    assert_eq!(rc, 2);
    assert!(err.contains("unknown applet") && err.contains("host-local"), "{err}");
    let (rc, out, _) = run_as(d.path(), "cni-multi", &["loopback", "--help"], &[], "");
    assert_eq!(rc, 0);
    assert!(out.contains("--container-id") && out.contains("CNI loopback plugin"), "{out}");
    let (rc, out, _) = run_as(d.path(), "cni-multi", &["loopback", "--command", "VERSION"], &[], "");
    assert_eq!((rc, out.starts_with("{\"cniVersion\":\"1.1.0\"")), (0, true));
    let (rc, out, _) = run_as(d.path(), "cni-multi", &["--version"], &[], "");
    assert!(rc == 0 && out.starts_with("cni-multi "));
    // flags override the environment; --config replaces stdin
    let conf = d.path().join("c.json");
    std::fs::write(&conf, r#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap();
    let (rc, out, _) = run_as(
        d.path(),
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
    let d = tmp("deleg");
    symlink(BIN, d.path().join("host-local")).unwrap();
    for version in ["0.2.0", "0.4.0", "1.0.0", "1.1.0"] {
        let mut outcomes = Vec::new();
        for (tag, self_exe) in [("exec", Path::new("/nonexistent")), ("inproc", Path::new(BIN))] {
            let data = d.path().join(format!("data-{tag}-{version}"));
            let stdin = format!(
                r#"{{"cniVersion":"{version}","name":"net1","type":"bridge","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"198.18.0.0/24"}}]]}}}}"#,
                data.display()
            );
            let ctx = Ctx {
                container_id: "ctr1".into(),
                ifname: "eth0".into(),
                netns: Some("/nonexistent/netns".into()),
                path: vec![d.path().to_path_buf()],
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
    let d = tmp("log");
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
    let (_, _, err) = run_as(d.path(), "loopback", &[], &base, conf);
    assert!(err.lines().any(|l| l.contains(" DEBUG loopback ADD ctr1: ")), "{err}");
    // quiet at the default level
    let quiet: Vec<_> = base.iter().copied().filter(|(k, _)| *k != "CNI_MULTI_LOG").collect();
    let (_, _, err) = run_as(d.path(), "loopback", &[], &quiet, conf);
    assert!(!err.contains("DEBUG"), "{err}");
    // CNI_MULTI_LOG_FILE
    let file = d.path().join("env.log");
    let mut env = base.to_vec();
    let file_s = file.display().to_string();
    env.push(("CNI_MULTI_LOG_FILE", &file_s));
    let (_, _, err) = run_as(d.path(), "loopback", &[], &env, conf);
    let logged = std::fs::read_to_string(&file).unwrap();
    assert!(logged.contains("DEBUG loopback ADD ctr1: "), "{logged}");
    assert!(!err.contains("DEBUG"), "{err}");
    // the config's `log` key
    let file2 = d.path().join("conf.log");
    let conf2 = format!(r#"{{"cniVersion":"1.0.0","name":"n","log":"{}"}}"#, file2.display());
    run_as(d.path(), "loopback", &[], &base, &conf2);
    let logged = std::fs::read_to_string(&file2).unwrap();
    assert!(logged.contains("DEBUG loopback ADD ctr1: "), "{logged}");
}
