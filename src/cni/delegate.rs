//! Run a delegate (IPAM) plugin found on CNI_PATH, as the reference's `invoke` package does
//! (checklist §1.12) — in-process when the binary found is this very executable and we know
//! the plugin (`ctx.plugins`), with results byte-identical to the exec path.

use super::error::CniError;
use super::plugin::{Lookup, Plugin};
use super::result::go_quote;
use super::{io, CniResult, Command, Ctx};
use anyhow::anyhow;
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;

/// How deep in-process delegation may nest (guards against `ipam.type` naming its own plugin).
const MAX_NESTING: u32 = 8;
/// Attempts to exec a plugin that is being written ("text file busy").
const ETXTBSY_RETRIES: u32 = 5;

thread_local! {
    static NESTING: Cell<u32> = const { Cell::new(0) };
}

/// Runs an in-process delegate (the closure) inside the set-up an exec'd one would give itself:
/// the binary's logger names the delegate's applet, command and container on each line and
/// honours its config's `log` key, then puts the caller's back. This layer cannot name the
/// logger, so the logger registers itself once ([`set_in_process_scope`]); without one the
/// delegate just runs.
pub type InProcessScope = fn(&Plugin, &mut Ctx, &mut dyn FnMut(&mut Ctx));
static IN_PROCESS_SCOPE: OnceLock<InProcessScope> = OnceLock::new();

/// Register the [`InProcessScope`] (the first registration wins).
pub fn set_in_process_scope(scope: InProcessScope) {
    let _ = IN_PROCESS_SCOPE.set(scope);
}

/// Run `plugin_type` with `command` on the same stdin. Returns the parsed result for ADD
/// (in `ctx.version`), `None` otherwise. A delegate's CNI error keeps its code (it is a
/// [`CniError`] in the anyhow chain).
pub fn delegate(ctx: &Ctx, plugin_type: &str, command: Command) -> anyhow::Result<Option<CniResult>> {
    delegate_with(ctx, plugin_type, command, Path::new("/proc/self/exe"), ctx.plugins)
}

/// [`delegate`] with the "self" executable and the plugin registry injectable (for tests).
pub fn delegate_with(
    ctx: &Ctx,
    plugin_type: &str,
    command: Command,
    self_exe: &Path,
    lookup: Lookup,
) -> anyhow::Result<Option<CniResult>> {
    let (bin, meta) = locate(plugin_type, &ctx.path)?;
    if same_inode(&meta, self_exe) {
        if let Some(applet) = lookup(plugin_type) {
            tracing::debug!("delegating {} to {plugin_type} in-process", command.as_str());
            return in_process(ctx, applet, command, lookup);
        }
    }
    // a unit-test binary exec'd as a plugin would run the whole test suite again, recursively
    #[cfg(test)]
    if same_inode(&meta, Path::new("/proc/self/exe")) {
        anyhow::bail!("test build: {plugin_type} resolves to the test binary and is not in the registry");
    }
    tracing::debug!("delegating {} to {}", command.as_str(), bin.display());
    exec(ctx, &bin, plugin_type, command)
}

/// The IPAM type of the config, or the reference's error for an empty name.
fn ipam_name(ctx: &Ctx) -> anyhow::Result<String> {
    ctx.ipam_type().map(str::to_string).ok_or_else(|| anyhow!("no plugin name provided"))
}

/// Delegate ADD to `ipam.type`.
pub fn ipam_add(ctx: &Ctx) -> anyhow::Result<CniResult> {
    let t = ipam_name(ctx)?;
    delegate(ctx, &t, Command::Add)?.ok_or_else(|| anyhow!("IPAM plugin {t} returned no result"))
}

/// Delegate DEL to `ipam.type` (also the rollback after a failed ADD).
pub fn ipam_del(ctx: &Ctx) -> anyhow::Result<()> {
    delegate(ctx, &ipam_name(ctx)?, Command::Del).map(|_| ())
}

/// Delegate CHECK to `ipam.type`.
pub fn ipam_check(ctx: &Ctx) -> anyhow::Result<()> {
    delegate(ctx, &ipam_name(ctx)?, Command::Check).map(|_| ())
}

/// Delegate STATUS to `ipam.type`.
pub fn ipam_status(ctx: &Ctx) -> anyhow::Result<()> {
    delegate(ctx, &ipam_name(ctx)?, Command::Status).map(|_| ())
}

