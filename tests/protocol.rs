//! Process-level protocol checks (reference-features.md §1.2), ours and the reference side by
//! side: VERSION bytes, the error object's shape and codes. Expectations are version-aware: the
//! Debian oracle speaks spec up to 1.0.0, cni-multi up to 1.1.0.

use crate::harness::*;
use serde_json::{json, Value};

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
