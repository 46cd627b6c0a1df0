//! The whole protocol boundary with injectable environment, stdin, stdout and stderr, so it
//! runs in unit tests without root. `run` is what the binary's main calls for every applet.

use super::error::{code, CniError};
use super::plugin::{no_plugins, Kind, Lookup, Plugin};
use super::{config, env, version, CniResult, Command, Ctx};
use std::collections::BTreeMap;
use std::io::Read;

/// Largest stdin accepted (real configs are a few KiB).
pub const STDIN_LIMIT: u64 = 16 << 20;

/// Called with the parsed invocation before the plugin runs (the binary sets its logging
/// context here: plugin, command, container id, the config's `log` file).
pub type Observer = fn(&Plugin, &Ctx);

/// One invocation's I/O, and what the caller lends the protocol layer.
pub struct Io {
    pub env: BTreeMap<String, String>,
    /// `CNI_*` variables whose value is not UTF-8 (kept lossily in `env`): refused with code 4
    /// where the verb reads them, rather than naming a different interface, path or container.
    pub non_utf8: Vec<String>,
    pub stdin: Box<dyn Read>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The plugins of this binary, handed to the verb as [`Ctx::plugins`] (default: none).
    pub plugins: Lookup,
    /// See [`Observer`] (default: none).
    pub observer: Option<Observer>,
}

impl Io {
    /// In-memory I/O: the given environment and stdin bytes, empty output buffers.
    pub fn new<K: Into<String>, V: Into<String>>(env: impl IntoIterator<Item = (K, V)>, stdin: Vec<u8>) -> Io {
        Io {
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            non_utf8: Vec::new(),
            stdin: Box::new(std::io::Cursor::new(stdin)),
            stdout: Vec::new(),
            stderr: Vec::new(),
            plugins: no_plugins,
            observer: None,
        }
    }

