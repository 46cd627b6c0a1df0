//! `cni-multi install`, install.sh, the DaemonSet manifest and the release tarball.
//! Everything here works in private temp directories; nothing touches /opt/cni/bin.

use cni_multi::install::{self, Action, Change, Options};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const APPLETS: &[&str] = &["bridge", "host-local", "loopback", "ptp", "static"];

/// A temp directory removed on drop.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        TempDir(tempfile::Builder::new().prefix(&format!("cnim-inst-{tag}-")).tempdir().unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fake "cni-multi build": some bytes plus the marker.
fn fake_binary(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(install::marker());
    bytes.extend_from_slice(b"\ntrailer\n");
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn opts(dir: &Path, src: &Path) -> Options {
    Options {
        dir: dir.to_path_buf(),
        force: false,
        src: src.to_path_buf(),
        conf: None,
        conf_dir: dir.join("net.d"),
        pod_cidr: None,
    }
}

fn action_of(changes: &[Change], path: &Path) -> Action {
    changes
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no change for {}: {changes:?}", path.display()))
        .action
}

fn link_target(p: &Path) -> String {
    fs::read_link(p).unwrap().display().to_string()
}

fn no_temp_files(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.contains(".tmp-"), "temp file left behind: {name}");
    }
}

#[test]
fn install_fresh_then_idempotent() {
    let t = TempDir::new("fresh");
    let src = fake_binary(t.path(), "src-bin", b"build one");
    let dir = t.path().join("opt/cni/bin"); // does not exist yet
    let changes = install::install(&opts(&dir, &src), APPLETS).unwrap();
    let bin = dir.join("cni-multi");
    assert_eq!(action_of(&changes, &bin), Action::Created);
    assert_eq!(fs::read(&bin).unwrap(), fs::read(&src).unwrap());
    assert_eq!(fs::metadata(&bin).unwrap().permissions().mode() & 0o7777, 0o755);
    for a in APPLETS {
        assert_eq!(link_target(&dir.join(a)), "cni-multi", "{a}");
        assert_eq!(action_of(&changes, &dir.join(a)), Action::Created);
        // the link resolves to the binary
        assert_eq!(fs::read(dir.join(a)).unwrap(), fs::read(&src).unwrap());
    }
    no_temp_files(&dir);

    let again = install::install(&opts(&dir, &src), APPLETS).unwrap();
    assert!(again.iter().all(|c| c.action == Action::Unchanged), "second run changed something: {again:?}");
    assert_eq!(again.len(), 1 + APPLETS.len());
    let entries = fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 1 + APPLETS.len(), "only the binary and the links");
}

#[test]
fn refuses_foreign_regular_file_and_changes_nothing() {
    let t = TempDir::new("foreign");
    let src = fake_binary(t.path(), "src-bin", b"build one");
    let dir = t.path().join("bin");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("bridge"), b"\x7fELF the reference bridge").unwrap();
    let err = install::install(&opts(&dir, &src), APPLETS).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("bridge") && msg.contains("--force"), "{msg}");
    // planned before acting: not even the binary was written
    assert!(!dir.join("cni-multi").exists());
    assert!(!dir.join("ptp").exists());
    assert_eq!(fs::read(dir.join("bridge")).unwrap(), b"\x7fELF the reference bridge");

    let mut o = opts(&dir, &src);
    o.force = true;
    let changes = install::install(&o, APPLETS).unwrap();
    assert_eq!(action_of(&changes, &dir.join("bridge")), Action::Forced);
    assert_eq!(link_target(&dir.join("bridge")), "cni-multi");
}

#[test]
fn refuses_foreign_symlink_and_foreign_binary_name() {
    let t = TempDir::new("foreignlink");
    let src = fake_binary(t.path(), "src-bin", b"build one");
    let dir = t.path().join("bin");
    fs::create_dir(&dir).unwrap();
    symlink("/usr/lib/cni/ptp", dir.join("ptp")).unwrap();
    assert!(install::install(&opts(&dir, &src), APPLETS).is_err());
    assert_eq!(link_target(&dir.join("ptp")), "/usr/lib/cni/ptp");

    let t2 = TempDir::new("foreignbin");
    let dir2 = t2.path().join("bin");
    fs::create_dir(&dir2).unwrap();
    fs::write(dir2.join("cni-multi"), b"some other program").unwrap();
    let err = install::install(&opts(&dir2, &src), APPLETS).unwrap_err();
    assert!(format!("{err:#}").contains("cni-multi"));
    assert_eq!(fs::read(dir2.join("cni-multi")).unwrap(), b"some other program");
}

