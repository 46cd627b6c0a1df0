//! argv[0] dispatch: the binary runs as the applet it is named after (busybox style), or as
//! `cni-multi <applet> [flags]`, `cni-multi --list`, `--version`, `--help`.

use crate::applets;
use crate::cni::io::{self, Io};
use crate::cni::result::go_quote;
use crate::cni::{code, version, CniError, Ctx, Plugin};
use argh::FromArgs;
use std::io::Write;

const MULTI: &str = "cni-multi";

/// Debugging flags for running one applet by hand; each overrides its CNI_* variable.
#[derive(FromArgs, Default, Debug)]
struct PluginFlags {
    /// CNI_COMMAND: ADD, DEL, CHECK, GC, STATUS or VERSION
    #[argh(option)]
    command: Option<String>,
    /// CNI_NETNS: path of the container's network namespace
    #[argh(option)]
    netns: Option<String>,
    /// CNI_IFNAME: interface name inside the container
    #[argh(option)]
    ifname: Option<String>,
    /// CNI_CONTAINERID
    #[argh(option)]
    container_id: Option<String>,
    /// CNI_ARGS: K=V;K=V
    #[argh(option)]
    args: Option<String>,
    /// CNI_PATH: ':'-separated plugin directories
    #[argh(option)]
    cni_path: Option<String>,
    /// read the network configuration from this file instead of stdin
    #[argh(option)]
    config: Option<String>,
}

/// The binary's entry point, with its argv (argv[0] included); returns the exit status.
pub fn main(argv: Vec<String>) -> i32 {
    install_panic_hook();
    crate::cni::error::add_transient_test(crate::netlink::socket::is_transient);
    dispatch(&argv)
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Dispatch on argv (argv[0] included).
pub fn dispatch(argv: &[String]) -> i32 {
    let prog = argv.first().map(|s| basename(s)).unwrap_or(MULTI);
    let rest = argv.get(1..).unwrap_or(&[]);
    if let Some(applet) = applets::find(prog) {
        return applet_main(applet, prog, rest, Called::ByName);
    }
    // runtime side (issue 6): `cnitool` by argv[0]
    if prog == "cnitool" {
        return crate::tool::main(rest);
    }
    if prog == MULTI || prog.starts_with("cni-multi") {
        return multi_main(rest);
    }
    no_applet(&format!("unknown applet {} (argv[0])", go_quote(prog)))
}

/// Whether a runtime is calling: CNI_COMMAND is set. It then reads stdout for a result or an
/// error, so every answer goes there as CNI JSON; without it a person is at the terminal.
fn called_by_runtime() -> bool {
    std::env::var_os("CNI_COMMAND").is_some_and(|v| !v.is_empty())
}

/// No plugin to run (argv[0] names none, `cni-multi` alone or with an unknown name). A runtime
/// (CNI_COMMAND set) gets a CNI error on stdout, code 4: the plugin is chosen by how it was
/// executed (argv[0]), part of the invocation like the CNI_* variables, and no config was read
/// (code 7 would blame a config never looked at); exit 1. A person gets `why` and the usage on
/// stderr, exit 2.
fn no_applet(why: &str) -> i32 {
    let known = applets::names().collect::<Vec<_>>().join(", ");
    if called_by_runtime() {
        let err = CniError::env(format!("{MULTI}: {why}")).with_details(format!(
            "the plugin is named by argv[0] or by the first argument of {MULTI}; known plugins: {known}"
        ));
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(err.to_json().as_bytes());
        let _ = out.flush();
        return 1;
    }
    let _ = writeln!(
        std::io::stderr(),
        "{MULTI}: {why}; known applets: {known} (and the commands tool, install)\n\n{}",
        usage()
    );
    2
}

/// How an applet was chosen: by the name the binary was called by (a plugin as a runtime runs
/// it), or as `cni-multi <applet>` (the debugging flags apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Called {
    ByName,
    AsArgument,
}

fn usage() -> String {
    let mut s = format!(
        "Usage: {MULTI} <applet> [flags]   (or call the binary by an applet's name)\n       \
         {MULTI} --list | --version | --help\n       \
         {MULTI} <applet> --help\n       \
         {MULTI} tool <add|check|del|gc|status|validate> ...   (the runtime side, as cnitool; also as `cnitool`)\n       \
         {MULTI} install [--dir DIR] [--conf FILE] ...   (the applet links in a CNI bin directory)\n\nApplets:\n"
    );
    for a in applets::APPLETS {
        s.push_str(&format!("  {:<12} {}\n", a.name, a.about));
    }
    s
}

/// `cni-multi --help`: usage, then every applet's documentation (keys, example) from its DOC.
fn full_help() -> String {
    let mut s = usage();
    s.push('\n');
    s.push_str(&crate::docs::common_text());
    for a in applets::APPLETS {
        s.push('\n');
        s.push_str(&crate::docs::text(a));
    }
    s
}

