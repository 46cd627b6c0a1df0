//! Concurrency stress: N ADDs racing on one bridge + host-local network, with GC calls running
//! in between (their `cni.dev/valid-attachments` list every attachment whose ADD has started and
//! whose DEL has not), then N DELs racing the same way. Zero failures, zero duplicate addresses,
//! every live attachment intact after each GC, and nothing left at the end (links, leases, nft
//! masquerade rules). Once plain, once with ipMasq on nftables.
//!
//! N is `CNI_MULTI_STRESS_N` (default 30; `make stress` runs 200).

use crate::bridge::result_ips;
use crate::harness::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WORKERS: usize = 12;

fn stress_n() -> usize {
    std::env::var("CNI_MULTI_STRESS_N").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(30)
}

fn conf(w: &World, s: &Subnets, name: &str, masq: Option<&str>) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "bridge",
        "bridge": "cmst0",
        "isGateway": true,
        // a /23: room for 200 containers plus the gateway
        "ipam": {"type": "host-local", "dataDir": w.data_dir, "ranges": [[{"subnet": format!("{}.0/23", s.v4a)}]]}
    });
    if let Some(backend) = masq {
        c["ipMasq"] = json!(true);
        c["ipMasqBackend"] = json!(backend);
    }
    c
}

fn cid(i: usize) -> String {
    format!("stress-{i}")
}

/// Masquerade rules in the host netns (0 when the table does not exist): nftables rules, or the
/// iptables POSTROUTING jumps (one per container address).
fn masq_rules(w: &World, backend: &str) -> Vec<String> {
    if backend == "iptables" {
        let out = w.host.exec(&["iptables-save", "-t", "nat"]);
        return String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A POSTROUTING") && l.contains("-j CNI-"))
            .map(str::to_string)
            .collect();
    }
    let out = w.host.exec(&["nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" masquerade comment"))
        .map(str::to_string)
        .collect()
}

fn stress(tag: &str, masq: Option<&str>) {
    let n = stress_n();
    let started = Instant::now();
    // Subnets gives two adjacent /24s starting at an even third octet: together an aligned /23
    let s = Subnets::alloc();
    let w = World::new(tag, n, Impl::Ours);
    let c = conf(&w, &s, tag, masq);
    // a stale lease of a container that is long gone: the first GC must release it
    let ghost_dir = w.data_dir.join(tag);
    std::fs::create_dir_all(&ghost_dir).expect("create store dir");
    let ghost_ip = format!("{}.{}.250", prefix2(&s.v4a), third(&s.v4a) + 1);
    std::fs::write(ghost_dir.join(&ghost_ip), "ghost-container\r\neth0").expect("write ghost lease");

    // live[i]: the attachment may exist (ADD started, DEL not started)
    let live: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
    let results: Mutex<BTreeMap<usize, Outcome>> = Mutex::new(BTreeMap::new());
    let gc_runs = AtomicUsize::new(0);
    let gc_failures: Mutex<Vec<String>> = Mutex::new(vec![]);
    let next = AtomicUsize::new(0);
    let gc_lock = Mutex::new(());

    let phase = |verb: &'static str| {
        next.store(0, Ordering::SeqCst);
        let done = AtomicBool::new(false);
        std::thread::scope(|sc| {
            let mut workers = vec![];
            for _ in 0..WORKERS {
                workers.push(sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    {
                        // as a runtime does: an attachment being added is in every GC list
                        // computed from now on (GC never races the start of an ADD it omits)
                        let _g = gc_lock.lock().unwrap();
                        live[i].store(verb == "ADD", Ordering::SeqCst);
                    }
                    let o = w.cni(verb, &c).cid(&cid(i)).container(i).run();
                    results.lock().unwrap().insert(i, o);
                }));
            }
            // the GC caller: runs until the workers are done
            sc.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let _g = gc_lock.lock().unwrap();
                    let valid: Vec<Value> = (0..n)
                        .filter(|&i| live[i].load(Ordering::SeqCst))
                        .map(|i| json!({"containerID": cid(i), "ifname": "eth0"}))
                        .collect();
                    let mut g = c.clone();
                    g["cni.dev/valid-attachments"] = Value::Array(valid);
                    let o = w.cni("GC", &g).unset("CNI_CONTAINERID").unset("CNI_IFNAME").unset("CNI_NETNS").run();
                    gc_runs.fetch_add(1, Ordering::SeqCst);
                    if !o.success() {
                        gc_failures.lock().unwrap().push(format!("{}{}", o.stdout, o.stderr));
                    }
                    drop(_g);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            for h in workers {
                h.join().expect("worker");
            }
            done.store(true, Ordering::SeqCst);
        });
        std::mem::take(&mut *results.lock().unwrap())
    };

    // ---- ADD phase
    let adds = phase("ADD");
    assert_eq!(adds.len(), n);
    let mut seen = BTreeSet::new();
    let mut failures = vec![];
    for (i, o) in &adds {
        if !o.success() {
            failures.push(format!("ADD {i}: {}", o.stdout));
            continue;
        }
        let r = o.ok();
        let ips = result_ips(&r);
        assert_eq!(ips.len(), 1, "container {i}: {r:#}");
        assert!(seen.insert(ips[0].clone()), "address {} handed out twice", ips[0]);
    }
    assert!(failures.is_empty(), "{} ADDs failed:\n{}", failures.len(), failures.join("\n"));
    assert!(gc_failures.lock().unwrap().is_empty(), "GC failed during ADDs: {:?}", gc_failures.lock().unwrap());
    // after the GCs, every live attachment still has its lease and its kernel address
    let leases: BTreeSet<String> = w.leases(tag).into_iter().collect();
    assert!(!leases.contains(&ghost_ip), "GC left the stale lease {ghost_ip}");
    assert_eq!(leases.len(), n, "one lease per container: {leases:?}");
    for (i, o) in &adds {
        let ips = result_ips(&o.ok());
        let bare = ips[0].split('/').next().unwrap_or_default().to_string();
        assert!(leases.contains(&bare), "lease of container {i} ({bare}) lost to a GC");
        assert_eq!(w.c(*i).addrs("eth0"), ips, "container {i} kernel address");
    }
    let ports = w.host.links().iter().filter(|l| l["master"] == "cmst0").count();
    assert_eq!(ports, n, "one bridge port per container");
    if let Some(backend) = masq {
        let rules = masq_rules(&w, backend);
        assert_eq!(rules.len(), n, "one masquerade rule per container: {rules:#?}");
        // nft comments end `id: stress-i"`, iptables comments `id: \"stress-i\""`
        let id = |i: usize| {
            if backend == "iptables" {
                format!("id: \\\"{}\\\"", cid(i))
            } else {
                format!("id: {}\"", cid(i))
            }
        };
        for i in 0..n {
            assert_eq!(rules.iter().filter(|r| r.contains(&id(i))).count(), 1, "rule of {}: {rules:#?}", cid(i));
        }
    }

    // ---- DEL phase
    let dels = phase("DEL");
    let failures: Vec<String> =
        dels.iter().filter(|(_, o)| !o.success()).map(|(i, o)| format!("DEL {i}: {}", o.stdout)).collect();
    assert!(failures.is_empty(), "{} DELs failed:\n{}", failures.len(), failures.join("\n"));
    assert!(gc_failures.lock().unwrap().is_empty(), "GC failed during DELs: {:?}", gc_failures.lock().unwrap());
    assert!(gc_runs.load(Ordering::SeqCst) >= 2, "GC never ran concurrently");
    assert!(w.leases(tag).is_empty(), "leases left: {:?}", w.leases(tag));
    let veths: Vec<String> = w.host.link_names().into_iter().filter(|l| l.starts_with("veth")).collect();
    assert!(veths.is_empty(), "host veths left: {veths:?}");
    for i in 0..n {
        assert!(w.c(i).link("eth0").is_none(), "container {i} still has eth0");
    }
    if let Some(backend) = masq {
        assert!(masq_rules(&w, backend).is_empty(), "masquerade rules left: {:?}", masq_rules(&w, backend));
        if backend == "iptables" {
            let nat = w.host.must(&["iptables-save", "-t", "nat"]);
            assert!(!nat.contains(":CNI-"), "masquerade chains left:\n{nat}");
        }
    }
    eprintln!(
        "stress {tag}: n={n} gc_runs={} in {:.1}s",
        gc_runs.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
}