    /// The process's `CNI_*` variables (all the protocol and cni-multi read through here; the
    /// rest of a runtime's environment, often large, is not copied: the binary's entry passes
    /// only those, `sys::stdio::vars_with_prefix`) and the given stdin (the binary's entry
    /// passes fd 0 itself, `sys::stdio::Fd0`; output is still buffered, the caller writes it).
    /// A delegate that is exec'd inherits the whole environment.
    pub fn from_process(stdin: Box<dyn Read>, vars: Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Io {
        let mut non_utf8 = Vec::new();
        let env = vars
            .into_iter()
            .filter(|(k, _)| k.as_encoded_bytes().starts_with(b"CNI_"))
            .map(|(k, v)| {
                let k = k.to_string_lossy().into_owned();
                if v.to_str().is_none() {
                    non_utf8.push(k.clone());
                }
                (k, v.to_string_lossy().into_owned())
            })
            .collect();
        Io { env, non_utf8, stdin, stdout: Vec::new(), stderr: Vec::new(), plugins: no_plugins, observer: None }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Run one CNI invocation of `applet`; returns the exit status (0 or 1). A result (ADD) or an
/// error JSON goes to `io.stdout`, the about text to `io.stderr`.
pub fn run(applet: &Plugin, io: &mut Io) -> i32 {
    match run_inner(applet, io) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(code = e.code, "failed: {e}");
            io.stdout.extend_from_slice(e.to_json().as_bytes());
            1
        }
    }
}

fn run_inner(applet: &Plugin, io: &mut Io) -> Result<(), CniError> {
    let env = {
        let vars = &io.env;
        env::read(&|k| vars.get(k).cloned())?
    };
    let Some(env) = env else {
        io.stderr.extend_from_slice(version::about_text(applet).as_bytes());
        return Ok(());
    };
    if env.command == "VERSION" {
        io.stdout.extend_from_slice(version::version_reply(applet).as_bytes());
        return Ok(());
    }
    refuse_non_utf8(&env.command, &io.non_utf8)?;
    let stdin = read_stdin(&mut io.stdin)?;
    let conf = config::parse_folded(&stdin).map_err(|e| {
        // Go's wording for truncated input; other syntax errors keep serde's text
        let why = if e.is_eof() { "unexpected end of JSON input".to_string() } else { e.to_string() };
        CniError::new(code::DECODE, format!("error unmarshall network config: {why}"))
    })?;
    let name = config::validate_name(&conf)?;
    let command = env::parse_command(&env.command)
        .ok_or_else(|| CniError::env(format!("unknown CNI_COMMAND: {}", env.command)))?;
    let version = config::config_version(&conf)?;
    let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
    let mut ctx = Ctx {
        command,
        container_id: if per_container { env.container_id } else { String::new() },
        netns: Some(env.netns).filter(|s| !s.is_empty()),
        ifname: if per_container { env.ifname } else { String::new() },
        args: Vec::new(),
        raw_args: env.args,
        path: env::split_path(&env.path),
        stdin,
        conf,
        spec: version.parse().ok(),
        version,
        name,
        prev_result: None,
        plugins: io.plugins,
        netns_override: env::is_true(&env.netns_override),
    };
    if let Some(observe) = io.observer {
        observe(applet, &ctx);
    }
    if !prepare(applet, &mut ctx)? {
        return Ok(());
    }
    if matches!(command, Command::Add | Command::Del) {
        check_netns(&ctx)?;
    }
    ctx.prev_result = match config::prev_result(&ctx.conf, &ctx.version) {
        Ok(r) => r,
        Err(e) if prev_result_must_parse(applet, command) => return Err(e),
        // DEL is best effort, and an applet that does not read prevResult on this verb does not
        // fail on it (as the reference's do not parse it); one that does read it on CHECK, or on
        // ADD without being a chained plugin (loopback, ipvlan), asks `Ctx::read_prev_result`
        Err(e) => {
            tracing::debug!(
                "prevResult does not parse ({e}); on {} only a plugin that reads it fails",
                command.as_str()
            );
            None
        }
    };
    if command == Command::Add && applet.doc.kind == Kind::Meta {
        // a chained plugin passes its prevResult on: one that cannot be printed fails before
        // anything changed, not after (the rollback below cannot undo every change)
        if let Some(prev) = &ctx.prev_result {
            prev.to_json_passed_on(&ctx.version)?;
        }
    }
    tracing::debug!("running {} {}", applet.name, command.as_str());
    if let Some(result) = invoke(applet, &ctx)? {
        // the prevResult passed on (chained plugins, loopback) prints as the reference prints it
        let printed = match &ctx.prev_result {
            Some(prev) if *prev == result => result.to_json_passed_on(&ctx.version),
            _ => result.to_json(&ctx.version),
        };
        match printed {
            Ok(text) => io.stdout.extend_from_slice(text.as_bytes()),
            Err(e) => {
                // The ADD worked but its result cannot be expressed in the requested version
                // (e.g. an L2-only result at 0.2.0): undo it rather than leave it half-made.
                if command == Command::Add {
                    let undo = Ctx { command: Command::Del, prev_result: None, ..ctx.clone() };
                    if let Err(d) = (applet.del)(&undo) {
                        tracing::warn!("rolling back ADD after a result conversion error failed: {d:#}");
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Whether a prevResult that does not parse fails the invocation before the verb runs: for
/// chained plugins' ADD (which work on it). Elsewhere the verb runs without it; a CHECK that
/// verifies against it reads it with [`Ctx::read_prev_result`] (the `steps::check` helpers do),
/// which fails with the parse error where the reference's `version.ParsePrevResult` does, and
/// a CHECK that never reads it (loopback, sbr, host-local, dhcp) does not fail on it.
fn prev_result_must_parse(applet: &Plugin, command: Command) -> bool {
    match command {
        Command::Check => false,
        Command::Add => applet.doc.kind == Kind::Meta,
        Command::Del | Command::Gc | Command::Status | Command::Version => false,
    }
}

/// The `CNI_*` variables a verb reads must be UTF-8 (code 4): a lossy copy would name another
/// interface, namespace path or container than the runtime meant.
fn refuse_non_utf8(command: &str, non_utf8: &[String]) -> Result<(), CniError> {
    let per_container = matches!(command, "ADD" | "DEL" | "CHECK");
    let read_by_verb = |var: &str| match var {
        "CNI_COMMAND" | "CNI_PATH" => true,
        "CNI_CONTAINERID" | "CNI_IFNAME" | "CNI_NETNS" => per_container,
        _ => false,
    };
    match non_utf8.iter().find(|v| read_by_verb(v)) {
        Some(var) => Err(CniError::env(format!("{var} is not valid UTF-8"))),
        None => Ok(()),
    }
}

/// A stdin that was closed when the process started (the binary's entry sees it before sys::stdio
/// puts /dev/null there): every read fails with EBADF, as reading a closed fd 0 does.
pub struct ClosedFd;

impl Read for ClosedFd {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(nix::errno::Errno::EBADF as i32))
    }
}

/// Read all of stdin, refusing more than [`STDIN_LIMIT`] bytes (code 5). A read error is code
/// 5 in the reference's wording ("read /dev/stdin: bad file descriptor").
pub fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>, CniError> {
    // a config is a few KiB: one read (and the one that sees EOF), not std's probe of 32 bytes
    // doubling from there
    let mut buf = Vec::with_capacity(4096);
    stdin.take(STDIN_LIMIT + 1).read_to_end(&mut buf).map_err(|e| {
        // Go's wording: "read /dev/stdin: bad file descriptor" (the C library's text, lower-cased)
        let why = match e.raw_os_error() {
            Some(n) => {
                let text = e.to_string();
                let text = text.strip_suffix(&format!(" (os error {n})")).unwrap_or(&text).to_lowercase();
                format!("read /dev/stdin: {text}")
            }
            None => e.to_string(),
        };
        CniError::new(code::IO_FAILURE, format!("error reading from stdin: {why}"))
    })?;
    if buf.len() as u64 > STDIN_LIMIT {
        return Err(CniError::new(
            code::IO_FAILURE,
            format!("error reading from stdin: input larger than {} MiB", STDIN_LIMIT >> 20),
        ));
    }
    Ok(buf)
}

/// The per-applet part of the skel: version gate for the verb, silent success for GC/STATUS
/// the applet does not implement, the types of the common config keys, then CNI_ARGS against
/// the applet's keys. Returns whether the verb function should run. Shared with in-process
/// delegation.
///
/// DEL and GC are best effort: a mistyped common key or CNI_ARGS that ADD would refuse never
/// fails them. CNI_ARGS is checked strictly (unknown keys and malformed pairs are errors unless
/// `IgnoreUnknown`) only on ADD and CHECK, the verbs whose reference loads it; DEL, GC and
/// STATUS parse it leniently and ignore what they cannot use.
pub(crate) fn prepare(applet: &Plugin, ctx: &mut Ctx) -> Result<bool, CniError> {
    version::gate(ctx.command, &ctx.version, &version::supported_by(applet))?;
    match ctx.command {
        Command::Gc if applet.gc.is_none() => return Ok(false),
        Command::Status if applet.status.is_none() => return Ok(false),
        Command::Version => return Ok(false),
        _ => {}
    }
    if matches!(ctx.command, Command::Add | Command::Check | Command::Status) {
        config::check_common_types(&ctx.conf, applet.doc.kind == Kind::Ipam)?;
    }
    ctx.args = match applet.cni_args {
        Some(keys) if matches!(ctx.command, Command::Add | Command::Check) => {
            env::parse_args_strict(&ctx.raw_args, keys)?
        }
        _ => env::parse_args_lenient(&ctx.raw_args),
    };
    Ok(true)
}

/// Call the applet's verb function; plain errors become code 999, typed ones keep their code.
pub(crate) fn invoke(applet: &Plugin, ctx: &Ctx) -> Result<Option<CniResult>, CniError> {
    let res = match ctx.command {
        Command::Add => (applet.add)(ctx).map(Some),
        Command::Del => (applet.del)(ctx).map(|_| None),
        Command::Check => (applet.check)(ctx).map(|_| None),
        Command::Gc => applet.gc.map_or(Ok(()), |f| f(ctx)).map(|_| None),
        Command::Status => applet.status.map_or(Ok(()), |f| f(ctx)).map(|_| None),
        Command::Version => Ok(None),
    };
    res.map_err(|e| CniError::from_anyhow(&e))
}

/// Refuse to work on our own network namespace (code 8). The reference checks after the
/// plugin ran; we check before, so a stale CNI_NETNS never touches the host.
fn check_netns(ctx: &Ctx) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let Some(target) = ctx.netns.as_deref() else { return Ok(()) };
    let Ok(t) = std::fs::metadata(target) else { return Ok(()) };
    let own = std::fs::metadata("/proc/thread-self/ns/net").or_else(|_| std::fs::metadata("/proc/self/ns/net"));
    ctx.refuse_own_netns(own.is_ok_and(|o| o.dev() == t.dev() && o.ino() == t.ino()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cni::plugin::{Doc, Kind, Version};
    use crate::cni::result::{IpConfig, Route};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) fn fake_add(ctx: &Ctx) -> anyhow::Result<CniResult> {
        if ctx.cni_arg("FAIL").is_some() {
            anyhow::bail!("asked to fail");
        }
        if ctx.get("typed").is_some() {
            return Err(CniError::config("typed failure").with_details("d").into());
        }
        let mut r = CniResult {
            ips: vec![IpConfig {
                address: "198.18.0.2/24".parse()?,
                gateway: "198.18.0.1".parse().ok(),
                interface: None,
            }],
            routes: vec![Route::new("0.0.0.0/0".parse()?, None)],
            ..Default::default()
        };
        if let Some(p) = &ctx.prev_result {
            r.routes.extend(p.routes.iter().cloned());
        }
        Ok(r)
    }
    pub(crate) fn fake_verb(ctx: &Ctx) -> anyhow::Result<()> {
        if ctx.cni_arg("FAIL").is_some() {
            anyhow::bail!("asked to fail");
        }
        Ok(())
    }
    static GC_CALLS: AtomicUsize = AtomicUsize::new(0);
    fn fake_gc(_: &Ctx) -> anyhow::Result<()> {
        GC_CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) const FAKE: Plugin = Plugin {
        name: "fake",
        about: "a fake plugin for protocol tests",
        min_version: Version::new(0, 1, 0),
        cni_args: Some(&["FAIL", "IP"]),
        add: fake_add,
        del: fake_verb,
        check: fake_verb,
        gc: Some(fake_gc),
        status: None,
        subcommands: &[],
        doc: &FAKE_DOC,
    };
    const FAKE_DOC: Doc =
        Doc { kind: Kind::Meta, summary: "", section: "", keys: &[], notes: &[], example: "{}", config: None };
    const FAKE_NEW: Plugin = Plugin { min_version: Version::new(0, 3, 0), cni_args: None, gc: None, ..FAKE };

    fn base_env(cmd: &str) -> Vec<(String, String)> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ctr1"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn go(applet: &Plugin, env: Vec<(String, String)>, stdin: &str) -> (i32, String, String) {
        let mut io = Io::new(env, stdin.as_bytes().to_vec());
        let rc = run(applet, &mut io);
        (rc, io.stdout_str(), String::from_utf8_lossy(&io.stderr).into_owned())
    }

    fn err_of(out: &str) -> (u64, String) {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        (v["code"].as_u64().unwrap(), v["msg"].as_str().unwrap().to_string())
    }

    #[test]
    fn only_cni_variables_are_copied_from_the_process() {
        // the test process has PATH, HOME, ...: none of them is copied
        assert!(std::env::var_os("PATH").is_some());
        let io = Io::from_process(Box::new(std::io::empty()), std::env::vars_os().collect());
        assert!(io.env.keys().all(|k| k.starts_with("CNI_")), "{:?}", io.env.keys().collect::<Vec<_>>());
    }

    #[test]
    fn add_prints_result_in_requested_version() {
        let (rc, out, _) = go(&FAKE, base_env("ADD"), r#"{"cniVersion":"0.3.1","name":"n","type":"fake"}"#);
        assert_eq!(rc, 0);
        assert!(out.starts_with(
            "{\n    \"cniVersion\": \"0.3.1\",\n    \"ips\": [\n        {\n            \"version\": \"4\""
        ));
        assert!(out.ends_with("\"dns\": {}\n}"));
        let (rc, out, _) = go(&FAKE, base_env("ADD"), r#"{"name":"n"}"#);
        assert_eq!(rc, 0);
        assert!(out.contains("\"cniVersion\": \"0.1.0\",\n    \"ip4\""), "{out}");
        let (rc, out, _) = go(&FAKE, base_env("ADD"), r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!(rc, 0);
        assert!(!out.contains("dns"));
    }

    #[test]
    fn prev_result_reaches_the_plugin() {
        let stdin = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"routes":[{"dst":"198.19.0.0/16"}]}}"#;
        let (rc, out, _) = go(&FAKE, base_env("ADD"), stdin);
        assert_eq!(rc, 0);
        assert!(out.contains("198.19.0.0/16"));
        let bad = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}"#;
        let (rc, out, _) = go(&FAKE, base_env("ADD"), bad);
        assert_eq!((rc, err_of(&out).0), (1, 999));
        // DEL ignores an unreadable prevResult
        let (rc, out, _) = go(&FAKE, base_env("DEL"), bad);
        assert_eq!((rc, out.as_str()), (0, ""));
    }

    #[test]
    fn del_check_gc_status_print_nothing() {
        let v11 = r#"{"cniVersion":"1.1.0","name":"n"}"#;
        for cmd in ["DEL", "CHECK"] {
            assert_eq!(go(&FAKE, base_env(cmd), v11), (0, String::new(), String::new()));
        }
        let env = vec![("CNI_COMMAND".to_string(), "GC".to_string()), ("CNI_PATH".to_string(), "/x".to_string())];
        let before = GC_CALLS.load(Ordering::SeqCst);
        assert_eq!(go(&FAKE, env.clone(), v11), (0, String::new(), String::new()));
        assert!(GC_CALLS.load(Ordering::SeqCst) > before);
        let status =
            vec![("CNI_COMMAND".to_string(), "STATUS".to_string()), ("CNI_PATH".to_string(), "/x".to_string())];
        assert_eq!(go(&FAKE, status, v11).0, 0);
        // GC below 1.1.0 is refused even when unimplemented
        let (rc, out, _) = go(&FAKE_NEW, env, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        assert_eq!((rc, err_of(&out)), (1, (1, "config version does not allow GC".to_string())));
    }

    #[test]
    fn check_needs_040() {
        let (rc, out, _) = go(&FAKE, base_env("CHECK"), r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!((rc, err_of(&out)), (1, (1, "config version does not allow CHECK".to_string())));
    }

    #[test]
    fn errors_and_codes() {
        let ok = r#"{"cniVersion":"1.0.0","name":"n"}"#;
        type Case<'a> = (Vec<(String, String)>, &'a str, u64, &'a str);
        let cases: Vec<Case> = vec![
            (base_env("ADD"), "", 6, ""),
            (base_env("ADD"), "{", 6, ""),
            (base_env("ADD"), "{}", 7, "missing network name"),
            (base_env("ADD"), r#"{"name":"a/b"}"#, 7, "invalid characters found in network name"),
            (base_env("ADD"), r#"{"name":"n","cniVersion":"0.9.0"}"#, 1, "incompatible CNI versions"),
            (base_env("BOGUS"), ok, 4, "unknown CNI_COMMAND: BOGUS"),
            (base_env("add"), ok, 4, "unknown CNI_COMMAND: add"),
            (base_env("ADD"), r#"{"name":"n","cniVersion":"1.0.0","typed":true}"#, 7, "typed failure"),
        ];
        for (env, stdin, code, msg) in cases {
            let (rc, out, _) = go(&FAKE, env, stdin);
            let (c, m) = err_of(&out);
            assert_eq!((rc, c), (1, code), "{stdin}: {out}");
            if !msg.is_empty() {
                assert_eq!(m, msg);
            }
        }
        let mut env = base_env("ADD");
        env.push(("CNI_ARGS".into(), "FAIL=1".into()));
        let (rc, out, _) = go(&FAKE, env, ok);
        assert_eq!((rc, err_of(&out)), (1, (999, "asked to fail".to_string())));
        let mut env = base_env("ADD");
        env.push(("CNI_ARGS".into(), "K8S_POD_NAME=x".into()));
        let (_, out, _) = go(&FAKE, env.clone(), ok);
        assert_eq!(err_of(&out), (999, "ARGS: unknown args [\"K8S_POD_NAME=x\"]".to_string()));
        // an applet that ignores CNI_ARGS does not care
        assert_eq!(go(&FAKE_NEW, env, ok).0, 0);
        // FAKE_NEW supports only >= 0.3.0
        let (_, out, _) = go(&FAKE_NEW, base_env("ADD"), r#"{"name":"n","cniVersion":"0.2.0"}"#);
        assert_eq!(err_of(&out).0, 1);
    }

    #[test]
    fn about_and_version() {
        let (rc, out, err) = go(&FAKE, vec![], "");
        assert_eq!((rc, out.as_str()), (0, ""));
        assert!(err.starts_with("CNI fake plugin"));
        let (rc, out, _) = go(&FAKE_NEW, vec![("CNI_COMMAND".into(), "VERSION".into())], "garbage");
        assert_eq!(rc, 0);
        assert_eq!(
            out,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
        );
    }

    #[test]
    fn own_netns_is_refused() {
        let mut env = base_env("ADD");
        env.retain(|(k, _)| k != "CNI_NETNS");
        env.push(("CNI_NETNS".into(), "/proc/self/ns/net".into()));
        let (rc, out, _) = go(&FAKE, env.clone(), r#"{"name":"n"}"#);
        assert_eq!((rc, err_of(&out).0), (1, 8));
        env.push(("CNI_NETNS_OVERRIDE".into(), "TRUE".into()));
        assert_eq!(go(&FAKE, env, r#"{"name":"n"}"#).0, 0);
    }

    const IFACE_DOC: Doc =
        Doc { kind: Kind::Interface, summary: "", section: "", keys: &[], notes: &[], example: "{}", config: None };
    const IPAM_DOC: Doc = Doc { kind: Kind::Ipam, ..IFACE_DOC };
    fn fake_status(_: &Ctx) -> anyhow::Result<()> {
        Ok(())
    }
    /// An interface plugin with CNI_ARGS keys and every verb.
    const FAKE_IFACE: Plugin = Plugin { doc: &IFACE_DOC, status: Some(fake_status), ..FAKE };
    const FAKE_IPAM: Plugin = Plugin { doc: &IPAM_DOC, ..FAKE_IFACE };

    fn with_args(cmd: &str, args: &str) -> Vec<(String, String)> {
        let mut env = base_env(cmd);
        env.push(("CNI_ARGS".into(), args.into()));
        env
    }

    #[test]
    fn cni_args_are_strict_only_on_add_and_check() {
        let v11 = r#"{"cniVersion":"1.1.0","name":"n"}"#;
        for args in ["K8S_POD_NAME=x", "A=b=c", "IgnoreUnknown=maybe;IP=1", "IP=1;"] {
            for cmd in ["ADD", "CHECK"] {
                let (rc, out, _) = go(&FAKE_IFACE, with_args(cmd, args), v11);
                assert_eq!((rc, err_of(&out).0), (1, 999), "{cmd} {args}: {out}");
                assert!(err_of(&out).1.starts_with("ARGS: "), "{cmd} {args}: {out}");
            }
            // DEL, GC and STATUS never fail because of CNI_ARGS
            for cmd in ["DEL", "GC", "STATUS"] {
                assert_eq!(
                    go(&FAKE_IFACE, with_args(cmd, args), v11),
                    (0, String::new(), String::new()),
                    "{cmd} {args}"
                );
            }
        }
        // what DEL can use is still read: FAIL=1 reaches the verb
        let (rc, out, _) = go(&FAKE_IFACE, with_args("DEL", "K8S_POD_NAME=x;FAIL=1"), v11);
        assert_eq!((rc, err_of(&out)), (1, (999, "asked to fail".to_string())));
    }

    #[test]
    fn a_malformed_prev_result_fails_only_where_it_is_read() {
        let bad = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}"#;
        // an interface plugin's ADD does not read it: ignored, as the reference's macvlan does
        let (rc, out, _) = go(&FAKE_IFACE, base_env("ADD"), bad);
        assert_eq!(rc, 0, "{out}");
        assert!(!out.contains("198.19."), "{out}");
        // a chained plugin's ADD does: 999
        let (rc, out, _) = go(&FAKE, base_env("ADD"), bad);
        assert_eq!((rc, err_of(&out).0), (1, 999), "{out}");
        assert!(err_of(&out).1.starts_with("could not parse prevResult: "), "{out}");
        // CHECK runs the plugin's own CHECK, which reads it (`Ctx::read_prev_result`, below)
        // or not (loopback, sbr, host-local, dhcp): a CHECK that does not read it passes
        for applet in [&FAKE_IFACE, &FAKE] {
            assert_eq!(go(applet, base_env("CHECK"), bad).0, 0);
        }
        for cmd in ["DEL", "GC", "STATUS"] {
            let v11 = bad.replace("1.0.0", "1.1.0");
            assert_eq!(go(&FAKE_IFACE, base_env(cmd), &v11).0, 0, "{cmd}");
        }
        // an applet that reads it where the layer let it pass gets the parse error
        let mut ctx = Ctx::new(Command::Add);
        ctx.set_version("1.0.0");
        ctx.conf = config::parse_folded(bad.as_bytes()).unwrap();
        assert_eq!(ctx.read_prev_result().unwrap_err().code, 999);
        ctx.conf = config::parse_folded(br#"{"prevResult":{"cniVersion":"1.0.0","ips":[]}}"#).unwrap();
        ctx.prev_result = config::prev_result(&ctx.conf, "1.0.0").unwrap();
        assert!(ctx.read_prev_result().unwrap().is_some());
        assert!(Ctx::new(Command::Add).read_prev_result().unwrap().is_none());
    }

    #[test]
    fn mistyped_common_keys_fail_add_check_status_not_del_gc() {
        let confs = [
            (r#""ipam":{"type":5}"#, "failed to load netconf: ipam.type: expected a string, got number"),
            (r#""ipam":"host-local""#, "failed to load netconf: ipam: expected an object, got string"),
            (
                r#""dns":{"nameservers":"198.18.0.53"}"#,
                "failed to load netconf: dns.nameservers: expected an array of strings, got string",
            ),
            (r#""dns":{"domain":5}"#, "failed to load netconf: dns.domain: expected a string, got number"),
            (r#""dns":{"search":[1]}"#, "failed to load netconf: dns.search[0]: expected a string, got number"),
            (r#""dns":[]"#, "failed to load netconf: dns: expected an object, got array"),
            (r#""type":5"#, "failed to load netconf: type: expected a string, got number"),
            (
                r#""capabilities":{"mac":"yes"}"#,
                "failed to load netconf: capabilities.mac: expected a boolean, got string",
            ),
        ];
        for (key, msg) in confs {
            let conf = format!(r#"{{"cniVersion":"1.1.0","name":"n",{key}}}"#);
            for cmd in ["ADD", "CHECK", "STATUS"] {
                let (rc, out, _) = go(&FAKE_IFACE, base_env(cmd), &conf);
                assert_eq!((rc, err_of(&out)), (1, (999, msg.to_string())), "{cmd} {key}");
            }
            for cmd in ["DEL", "GC"] {
                assert_eq!(go(&FAKE_IFACE, base_env(cmd), &conf).0, 0, "{cmd} {key}");
            }
        }
        // an IPAM plugin decodes only `ipam`, as the reference's do
        let dns = r#"{"cniVersion":"1.1.0","name":"n","dns":{"domain":5},"type":5}"#;
        assert_eq!(go(&FAKE_IPAM, base_env("ADD"), dns).0, 0);
        let ipam = r#"{"cniVersion":"1.1.0","name":"n","ipam":{"type":[]}}"#;
        assert_eq!(err_of(&go(&FAKE_IPAM, base_env("ADD"), ipam).1).0, 999);
        // well-typed values (and nulls, which Go skips) pass
        let good = r#"{"cniVersion":"1.1.0","name":"n","type":"x","ipam":{"type":"host-local"},"capabilities":{"mac":true},
                      "dns":{"nameservers":["198.18.0.53",null],"domain":"d","search":[],"options":["ndots:2"]},"DNS":{"domain":null}}"#;
        assert_eq!(go(&FAKE_IFACE, base_env("ADD"), good).0, 0);
    }

    #[test]
    fn unreadable_stdin_is_code_5_in_the_reference_wording() {
        let mut io = Io::new(base_env("DEL"), vec![]);
        io.stdin = Box::new(ClosedFd);
        assert_eq!(run(&FAKE, &mut io), 1);
        assert_eq!(
            err_of(&io.stdout_str()),
            (5, "error reading from stdin: read /dev/stdin: bad file descriptor".to_string())
        );
    }

    #[test]
    fn non_utf8_variables_the_verb_reads_are_code_4() {
        let ok = r#"{"cniVersion":"1.1.0","name":"n"}"#;
        for var in ["CNI_IFNAME", "CNI_CONTAINERID", "CNI_NETNS", "CNI_PATH"] {
            let mut io = Io::new(base_env("ADD"), ok.as_bytes().to_vec());
            io.non_utf8 = vec![var.to_string()];
            assert_eq!(run(&FAKE, &mut io), 1, "{var}");
            assert_eq!(err_of(&io.stdout_str()), (4, format!("{var} is not valid UTF-8")));
        }
        // GC reads neither the container id nor the interface; CNI_ARGS stays lossy
        for (cmd, var) in [("GC", "CNI_IFNAME"), ("GC", "CNI_CONTAINERID"), ("ADD", "CNI_ARGS")] {
            let mut io = Io::new(base_env(cmd), ok.as_bytes().to_vec());
            io.non_utf8 = vec![var.to_string()];
            assert_eq!(run(&FAKE, &mut io), 0, "{cmd} {var}: {}", io.stdout_str());
        }
    }

    #[test]
    fn oversized_stdin_is_a_clean_error() {
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b' ');
                Ok(buf.len())
            }
        }
        let mut io = Io::new(base_env("ADD"), vec![]);
        io.stdin = Box::new(Endless);
        assert_eq!(run(&FAKE, &mut io), 1);
        assert_eq!(err_of(&io.stdout_str()).0, 5);
    }
}

/// Never-panic test: thousands of malformed, huge, deeply nested, unicode and invalid-UTF-8
/// configs and odd environments thrown at `run`; every run must end in success or in a
/// well-formed CNI error with a spec code.
#[cfg(test)]
mod fuzz {
    use super::tests::FAKE;
    use super::*;
    use crate::cni::Version;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items.get(self.below(items.len())).copied().unwrap_or("")
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    fn fuzz_add(ctx: &Ctx) -> anyhow::Result<CniResult> {
        // exercise every Ctx accessor on hostile input
        let _ = ctx.valid_attachments()?;
        let _ = ctx.raw_conf()?;
        let _ = ctx.plugin_conf::<serde_json::Value>()?;
        let _ = (ctx.ipam_type(), ctx.runtime_config("portmappings"), ctx.args_cni("ips"), ctx.require_netns());
        let mut r = super::tests::fake_add(ctx)?;
        if let Some(p) = &ctx.prev_result {
            r.interfaces.extend(p.interfaces.iter().cloned());
            r.ips = p.ips.clone();
            r.dns = p.dns.clone();
        }
        Ok(r)
    }
    const FUZZ: Plugin = Plugin { add: fuzz_add, ..FAKE };
    const FUZZ_NO_ARGS: Plugin = Plugin { add: fuzz_add, cni_args: None, min_version: Version::new(0, 4, 0), ..FAKE };

    const VERSIONS: &[&str] =
        &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "", "1.2.0", "x.y", "1", "-1.0.0"];
    const KEYS: &[&str] = &[
        "name",
        "NAME",
        "Name",
        "cniVersion",
        "CNIVERSION",
        "type",
        "ipam",
        "prevResult",
        "PrevResult",
        "dns",
        "runtimeConfig",
        "args",
        "cni.dev/valid-attachments",
        "cni.dev/attachments",
        "mtu",
        "ips",
        "ip4",
        "routes",
        "interfaces",
        "ſubnet",
        "\u{212a}ey",
        "\u{0}",
        "é",
    ];
    const ATOMS: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1e400",
        "18446744073709551616",
        "1.5",
        "\"\"",
        "\"n\"",
        "\"a/b\"",
        "\"..\"",
        "\"198.18.0.2/24\"",
        "\"fd00::1\"",
        "\"0.0.0.0/0\"",
        "\"\\ud800\"",
        "\"\\u0000\"",
        "[]",
        "{}",
        "\"1.0.0\"",
        "\"0.2.0\"",
        "\"é\u{2028}<&>\"",
    ];

    fn value(rng: &mut XorShift, depth: usize) -> String {
        if depth > 4 || rng.chance(40) {
            return rng.pick(ATOMS).to_string();
        }
        let n = rng.below(5);
        if rng.chance(50) {
            let items: Vec<String> = (0..n).map(|_| value(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        } else {
            let items: Vec<String> = (0..n)
                .map(|_| format!("{}:{}", serde_json::to_string(rng.pick(KEYS)).unwrap(), value(rng, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }

    fn result_like(rng: &mut XorShift) -> String {
        let ver = rng.pick(VERSIONS);
        let body = rng.pick(&[
            r#""ips":[{"address":"198.18.0.9/24","gateway":"198.18.0.1","interface":0}],"interfaces":[{"name":"eth0","mtu":9000}]"#,
            r#""ips":[{"address":"fd00::9/64","version":"6"}],"routes":[{"dst":"::/0","gw":"fd00::1","table":300,"scope":253}]"#,
            r#""ip4":{"ip":"198.18.0.9/24","routes":[{"dst":"0.0.0.0/0"}]},"ip6":{"ip":"fd00::9/64"}"#,
            r#""interfaces":[{"name":"lo"}]"#,
            r#""ips":[{"address":"bogus"}]"#,
            r#""routes":[{"dst":"198.18.0.0/15","mtu":-5}]"#,
            r#""dns":{"nameservers":["198.18.0.53"],"domain":"d","search":[1]}"#,
            "",
        ]);
        let sep = if body.is_empty() { "" } else { "," };
        format!(r#"{{"cniVersion":"{ver}"{sep}{body}}}"#)
    }

    fn config(rng: &mut XorShift) -> Vec<u8> {
        let ver = rng.pick(VERSIONS);
        let mut s = match rng.below(6) {
            0 => value(rng, 0),
            1 => format!(r#"{{"cniVersion":"{ver}","name":"net1","prevResult":{}}}"#, result_like(rng)),
            2 => format!(
                r#"{{"CNIVersion":"{ver}","Name":"n","name":{},"ipam":{{"type":"host-local"}},"cni.dev/valid-attachments":{}}}"#,
                rng.pick(ATOMS),
                value(rng, 1)
            ),
            3 => {
                let d = rng.below(200);
                format!(r#"{{"name":"n","cniVersion":"{ver}","x":{}{}}}"#, "[".repeat(d), "]".repeat(d))
            }
            4 => format!(r#"{{"name":"n","cniVersion":"{ver}","k":{}}}"#, value(rng, 0)),
            _ => format!(r#"{{"name":"n","cniVersion":"{ver}"}}"#),
        }
        .into_bytes();
        // mutations
        if rng.chance(15) && !s.is_empty() {
            let at = rng.below(s.len());
            s.truncate(at);
        }
        if rng.chance(15) && !s.is_empty() {
            for _ in 0..rng.below(4) + 1 {
                let at = rng.below(s.len());
                if let Some(b) = s.get_mut(at) {
                    *b = (rng.next() & 0xff) as u8;
                }
            }
        }
        if rng.chance(5) {
            s.extend_from_slice(b"\xff\xfe garbage");
        }
        if rng.chance(1) {
            let big = "a".repeat(1 << 20);
            s = format!(r#"{{"name":"n","cniVersion":"1.0.0","big":"{big}"}}"#).into_bytes();
        }
        s
    }

    fn env(rng: &mut XorShift) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let mut put = |k: &str, v: String| e.push((k.to_string(), v));
        let cmd = rng.pick(&["ADD", "ADD", "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", "BOGUS"]);
        put("CNI_COMMAND", cmd.to_string());
        if rng.chance(90) {
            let id = rng.pick(&["ctr", "a.b-c_d", "", "../etc", "x/y", "é", " sp", "-lead"]);
            put("CNI_CONTAINERID", if rng.chance(3) { "c".repeat(5000) } else { id.to_string() });
        }
        if rng.chance(90) {
            let ns = rng.pick(&["/nonexistent/ns", "/proc/self/ns/net", "", "/", "relative"]);
            put("CNI_NETNS", ns.to_string());
        }
        if rng.chance(90) {
            let ifn = rng.pick(&[
                "eth0",
                "",
                ".",
                "..",
                "a/b",
                "a:b",
                "a b",
                "abcdefghijklmnop",
                "abcdefghijklmno",
                "ééééééé",
                "\u{3000}",
            ]);
            put("CNI_IFNAME", if rng.chance(2) { "i".repeat(100_000) } else { ifn.to_string() });
        }
        if rng.chance(60) {
            let args = rng.pick(&[
                "IP=198.18.0.3",
                "IP=a=b",
                ";",
                ";;",
                "=",
                "IP=1;",
                "FAIL=1",
                "K8S_POD_NAME=x",
                "IgnoreUnknown=1;K8S_POD_NAME=x;K8S_POD_NAMESPACE=y",
                "IgnoreUnknown=maybe",
                "ignoreunknown=1;X=1",
                "\u{0}=\u{0}",
                "IP=é;MAC=\u{2028}",
            ]);
            put("CNI_ARGS", args.to_string());
        }
        if rng.chance(85) {
            put("CNI_PATH", rng.pick(&["/nonexistent", "", ":", "/a::/b"]).to_string());
        }
        if rng.chance(10) {
            put("CNI_NETNS_OVERRIDE", rng.pick(&["1", "true", "no"]).to_string());
        }
        e
    }

    const CODES: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, 999];

    #[test]
    fn never_panics_and_always_answers_cleanly() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut failed) = (0, 0);
        for i in 0..4000 {
            let applet = if i % 3 == 0 { &FUZZ_NO_ARGS } else { &FUZZ };
            let env = env(&mut rng);
            let stdin = config(&mut rng);
            let mut io = Io::new(env.clone(), stdin.clone());
            let rc = run(applet, &mut io);
            let out = io.stdout_str();
            let ctx = || format!("run {i}: env={env:?} stdin={:?} out={out}", String::from_utf8_lossy(&stdin));
            match rc {
                0 => {
                    ok += 1;
                    if !out.is_empty() {
                        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{}", ctx()));
                        assert!(v.get("cniVersion").is_some(), "{}", ctx());
                    }
                }
                1 => {
                    failed += 1;
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{}", ctx()));
                    let code = v["code"].as_u64().unwrap_or(0);
                    assert!(CODES.contains(&code), "{}", ctx());
                    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{}", ctx());
                    assert!(!out.ends_with('\n'), "{}", ctx());
                }
                other => panic!("exit status {other}: {}", ctx()),
            }
        }
        // the generator must reach both outcomes in quantity
        assert!(ok > 300 && failed > 300, "ok={ok} failed={failed}");
    }
}