fn multi_main(rest: &[String]) -> i32 {
    let Some(first) = rest.first() else {
        if called_by_runtime() {
            return no_applet("called without an applet name");
        }
        let _ = std::io::stderr().write_all(usage().as_bytes());
        return 2;
    };
    let out = |s: &str| {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
        let _ = o.flush();
    };
    match first.as_str() {
        "--list" | "-l" => {
            let mut s = String::new();
            for n in applets::names() {
                s.push_str(n);
                s.push('\n');
            }
            out(&s);
            0
        }
        "--version" | "-V" => {
            out(&format!(
                "{MULTI} {}\nCNI protocol versions supported: {}\n",
                env!("CARGO_PKG_VERSION"),
                version::join(version::SUPPORTED, ", ")
            ));
            0
        }
        "--help" | "-h" | "help" => {
            out(&full_help());
            0
        }
        // `cni-multi tool ...`: the cnitool/libcni equivalent (issue 6)
        "tool" => crate::tool::main(rest.get(1..).unwrap_or(&[])),
        "install" => crate::install::main(rest.get(1..).unwrap_or(&[])),
        name => match applets::find(name) {
            Some(applet) => applet_main(applet, name, rest.get(1..).unwrap_or(&[]), Called::AsArgument),
            None => no_applet(&format!("unknown applet {}", go_quote(name))),
        },
    }
}

/// The logging context of one invocation (every log line names the plugin, the command and the
/// container), and the config's `log` file; called by the protocol layer once it parsed them.
fn log_context(plugin: &Plugin, ctx: &Ctx) {
    crate::logging::set_context(plugin.name, ctx.command.as_str(), &ctx.container_id);
    if let Some(path) = ctx.conf.get("log").and_then(|v| v.as_str()) {
        crate::logging::set_file(path);
    }
}

fn applet_main(applet: &Plugin, prog: &str, args: &[String], called: Called) -> i32 {
    if let Some(word) = args.first() {
        // long-running or setup subcommands some plugins carry besides the CNI verbs (`dhcp daemon`)
        if let Some(sub) = applet.subcommands.iter().find(|s| s.word == word) {
            crate::logging::init(&|k| std::env::var(k).ok());
            return (sub.main)(args.get(1..).unwrap_or(&[]));
        }
    }
    // a plugin called by its name by a runtime ignores its arguments, as the reference's do (the
    // skel never looks at argv); the flags are for a person running it by hand
    let ignore_args = called == Called::ByName && called_by_runtime();
    let flags = if args.is_empty() || ignore_args {
        PluginFlags::default()
    } else {
        // `-h` as `--help` (argh knows only the long form)
        let strs: Vec<&str> = args.iter().map(|a| if a == "-h" { "--help" } else { a.as_str() }).collect();
        match PluginFlags::from_args(&[prog], &strs) {
            Ok(f) => f,
            Err(early) => {
                if early.status.is_ok() {
                    let text = format!(
                        "{}\n{}\n{}\n{}",
                        crate::docs::text(applet),
                        early.output,
                        crate::docs::common_text(),
                        version::about_text(applet)
                    );
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    return 0;
                }
                let _ = writeln!(std::io::stderr(), "{}", early.output);
                return 2;
            }
        }
    };
    // fd 0 read as it was at start: closed, reading it fails (code 5), as in the reference,
    // although /dev/null is there now
    let stdin: Box<dyn std::io::Read> = match crate::sys::stdio::stdin_was_closed() {
        true => Box::new(io::ClosedFd),
        false => Box::new(crate::sys::stdio::Fd0),
    };
    let mut io = Io::from_process(stdin, crate::sys::stdio::vars_with_prefix(b"CNI_"));
    io.plugins = applets::find;
    io.observer = Some(log_context);
    apply_flags(&flags, &mut io);
    if let Some(path) = &flags.config {
        match std::fs::read(path) {
            Ok(bytes) => io.stdin = Box::new(std::io::Cursor::new(bytes)),
            Err(e) => {
                let err = CniError::new(code::IO_FAILURE, format!("error reading config file {path}: {e}"));
                answer(applet, &err.to_json().into_bytes(), 1);
                return 1;
            }
        }
    }
    crate::logging::init(&|k| io.env.get(k).cloned());
    let rc = io::run(applet, &mut io);
    let rc = answer(applet, &io.stdout, rc);
    let _ = std::io::stderr().write_all(&io.stderr);
    // answered: no nftables socket release or procfs teardown may wait inside the runtime's time
    crate::firewall::nft::sock::release_at_exit();
    crate::sys::sysctl::release_at_exit();
    rc
}

/// Write the answer (a result or an error JSON) to stdout; returns the exit status: `rc`, or 1
/// when the answer could not be written (the runtime would otherwise read nothing, or half a
/// result, from a plugin that exits 0), saying why on stderr as the reference does.
fn answer(applet: &Plugin, out: &[u8], rc: i32) -> i32 {
    match write_stdout(out) {
        Ok(()) => rc,
        Err(e) => {
            let what = if rc == 0 { "result" } else { "error" };
            let _ = writeln!(std::io::stderr(), "{MULTI}: {}: error writing the {what} to stdout: {e}", applet.name);
            1
        }
    }
}