fn prefix2(v4a: &str) -> String {
    v4a.rsplit_once('.').map(|(a, _)| a.to_string()).unwrap_or_default()
}

fn third(v4a: &str) -> u32 {
    v4a.rsplit_once('.').and_then(|(_, b)| b.parse().ok()).unwrap_or(0)
}

#[test]
fn stress_concurrent_add_del_gc_bridge_host_local() {
    stress("stplain", None);
}

#[test]
fn stress_concurrent_add_del_gc_bridge_ipmasq_nft() {
    stress("stmasq", Some("nftables"));
}

/// The same with ipMasq on the iptables backend: every ADD, DEL and GC reads and commits
/// iptables-nft's nat table over netlink at once, guarded by the ruleset generation (re-read on
/// a conflict, the tool as the last resort): one jump per container, none left after DEL.
#[test]
fn stress_concurrent_add_del_gc_bridge_ipmasq_iptables() {
    stress("stmasqipt", Some("iptables"));
}

/// GC and DEL deleting masquerade rules from the same nftables chain at once: GC read the
/// chain, a DEL deleted one of the rules it had picked, and GC's whole transaction failed with
/// ENOENT three times in a row ("GC failed: ipMasq: … delete rule … No such file or directory").
#[test]
fn stress_ipmasq_gc_racing_dels_never_fails() {
    const N: usize = 100;
    let w = World::new("stgcdel", N, Impl::Ours);
    let s = Subnets::alloc();
    let c = conf(&w, &s, "stgcdel", Some("nftables"));
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= N {
                    break;
                }
                w.add(&c).cid(&cid(i)).container(i).run().ok();
            });
        }
    });
    assert_eq!(masq_rules(&w, "nftables").len(), N);
    next.store(0, Ordering::SeqCst);
    let done = AtomicBool::new(false);
    let gc_errors: Mutex<Vec<String>> = Mutex::new(vec![]);
    let mut g = c.clone();
    g["cni.dev/valid-attachments"] = json!([]);
    std::thread::scope(|sc| {
        let mut dels = vec![];
        for _ in 0..16 {
            dels.push(sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= N {
                    break;
                }
                w.del(&c).cid(&cid(i)).container(i).run().ok();
            }));
        }
        for _ in 0..4 {
            sc.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let o = w.cni("GC", &g).unset("CNI_CONTAINERID").unset("CNI_IFNAME").unset("CNI_NETNS").run();
                    if !o.success() {
                        gc_errors.lock().unwrap().push(o.stdout.clone());
                    }
                }
            });
        }
        for d in dels {
            d.join().expect("DEL worker");
        }
        done.store(true, Ordering::SeqCst);
    });
    let errors = gc_errors.lock().unwrap();
    assert!(errors.is_empty(), "{} GC calls failed, first: {}", errors.len(), errors[0]);
    assert!(masq_rules(&w, "nftables").is_empty());
}