#[test]
fn repairs_and_updates_what_is_ours_without_force() {
    let t = TempDir::new("repair");
    let old = fake_binary(t.path(), "old-bin", b"build zero");
    let src = fake_binary(t.path(), "src-bin", b"build one, newer and longer");
    let dir = t.path().join("bin");
    fs::create_dir(&dir).unwrap();
    fs::copy(&old, dir.join("cni-multi")).unwrap(); // an older cni-multi
    fs::copy(&old, dir.join("loopback")).unwrap(); // a plain copy instead of a link
    symlink(dir.join("cni-multi"), dir.join("bridge")).unwrap(); // absolute link
    symlink("/gone/cni-multi", dir.join("ptp")).unwrap(); // dangling link to some cni-multi
    symlink("cni-multi", dir.join("static")).unwrap(); // already right
    symlink("cni-multi", dir.join("retired-plugin")).unwrap(); // applet that no longer exists
    symlink("/usr/lib/cni/tuning", dir.join("tuning")).unwrap(); // foreign, but not an applet name here

    let changes = install::install(&opts(&dir, &src), APPLETS).unwrap();
    assert_eq!(action_of(&changes, &dir.join("cni-multi")), Action::Updated);
    assert_eq!(fs::read(dir.join("cni-multi")).unwrap(), fs::read(&src).unwrap());
    assert_eq!(action_of(&changes, &dir.join("loopback")), Action::Repaired);
    assert_eq!(action_of(&changes, &dir.join("bridge")), Action::Repaired);
    assert_eq!(action_of(&changes, &dir.join("ptp")), Action::Repaired);
    assert_eq!(action_of(&changes, &dir.join("static")), Action::Unchanged);
    assert_eq!(action_of(&changes, &dir.join("host-local")), Action::Created);
    assert_eq!(action_of(&changes, &dir.join("retired-plugin")), Action::Removed);
    for a in APPLETS {
        assert_eq!(link_target(&dir.join(a)), "cni-multi", "{a}");
    }
    assert!(fs::symlink_metadata(dir.join("retired-plugin")).is_err());
    assert_eq!(link_target(&dir.join("tuning")), "/usr/lib/cni/tuning", "foreign non-applet left alone");
    no_temp_files(&dir);
}

/// Names the dispatcher answers to besides the applets (`cnitool`, `cni-multi*`): a link of such a
/// name works, so it is not a stale applet link.
fn alias_names() -> Vec<String> {
    let mut names: Vec<String> = cni_multi::applets::ALIASES.iter().map(|a| a.to_string()).collect();
    names.push(format!("{}-previous", cni_multi::applets::MULTI_PREFIX));
    names
}

#[test]
fn install_keeps_cnitool_and_other_alias_links() {
    let t = TempDir::new("alias");
    let src = fake_binary(t.path(), "src-bin", b"build one");
    let dir = t.path().join("bin");
    install::install(&opts(&dir, &src), APPLETS).unwrap();
    for a in alias_names() {
        symlink("cni-multi", dir.join(&a)).unwrap();
    }
    symlink("cni-multi", dir.join("retired-plugin")).unwrap();
    let changes = install::install(&opts(&dir, &src), APPLETS).unwrap();
    assert_eq!(action_of(&changes, &dir.join("retired-plugin")), Action::Removed);
    for a in alias_names() {
        assert_eq!(link_target(&dir.join(&a)), "cni-multi", "{a} was removed as stale: {changes:?}");
        assert!(changes.iter().all(|c| c.path != dir.join(&a)), "{a} was touched: {changes:?}");
    }
}

#[test]
fn rejects_source_that_is_not_cni_multi() {
    let t = TempDir::new("badsrc");
    let src = t.path().join("not-ours");
    fs::write(&src, b"random program").unwrap();
    let dir = t.path().join("bin");
    let err = install::install(&opts(&dir, &src), APPLETS).unwrap_err();
    assert!(format!("{err:#}").contains("not a cni-multi binary"), "{err:#}");
    assert!(!dir.exists());
    assert!(install::install(&opts(&dir, &t.path().join("missing")), APPLETS).is_err());
}

#[test]
fn binary_is_replaced_atomically_under_concurrent_readers() {
    let t = TempDir::new("atomic");
    let size = 4 << 20;
    let old = fake_binary(t.path(), "old-bin", &vec![b'A'; size]);
    let src = fake_binary(t.path(), "src-bin", &vec![b'B'; size]);
    let dir = t.path().join("bin");
    fs::create_dir(&dir).unwrap();
    fs::copy(&old, dir.join("cni-multi")).unwrap();
    let (old_bytes, new_bytes) = (fs::read(&old).unwrap(), fs::read(&src).unwrap());

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, bin) = (done.clone(), dir.join("cni-multi"));
        std::thread::spawn(move || {
            let mut reads = 0u32;
            let mut saw_new = false;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let b = fs::read(&bin).expect("the binary must exist at every moment");
                assert!(b == old_bytes || b == new_bytes, "reader saw a half-written binary ({} bytes)", b.len());
                saw_new |= b == new_bytes;
                reads += 1;
            }
            let b = fs::read(&bin).unwrap();
            saw_new |= b == new_bytes;
            (reads, saw_new)
        })
    };
    for _ in 0..3 {
        // flip between the two builds a few times
        install::install(&opts(&dir, &src), APPLETS).unwrap();
        install::install(&opts(&dir, &old), APPLETS).unwrap();
    }
    install::install(&opts(&dir, &src), APPLETS).unwrap();
    done.store(true, Ordering::Release);
    let (reads, saw_new) = reader.join().unwrap();
    assert!(reads > 0 && saw_new);
    no_temp_files(&dir);
}