/// The answer in one `write` where the pipe takes it: std's line-buffered stdout would write
/// up to the last newline and then the rest (a result ends with `}`), waking the runtime twice.
/// Fails when stdout does not take all of it (closed at start, EPIPE, EBADF, a full disk...).
fn write_stdout(mut buf: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    if buf.is_empty() {
        return Ok(());
    }
    if crate::sys::stdio::stdout_was_closed() {
        // std put /dev/null there at startup: the answer would vanish
        return Err(std::io::Error::from_raw_os_error(nix::errno::Errno::EBADF as i32));
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.flush();
    while !buf.is_empty() {
        match nix::unistd::write(stdout.as_fd(), buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from_raw_os_error(e as i32)),
        }
    }
    Ok(())
}

fn apply_flags(f: &PluginFlags, io: &mut Io) {
    let pairs = [
        ("CNI_COMMAND", &f.command),
        ("CNI_NETNS", &f.netns),
        ("CNI_IFNAME", &f.ifname),
        ("CNI_CONTAINERID", &f.container_id),
        ("CNI_ARGS", &f.args),
        ("CNI_PATH", &f.cni_path),
    ];
    for (k, v) in pairs {
        if let Some(v) = v {
            io.env.insert(k.to_string(), v.clone());
            io.non_utf8.retain(|n| n != k);
        }
    }
}

/// The release profile aborts on panic; before it does, leave a CNI error on stdout so the
/// runtime sees a well-formed failure (code 999) instead of nothing.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let loc = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let err = CniError::internal(format!("internal error: {msg}")).with_details(loc.clone());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(err.to_json().as_bytes());
        let _ = out.flush();
        let _ = writeln!(std::io::stderr(), "{MULTI}: panic at {loc}: {msg}");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_override() {
        let f = PluginFlags::from_args(
            &["bridge"],
            &[
                "--command",
                "ADD",
                "--netns",
                "/run/netns/x",
                "--ifname",
                "eth1",
                "--container-id",
                "c",
                "--cni-path",
                "/a:/b",
            ],
        )
        .unwrap();
        let mut io = Io::new([("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")], vec![]);
        apply_flags(&f, &mut io);
        assert_eq!(io.env["CNI_COMMAND"], "ADD");
        assert_eq!(io.env["CNI_IFNAME"], "eth1");
        assert_eq!(io.env["CNI_CONTAINERID"], "c");
        assert_eq!(io.env["CNI_PATH"], "/a:/b");
        let help = PluginFlags::from_args(&["bridge"], &["--help"]).unwrap_err();
        assert!(help.status.is_ok() && help.output.contains("--container-id"));
        assert!(PluginFlags::from_args(&["bridge"], &["--bogus"]).unwrap_err().status.is_err());
    }

    #[test]
    fn dispatch_names() {
        assert_eq!(basename("/usr/lib/cni/bridge"), "bridge");
        assert_eq!(basename("bridge"), "bridge");
        assert_eq!(dispatch(&["/x/not-an-applet".to_string()]), 2);
        assert_eq!(dispatch(&["/x/cni-multi".to_string(), "no-such".to_string()]), 2);
        assert_eq!(dispatch(&["/x/cni-multi".to_string()]), 2);
        assert_eq!(dispatch(&["cni-multi".to_string(), "install".to_string(), "--bogus".to_string()]), 2);
        assert!(usage().contains("host-local"));
    }

    #[test]
    fn help_documents_every_applet() {
        let h = full_help();
        for a in applets::APPLETS {
            assert!(h.contains(&crate::docs::text(a)), "{} missing from --help", a.name);
        }
        assert!(h.contains("isDefaultGateway") && h.contains("Example:") && h.contains("CNI_MULTI_LOG"));
    }

    #[test]
    fn usage_names_the_commands_and_short_help_works() {
        let u = usage();
        assert!(u.contains("cni-multi tool ") && u.contains("cni-multi install "), "{u}");
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // `-h` is `--help` for an applet (argh alone refused it: exit 2)
        assert_eq!(dispatch(&argv(&["cni-multi", "loopback", "-h"])), 0);
        assert_eq!(dispatch(&argv(&["cni-multi", "loopback", "--help"])), 0);
    }

    /// Child half of `panic_hook_leaves_a_cni_error`: only panics when asked to.
    #[test]
    fn panic_hook_child() {
        if std::env::var_os("CNI_MULTI_PANIC_CHILD").is_some() {
            install_panic_hook();
            panic!("boom <here>");
        }
    }

    #[test]
    fn panic_hook_leaves_a_cni_error() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["cli::tests::panic_hook_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("CNI_MULTI_PANIC_CHILD", "1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("{\n    \"code\": 999,\n    \"msg\": \"internal error: boom \\u003chere\\u003e\",\n    \"details\": \"src/cli.rs:"),
            "{stdout}"
        );
    }
}