/// Delegate GC to `ipam.type`.
pub fn ipam_gc(ctx: &Ctx) -> anyhow::Result<()> {
    delegate(ctx, &ipam_name(ctx)?, Command::Gc).map(|_| ())
}

/// The first regular file named `plugin` in the CNI_PATH dirs (no exec-bit check). Empty entries
/// are skipped (Go's `FindInPath` takes them for the working directory) but listed in the error.
pub fn find_in_path(plugin: &str, paths: &[PathBuf]) -> anyhow::Result<PathBuf> {
    locate(plugin, paths).map(|(p, _)| p)
}

/// [`find_in_path`], with the file's metadata (symlinks followed).
fn locate(plugin: &str, paths: &[PathBuf]) -> anyhow::Result<(PathBuf, std::fs::Metadata)> {
    if plugin.is_empty() {
        anyhow::bail!("no plugin name provided");
    }
    if plugin.contains('/') {
        anyhow::bail!("invalid plugin name: {plugin}");
    }
    if paths.is_empty() {
        anyhow::bail!("no paths provided");
    }
    // an empty entry would be the working directory in Go's FindInPath: never searched here
    for dir in paths.iter().filter(|d| !d.as_os_str().is_empty()) {
        let full = dir.join(plugin);
        if let Some(m) = std::fs::metadata(&full).ok().filter(std::fs::Metadata::is_file) {
            return Ok((full, m));
        }
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    anyhow::bail!("failed to find plugin {} in path [{}]", go_quote(plugin), shown.join(" "))
}

/// Whether `meta` (of a file found in CNI_PATH) is the same inode on the same device as `b`
/// (symlinks followed; works for a deleted /proc/self/exe too).
fn same_inode(meta: &std::fs::Metadata, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(b).is_ok_and(|y| meta.dev() == y.dev() && meta.ino() == y.ino())
}

fn in_process(ctx: &Ctx, applet: &Plugin, command: Command, lookup: Lookup) -> anyhow::Result<Option<CniResult>> {
    let depth = NESTING.with(|n| n.get());
    if depth >= MAX_NESTING {
        anyhow::bail!("delegation nested deeper than {MAX_NESTING} levels (does ipam.type name its own plugin?)");
    }
    NESTING.with(|n| n.set(depth + 1));
    let mut child = ctx.clone();
    child.command = command;
    // a delegate that delegates again finds its plugins in the same registry
    child.plugins = lookup;
    let mut res = Ok(None);
    let mut run = |child: &mut Ctx| {
        res = match io::prepare(applet, child) {
            Ok(true) => io::invoke(applet, child),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
    };
    match IN_PROCESS_SCOPE.get() {
        Some(scope) => scope(applet, &mut child, &mut run),
        None => run(&mut child),
    }
    NESTING.with(|n| n.set(depth));
    match res {
        Err(e) => Err(e.into()),
        Ok(None) => Ok(None),
        Ok(Some(_)) if command != Command::Add => Ok(None),
        // print and re-read, exactly what the exec path would see
        Ok(Some(r)) => {
            let text = r.to_json(&ctx.version)?;
            let back = CniResult::from_slice(text.as_bytes(), &ctx.version)?;
            Ok(Some(back))
        }
    }
}

fn exec(ctx: &Ctx, bin: &Path, plugin_type: &str, command: Command) -> anyhow::Result<Option<CniResult>> {
    let mut attempt = 0;
    let child = loop {
        let mut cmd = std::process::Command::new(bin);
        cmd.env("CNI_COMMAND", command.as_str());
        // the parent's environment, with the invocation's values (they may come from flags)
        let vars = [
            ("CNI_CONTAINERID", ctx.container_id.clone()),
            ("CNI_NETNS", ctx.netns.clone().unwrap_or_default()),
            ("CNI_IFNAME", ctx.ifname.clone()),
            ("CNI_ARGS", ctx.raw_args.clone()),
            ("CNI_PATH", ctx.path.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join(":")),
        ];
        for (k, v) in vars {
            if !v.is_empty() {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) && attempt < ETXTBSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(anyhow!("failed to run plugin {}: {e}", bin.display())),
        }
    };
    let output = feed_and_wait(child, &ctx.stdin)?;
    if !output.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&output.stderr);
    }
    if !output.status.success() {
        return Err(plugin_error(&output.status, &output.stdout, &output.stderr).into());
    }
    if command != Command::Add {
        return Ok(None);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&output.stdout).is_err() {
        let shown = String::from_utf8_lossy(output.stdout.get(..512).unwrap_or(&output.stdout)).into_owned();
        anyhow::bail!("plugin {plugin_type} returned a result that is not JSON: {}", go_quote(&shown));
    }
    CniResult::from_slice(&output.stdout, &ctx.version)
        .map(Some)
        .map_err(|e| anyhow!("failed to read the result of plugin {plugin_type}: {}", e.msg))
}

