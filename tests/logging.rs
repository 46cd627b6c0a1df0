//! Logging (issue 8): quiet by default; `CNI_MULTI_LOG=debug` gives per-step lines on stderr, each
//! carrying the container id; the config's `log` key sends them to a file; stdout stays the result.

use crate::harness::runtime::{cnitool_id, our_plugin_dir, tool, Tmp};
use crate::harness::*;
use serde_json::{json, Value};

fn conf(w: &World, s: &Subnets, name: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": "cmlogbr0",
        "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": s.net4()}]]}
    })
}

/// The reference writes none of our log lines: these tests are about cni-multi only.
fn ours(w: &World) -> bool {
    if w.imp.flavor() != Flavor::CniMulti {
        eprintln!("skipped: logging tests need cni-multi, not {:?}", w.imp.plugin_dir_override());
        return false;
    }
    true
}

/// Every line names bridge (or the IPAM plugin it runs in-process, as an exec'd one would name
/// itself), the command and the container.
fn assert_lines_carry(text: &str, cid: &str, verb: &str, min: usize) -> Vec<String> {
    let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    assert!(lines.len() >= min, "expected at least {min} log lines, got:\n{text}");
    for l in &lines {
        let by = |applet: &str| l.contains(&format!(" {applet} {verb} {cid}:"));
        assert!(by("bridge") || by("host-local"), "line lacks applet/command/container id: {l:?}");
    }
    lines
}

#[test]
fn bridge_add_debug_log_has_container_id_on_every_line() {
    let w = World::new("logdbg", 1, Impl::Ours);
    if !ours(&w) {
        return;
    }
    let s = Subnets::alloc();
    let c = conf(&w, &s, "logdbg");
    let cid = "logdbg-cid-7f3a";

    // default level: a successful ADD and DEL print nothing on stderr
    let quiet = w.add(&c).cid("quiet-cid").run();
    quiet.ok();
    assert_eq!(quiet.stderr, "", "default level is quiet on success");
    let quiet_del = w.del(&c).cid("quiet-cid").run();
    quiet_del.ok();
    assert_eq!(quiet_del.stderr, "");

    let add = w.add(&c).cid(cid).env("CNI_MULTI_LOG", "debug").run();
    let result = add.ok();
    assert!(result["ips"][0]["address"].is_string(), "stdout is still just the result: {}", add.stdout);
    let lines = assert_lines_carry(&add.stderr, cid, "ADD", 6);
    for step in ["bridge ready", "veth pair created", "IPAM allocated", "container addresses and routes", "ADD done"] {
        assert!(lines.iter().any(|l| l.contains(step)), "no {step:?} step in:\n{}", add.stderr);
    }
    assert!(lines.iter().all(|l| l.contains("DEBUG") || l.contains("INFO") || l.contains("WARN")), "{lines:?}");
    // every line says how long the run has been going (`+1.234ms`), never going back
    let since: Vec<f64> = lines
        .iter()
        .map(|l| {
            let t = l
                .split_whitespace()
                .find(|w| w.starts_with('+') && w.ends_with("ms"))
                .unwrap_or_else(|| panic!("{l:?}"));
            t.trim_start_matches('+').trim_end_matches("ms").parse().unwrap()
        })
        .collect();
    assert!(since.windows(2).all(|p| p[0] <= p[1]) && since.iter().all(|t| *t >= 0.0), "{since:?}");
    assert!(since.last().is_some_and(|t| *t > 0.0), "{since:?}");

    let del = w.del(&c).cid(cid).env("CNI_MULTI_LOG", "debug").run();
    del.ok();
    let lines = assert_lines_carry(&del.stderr, cid, "DEL", 2);
    assert!(lines.iter().any(|l| l.contains("container veth deleted")), "{}", del.stderr);
    // host-local ran in-process, and says so as it would exec'd
    assert!(
        lines.iter().any(|l| l.contains(&format!(" host-local DEL {cid}:")) && l.contains("host-local DEL")),
        "{lines:?}"
    );
}