#[test]
fn concurrent_installers_into_one_dir_all_succeed() {
    // e.g. two DaemonSet pods on one node during a rollout: each sees the other's temp files
    let t = TempDir::new("race");
    let src = fake_binary(t.path(), "src-bin", b"C");
    let dir = t.path().join("bin");
    let many: Vec<String> = (0..100).map(|i| format!("applet{i}")).collect();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (dir, src, many) = (dir.clone(), src.clone(), many.clone());
            std::thread::spawn(move || {
                let names: Vec<&str> = many.iter().map(String::as_str).collect();
                let mut o = opts(&dir, &src);
                o.force = true; // every run rewrites every link
                for _ in 0..15 {
                    // a foreign link makes each run rewrite it, so temp links keep appearing
                    let _ = fs::remove_file(dir.join("applet0"));
                    let _ = symlink("/elsewhere/x", dir.join("applet0"));
                    install::install(&o, &names)?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap().unwrap_or_else(|e| panic!("{e:#}"));
    }
    for a in &many {
        assert_eq!(link_target(&dir.join(a)), "cni-multi");
    }
    assert_eq!(fs::read(dir.join("cni-multi")).unwrap(), fs::read(&src).unwrap());
    no_temp_files(&dir);
}

const CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge","bridge":"cni0"}]}"#;

#[test]
fn installs_conflist_atomically_and_guards_foreign_configs() {
    let t = TempDir::new("conf");
    let src = fake_binary(t.path(), "src-bin", b"build one");
    let dir = t.path().join("bin");
    let conf = t.path().join("10-podnet.conflist");
    fs::write(&conf, CONFLIST).unwrap();
    let mut o = opts(&dir, &src);
    o.conf = Some(conf.clone());
    o.conf_dir = t.path().join("etc/cni/net.d");
    let dest = o.conf_dir.join("10-podnet.conflist");

    let changes = install::install(&o, APPLETS).unwrap();
    assert_eq!(action_of(&changes, &dest), Action::Created);
    assert_eq!(fs::read_to_string(&dest).unwrap(), CONFLIST);
    assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o644);
    let again = install::install(&o, APPLETS).unwrap();
    assert_eq!(action_of(&again, &dest), Action::Unchanged);

    // a new version of the same network replaces the old one
    let v2 = CONFLIST.replace("cni0", "cni1");
    fs::write(&conf, &v2).unwrap();
    assert_eq!(action_of(&install::install(&o, APPLETS).unwrap(), &dest), Action::Updated);
    assert_eq!(fs::read_to_string(&dest).unwrap(), v2);

    // the same file name holding another network is not ours
    let other = CONFLIST.replace("podnet", "othernet");
    fs::write(&dest, &other).unwrap();
    assert!(install::install(&o, APPLETS).is_err());
    assert_eq!(fs::read_to_string(&dest).unwrap(), other);
    o.force = true;
    assert_eq!(action_of(&install::install(&o, APPLETS).unwrap(), &dest), Action::Forced);
    no_temp_files(&o.conf_dir);

    // invalid configs are rejected before anything is written
    let t2 = TempDir::new("badconf");
    let mut o2 = opts(&t2.path().join("bin"), &src);
    for (name, body) in [
        ("a.conflist", "{not json"),
        ("b.conflist", r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#),
        ("c.conflist", r#"{"name":"x","type":"bridge"}"#),
        ("d.txt", CONFLIST),
    ] {
        let p = t2.path().join(name);
        fs::write(&p, body).unwrap();
        o2.conf = Some(p);
        assert!(install::install(&o2, APPLETS).is_err(), "{name} accepted");
        assert!(!t2.path().join("bin").exists(), "{name}: something was installed");
    }
}

#[test]
fn main_exit_codes() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(install::main(&s(&["--help"])), 0);
    assert_eq!(install::main(&s(&["--no-such-flag"])), 2);
    assert_eq!(install::main(&s(&["--dir"])), 2);
    let t = TempDir::new("main");
    let dir = t.path().join("bin");
    let missing = t.path().join("missing");
    assert_eq!(install::main(&s(&["--dir", dir.to_str().unwrap(), "--src", missing.to_str().unwrap()])), 1);
    let src = fake_binary(t.path(), "src-bin", b"x");
    assert_eq!(install::main(&s(&["--dir", dir.to_str().unwrap(), "--src", src.to_str().unwrap()])), 0);
    assert_eq!(link_target(&dir.join("bridge")), "cni-multi");
}

// ---------------------------------------------------------------- install.sh

fn install_sh() -> PathBuf {
    repo().join("install.sh")
}

#[test]
fn install_sh_marker_matches_the_binary() {
    let script = fs::read(install_sh()).unwrap();
    let needle = install::marker();
    assert!(script.windows(needle.len()).any(|w| w == needle), "MARKER in install.sh differs from src/install.rs");
}

/// A shell script posing as cni-multi: `--list` works; `install` only when `with_install`.
fn fake_script(dir: &Path, with_install: bool) -> PathBuf {
    let marker = String::from_utf8(install::marker().to_vec()).unwrap();
    let install = if with_install {
        r#"install) if [ "$2" = --help ]; then echo "usage: --dir --force --conf --conf-dir"; exit 0; fi
         shift; printf '%s\n' "$@" > "$(dirname "$0")/install-args"; exit 0 ;;"#
    } else {
        ""
    };
    let body = format!(
        "#!/bin/sh\n# {marker}\ncase \"$1\" in\n--list) printf 'bridge  the bridge plugin\\nhost-local\\nptp\\tpoint to point\\n' ;;\n{install}\n*) exit 1 ;;\nesac\n"
    );
    let p = dir.join("cni-multi");
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn run_sh(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("sh").arg(install_sh()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn install_sh_fallback_copies_links_and_refuses_foreign() {
    let t = TempDir::new("sh");
    let srcdir = t.path().join("src");
    fs::create_dir(&srcdir).unwrap();
    let src = fake_script(&srcdir, false);
    let dir = t.path().join("host/opt/cni/bin");
    let d = dir.to_str().unwrap();
    let s = src.to_str().unwrap();

    let (rc, out, err) = run_sh(&["--dir", d, "--src", s]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(fs::read(dir.join("cni-multi")).unwrap(), fs::read(&src).unwrap());
    assert_eq!(fs::metadata(dir.join("cni-multi")).unwrap().permissions().mode() & 0o777, 0o755);
    for a in ["bridge", "host-local", "ptp"] {
        assert_eq!(link_target(&dir.join(a)), "cni-multi");
    }
    let (rc, out, _) = run_sh(&["--dir", d, "--src", s]);
    assert_eq!(rc, 0);
    assert!(out.contains("0 changed, 4 unchanged"), "{out}");

    // a foreign file blocks everything until --force
    fs::remove_file(dir.join("ptp")).unwrap();
    fs::write(dir.join("ptp"), b"reference ptp").unwrap();
    fs::remove_file(dir.join("bridge")).unwrap();
    let (rc, _, err) = run_sh(&["--dir", d, "--src", s]);
    assert_eq!(rc, 1);
    assert!(err.contains("ptp") && err.contains("--force"), "{err}");
    assert!(!dir.join("bridge").exists(), "nothing changes when refusing");
    let (rc, out, err) = run_sh(&["--dir", d, "--src", s, "--force"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(link_target(&dir.join("ptp")), "cni-multi");
    assert_eq!(link_target(&dir.join("bridge")), "cni-multi");
    no_temp_files(&dir);
}

#[test]
fn install_sh_fallback_keeps_cnitool_and_other_alias_links() {
    let t = TempDir::new("shalias");
    let src = fake_script(t.path(), false);
    let dir = t.path().join("bin");
    let args = ["--dir", dir.to_str().unwrap(), "--src", src.to_str().unwrap()];
    let (rc, out, err) = run_sh(&args);
    assert_eq!(rc, 0, "{out}{err}");
    for a in alias_names() {
        symlink("cni-multi", dir.join(&a)).unwrap();
    }
    symlink("cni-multi", dir.join("retired-plugin")).unwrap();
    let (rc, out, err) = run_sh(&args);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("removed stale link") && out.contains("retired-plugin"), "{out}");
    assert!(fs::symlink_metadata(dir.join("retired-plugin")).is_err());
    for a in alias_names() {
        assert_eq!(link_target(&dir.join(&a)), "cni-multi", "{a} was removed as stale: {out}");
    }
}

#[test]
fn install_sh_fallback_installs_conflist() {
    let t = TempDir::new("shconf");
    let src = fake_script(t.path(), false);
    let conf = t.path().join("10-podnet.conflist");
    fs::write(&conf, CONFLIST).unwrap();
    let (dir, net) = (t.path().join("bin"), t.path().join("net.d"));
    let args = ["--src", src.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--conf", conf.to_str().unwrap()];
    let with_dir = [&args[..], &["--conf-dir", net.to_str().unwrap()]].concat();
    let (rc, out, err) = run_sh(&with_dir);
    assert_eq!(rc, 0, "{out}{err}");
    assert_eq!(fs::read_to_string(net.join("10-podnet.conflist")).unwrap(), CONFLIST);
    assert_eq!(fs::metadata(net.join("10-podnet.conflist")).unwrap().permissions().mode() & 0o777, 0o644);
    // another network under the same file name is refused
    fs::write(net.join("10-podnet.conflist"), CONFLIST.replace("podnet", "other")).unwrap();
    let (rc, _, err) = run_sh(&with_dir);
    assert_eq!(rc, 1, "{err}");
    // not a config: refused before anything is written
    fs::write(&conf, r#"{"plugins":[]}"#).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(run_sh(&with_dir).0, 1);
    assert!(!dir.exists());
    no_temp_files(&net);
}

#[test]
fn install_sh_delegates_to_the_binary() {
    let t = TempDir::new("shdel");
    let src = fake_script(t.path(), true);
    let conf = t.path().join("10-x.conflist");
    fs::write(&conf, CONFLIST).unwrap();
    let (rc, out, err) = run_sh(&[
        "--src",
        src.to_str().unwrap(),
        "--dir",
        "/nonexistent/bin",
        "--force",
        "--conf",
        conf.to_str().unwrap(),
        "--conf-dir",
        "/nonexistent/net.d",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let args = fs::read_to_string(t.path().join("install-args")).unwrap();
    let want =
        format!("--dir\n/nonexistent/bin\n--force\n--conf\n{}\n--conf-dir\n/nonexistent/net.d\n", conf.display());
    assert_eq!(args, want);
    assert!(!Path::new("/nonexistent").exists());
    // the pod CIDR flags go to the binary too, in both spellings
    let src_s = src.to_str().unwrap().to_string();
    let conf_s = conf.to_str().unwrap().to_string();
    for (flags, want) in [
        (vec!["--pod-cidr", "198.18.4.0/24"], "--pod-cidr\n198.18.4.0/24\n"),
        (vec!["--pod-cidr=198.18.4.0/24"], "--pod-cidr\n198.18.4.0/24\n"),
        (vec!["--pod-cidr-file", "/nonexistent/cidr"], "--pod-cidr-file\n/nonexistent/cidr\n"),
        (vec!["--pod-cidr-file=/nonexistent/cidr"], "--pod-cidr-file\n/nonexistent/cidr\n"),
    ] {
        let mut argv = vec!["--src", &src_s, "--dir", "/nonexistent/bin", "--conf", &conf_s];
        argv.extend(flags.iter().copied());
        let (rc, out, err) = run_sh(&argv);
        assert_eq!(rc, 0, "{flags:?}: {out}{err}");
        let args = fs::read_to_string(t.path().join("install-args")).unwrap();
        assert_eq!(args, format!("--dir\n/nonexistent/bin\n--conf\n{conf_s}\n{want}"), "{flags:?}");
    }
}

/// The shell fallback accepts exactly the configs `cni-multi install` accepts, and says that the
/// pod CIDR flags need the binary's installer instead of taking them as unknown arguments.
#[test]
fn install_sh_fallback_refuses_the_configs_the_binary_refuses() {
    let t = TempDir::new("shsame");
    let script = fake_script(t.path(), false);
    let binary = fake_binary(t.path(), "src-bin", b"x");
    let cases: &[(&str, &str)] = &[
        ("ok.conflist", CONFLIST),
        ("ok.conf", r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#),
        ("list-in-a.conf", CONFLIST),
        ("type-no-plugins.conflist", r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#),
        ("empty-plugins.conflist", r#"{"name":"n","plugins":[]}"#),
        ("plugin-without-type.conflist", r#"{"name":"n","plugins":[{"type":"bridge"},{}]}"#),
        ("plugin-type-number.conflist", r#"{"name":"n","plugins":[{"type":5}]}"#),
        ("plugin-not-object.conflist", r#"{"name":"n","plugins":[5]}"#),
        ("plugins-not-a-list.conf", r#"{"name":"n","type":"bridge","plugins":{}}"#),
        ("plugins-null.conf", r#"{"name":"n","type":"bridge","plugins":null}"#),
        ("slash-name.conf", r#"{"name":"a/b","type":"bridge"}"#),
        ("dotdot-name.conf", r#"{"name":"..","type":"bridge"}"#),
        ("no-name.conf", r#"{"type":"bridge"}"#),
        ("number-name.conf", r#"{"name":5,"type":"bridge"}"#),
        ("empty-type.conf", r#"{"name":"n","type":""}"#),
        ("array.json", r#"[{"name":"n","type":"bridge"}]"#),
        ("not-json.conf", "{"),
        ("placeholder.conflist", r#"{"name":"n","plugins":[{"type":"bridge","ipam":{"subnet":"__POD_CIDR__"}}]}"#),
        (".hidden.conf", r#"{"name":"n","type":"bridge"}"#),
    ];
    let mut wrong = Vec::new();
    for (i, (name, body)) in cases.iter().enumerate() {
        let case_dir = t.path().join(format!("case{i}"));
        fs::create_dir(&case_dir).unwrap();
        let conf = case_dir.join(name);
        fs::write(&conf, body).unwrap();
        let mut o = opts(&case_dir.join("bin"), &binary);
        o.conf = Some(conf.clone());
        o.conf_dir = case_dir.join("net.d");
        let binary_says = install::install(&o, APPLETS).map(|_| ()).map_err(|e| format!("{e:#}"));
        let sh_dir = case_dir.join("sh-bin");
        let sh_net = case_dir.join("sh-net.d");
        let (rc, out, err) = run_sh(&[
            "--src",
            script.to_str().unwrap(),
            "--dir",
            sh_dir.to_str().unwrap(),
            "--conf",
            conf.to_str().unwrap(),
            "--conf-dir",
            sh_net.to_str().unwrap(),
        ]);
        if binary_says.is_ok() != (rc == 0) {
            wrong.push(format!("{name}: binary {binary_says:?}, install.sh rc {rc} {out}{err}"));
        }
        if rc != 0 && (sh_dir.exists() || sh_net.exists() || !err.contains("install.sh: error:")) {
            wrong.push(format!("{name}: install.sh refused after changing something or without saying so: {err}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // the pod CIDR needs the binary's installer
    let conf = t.path().join("10-podnet.conflist");
    fs::write(&conf, CONFLIST).unwrap();
    let dir = t.path().join("pod-bin");
    let (src_s, conf_s, dir_s) = (script.to_str().unwrap(), conf.to_str().unwrap(), dir.to_str().unwrap());
    for flags in [["--pod-cidr", "198.18.4.0/24"], ["--pod-cidr-file", "/nonexistent/cidr"]] {
        let mut argv = vec!["--src", src_s, "--dir", dir_s, "--conf", conf_s];
        argv.extend(flags);
        let (rc, _, err) = run_sh(&argv);
        assert_eq!(rc, 1, "{flags:?}");
        assert!(
            err.contains("need a cni-multi binary that can install itself") && !err.contains("unknown argument"),
            "{err}"
        );
        assert!(!dir.exists());
    }
}

#[test]
fn install_sh_rejects_bad_usage() {
    assert_eq!(run_sh(&["--bogus"]).0, 1);
    assert_eq!(run_sh(&["--dir"]).0, 1);
    assert_eq!(run_sh(&["--src", "/nonexistent/cni-multi"]).0, 1);
    let (rc, out, _) = run_sh(&["--help"]);
    assert_eq!(rc, 0);
    assert!(out.contains("--dir"), "{out}");
}

/// The real binary, end to end. Needs `cni-multi install` and `--list` wired in src/cli.rs.
#[test]
fn real_binary_installs_itself() {
    let bin = PathBuf::from(crate::harness::runtime::bin());
    assert!(install::file_has_marker(&bin).unwrap(), "the marker did not survive the build");
    let t = TempDir::new("real");
    let dir = t.path().join("bin");
    let out = Command::new(&bin).args(["install", "--dir", dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(dir.join("cni-multi")).unwrap(), fs::read(&bin).unwrap());
    let list = Command::new(&bin).arg("--list").output().unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let want: Vec<String> = cni_multi::applets::names().map(String::from).collect();
    assert_eq!(names, want);
    for a in &want {
        assert_eq!(link_target(&dir.join(a)), "cni-multi");
    }
    // and install.sh run against it delegates and finds nothing to do
    let (rc, out, err) = run_sh(&["--dir", dir.to_str().unwrap(), "--src", bin.to_str().unwrap()]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("0 changed"), "{out}");
}

/// The mode in octal, as `ls` and `chmod` spell it.
fn mode_of(p: &Path) -> String {
    format!("{:o}", fs::metadata(p).unwrap().permissions().mode() & 0o7777)
}

/// `sh -c 'umask 077; exec "$@"'`: the installer runs with a umask that would make 0700 dirs.
fn under_umask_077(cmd: &[&str]) -> std::process::Output {
    Command::new("sh").args(["-c", "umask 077 && exec \"$@\"", "sh"]).args(cmd).output().unwrap()
}

/// The directories an install creates are 0755 like the files in them, whatever the umask; a
/// directory that exists keeps its mode.
#[test]
fn install_creates_directories_0755_under_umask_077() {
    let t = TempDir::new("umask");
    let conf = t.path().join("10-podnet.conflist");
    fs::write(&conf, CONFLIST).unwrap();
    let (bin_dir, conf_dir) = (t.path().join("opt/cni/bin"), t.path().join("etc/cni/net.d"));
    let real = crate::harness::runtime::bin();
    let shell_src = fake_script(t.path(), false);
    let sh = install_sh();
    let runs: [(&str, Vec<&str>); 2] = [
        ("cni-multi install", vec![real, "install", "--src", real]),
        ("install.sh fallback", vec!["sh", sh.to_str().unwrap(), "--src", shell_src.to_str().unwrap()]),
    ];
    for (what, cmd) in runs {
        let _ = fs::remove_dir_all(t.path().join("opt"));
        let _ = fs::remove_dir_all(t.path().join("etc"));
        let mut argv = cmd.clone();
        argv.extend(["--dir", bin_dir.to_str().unwrap(), "--conf", conf.to_str().unwrap()]);
        argv.extend(["--conf-dir", conf_dir.to_str().unwrap()]);
        let out = under_umask_077(&argv);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        for d in ["opt", "opt/cni", "opt/cni/bin", "etc", "etc/cni", "etc/cni/net.d"] {
            assert_eq!(mode_of(&t.path().join(d)), "755", "{what}: {d}");
        }
        assert_eq!(mode_of(&bin_dir.join("cni-multi")), "755", "{what}");
        assert_eq!(mode_of(&conf_dir.join("10-podnet.conflist")), "644", "{what}");
    }
    // an existing directory is left as it is
    fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o711)).unwrap();
    let out = under_umask_077(&[real, "install", "--src", real, "--dir", bin_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode_of(&bin_dir), "711");
}

#[test]
fn pod_cidr_placeholder_is_filled_or_refused() {
    let t = TempDir::new("podcidr");
    let src = fake_binary(t.path(), "src-bin", b"x");
    let conf = t.path().join("10-p.conflist");
    fs::write(&conf, CONFLIST.replace(r#""bridge":"cni0""#, r#""bridge":"cni0","ipam":{"subnet":"__POD_CIDR__"}"#))
        .unwrap();
    let mut o = opts(&t.path().join("bin"), &src);
    o.conf = Some(conf);
    o.conf_dir = t.path().join("net.d");
    let err = install::install(&o, APPLETS).unwrap_err();
    assert!(format!("{err:#}").contains("__POD_CIDR__"), "{err:#}");
    assert!(!t.path().join("bin").exists(), "nothing installed with an unfilled placeholder");

    let cidr_file = t.path().join("pod-cidr");
    fs::write(&cidr_file, "").unwrap(); // node without spec.podCIDR
    o.pod_cidr = Some(install::PodCidr::File(cidr_file.clone()));
    assert!(install::install(&o, APPLETS).is_err());
    // host bits set: host-local would refuse the subnet on every ADD, so nothing is installed
    fs::write(&cidr_file, "198.18.7.9/24\n").unwrap();
    let err = format!("{:#}", install::install(&o, APPLETS).unwrap_err());
    assert!(err.contains("host bits set") && err.contains("198.18.7.0/24"), "{err}");
    assert!(!t.path().join("bin").exists() && !o.conf_dir.exists(), "nothing installed with a bad pod CIDR");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (dir, conf_dir) = (t.path().join("bin").display().to_string(), o.conf_dir.display().to_string());
    let conf = o.conf.as_ref().unwrap().display().to_string();
    let src_s = src.display().to_string();
    let argv =
        ["--dir", &dir, "--src", &src_s, "--conf", &conf, "--conf-dir", &conf_dir, "--pod-cidr", "198.18.7.9/24"];
    assert_eq!(install::main(&s(&argv)), 1, "--pod-cidr with host bits fails");
    assert!(!o.conf_dir.exists());
    fs::write(&cidr_file, "198.18.7.0/24").unwrap();
    install::install(&o, APPLETS).unwrap();
    let written = fs::read_to_string(o.conf_dir.join("10-p.conflist")).unwrap();
    assert!(written.contains(r#""subnet":"198.18.7.0/24""#), "{written}");
    assert!(!written.contains("__POD_CIDR__"));
}

// ---------------------------------------------------------------- deploy/daemonset.yaml

/// Every document of a YAML file as JSON, converted by `yq` (installed by .ci/run).
fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("yq")
        .args(["-c", "."])
        .arg(path)
        .output()
        .expect("yq is needed to read YAML (apt-get install yq; .ci/run installs it)");
    assert!(out.status.success(), "yq failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "null")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The volume (by name) mounted at the longest mountPath that contains `path`, and the rest of the path.
fn mount_for<'a>(container: &'a serde_json::Value, path: &str) -> (&'a str, String) {
    let mut best: Option<(&str, &str)> = None;
    for m in container["volumeMounts"].as_array().unwrap() {
        let mp = m["mountPath"].as_str().unwrap();
        let inside = path == mp || path.starts_with(&format!("{}/", mp.trim_end_matches('/')));
        if inside && best.is_none_or(|(_, b)| mp.len() > b.len()) {
            best = Some((m["name"].as_str().unwrap(), mp));
        }
    }
    let (name, mp) = best.unwrap_or_else(|| panic!("{path} is not on any volume mount of {}", container["name"]));
    (name, path[mp.len()..].trim_start_matches('/').to_string())
}

#[test]
fn daemonset_manifest_matches_install_cli() {
    let docs = yaml_docs(&repo().join("deploy/daemonset.yaml"));
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"]);
    let volumes: Vec<&serde_json::Value> = spec["volumes"].as_array().unwrap().iter().collect();
    let volume = |name: &str| *volumes.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("volume {name}"));

    // runs everywhere, like flannel: tolerate every NoSchedule/NoExecute taint
    let tol = spec["tolerations"].as_array().unwrap();
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(tol.iter().any(|t| t["operator"] == "Exists" && t["effect"] == effect), "toleration {effect}");
    }
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["containers"][0]["name"], "pause");

    let inits = spec["initContainers"].as_array().unwrap();
    let installer = inits.iter().find(|c| c["name"] == "install-cni").expect("install-cni init container");
    let cmd = strs(&installer["command"]);
    assert_eq!(cmd[..2], ["/cni-multi".to_string(), "install".to_string()]);
    let rest: Vec<&str> = cmd[2..].iter().map(String::as_str).collect();
    let args =
        install::parse_args(&rest).unwrap_or_else(|e| panic!("cni-multi install rejects {rest:?}: {}", e.output));
    let o = install::Options::from_args(&args).unwrap();
    assert!(!o.force, "the DaemonSet must not clobber foreign plugins");

    // --dir and --conf-dir land on the host's /opt/cni/bin and /etc/cni/net.d
    for (path, host) in [(&o.dir, "/opt/cni/bin"), (&o.conf_dir, "/etc/cni/net.d")] {
        let (vol, sub) = mount_for(installer, path.to_str().unwrap());
        let hp = &volume(vol)["hostPath"];
        assert_eq!(hp["path"].as_str().unwrap(), host, "{} must be the host's {host}", path.display());
        assert_eq!(sub, "");
        assert_eq!(hp["type"], "DirectoryOrCreate");
    }
    // --conf is a key of the ConfigMap, mounted from it
    let conf = o.conf.as_ref().expect("--conf");
    let (vol, key) = mount_for(installer, conf.to_str().unwrap());
    assert_eq!(volume(vol)["configMap"]["name"], cm["metadata"]["name"]);
    let text = cm["data"][&key].as_str().unwrap_or_else(|| panic!("ConfigMap has no key {key}"));

    // --pod-cidr-file is written by the kubectl init container through a shared volume
    let Some(install::PodCidr::File(cidr_file)) = &o.pod_cidr else { panic!("--pod-cidr-file expected") };
    let (vol, sub) = mount_for(installer, cidr_file.to_str().unwrap());
    let writer = inits.iter().find(|c| c["name"] == "pod-cidr").expect("pod-cidr init container");
    let (wvol, wsub) = mount_for(writer, cidr_file.to_str().unwrap());
    assert_eq!((vol, &sub), (wvol, &wsub));
    assert!(strs(&writer["command"]).join(" ").contains(&format!("> {}", cidr_file.display())));
    let pos = |n: &str| inits.iter().position(|c| c["name"] == n).unwrap();
    assert!(pos("pod-cidr") < pos("install-cni"), "the CIDR must be known before install runs");

    // the default network: bridge + host-local on the pod CIDR, portmap, bandwidth; valid once filled in
    let t = TempDir::new("ds");
    let src = fake_binary(t.path(), "src-bin", b"x");
    let conf_path = t.path().join(&key);
    fs::write(&conf_path, text).unwrap();
    let mut local = opts(&t.path().join("bin"), &src);
    local.conf = Some(conf_path);
    local.conf_dir = t.path().join("net.d");
    local.pod_cidr = Some(install::PodCidr::Value("198.18.9.0/24".into()));
    install::install(&local, APPLETS).unwrap();
    let written: serde_json::Value = serde_json::from_slice(&fs::read(local.conf_dir.join(&key)).unwrap()).unwrap();
    let types: Vec<&str> = written["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["bridge", "portmap", "bandwidth"]);
    assert_eq!(written["plugins"][0]["ipam"]["type"], "host-local");
    assert_eq!(written["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "198.18.9.0/24");
}

#[test]
fn containerfile_is_scratch_with_install_entrypoint() {
    let text = fs::read_to_string(repo().join("Containerfile")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("FROM ")).collect::<Vec<_>>(), [&"FROM scratch"]);
    let entry = lines.iter().find_map(|l| l.strip_prefix("ENTRYPOINT ")).expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(entry).unwrap();
    assert_eq!(entry, ["/cni-multi", "install"]);
    let cmd = lines.iter().find_map(|l| l.strip_prefix("CMD ")).expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert!(install::parse_args(&cmd).is_ok(), "default CMD {cmd:?} must parse");
    assert!(lines.iter().any(|l| l.starts_with("COPY ") && l.ends_with(" /cni-multi")));
}

// ---------------------------------------------------------------- make dist packaging

#[test]
fn dist_tarball_is_deterministic() {
    let t = TempDir::new("dist");
    let bin = fake_binary(t.path(), "cni-multi-build", b"static binary");
    let pack = |out: &str, umask: &str, mtime: &str| {
        let _ = Command::new("touch").args(["-d", mtime]).arg(&bin).status();
        let script = format!(
            "umask {umask}; exec {} {} amd64 v9.9.9 {} 'bridge ptp host-local'",
            repo().join("scripts/dist.sh").display(),
            bin.display(),
            t.path().join(out).display()
        );
        let o = Command::new("bash").args(["-c", &script]).env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        t.path().join(out).join("cni-multi-linux-amd64-v9.9.9.tgz")
    };
    let a = pack("a", "022", "2001-01-01");
    let b = pack("b", "077", "2011-11-11");
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "same inputs, different bytes");
    for sum in ["sha256sum", "sha512sum"] {
        let ext = &sum[..6];
        let ok = Command::new(sum)
            .arg("-c")
            .arg(format!("cni-multi-linux-amd64-v9.9.9.tgz.{ext}"))
            .current_dir(t.path().join("a"))
            .output()
            .unwrap();
        assert!(ok.status.success(), "{sum} -c");
    }
    let list = Command::new("tar").args(["-tvzf"]).arg(&a).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    let names: Vec<&str> = list.lines().map(|l| l.split_whitespace().nth(5).unwrap()).collect();
    assert_eq!(names, ["LICENSE", "README.md", "bridge", "cni-multi", "host-local", "install.sh", "ptp"]);
    for l in list.lines() {
        assert!(l.contains(" 0/0 ") && l.contains("2023-11-14"), "owner/mtime not fixed: {l}");
    }
    assert!(list.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.contains(" cni-multi")), "{list}");
    assert!(list.lines().any(|l| l.starts_with('l') && l.contains("bridge -> cni-multi")), "{list}");
    // the binary inside is the one given
    let x = Command::new("tar").args(["-xzOf"]).arg(&a).arg("cni-multi").output().unwrap();
    assert_eq!(x.stdout, fs::read(&bin).unwrap());
}