/// How much of a delegate's stdout / stderr is kept (the rest is read and discarded, so a
/// runaway plugin cannot exhaust our memory).
const STDOUT_LIMIT: u64 = 16 << 20;
const STDERR_LIMIT: u64 = 1 << 20;

/// Read up to `limit` bytes; `true` when there was more.
fn read_bounded(r: impl std::io::Read, limit: u64) -> (Vec<u8>, bool) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut r = r.take(limit + 1);
    let _ = r.read_to_end(&mut buf);
    let over = buf.len() as u64 > limit;
    buf.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    (buf, over)
}

/// Feed stdin and drain stderr from helper threads while stdout is read here, so neither
/// side blocks on a full pipe. A plugin whose stdout outgrows the limit is killed.
fn feed_and_wait(mut child: std::process::Child, data: &[u8]) -> anyhow::Result<std::process::Output> {
    let writer = child.stdin.take().map(|mut pipe| {
        let data = data.to_vec();
        std::thread::spawn(move || {
            // a plugin that exits without reading stdin closes the pipe: not our error
            let _ = pipe.write_all(&data);
        })
    });
    let err_reader = child.stderr.take().map(|mut p| {
        std::thread::spawn(move || {
            let (buf, over) = read_bounded(&mut p, STDERR_LIMIT);
            if over {
                // keep the pipe drained so the plugin never blocks on stderr
                let _ = std::io::copy(&mut p, &mut std::io::sink());
            }
            buf
        })
    });
    let (stdout, over) = child.stdout.take().map(|p| read_bounded(p, STDOUT_LIMIT)).unwrap_or_default();
    if over {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| anyhow!("waiting for plugin: {e}"))?;
    let stderr = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(w) = writer {
        let _ = w.join();
    }
    if over {
        anyhow::bail!("plugin wrote more than {} MiB on stdout; killed it", STDOUT_LIMIT >> 20);
    }
    Ok(std::process::Output { status, stdout, stderr })
}

/// A failed plugin's error: its error JSON when it printed one, else a description.
/// (The reference leaves code 0 on the synthetic errors; we use 999, "internal".)
fn plugin_error(status: &ExitStatus, stdout: &[u8], stderr: &[u8]) -> CniError {
    if stdout.is_empty() {
        if stderr.is_empty() {
            return CniError::internal(format!("netplugin failed with no error message: {}", show_status(status)));
        }
        return CniError::internal(format!("netplugin failed: {}", go_quote(&String::from_utf8_lossy(stderr))));
    }
    match serde_json::from_slice::<serde_json::Value>(stdout) {
        Ok(v) => match CniError::from_json(&v) {
            Some(e) => e,
            None => CniError::internal(format!(
                "netplugin failed but error parsing its diagnostic message {}: not an error object",
                go_quote(&String::from_utf8_lossy(stdout))
            )),
        },
        Err(e) => CniError::internal(format!(
            "netplugin failed but error parsing its diagnostic message {}: {e}",
            go_quote(&String::from_utf8_lossy(stdout))
        )),
    }
}