/// `cni-multi tool` runs the plugins in-process: each logs as it would exec'd (its applet,
/// command and container id on every line, into its config's `log` file), and the tool's own
/// context (none) and stderr come back after each plugin.
#[test]
fn tool_in_process_plugins_log_like_exec_d_ones() {
    let tmp = Tmp::new("toollog");
    let host = Netns::up("h");
    let cont = Netns::up("c");
    let s = Subnets::alloc();
    let log = tmp.join("bridge.log");
    let conflist = json!({"cniVersion": "1.0.0", "name": "toollog", "plugins": [
        {"type": "bridge", "bridge": "cmtlbr0", "isGateway": true, "log": log,
         "ipam": {"type": "host-local", "dataDir": tmp.s("ipam"), "ranges": [[{"subnet": s.net4()}]]}},
        {"type": "loopback"}
    ]});
    let netconf = tmp.join("net.d");
    std::fs::create_dir_all(&netconf).unwrap();
    std::fs::write(netconf.join("10-toollog.conflist"), conflist.to_string()).unwrap();
    let env = vec![
        ("NETCONFPATH", netconf.display().to_string()),
        ("CNI_PATH", our_plugin_dir(&tmp, &["bridge", "host-local", "loopback"])),
        ("CNI_CACHE_DIR", tmp.s("cache")),
        ("CNI_MULTI_LOG", "debug".to_string()),
    ];
    let id = cnitool_id(&cont.path_str());
    let with =
        |text: &str, what: &str, ctx: &str| text.lines().any(|l| l.contains(what) && l.contains(&format!(" {ctx}:")));
    for verb in ["ADD", "DEL"] {
        let out = tool(&host, &env, &[&verb.to_lowercase(), "toollog", &cont.path_str()]).expect_ok(verb);
        let file = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{verb}: no log file: {e}\n{}", out.stderr));
        // bridge's lines (and its in-process host-local's) in the file, each with its context
        let ours: Vec<&str> = file.lines().filter(|l| l.contains(&format!(" {verb} {id}:"))).collect();
        assert!(!ours.is_empty(), "{verb}: {file}");
        for l in file.lines() {
            let by = |applet: &str| {
                l.contains(&format!(" {applet} ADD {id}:")) || l.contains(&format!(" {applet} DEL {id}:"))
            };
            assert!(by("bridge") || by("host-local"), "{verb}: a file line without bridge's context: {l:?}");
        }
        // loopback has no `log`: its lines on stderr, with its own context; the tool's own lines
        // before and after bridge carry no context
        assert!(with(&out.stderr, "lo is up", &format!("loopback {verb} {id}")) || verb == "DEL", "{}", out.stderr);
        assert!(with(&out.stderr, &format!("tool: {verb} loopback"), "- - -"), "{verb}: {}", out.stderr);
        let in_file =
            |l: &str| l.contains(&format!(" bridge {verb} {id}:")) || l.contains(&format!(" host-local {verb} {id}:"));
        assert!(!out.stderr.lines().any(in_file), "{verb}: bridge's lines belong in its file: {}", out.stderr);
    }
    let file = std::fs::read_to_string(&log).unwrap();
    for (what, ctx) in [
        ("veth pair created", "bridge ADD"),
        ("host-local DEL", "host-local DEL"),
        ("container veth deleted", "bridge DEL"),
    ] {
        assert!(with(&file, what, &format!("{ctx} {id}")), "no {what:?} with {ctx:?}:\n{file}");
    }
    assert!(!file.contains("lo is up") && !file.contains("tool:"), "{file}");
}

#[test]
fn log_config_key_sends_lines_to_a_file() {
    let w = World::new("logfile", 1, Impl::Ours);
    if !ours(&w) {
        return;
    }
    let s = Subnets::alloc();
    let mut c = conf(&w, &s, "logfile");
    let path = w.tmp.join("plugin.log");
    c["log"] = json!(path);
    let cid = "logfile-cid-19";
    let add = w.add(&c).cid(cid).env("CNI_MULTI_LOG", "debug").run();
    add.ok();
    let text = std::fs::read_to_string(&path).expect("the log file exists");
    assert_lines_carry(&text, cid, "ADD", 6);
    // the lines logged before the config was read (there are none at the moment) are the only ones
    // allowed on stderr
    assert!(!add.stderr.contains("veth pair created"), "step lines went to the file, not stderr: {}", add.stderr);
    w.del(&c).cid(cid).run().ok();
}

/// A `log` path (or CNI_MULTI_LOG_FILE) that is a FIFO nobody reads: opening it for writing used
/// to block the plugin forever. It is opened non-blocking now; with no reader the open fails and
/// the lines go to stderr, as for any log file that cannot be opened.
#[test]
fn log_file_that_is_a_fifo_without_reader_does_not_hang() {
    let w = World::new("logfifo", 1, Impl::Ours);
    if !ours(&w) {
        return;
    }
    let s = Subnets::alloc();
    let fifo = w.tmp.join("log-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let limit = std::time::Duration::from_secs(10);
    let mut c = conf(&w, &s, "logfifo");
    c["log"] = json!(fifo);
    let cid = "logfifo-cid-1";
    let add = w.add(&c).cid(cid).env("CNI_MULTI_LOG", "debug").timeout(limit).run();
    add.ok();
    assert_lines_carry(&add.stderr, cid, "ADD", 6);
    let del = w.del(&c).cid(cid).env("CNI_MULTI_LOG_FILE", fifo.to_str().expect("utf-8")).timeout(limit);
    let del = del.env("CNI_MULTI_LOG", "debug").run();
    del.ok();
    assert_lines_carry(&del.stderr, cid, "DEL", 1);
}
