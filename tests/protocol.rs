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
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
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

fn tmp(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("cni-multi-proto-{tag}-")).tempdir().unwrap()
}

/// Run the binary as `name` (a symlink), with exactly `env`, `stdin`, and `args`.
fn run_as(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let link = dir.join(name);
    if !link.exists() {
        symlink(crate::harness::runtime::bin(), &link).unwrap();
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

/// Run the binary with `argv0` as its argv[0] (the executable itself, no symlink), `args`, `env`.
fn run_argv0(argv0: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    use std::os::unix::process::CommandExt;
    let out = Proc::new(crate::harness::runtime::bin())
        .arg0(argv0)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// When the binary cannot tell which plugin to run — called by a name that is no applet (a
/// symlink `foo`, a chain of symlinks whose first name is none, an empty argv[0]) or as
/// `cni-multi` without one — a runtime (CNI_COMMAND set) gets a CNI error on stdout (code 4,
/// exit 1); it used to get nothing on stdout and exit 2. A person (no CNI_COMMAND) still gets the
/// usage on stderr and exit 2.
#[test]
fn proto_no_plugin_to_run_is_a_cni_error_for_a_runtime() {
    let d = tmp("noapplet");
    symlink(crate::harness::runtime::bin(), d.path().join("foo")).unwrap();
    symlink(d.path().join("foo"), d.path().join("bar")).unwrap();
    let version = [("CNI_COMMAND", "VERSION")];
    let cases: Vec<(&str, (i32, String, String))> = vec![
        ("symlink foo", run_as(d.path(), "foo", &[], &version, "")),
        ("symlink bar -> foo", run_as(d.path(), "bar", &[], &version, "")),
        ("empty argv[0]", run_argv0("", &[], &version)),
        ("cni-multi alone", run_as(d.path(), "cni-multi", &[], &[("CNI_COMMAND", "ADD")], "{}")),
        ("cni-multi unknown", run_as(d.path(), "cni-multi", &["nope"], &[("CNI_COMMAND", "DEL")], "{}")),
    ];
    for (what, (rc, out, _)) in &cases {
        assert_eq!(*rc, 1, "{what}: {out}");
        let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out:?}"));
        assert_eq!(v["code"], 4, "{what}: {out}");
        assert!(v["msg"].as_str().unwrap_or_default().starts_with("cni-multi: "), "{what}: {out}");
        assert!(v["details"].as_str().unwrap_or_default().contains("host-local"), "{what}: {out}");
    }
    assert!(cases[0].1 .1.contains(r#"unknown applet \"foo\" (argv[0])"#), "{}", cases[0].1 .1);
    assert!(cases[1].1 .1.contains(r#"unknown applet \"bar\""#), "the name called by: {}", cases[1].1 .1);
    // a person at the terminal: usage on stderr, nothing on stdout, exit 2
    for (rc, out, err) in [run_as(d.path(), "foo", &[], &[], ""), run_as(d.path(), "cni-multi", &[], &[], "")] {
        assert_eq!((rc, out.as_str()), (2, ""), "{err}");
        assert!(err.contains("Usage: cni-multi"), "{err}");
    }
}

/// A plugin called by its name ignores its arguments when a runtime calls it (CNI_COMMAND set), as
/// the reference's do: `CNI_COMMAND=VERSION bridge foo` answered "Unrecognized argument: foo"
/// with exit 2. Called by hand (no CNI_COMMAND) the debugging flags are parsed as before, and
/// `cni-multi <plugin> <flags>` keeps them always.
#[test]
fn proto_plugin_called_by_name_ignores_arguments_like_the_reference() {
    let d = tmp("args");
    let version = [("CNI_COMMAND", "VERSION")];
    let reply_of = |exe: &Path| {
        let out = Proc::new(exe).args(["foo", "--bogus"]).env_clear().envs(version).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if have_reference("bridge") {
        let (rc, out) = reply_of(&Path::new(crate::harness::plugin::REFERENCE_DIR).join("bridge"));
        assert_eq!(rc, Some(0), "the reference ignores argv: {out}");
        assert!(out.starts_with("{\"cniVersion\":"), "{out}");
    }
    for args in [&["foo"][..], &["foo", "--bogus"], &["--command", "ADD"], &["--help"]] {
        let (rc, out, err) = run_as(d.path(), "bridge", args, &version, "");
        assert_eq!((rc, out.as_str()), (0, Flavor::CniMulti.version_reply().as_str()), "{args:?}: {err}");
    }
    // a runtime's ADD with a stray argument runs as usual (here: fails on the missing variables)
    let (rc, out, _) = run_as(d.path(), "bridge", &["foo"], &[("CNI_COMMAND", "ADD")], "{}");
    assert_eq!(rc, 1);
    assert!(out.contains("required env variables"), "{out}");
    // by hand: the flags, and their errors on stderr
    let (rc, out, err) = run_as(d.path(), "bridge", &["foo"], &[], "");
    assert_eq!((rc, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("Unrecognized argument: foo"), "{err}");
    let (rc, out, _) =
        run_as(d.path(), "cni-multi", &["bridge", "--command", "VERSION"], &[("CNI_COMMAND", "ADD")], "");
    assert_eq!((rc, out.starts_with("{\"cniVersion\":\"1.1.0\"")), (0, true), "cni-multi <plugin> keeps its flags");
}

/// Delegation to our own binary runs in-process and answers exactly like exec'ing it.
/// With the stub IPAMs this compares errors; once host-local is real it compares results
/// (each path gets its own dataDir, so both allocate the same first address).
#[test]
fn proto_delegate_exec_equals_in_process() {
    let d = tmp("deleg");
    symlink(crate::harness::runtime::bin(), d.path().join("host-local")).unwrap();
    for version in ["0.2.0", "0.4.0", "1.0.0", "1.1.0"] {
        let mut outcomes = Vec::new();
        for (tag, self_exe) in
            [("exec", Path::new("/nonexistent")), ("inproc", Path::new(crate::harness::runtime::bin()))]
        {
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

// ---- the standard streams, the environment's bytes and delegation failures, against the reference

/// Run `plugin` of world `w` inside its host netns through `sh -c 'exec "$@" <redirect>'` (to
/// close fd 0 or 1 of the plugin itself), with exactly `env` and `stdin` on a pipe; (exit status,
/// stdout, stderr). A plugin killed by a signal reports 128 + the signal, as a shell would.
fn run_redirected(
    w: &World,
    plugin: &str,
    redirect: &str,
    env: &[(&str, &OsStr)],
    stdin: &[u8],
) -> (i32, String, String) {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    let exe = w.bin_dir.join(plugin);
    let mut cmd = w.host.command("sh");
    cmd.args(["-c", &format!("exec \"$@\" {redirect}"), "sh"]).arg(&exe);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // the plugin may not read (closed stdin, VERSION): a broken pipe is fine
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn loopback_env(w: &World, command: &'static str) -> Vec<(&'static str, OsString)> {
    vec![
        ("CNI_COMMAND", command.into()),
        ("CNI_CONTAINERID", "cid-std".into()),
        ("CNI_NETNS", w.c(0).path_str().into()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", w.bin_dir.clone().into_os_string()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, OsString)]) -> Vec<(&'static str, &'a OsStr)> {
    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
}

/// A result that cannot be written is a failure: with fd 1 closed, ours exited 0 (std had put
/// /dev/null there and the write "worked"); the reference exits 1 (a closed pipe kills it).
#[test]
fn proto_answer_that_cannot_be_written_to_stdout_is_a_failure() {
    for imp in [Impl::Reference, Impl::Ours] {
        let w = World::new("pstdout", 1, imp);
        let conf = conf("loopback", "1.0.0").to_string();
        let add = loopback_env(&w, "ADD");
        let (rc, _, err) = run_redirected(&w, "loopback", ">&-", &env_refs(&add), conf.as_bytes());
        assert_ne!(rc, 0, "{imp:?} loopback ADD with stdout closed: {err}");
        let version = [("CNI_COMMAND", OsStr::new("VERSION"))];
        let (rc, _, err) = run_redirected(&w, "loopback", ">&-", &version, b"");
        assert_ne!(rc, 0, "{imp:?} VERSION with stdout closed: {err}");
        if imp.flavor() == Flavor::CniMulti {
            assert!(err.contains("error writing the result to stdout"), "ours says why: {err}");
            // a DEL answers nothing: nothing to lose, success
            let del = loopback_env(&w, "DEL");
            assert_eq!(run_redirected(&w, "loopback", ">&-", &env_refs(&del), conf.as_bytes()).0, 0);
        }
        // and with stdout open the same ADD succeeds: the failure above is the closed stdout's
        let (rc, out, err) = run_redirected(&w, "loopback", "", &env_refs(&add), conf.as_bytes());
        assert_eq!(rc, 0, "{imp:?}: {out} {err}");
    }
}

/// A closed stdin is an I/O error (code 5), not an empty config (code 6).
#[test]
fn proto_closed_stdin_is_code_5_like_the_reference() {
    let mut answers = Vec::new();
    for imp in [Impl::Reference, Impl::Ours] {
        let w = World::new("pstdin", 1, imp);
        let del = loopback_env(&w, "DEL");
        let (rc, out, err) = run_redirected(&w, "loopback", "<&-", &env_refs(&del), b"");
        assert_eq!(rc, 1, "{imp:?}: {out} {err}");
        let e: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{imp:?}: not an error JSON: {out}"));
        answers.push((e["code"].as_u64(), e["msg"].as_str().map(str::to_string)));
    }
    assert_eq!(
        answers[1],
        (Some(5), Some("error reading from stdin: read /dev/stdin: bad file descriptor".to_string()))
    );
    assert_eq!(answers[0], answers[1], "reference / ours");
}

/// A CNI_* variable the verb reads that is not UTF-8 is refused (code 4) before anything is
/// done: read lossily, `e\xff` named a different interface (`e\u{fffd}`). The reference refuses
/// the container id too (its id pattern) and uses the other bytes as they are.
#[test]
fn proto_non_utf8_cni_variables_are_code_4() {
    let w = World::new("putf8", 1, Impl::Ours);
    let conf = conf("loopback", "1.0.0").to_string();
    let bad = OsStr::from_bytes(b"e\xff").to_os_string();
    let netns_bad = OsStr::from_bytes(&[w.c(0).path_str().as_bytes(), b"\xff"].concat()).to_os_string();
    for (var, value) in [("CNI_IFNAME", bad.clone()), ("CNI_CONTAINERID", bad.clone()), ("CNI_NETNS", netns_bad)] {
        let mut env = loopback_env(&w, "ADD");
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        let (rc, out, _) = run_redirected(&w, "loopback", "", &env_refs(&env), conf.as_bytes());
        let e: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{var}: {out}"));
        assert_eq!((rc, e["code"].as_u64()), (1, Some(4)), "{var}: {out}");
        if var != "CNI_CONTAINERID" {
            assert_eq!(e["msg"], format!("{var} is not valid UTF-8"));
        }
        assert!(!w.c(0).link("lo").unwrap()["flags"].to_string().contains("\"UP\""), "{var}: lo was set up");
    }
}

/// A delegated plugin that fails without an error JSON on stdout: ours reports code 999 with
/// its stderr as the message, the reference (invoke.RawExec.pluginErr) code 0 — not a code the
/// spec defines.
#[test]
fn proto_delegate_failing_without_an_error_json_is_code_999() {
    for imp in [Impl::Reference, Impl::Ours] {
        let w = World::new("pdeleg", 1, imp);
        let dir = w.tmp.join("ipam-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("failer"), "#!/bin/sh\necho boom >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(dir.join("failer"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let c = json!({"cniVersion": "1.0.0", "name": "pdeleg", "type": "ptp", "ipam": {"type": "failer"}});
        let o = w.add(&c).env("CNI_PATH", dir.to_str().unwrap()).run();
        let e = o.err();
        assert_eq!(e.msg, "netplugin failed: \"boom\\n\"", "{imp:?}");
        assert_eq!(e.code, if imp.flavor() == Flavor::Debian { 0 } else { 999 }, "{imp:?}");
        assert_eq!(w.c(0).link_names(), vec!["lo".to_string()], "{imp:?}: nothing was made");
    }
}

/// Invalid UTF-8 inside a JSON string, or a number beyond f64, anywhere in the config is a
/// decode error (code 6) for ours; Go replaces the bytes with U+FFFD and skips an unknown
/// key's value, so the reference goes on.
#[test]
fn proto_invalid_utf8_and_out_of_range_numbers_in_the_config_are_code_6() {
    let bodies: [&[u8]; 2] = [
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"loopback\",\"x\":\"\xff\"}",
        b"{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"loopback\",\"x\":1e400}",
    ];
    for imp in [Impl::Reference, Impl::Ours] {
        let w = World::new("pbytes", 1, imp);
        for body in bodies {
            let o = w.add(&json!({"type": "loopback"})).stdin_bytes(body).run();
            match imp.flavor() {
                Flavor::Debian => assert!(o.success(), "{o:?}"),
                Flavor::CniMulti => {
                    let e = o.err_code(6);
                    assert!(e.msg.starts_with("error unmarshall network config: "), "{e:?}");
                }
            }
        }
    }
}

/// The JSON integer `-0` (`"mtu": -0`): Go decodes it into an int as 0, so the reference's ptp and
/// bridge take it; ours read it as the float -0.0 and failed ADD and DEL (999, "invalid type:
/// floating point `-0.0`, expected i64"), so an attachment the reference made could not be
/// deleted. Both implementations: ADD, DEL and a second DEL succeed; the MTU is the default.
#[test]
fn proto_negative_zero_integer_is_zero_as_in_go() {
    each_impl("pnegz", 1, &["ptp", "bridge"], |w, which, tag| {
        let s = Subnets::alloc();
        for conf in [ptp_conf(w, &s, tag, None), bridge_conf(w, tag, "cmnz0", &[&s.net4()])] {
            let plugin = conf["type"].as_str().unwrap_or_default().to_string();
            let text = conf.to_string();
            let body = format!("{{\"mtu\":-0,{}", &text[1..]);
            let r = w.add(&conf).stdin_bytes(body.as_bytes()).run().ok();
            assert!(r["ips"][0]["address"].is_string(), "{which:?} {plugin}: {r}");
            let mtu = w.c(0).link("eth0").map(|l| l["mtu"].clone());
            assert_eq!(mtu, Some(json!(1500)), "{which:?} {plugin}: the kernel's default MTU");
            w.del(&conf).stdin_bytes(body.as_bytes()).run().ok();
            assert!(w.c(0).link("eth0").is_none(), "{which:?} {plugin}: DEL removed eth0");
            w.del(&conf).stdin_bytes(body.as_bytes()).run().ok();
        }
    });
}

/// prevResult integers are Go ints: `ips[].interface = -1` is read and echoed (the reference's
/// loopback passes it on; ours refused it, "is not a valid index"), a number beyond int64
/// (`18446744073709551615`) is refused (ours echoed it, the reference fails: "cannot unmarshal
/// number … of type int"), and `interfaces[].mtu = -5` is echoed as v1.9.1's `Mtu int` is (the
/// Debian oracle has no such field: ours only). A route's `mtu` is a Go int too (-1 echoed); its
/// `table` is the kernel's (see differences.md): a negative one stays refused by ours, where the
/// oracle drops the field.
#[test]
fn proto_prev_result_integers_are_go_ints() {
    let prev = |idx: Value| {
        json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mtu": -5, "sandbox": "/x"}],
               "ips": [{"address": "198.18.0.2/24", "interface": idx}]})
    };
    for imp in [Impl::Reference, Impl::Ours] {
        if imp == Impl::Reference && !have_reference("loopback") {
            continue;
        }
        let w = World::new("pgoint", 1, imp);
        let mut c = conf("loopback", "1.0.0");
        c["prevResult"] = prev(json!(-1));
        let r = w.add(&c).run().ok();
        assert_eq!(r["ips"][0]["interface"], -1, "{imp:?}: {r}");
        if imp.flavor() == Flavor::CniMulti {
            assert_eq!(r["interfaces"][0]["mtu"], -5, "{r}");
        }
        c["prevResult"] = prev(json!(18446744073709551615u64));
        let e = w.add(&c).run().err_code(999);
        assert!(e.msg.contains("cannot unmarshal"), "{imp:?}: {e:?}");
        c["prevResult"] = prev(json!(1));
        c["prevResult"]["routes"] = json!([{"dst": "0.0.0.0/0", "mtu": -1}]);
        let r = w.add(&c).run().ok();
        if imp.flavor() == Flavor::CniMulti {
            assert_eq!(r["routes"][0]["mtu"], -1, "{r}");
        }
        c["prevResult"]["routes"] = json!([{"dst": "0.0.0.0/0", "table": -1}]);
        let o = w.add(&c).run();
        match imp.flavor() {
            Flavor::Debian => assert!(o.success(), "{o:?}"),
            Flavor::CniMulti => assert!(o.err_code(999).msg.contains("routes[0].table"), "{o:?}"),
        }
    }
}

/// Empty CNI_PATH entries: Go's `FindInPath` takes one for the working directory, ours never
/// searches it (a runtime's working directory is no place to run plugins from as root), but
/// names the entries as the reference does when none is found: `CNI_PATH=":::"` fails with
/// `failed to find plugin "host-local" in path [   ]` in both (ours said "no paths provided").
/// With a `host-local` in the working directory and `CNI_PATH=":"`, the reference finds it
/// (`host-local`, a relative name) and then cannot exec it (Go's exec looks a name without `/` up
/// in PATH: code 0, "executable file not found in $PATH"); ours does not look there.
#[test]
fn proto_empty_cni_path_entries_are_named_but_never_searched() {
    each_impl("pcpath", 1, &["ptp", "host-local"], |w, which, tag| {
        let s = Subnets::alloc();
        let conf = ptp_conf(w, &s, tag, None);
        let e = w.add(&conf).env("CNI_PATH", ":::").run().err_code(999);
        assert_eq!(e.msg, r#"failed to find plugin "host-local" in path [   ]"#, "{which:?}");
        assert_eq!(w.c(0).link_names(), vec!["lo".to_string()], "{which:?}: nothing made");
        let cwd = w.tmp.join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        symlink(w.bin_dir.join("host-local"), cwd.join("host-local")).unwrap();
        let o = w.add(&conf).env("CNI_PATH", ":").current_dir(&cwd).run();
        match which {
            Impl::Reference => {
                let e = o.err_code(0);
                assert!(e.msg.contains(r#"exec: "host-local": executable file not found"#), "{e:?}");
            }
            Impl::Ours => {
                let e = o.err_code(999);
                assert_eq!(e.msg, r#"failed to find plugin "host-local" in path [ ]"#);
            }
        }
        assert_eq!(w.c(0).link_names(), vec!["lo".to_string()], "{which:?}: nothing made");
        assert!(w.leases(tag).is_empty(), "{which:?}: no lease taken");
    });
}

/// Ours keeps the prevResult a chained plugin is given whatever its version family and converts
/// it to the config's version; the reference's `version.ParsePrevResult` picks its parser by the
/// config's cniVersion and refuses a result of another family.
#[test]
fn proto_prev_result_of_another_version_family_is_converted() {
    let prev = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "198.18.0.2/24", "interface": 0}],
                      "interfaces": [{"name": "eth0", "sandbox": "/x"}]});
    for imp in [Impl::Reference, Impl::Ours] {
        let w = World::new("pfamily", 1, imp);
        let mut c = conf("loopback", "1.0.0");
        c["prevResult"] = prev.clone();
        let o = w.add(&c).run();
        match imp.flavor() {
            Flavor::Debian => {
                let e = o.err_code(999);
                assert!(e.msg.contains("result type supports [1.0.0]"), "{e:?}");
            }
            Flavor::CniMulti => {
                let r = o.ok();
                assert_eq!(r["cniVersion"], "1.0.0");
                assert_eq!(r["ips"], json!([{"address": "198.18.0.2/24", "interface": 0}]), "{r}");
            }
        }
    }
}

/// CHECK with a prevResult that does not parse: the plugins whose CHECK never reads it
/// (loopback: `lo` is up; sbr: nothing; host-local: its store; dhcp: its daemon) answer as
/// the reference does; ours failed them all up front with 999 `could not parse prevResult: …`.
/// One that reads it (static) still fails on it.
#[test]
fn proto_check_ignores_a_bogus_prev_result_where_it_is_not_read() {
    each_impl("pvck", 1, &["loopback", "sbr", "host-local", "dhcp", "static"], |w, imp, _| {
        let bogus = json!({"cniVersion": "1.0.0", "ips": [{"address": "bogus"}]});
        let conf = |ty: &str, ipam: Value| {
            let mut c = json!({"cniVersion": "1.0.0", "name": "pvck", "type": ty, "prevResult": bogus});
            if !ipam.is_null() {
                c["ipam"] = ipam;
            }
            c
        };
        w.c(0).must(&["ip", "link", "set", "lo", "up"]);
        let out = w.cni("CHECK", &conf("loopback", Value::Null)).run();
        assert_eq!(out.code, 0, "{imp:?} loopback: {}", out.stdout);
        let out = w.cni("CHECK", &conf("sbr", Value::Null)).run();
        assert_eq!(out.code, 0, "{imp:?} sbr: {}", out.stdout);
        let hl = json!({"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": "198.18.5.0/24"}]]});
        let e = w.cni("CHECK", &conf("bridge", hl)).plugin("host-local").cid("ctr1").run().err_code(999);
        assert_eq!(e.msg, "host-local: Failed to find address added by container ctr1", "{imp:?}");
        let sock = w.tmp.join("no-dhcp.sock");
        let dhcp = json!({"type": "dhcp", "daemonSocketPath": sock});
        // its daemon's error: an unreachable daemon is code 11 in ours (docs/differences.md)
        let e = w.cni("CHECK", &conf("bridge", dhcp)).plugin("dhcp").run().err();
        let want = match imp {
            Impl::Ours => {
                (11, format!("cannot reach the dhcp daemon at {} (No such file or directory", sock.display()))
            }
            _ => (
                999,
                format!("error dialing DHCP daemon: dial unix {}: connect: no such file or directory", sock.display()),
            ),
        };
        assert_eq!(e.code, want.0, "{imp:?} {e:?}");
        assert!(e.msg.starts_with(&want.1), "{imp:?} {e:?}");
        let st = json!({"type": "static", "addresses": [{"address": "198.18.5.2/24"}]});
        let e = w.cni("CHECK", &conf("bridge", st)).plugin("static").run().err_code(999);
        assert!(
            e.msg.starts_with("could not parse prevResult: ") && e.msg.ends_with("invalid CIDR address: bogus"),
            "{imp:?} {e:?}"
        );
    });
}

/// The CHECKs that verify against prevResult still fail on one that does not parse, with the
/// parse error (the protocol layer no longer fails CHECK up front: each reads it through
/// `Ctx::read_prev_result`), not as if there were none.
#[test]
fn proto_check_that_reads_prev_result_fails_on_a_bogus_one() {
    let w = World::new("pvck2", 1, Impl::Ours);
    let bogus = json!({"cniVersion": "1.0.0", "ips": [{"address": "bogus"}]});
    let cases = [
        json!({"type": "tuning", "dataDir": w.tmp.join("tuning")}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        json!({"type": "bandwidth"}),
        json!({"type": "firewall"}),
        json!({"type": "vrf", "vrfname": "vrf0"}),
        // these run their IPAM's CHECK first (as the reference): static reads it too
        json!({"type": "ptp", "ipam": {"type": "static", "addresses": [{"address": "198.18.5.2/24"}]}}),
        json!({"type": "bridge", "bridge": "br0", "ipam": {"type": "static", "addresses": [{"address": "198.18.5.2/24"}]}}),
        json!({"type": "tap"}),
        json!({"type": "dummy", "ipam": {"type": "static", "addresses": [{"address": "198.18.5.2/24"}]}}),
    ];
    for mut conf in cases {
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("pvck");
        conf["prevResult"] = bogus.clone();
        let e = w.cni("CHECK", &conf).run().err_code(999);
        assert!(
            e.msg.contains("could not parse prevResult: ips[0].address: invalid CIDR address: bogus"),
            "{conf}: {e:?}"
        );
    }
}