fn show_status(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("signal: {sig}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::io::tests::FAKE;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SEQ: AtomicUsize = AtomicUsize::new(0);

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "cni-multi-deleg-{}-{}",
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

    static FAKE_STATIC: Plugin = FAKE;
    fn lookup(name: &str) -> Option<&'static Plugin> {
        (name == "fakeipam").then_some(&FAKE_STATIC)
    }
    fn lookup_none(_: &str) -> Option<&'static Plugin> {
        None
    }

    fn write_script(path: &Path, body: &str) {
        std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn ctx_for(dir: &Path, version: &str, extra: &str) -> Ctx {
        let stdin = format!(r#"{{"cniVersion":"{version}","name":"n","ipam":{{"type":"fakeipam"}}{extra}}}"#);
        Ctx {
            container_id: "ctr".into(),
            ifname: "eth0".into(),
            netns: Some("/nonexistent".into()),
            path: vec![dir.join("nope"), dir.to_path_buf()],
            conf: crate::cni::config::parse_folded(stdin.as_bytes()).unwrap(),
            stdin: stdin.into_bytes(),
            spec: version.parse().ok(),
            version: version.into(),
            name: "n".into(),
            ..Ctx::new(Command::Add)
        }
    }

    #[test]
    fn find_in_path_like_reference() {
        let d = TempDir::new();
        std::fs::create_dir(d.0.join("dirplugin")).unwrap();
        std::fs::write(d.0.join("plain"), "x").unwrap(); // no exec bit: still found
        let paths = vec![d.0.clone()];
        assert_eq!(find_in_path("plain", &paths).unwrap(), d.0.join("plain"));
        assert!(find_in_path("dirplugin", &paths)
            .unwrap_err()
            .to_string()
            .starts_with("failed to find plugin \"dirplugin\" in path ["));
        assert_eq!(find_in_path("a/b", &paths).unwrap_err().to_string(), "invalid plugin name: a/b");
        assert_eq!(find_in_path("x", &[]).unwrap_err().to_string(), "no paths provided");
        // empty entries (CNI_PATH=":::") are listed as the reference lists them, never searched
        let empty = crate::cni::env::split_path(":::");
        assert_eq!(
            find_in_path("plain", &empty).unwrap_err().to_string(),
            r#"failed to find plugin "plain" in path [   ]"#
        );
        let mixed = crate::cni::env::split_path(&format!(":{}", d.0.display()));
        assert_eq!(find_in_path("plain", &mixed).unwrap(), d.0.join("plain"));
        assert_eq!(find_in_path("", &paths).unwrap_err().to_string(), "no plugin name provided");
    }

    /// The exec path and the in-process path give identical results and identical errors.
    #[test]
    fn exec_and_in_process_agree() {
        for version in ["0.2.0", "0.4.0", "1.0.0", "1.1.0"] {
            // what the fake applet prints for this version, and its typed error
            let ctx0 = ctx_for(Path::new("/"), version, "");
            let printed = (FAKE.add)(&ctx0).unwrap().to_json(version).unwrap();
            let err_json = CniError::config("typed failure").with_details("d").to_json();

            // exec world: a script that behaves like the fake applet and records what it got
            let ex = TempDir::new();
            std::fs::write(ex.0.join("out.json"), &printed).unwrap();
            std::fs::write(ex.0.join("err.json"), &err_json).unwrap();
            let dir = ex.0.display();
            write_script(
                &ex.0.join("fakeipam"),
                &format!(
                    "cat > {dir}/stdin.seen\necho \"$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME\" > {dir}/env.seen\n\
                     grep -q typed {dir}/stdin.seen && {{ cat {dir}/err.json; exit 1; }}\n\
                     [ \"$CNI_COMMAND\" = ADD ] && cat {dir}/out.json\nexit 0\n"
                ),
            );
            // in-process world: the plugin found on CNI_PATH is "this executable"
            let ip = TempDir::new();
            write_script(&ip.0.join("self"), "echo must-not-run >&2; exit 3\n");
            std::os::unix::fs::symlink(ip.0.join("self"), ip.0.join("fakeipam")).unwrap();
            let me = ip.0.join("self");

            let ctx_ex = ctx_for(&ex.0, version, "");
            let ctx_ip = ctx_for(&ip.0, version, "");
            let a = delegate_with(&ctx_ex, "fakeipam", Command::Add, &me, lookup).unwrap().unwrap();
            let b = delegate_with(&ctx_ip, "fakeipam", Command::Add, &me, lookup).unwrap().unwrap();
            assert_eq!(a, b, "version {version}");
            assert_eq!(a.to_json(version).unwrap(), b.to_json(version).unwrap());
            assert_eq!(std::fs::read(ex.0.join("stdin.seen")).unwrap(), ctx_ex.stdin, "same stdin bytes");
            assert_eq!(std::fs::read_to_string(ex.0.join("env.seen")).unwrap(), "ADD ctr eth0\n");

            for cmd in [Command::Del, Command::Check] {
                assert!(delegate_with(&ctx_ex, "fakeipam", cmd, &me, lookup).unwrap().is_none());
                let r = delegate_with(&ctx_ip, "fakeipam", cmd, &me, lookup);
                if cmd == Command::Check && version == "0.2.0" {
                    // the delegate's own skel refuses CHECK below 0.4.0
                    assert_eq!(CniError::from_anyhow(&r.unwrap_err()).code, 1);
                } else {
                    assert!(r.unwrap().is_none());
                }
            }
            let cmd_seen = std::fs::read_to_string(ex.0.join("env.seen")).unwrap();
            assert!(cmd_seen.starts_with("CHECK "), "CNI_COMMAND overridden: {cmd_seen}");

            let ctx_ex = ctx_for(&ex.0, version, r#","typed":true"#);
            let ctx_ip = ctx_for(&ip.0, version, r#","typed":true"#);
            let ea = delegate_with(&ctx_ex, "fakeipam", Command::Add, &me, lookup).unwrap_err();
            let eb = delegate_with(&ctx_ip, "fakeipam", Command::Add, &me, lookup).unwrap_err();
            assert_eq!(CniError::from_anyhow(&ea), CniError::from_anyhow(&eb));
            assert_eq!(CniError::from_anyhow(&ea).code, 7);
        }
    }

    #[test]
    fn exec_failures_are_described() {
        let d = TempDir::new();
        let p = d.0.join("fakeipam");
        let ctx = ctx_for(&d.0, "1.0.0", "");
        let run = |body: &str| {
            write_script(&p, body);
            delegate_with(&ctx, "fakeipam", Command::Add, Path::new("/nonexistent"), lookup_none)
        };
        let e = run("echo hello\n").unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        let e = CniError::from_anyhow(&run("exit 4\n").unwrap_err());
        assert_eq!((e.code, e.msg.as_str()), (999, "netplugin failed with no error message: exit status 4"));
        let e = CniError::from_anyhow(&run("echo oops >&2; exit 1\n").unwrap_err());
        assert_eq!(e.msg, "netplugin failed: \"oops\\n\"");
        let e = CniError::from_anyhow(&run("echo '{\"code\": 11, \"msg\": \"busy\"}'; exit 1\n").unwrap_err());
        assert_eq!((e.code, e.msg.as_str()), (11, "busy"));
        let e = CniError::from_anyhow(&run("echo nope; exit 1\n").unwrap_err());
        assert!(e.msg.starts_with("netplugin failed but error parsing its diagnostic message \"nope\\n\""));
        let e = run("echo '{\"cniVersion\": \"1.0.0\", \"ips\": 5}'\n").unwrap_err().to_string();
        assert!(e.starts_with("failed to read the result of plugin fakeipam"), "{e}");
        // endless output is bounded and reported, not buffered without limit
        let e = run("yes 0123456789abcdef\n").unwrap_err().to_string();
        assert!(e.contains("more than 16 MiB"), "{e}");
        // a large stdin is fed completely even when the plugin writes a lot first
        let e = run("head -c 300000 /dev/zero | tr '\\0' x >&2; cat > /dev/null; exit 1\n").unwrap_err();
        assert!(CniError::from_anyhow(&e).msg.starts_with("netplugin failed: \"xxx"));
        // a result without cniVersion is read with the config's version
        let r = run("echo '{\"ips\": [{\"address\": \"198.18.0.7/24\"}]}'\n").unwrap().unwrap();
        assert_eq!(r.ips[0].address.to_string(), "198.18.0.7/24");
        // the helpers need an ipam type
        let no_ipam = Ctx { path: vec![d.0.clone()], ..Ctx::new(Command::Add) };
        assert_eq!(ipam_add(&no_ipam).unwrap_err().to_string(), "no plugin name provided");
    }

    static LOOPY: Plugin = Plugin { add: loopy_add, cni_args: None, ..FAKE };
    fn loopy_add(ctx: &Ctx) -> anyhow::Result<CniResult> {
        delegate_with(ctx, "fakeipam", Command::Add, &ctx.path[0].join("self"), |_| Some(&LOOPY))?
            .ok_or_else(|| anyhow!("none"))
    }

    #[test]
    fn self_delegation_is_bounded() {
        let d = TempDir::new();
        write_script(&d.0.join("self"), "exit 3\n");
        std::os::unix::fs::symlink(d.0.join("self"), d.0.join("fakeipam")).unwrap();
        let mut ctx = ctx_for(&d.0, "1.0.0", "");
        ctx.path = vec![d.0.clone()];
        let e = loopy_add(&ctx).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }
}
