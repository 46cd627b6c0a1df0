//! Firewall layer in throwaway namespace worlds (root). Nothing touches the root namespace:
//! every rule is written from a thread that entered the test's own "host" netns.
//!
//! Worlds (per test, unique names) from the harness's topology builders: `topo::Outside` (a
//! container routed through a host to an outside netns that has no route back, so a packet that
//! arrives there from the host's address proves masquerading), `topo::TwoBridges`, or bare netnses.

use crate::harness::state::netfilter;
use crate::harness::topo::{Outside, TwoBridges};
use crate::harness::world::run_in_netns;
use crate::harness::{have_reference, unique, Netns};
use cni_multi::firewall::{self, macspoof, Attachment, BackendKind};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// Like [`udp_probe_once`], retried a few times while nothing arrives (first packets can be
/// lost to neighbour resolution); the first address that arrives is returned.
fn udp_probe(w: &Outside, dst: IpAddr) -> Option<IpAddr> {
    (0..3).find_map(|_| udp_probe_once(w, dst))
}

/// Sends one UDP datagram from the container to `dst` and returns the source address the
/// outside namespace saw (None when nothing arrived).
fn udp_probe_once(w: &Outside, dst: IpAddr) -> Option<IpAddr> {
    let bind = SocketAddr::new(dst, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let outside = w.outside.path.clone();
    let listener = std::thread::spawn(move || {
        run_in_netns(&outside, move || {
            let s = UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            tx.send(s.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 64];
            s.recv_from(&mut buf).ok().map(|(_, peer)| peer.ip())
        })
    });
    let target = rx.recv().unwrap();
    w.container.run_in(move || {
        let any: SocketAddr = if target.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let s = UdpSocket::bind(any).unwrap();
        s.send_to(b"hello", target).unwrap();
    });
    listener.join().unwrap()
}

fn masquerade_behaviour(kind: BackendKind, tag: &str, n: u8) {
    let w = Outside::new(tag, n);
    // Without masquerading the outside sees the container's own address: the probe can fail.
    assert_eq!(udp_probe(&w, w.out4), Some(w.c4.addr()));
    assert_eq!(udp_probe(&w, w.out6), Some(w.c6.addr()));

    // Warm-up with another attachment: the shared table/chain infrastructure (which the
    // reference never deletes either) exists from now on; this is the "prior" state.
    let warm: Vec<IpNet> = vec!["198.18.250.9/24".parse().unwrap(), "fd00:250::9/64".parse().unwrap()];
    w.host.run_in(move || {
        let b = firewall::ipmasq::backend(kind);
        b.ensure_masquerade("warmnet", "warm", "eth0", &warm).unwrap();
        b.remove_masquerade("warmnet", "warm", "eth0", &warm).unwrap();
    });
    let before = netfilter(&w.host).text();

    let ips = vec![w.c4, w.c6];
    let ips2 = ips.clone();
    w.host.run_in(move || {
        let b = firewall::ipmasq::backend(kind);
        assert!(match kind {
            BackendKind::Iptables => firewall::iptables::IptablesBackend.usable(),
            BackendKind::Nftables => firewall::nft_available(),
        });
        b.ensure_masquerade("testnet", "cid-1", "eth0", &ips2).unwrap();
        // idempotent: a second ADD does not duplicate anything
        b.ensure_masquerade("testnet", "cid-1", "eth0", &ips2).unwrap();
        // the façade's CHECK sees the rules of this attachment (and not of another)
        let spec =
            |cid| firewall::ipmasq::MasqSpec { network: "testnet", container_id: cid, ifname: "eth0", ips: &ips2 };
        firewall::ipmasq::check(Some(kind.name()), &spec("cid-1")).unwrap();
        assert!(firewall::ipmasq::check(Some(kind.name()), &spec("cid-other")).is_err());
    });
    let during = netfilter(&w.host).text();
    assert_ne!(before, during);
    if kind == BackendKind::Iptables {
        let chain = firewall::iptables::chain_name("testnet", "cid-1");
        let jumps = during.lines().filter(|l| l.starts_with("-A POSTROUTING") && l.contains(&chain)).count();
        assert_eq!(jumps, 2, "one jump per family, no duplicates:\n{during}");
    } else {
        let rules = during.lines().filter(|l| l.contains("masquerade comment")).count();
        assert_eq!(rules, 2, "one rule per IP, no duplicates:\n{during}");
    }

    assert_eq!(udp_probe(&w, w.out4), Some(w.host_out4), "IPv4 not masqueraded:\n{during}");
    assert_eq!(udp_probe(&w, w.out6), Some(w.host_out6), "IPv6 not masqueraded:\n{during}");

    let ips3 = ips.clone();
    w.host.run_in(move || {
        let spec = firewall::ipmasq::MasqSpec { network: "testnet", container_id: "cid-1", ifname: "eth0", ips: &ips3 };
        firewall::ipmasq::remove(&spec).unwrap();
        assert!(firewall::ipmasq::check(Some(kind.name()), &spec).is_err(), "CHECK fails once removed");
    });
    assert_eq!(before, netfilter(&w.host).text(), "teardown must restore the prior ruleset");
    // Teardown of something already gone is a success.
    w.host.run_in(move || {
        firewall::ipmasq::remove(&firewall::ipmasq::MasqSpec {
            network: "testnet",
            container_id: "cid-1",
            ifname: "eth0",
            ips: &ips,
        })
        .unwrap()
    });
}

#[test]
fn masquerade_nftables_reaches_outside_as_host() {
    masquerade_behaviour(BackendKind::Nftables, "mn", 10);
}

#[test]
fn masquerade_iptables_reaches_outside_as_host() {
    masquerade_behaviour(BackendKind::Iptables, "mi", 20);
}

#[test]
fn masquerade_gc_removes_only_invalid_attachments_both_backends() {
    for (kind, tag, n) in [(BackendKind::Nftables, "gn", 30), (BackendKind::Iptables, "gi", 40)] {
        let w = Outside::new(tag, n);
        let a: Vec<IpNet> = vec![format!("198.18.{n}.2/24").parse().unwrap()];
        let b: Vec<IpNet> = vec![format!("198.18.{n}.3/24").parse().unwrap()];
        w.host.run_in(move || {
            let fw = firewall::ipmasq::backend(kind);
            fw.ensure_masquerade("gcnet", "keep", "eth0", &a).unwrap();
            fw.ensure_masquerade("gcnet", "stale", "eth0", &b).unwrap();
            fw.ensure_masquerade("othernet", "stale", "eth0", &b).unwrap();
            let valid = vec![Attachment { container_id: "keep".into(), ifname: "eth0".into() }];
            firewall::ipmasq::gc("gcnet", &valid).unwrap();
        });
        let rs = netfilter(&w.host).text();
        match kind {
            BackendKind::Nftables => {
                assert!(rs.contains("id: keep\""), "{rs}");
                assert!(rs.contains("net: othernet, if: eth0, id: stale\""), "{rs}");
                assert!(!rs.contains("net: gcnet, if: eth0, id: stale\""), "{rs}");
            }
            BackendKind::Iptables => {
                assert!(rs.contains(&firewall::iptables::chain_name("gcnet", "keep")), "{rs}");
                assert!(rs.contains(&firewall::iptables::chain_name("othernet", "stale")), "{rs}");
                assert!(!rs.contains(&firewall::iptables::chain_name("gcnet", "stale")), "{rs}");
            }
        }
    }
}

/// Child half of `nftables_backend_needs_no_binaries`: runs only when that test re-executes this
/// binary with an empty PATH; a no-op otherwise.
#[test]
fn helper_nft_without_binaries_child() {
    let Ok(ns) = std::env::var("CNI_MULTI_FW_TEST_NS") else { return };
    assert!(Command::new("nft").output().is_err(), "nft must not be reachable");
    assert!(Command::new("iptables").output().is_err(), "iptables must not be reachable");
    let ip: IpNet = std::env::var("CNI_MULTI_FW_TEST_IP").unwrap().parse().unwrap();
    run_in_netns(std::path::Path::new(&ns), move || {
        // Auto choice must pick nftables (kernel has nf_tables), no binary involved.
        assert_eq!(BackendKind::choose(None).unwrap(), BackendKind::Nftables);
        firewall::ipmasq::ensure(
            None,
            &firewall::ipmasq::MasqSpec { network: "nobin", container_id: "cid-nb", ifname: "eth0", ips: &[ip] },
        )
        .unwrap();
    });
}

#[test]
fn nftables_backend_needs_no_binaries() {
    let w = Outside::new("nb", 50);
    let empty = tempfile::Builder::new().prefix("fw-empty-path-").tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["helper_nft_without_binaries_child", "--nocapture", "--test-threads=1"])
        .env("PATH", empty.path())
        .env("CNI_MULTI_FW_TEST_NS", &w.host.path)
        .env("CNI_MULTI_FW_TEST_IP", w.c4.to_string())
        .env_remove(firewall::ENV_BACKEND)
        .output()
        .unwrap();
    drop(empty);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    assert_eq!(udp_probe(&w, w.out4), Some(w.host_out4));
}

#[test]
fn macspoofchk_drops_spoofed_source_mac() {
    let host = Netns::create(&unique("fwhms"));
    let ctr = Netns::create(&unique("fwcms"));
    host.must(&["ip", "link", "add", "br0", "type", "bridge"]);
    host.must(&["ip", "addr", "add", "198.18.60.1/24", "dev", "br0"]);
    host.must(&["ip", "link", "set", "br0", "up"]);
    host.must(&["ip", "link", "add", "vms1", "type", "veth", "peer", "name", "eth0", "netns", &ctr.name]);
    host.must(&["ip", "link", "set", "vms1", "master", "br0", "up"]);
    ctr.must(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:01"]);
    ctr.must(&["ip", "addr", "add", "198.18.60.2/24", "dev", "eth0"]);
    ctr.must(&["ip", "link", "set", "eth0", "up"]);
    let ping = |ctr: &Netns| ctr.exec(&["ping", "-c1", "-W1", "198.18.60.1"]).status.success();
    let set_mac = |mac: &str| {
        ctr.must(&["ip", "link", "set", "eth0", "address", mac]);
        let _ = host.exec(&["ip", "neigh", "flush", "dev", "br0"]);
        let _ = ctr.exec(&["ip", "neigh", "flush", "dev", "eth0"]);
    };
    assert!((0..5).any(|_| ping(&ctr)), "baseline connectivity");

    host.run_in(|| {
        macspoof::ensure("msnet", "cid1", "eth0", "vms1", "02:00:00:00:00:01").unwrap();
        macspoof::ensure("msnet", "cid1", "eth0", "vms1", "02:00:00:00:00:01").unwrap(); // idempotent
        macspoof::check("cid1", "eth0").unwrap();
        assert!(macspoof::check("cid2", "eth0").is_err(), "CHECK of another port fails");
    });
    let table = host.must(&["nft", "list", "table", "bridge", "nat"]);
    let expected = "table bridge nat {\n\
        \tchain PREROUTING {\n\
        \t\ttype filter hook prerouting priority dstnat; policy accept;\n\
        \t\tiifname \"vms1\" jump cni-br-iface-cid1-eth0 comment \"macspoofchk-cid1-eth0\"\n\
        \t}\n\n\
        \tchain cni-br-iface-cid1-eth0 {\n\
        \t\tcomment \"cni-multi net: msnet\"\n\
        \t\tjump cni-br-iface-cid1-eth0-mac comment \"macspoofchk-cid1-eth0\"\n\
        \t}\n\n\
        \tchain cni-br-iface-cid1-eth0-mac {\n\
        \t\tcomment \"cni-multi net: msnet\"\n\
        \t\tether saddr 02:00:00:00:00:01 return comment \"macspoofchk-cid1-eth0\"\n\
        \t\tdrop comment \"macspoofchk-cid1-eth0\"\n\
        \t}\n\
        }\n";
    assert_eq!(table, expected);
    assert!((0..5).any(|_| ping(&ctr)), "real MAC must pass");
    set_mac("02:00:00:00:00:02");
    assert!(!ping(&ctr), "spoofed MAC must be dropped");

    host.run_in(|| {
        macspoof::remove("cid1", "eth0").unwrap();
        macspoof::remove("cid1", "eth0").unwrap(); // already gone = ok
        assert!(macspoof::check("cid1", "eth0").is_err(), "CHECK fails once removed");
    });
    let after = host.must(&["nft", "list", "table", "bridge", "nat"]);
    assert!(!after.contains("cni-br-iface") && !after.contains("macspoofchk"), "{after}");
    // the bridge re-learns the new MAC and the neighbours re-resolve: allow a few tries on a busy machine
    assert!((0..5).any(|_| ping(&ctr)), "after teardown any MAC passes");
}

// ---- portmap ------------------------------------------------------------------------------------

use cni_multi::firewall::portmap::{self, PortMapping, PortmapSpec};
use std::io::Write;
use std::net::TcpListener;

/// A TCP server in `ns` answering every connection with the peer address it saw.
fn tcp_server(ns: &Netns, bind: SocketAddr, conns: usize) -> std::thread::JoinHandle<()> {
    let ns = ns.path.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        run_in_netns(&ns, move || {
            let l = TcpListener::bind(bind).unwrap();
            tx.send(()).unwrap();
            for _ in 0..conns {
                let Ok((mut s, peer)) = l.accept() else { return };
                let _ = s.write_all(peer.ip().to_canonical().to_string().as_bytes());
            }
        })
    });
    rx.recv().unwrap();
    h
}

/// A UDP echo server in `ns` (one datagram).
fn udp_echo(ns: &Netns, bind: SocketAddr) -> std::thread::JoinHandle<()> {
    let ns = ns.path.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        run_in_netns(&ns, move || {
            let s = UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], peer);
            }
        })
    });
    rx.recv().unwrap();
    h
}

fn udp_client(ns: &Netns, dst: SocketAddr) -> bool {
    ns.run_in(move || {
        let any: SocketAddr = if dst.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
        let s = UdpSocket::bind(any).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"ping", dst).unwrap();
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((4, _)))
    })
}

fn pm_spec(kind_tag: &str, ip: IpNet) -> PortmapSpec {
    PortmapSpec {
        network: format!("pmnet{kind_tag}"),
        container_id: "pm-cid".into(),
        container_ip: ip,
        mappings: vec![
            PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None },
            PortMapping { host_port: 5300, container_port: 53, protocol: "udp".into(), host_ip: None },
        ],
        snat: true,
        masq_all: false,
        mark_masq_bit: 13,
        external_set_mark_chain: None,
        conditions: vec![],
    }
}

fn pm_apply(kind: BackendKind, spec: &PortmapSpec) {
    match kind {
        BackendKind::Nftables => portmap::nft_ensure(spec).unwrap(),
        BackendKind::Iptables => portmap::iptables_ensure(spec).unwrap(),
    }
}

fn pm_remove(kind: BackendKind, spec: &PortmapSpec) {
    match kind {
        BackendKind::Nftables => portmap::nft_remove(&spec.container_id, None).unwrap(),
        BackendKind::Iptables => portmap::iptables_remove(&spec.network, &spec.container_id, None).unwrap(),
    }
}

fn portmap_behaviour(kind: BackendKind, tag: &str, n: u8) {
    let w = Outside::new(tag, n);
    let host4 = w.host_out4; // the host address the "client" (outside) namespace reaches
    let host6 = w.host_out6;
    w.host.must(&["sysctl", "-qw", "net.ipv4.conf.vc.route_localnet=1"]);
    // Nothing is mapped yet: the client cannot reach the container through the host port.
    let srv = tcp_server(&w.container, "0.0.0.0:80".parse().unwrap(), 1);
    assert_eq!(w.outside.tcp_read(SocketAddr::new(host4, 8080)), None);
    // (unblock the server)
    let _ = w.container.tcp_read("127.0.0.1:80".parse().unwrap());
    srv.join().unwrap();

    // Warm-up with another container: shared chains/tables exist from now on ("prior" state).
    let mut warm = pm_spec(tag, "198.18.251.9/24".parse().unwrap());
    warm.container_id = "warm".into();
    let mut warm6 = pm_spec(tag, "fd00:251::9/64".parse().unwrap());
    warm6.container_id = "warm".into();
    w.host.run_in(move || {
        pm_apply(kind, &warm);
        pm_apply(kind, &warm6);
        pm_remove(kind, &warm);
    });
    let before = netfilter(&w.host).text();

    let s4 = pm_spec(tag, w.c4);
    let s6 = pm_spec(tag, w.c6);
    let (a, b) = (s4.clone(), s6.clone());
    w.host.run_in(move || {
        pm_apply(kind, &a);
        pm_apply(kind, &b);
        pm_apply(kind, &a); // idempotent
    });
    let during = netfilter(&w.host).text();

    // client namespace -> host IP:8080 (IPv4 and IPv6): the container sees the client itself.
    let srv = tcp_server(&w.container, "[::]:80".parse().unwrap(), 4);
    assert_eq!(w.outside.tcp_read(SocketAddr::new(host4, 8080)), Some(w.out4.to_string()), "{during}");
    assert_eq!(w.outside.tcp_read(SocketAddr::new(host6, 8080)), Some(w.out6.to_string()), "{during}");
    // hairpin: the container reaches itself through the host port (masqueraded to the host).
    let hp = w.container.tcp_read(SocketAddr::new(host4, 8080));

    assert_eq!(hp, Some(format!("198.18.{n}.1")), "hairpin must arrive masqueraded as the host:\n{during}");
    // localhost on the host: 127.0.0.1:8080 reaches the container.
    assert!(w.host.tcp_read("127.0.0.1:8080".parse().unwrap()).is_some(), "localhost failed:\n{during}");
    srv.join().unwrap();
    // UDP
    let u = udp_echo(&w.container, "0.0.0.0:53".parse().unwrap());
    assert!(udp_client(&w.outside, SocketAddr::new(host4, 5300)), "udp failed:\n{during}");
    u.join().unwrap();

    let (a, b) = (s4.clone(), s6.clone());
    w.host.run_in(move || {
        pm_remove(kind, &a);
        pm_remove(kind, &b); // second removal: already gone
    });
    assert_eq!(before, netfilter(&w.host).text(), "DEL must restore the prior ruleset");
    let srv = tcp_server(&w.container, "0.0.0.0:80".parse().unwrap(), 1);
    assert_eq!(w.outside.tcp_read(SocketAddr::new(host4, 8080)), None, "mapping must be gone");
    let _ = w.container.tcp_read("127.0.0.1:80".parse().unwrap());
    srv.join().unwrap();
}

#[test]
fn portmap_nftables_tcp_udp_hairpin_localhost_v4_v6() {
    portmap_behaviour(BackendKind::Nftables, "pn", 70);
}

#[test]
fn portmap_iptables_tcp_udp_hairpin_localhost_v4_v6() {
    portmap_behaviour(BackendKind::Iptables, "pi", 80);
}

// ---- differential: the reference plugins (Debian 1.1.1, iptables ipMasq / portmap) ------------

fn reference_plugin(plugin: &str, host: &Netns, cmd: &str, cid: &str, ctr: &Netns, conf: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.name, &format!("/usr/lib/cni/{plugin}")])
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", ctr.path_str())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "reference {plugin} {cmd}: {text} {}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The reference's iptables ipMasq state is removed by our teardown, and ours by the reference's
/// DEL: same chain name (sha512), same rules and comments.
#[test]
fn reference_iptables_ipmasq_and_ours_clean_up_after_each_other() {
    if !have_reference("bridge") {
        return;
    }
    let host = Netns::create(&unique("fwhrf"));
    let c1 = Netns::create(&unique("fwcrf1"));
    let c2 = Netns::create(&unique("fwcrf2"));
    let data = tempfile::Builder::new().prefix("fw-ref-ipam-").tempdir().unwrap();
    let conf = |masq: bool| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"refnet","type":"bridge","bridge":"brref","isGateway":true,"ipMasq":{masq},
               "ipam":{{"type":"host-local","subnet":"198.18.90.0/24","dataDir":"{}"}}}}"#,
            data.path().display()
        )
    };
    let nat = |host: &Netns| host.must(&["iptables-save", "-t", "nat"]);

    // 1. reference ADD with ipMasq -> our teardown removes everything it made.
    let out = reference_plugin("bridge", &host, "ADD", "refcid1", &c1, &conf(true));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ip1: IpNet = v["ips"][0]["address"].as_str().unwrap().parse().unwrap();
    let chain1 = firewall::iptables::chain_name("refnet", "refcid1");
    let saved = nat(&host);
    assert!(saved.contains(&format!(":{chain1} ")), "reference chain name differs from ours:\n{saved}");
    assert!(saved.contains(r#"--comment "name: \"refnet\" id: \"refcid1\"""#), "{saved}");
    host.run_in(move || {
        firewall::ipmasq::remove(&firewall::ipmasq::MasqSpec {
            network: "refnet",
            container_id: "refcid1",
            ifname: "eth0",
            ips: &[ip1],
        })
        .unwrap()
    });
    let saved = nat(&host);
    assert!(!saved.contains(&chain1) && !saved.contains("refcid1"), "{saved}");

    // 2. our setup -> the reference DEL removes it.
    let out = reference_plugin("bridge", &host, "ADD", "refcid2", &c2, &conf(false));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ip2: IpNet = v["ips"][0]["address"].as_str().unwrap().parse().unwrap();
    host.run_in(move || {
        firewall::ipmasq::backend(BackendKind::Iptables).ensure_masquerade("refnet", "refcid2", "eth0", &[ip2]).unwrap()
    });
    let chain2 = firewall::iptables::chain_name("refnet", "refcid2");
    assert!(nat(&host).contains(&chain2));
    reference_plugin("bridge", &host, "DEL", "refcid2", &c2, &conf(true));
    let saved = nat(&host);
    assert!(!saved.contains(&chain2) && !saved.contains("refcid2"), "reference DEL left our rules:\n{saved}");
    reference_plugin("bridge", &host, "DEL", "refcid1", &c1, &conf(false));
}

/// The reference portmap (iptables) and ours write the same nat table text for the same
/// mappings, and each one's DEL removes the other's chains.
#[test]
fn reference_iptables_portmap_same_rules_and_cross_cleanup() {
    if !have_reference("portmap") {
        return;
    }
    let host = Netns::create(&unique("fwhrp"));
    let ctr = Netns::create(&unique("fwcrp"));
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"pmref","type":"portmap","capabilities":{{"portMappings":true}},
           "runtimeConfig":{{"portMappings":[{{"hostPort":8080,"containerPort":80,"protocol":"tcp"}},
                                            {{"hostPort":8081,"containerPort":81,"protocol":"tcp"}},
                                            {{"hostPort":5300,"containerPort":53,"protocol":"udp","hostIP":"198.18.92.1"}}]}},
           "prevResult":{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"{}"}}],
                          "ips":[{{"address":"198.18.91.2/24","interface":0}}]}}}}"#,
        ctr.path_str()
    );
    let nat = |host: &Netns| {
        host.must(&["iptables-save", "-t", "nat"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| if l.starts_with(':') { l.split(" [").next().unwrap_or(l) } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let spec = PortmapSpec {
        network: "pmref".into(),
        container_id: "pmcid".into(),
        container_ip: "198.18.91.2/24".parse().unwrap(),
        mappings: vec![
            PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None },
            PortMapping { host_port: 8081, container_port: 81, protocol: "tcp".into(), host_ip: None },
            PortMapping {
                host_port: 5300,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: Some("198.18.92.1".parse().unwrap()),
            },
        ],
        snat: true,
        masq_all: false,
        mark_masq_bit: 13,
        external_set_mark_chain: None,
        conditions: vec![],
    };

    reference_plugin("portmap", &host, "ADD", "pmcid", &ctr, &conf);
    let by_reference = nat(&host);
    assert!(by_reference.contains(&portmap::dn_chain("pmref", "pmcid")), "{by_reference}");
    // our DEL removes the reference's per-container state
    host.run_in(|| portmap::iptables_remove("pmref", "pmcid", None).unwrap());
    let after_del = nat(&host);
    assert!(!after_del.contains("CNI-DN-"), "{after_del}");
    // our ADD writes the same text the reference wrote
    let s = spec.clone();
    host.run_in(move || portmap::iptables_ensure(&s).unwrap());
    assert_eq!(nat(&host), by_reference, "our rules differ from the reference's");
    // the reference DEL removes ours
    reference_plugin("portmap", &host, "DEL", "pmcid", &ctr, &conf);
    assert_eq!(nat(&host), after_del);
}

#[test]
fn conntrack_delete_by_udp_dport_only_hits_that_port() {
    use cni_multi::firewall::conntrack;
    let w = Outside::new("ct", 100);
    let ips = vec![w.c4];
    // A nat table makes the host namespace track connections.
    w.host.run_in(move || {
        firewall::ipmasq::backend(BackendKind::Nftables).ensure_masquerade("ctnet", "c", "eth0", &ips).unwrap()
    });
    let out4 = w.out4;
    w.container.run_in(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"a", SocketAddr::new(out4, 5353)).unwrap();
        s.send_to(b"b", SocketAddr::new(out4, 5454)).unwrap();
    });
    let ports = |host: &Netns| {
        host.run_in(|| {
            let mut s = cni_multi::firewall::nft::sock::NftSocket::open().unwrap();
            let mut p: Vec<u16> = conntrack::list(&mut s, 2)
                .unwrap()
                .iter()
                .filter(|e| e.orig.proto == 17)
                .map(|e| e.orig.dport)
                .collect();
            p.sort_unstable();
            p
        })
    };
    assert_eq!(ports(&w.host), vec![5353, 5454]);
    let n = w.host.run_in(|| conntrack::delete_by_dport(false, conntrack::PROTO_UDP, 5353).unwrap());
    assert_eq!(n, 1);
    assert_eq!(ports(&w.host), vec![5454]);
}

// ---- firewall plugin layouts --------------------------------------------------------------------

use cni_multi::firewall::filter::{self, FirewallSpec, IngressPolicy};

fn ping(from: &Netns, to: &str) -> bool {
    (0..2).any(|_| from.exec(&["ping", "-c1", "-W1", to]).status.success())
}

fn firewall_plugin_behaviour(kind: BackendKind, tag: &str, n: u8) {
    let w = TwoBridges::new(tag, n);
    let (host, c) = (&w.host, &w.ctrs);
    let (a1, a2, b1) = (format!("198.18.{n}.2"), format!("198.18.{n}.3"), format!("198.18.{}.2", n + 1));
    assert!(ping(&c[2], &a1), "baseline: b1 reaches a1 across bridges");
    let spec = |cid: &str, ip: &str, br: &str| FirewallSpec {
        network: "fwnet".into(),
        ifname: "eth0".into(),
        container_id: cid.into(),
        ips: vec![format!("{ip}/24").parse().unwrap()],
        admin_chain: "CNI-ADMIN".into(),
        ingress_policy: IngressPolicy::SameBridge,
        bridge: Some(br.into()),
        firewalld_zone: None,
    };
    let specs = vec![spec("a1", &a1, "fwb1"), spec("a2", &a2, "fwb1"), spec("b1", &b1, "fwb2")];
    let s2 = specs.clone();
    host.run_in(move || {
        for s in &s2 {
            match kind {
                BackendKind::Iptables => {
                    filter::iptables_add(s).unwrap();
                    filter::iptables_add(s).unwrap(); // idempotent
                    filter::iptables_check(s).unwrap();
                }
                BackendKind::Nftables => {
                    filter::nft_add(s).unwrap();
                    filter::nft_add(s).unwrap();
                    filter::nft_check(s).unwrap();
                }
            }
        }
    });
    let rs = netfilter(host).text();
    assert!(!ping(&c[2], &a1), "other bridge must be dropped:\n{rs}");
    assert!(!ping(&c[0], &b1), "other bridge must be dropped:\n{rs}");
    assert!(ping(&c[0], &a2), "same bridge allowed");
    if kind == BackendKind::Iptables {
        assert_eq!(rs.matches("-A FORWARD -m comment --comment \"CNI firewall plugin rules\"").count(), 1, "{rs}");
        assert_eq!(rs.matches(&format!("-s {a1}/32 -j ACCEPT")).count(), 1, "{rs}");
    }
    let s2 = specs.clone();
    host.run_in(move || {
        for s in &s2 {
            match kind {
                BackendKind::Iptables => filter::iptables_del(s).unwrap(),
                BackendKind::Nftables => filter::nft_del(s).unwrap(),
            }
        }
    });
    let rs = netfilter(host).text();
    assert!(!rs.contains(&a1) && !rs.contains(&b1), "per-IP rules must be gone:\n{rs}");
    assert!(rs.contains("isolation") || rs.contains("ISOLATION"), "isolation rules stay (reference):\n{rs}");
}

#[test]
fn firewall_plugin_iptables_same_bridge_isolation() {
    firewall_plugin_behaviour(BackendKind::Iptables, "fi", 110);
}

#[test]
fn firewall_plugin_nftables_same_bridge_isolation() {
    firewall_plugin_behaviour(BackendKind::Nftables, "fn", 120);
}

/// A batch is one transaction: when one message fails, nothing of it is applied, and the error
/// names the failing message and its errno.
#[test]
fn nft_batch_failure_is_atomic_and_names_the_message() {
    use cni_multi::firewall::nft::{decode, sock::NftSocket, Batch, Expr, Family, Rule, Verdict};
    let host = Netns::create(&unique("fwhat"));
    host.run_in(|| {
        let mut s = NftSocket::open().unwrap();
        let mut b = Batch::new();
        b.add_table(Family::Ip, "atomic", None);
        b.add_chain(Family::Ip, "atomic", "c", None, None);
        b.add_rule(&Rule {
            family: Family::Ip,
            table: "atomic".into(),
            chain: "missing".into(),
            exprs: vec![Expr::Verdict(Verdict::Accept)],
            comment: None,
        });
        let err = s.commit(&b).unwrap_err();
        assert_eq!(err.errno, 2, "{err}");
        assert_eq!(err.what, "add rule ip atomic missing", "{err}");
        let tables = decode::list_tables(&mut s, None).unwrap();
        assert!(tables.iter().all(|t| t.name != "atomic"), "the failed batch must leave nothing: {tables:?}");
        // the same socket still works afterwards
        let mut b = Batch::new();
        b.add_table(Family::Ip, "atomic", Some("ok"));
        s.commit(&b).unwrap();
        let tables = decode::list_tables(&mut s, Some(Family::Ip)).unwrap();
        assert!(tables.iter().any(|t| t.name == "atomic" && t.comment.as_deref() == Some("ok")), "{tables:?}");
    });
}

/// macspoofchk: the reference bridge (nft binary, JSON) and ours write the same table text, and
/// each side's teardown removes the other's chains and rule.
#[test]
fn reference_macspoofchk_same_layout_and_cross_cleanup() {
    if !have_reference("bridge") {
        return;
    }
    let host = Netns::create(&unique("fwhrm"));
    let ctr = Netns::create(&unique("fwcrm"));
    let data = tempfile::Builder::new().prefix("fw-ref-ms-").tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"msnet","type":"bridge","bridge":"brms","macspoofchk":true,
           "ipam":{{"type":"host-local","subnet":"198.18.93.0/24","dataDir":"{}"}}}}"#,
        data.path().display()
    );
    let out = reference_plugin("bridge", &host, "ADD", "mscid", &ctr, &conf);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let host_veth = v["interfaces"][1]["name"].as_str().unwrap().to_string();
    let mac = v["interfaces"][2]["mac"].as_str().unwrap().to_string();
    let table = |host: &Netns| host.must(&["nft", "list", "table", "bridge", "nat"]);
    let by_reference = table(&host);
    assert!(by_reference.contains("macspoofchk-mscid-eth0"), "{by_reference}");
    // ours removes the reference's
    host.run_in(|| macspoof::remove("mscid", "eth0").unwrap());
    let after = table(&host);
    assert!(!after.contains("cni-br-iface"), "{after}");
    // ours writes the same text
    let (hv, m) = (host_veth.clone(), mac.clone());
    host.run_in(move || macspoof::ensure("msnet", "mscid", "eth0", &hv, &m).unwrap());
    // the same, but for our chains' comment naming the network (the reference writes none)
    let ours = table(&host);
    let tag = "\t\tcomment \"cni-multi net: msnet\"\n";
    assert_eq!(ours.matches(tag).count(), 2, "{ours}");
    assert_eq!(ours.replace(tag, ""), by_reference);
    // the reference DEL removes ours
    reference_plugin("bridge", &host, "DEL", "mscid", &ctr, &conf);
    let after = table(&host);
    assert!(!after.contains("cni-br-iface") && !after.contains("macspoofchk"), "{after}");
}

/// GC is per network: it removes the spoof checks of its own network's attachments that are not
/// valid (found by the chains' network comment, whatever bridge the port is on), never another
/// network's; ownerless chains (the reference's layout, written here with `nft`) only when their
/// port is gone.
#[test]
fn macspoofchk_gc_removes_only_invalid_attachments_of_our_ports() {
    let host = Netns::create(&unique("fwhmg"));
    host.run_in(|| {
        macspoof::ensure("n1", "keep-1", "eth0", "vkeep", "02:00:00:00:00:01").unwrap();
        macspoof::ensure("n1", "stale-2", "eth0", "vstale", "02:00:00:00:00:02").unwrap();
        macspoof::ensure("n2", "other-3", "eth0", "vother", "02:00:00:00:00:03").unwrap();
    });
    // two spoof checks as the reference writes them (no chain comment): one whose port exists
    host.must(&["ip", "link", "add", "vrefup", "type", "veth", "peer", "name", "vrefupp"]);
    let reference = |cid: &str, port: &str| {
        format!(
            "add chain bridge nat cni-br-iface-{cid}-eth0\n\
             add chain bridge nat cni-br-iface-{cid}-eth0-mac\n\
             add rule bridge nat PREROUTING iifname \"{port}\" jump cni-br-iface-{cid}-eth0 comment \"macspoofchk-{cid}-eth0\"\n\
             add rule bridge nat cni-br-iface-{cid}-eth0 jump cni-br-iface-{cid}-eth0-mac comment \"macspoofchk-{cid}-eth0\"\n\
             add rule bridge nat cni-br-iface-{cid}-eth0-mac drop comment \"macspoofchk-{cid}-eth0\"\n"
        )
    };
    let file = std::env::temp_dir().join(format!("{}.nft", unique("fwhmg")));
    std::fs::write(&file, reference("refup-4", "vrefup") + &reference("refgone-5", "vrefgone")).unwrap();
    let out = host.exec(&["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let removed = host.run_in(|| {
        let valid = vec![Attachment { container_id: "keep-1".into(), ifname: "eth0".into() }];
        // every port exists but vrefgone (vkeep, vstale and vother are not made: their chains
        // are found by their network comment whatever the port)
        macspoof::gc("n1", &valid, |i| i != "vrefgone").unwrap()
    });
    assert_eq!(removed, vec!["macspoofchk-stale-2-eth0".to_string(), "macspoofchk-refgone-5-eth0".to_string()]);
    let t = host.must(&["nft", "list", "table", "bridge", "nat"]);
    for kept in ["keep-1", "other-3", "refup-4"] {
        assert!(t.contains(&format!("cni-br-iface-{kept}-eth0-mac {{")), "{kept}: {t}");
    }
    assert!(!t.contains("stale-2") && !t.contains("refgone-5"), "{t}");
    // GC of n2 with its attachment gone takes other-3 (the port still exists: GC trusts the list)
    let removed = host.run_in(|| macspoof::gc("n2", &[], |_| true).unwrap());
    assert_eq!(removed, vec!["macspoofchk-other-3-eth0".to_string()]);
}

// ---- add-only ADD batches and the generation guard ----------------------------------------------

use cni_multi::firewall::nft::{self as nftlib, decode, plan::TableState, sock::NftSocket, Batch, Family};

/// A batch planned against a stale generation is refused as a whole (nothing applied, the
/// error says stale), and `transact` re-plans and succeeds.
#[test]
fn nft_stale_genid_is_rejected_and_transact_retries() {
    let host = Netns::create(&unique("fwgen"));
    host.run_in(|| {
        let mut s = NftSocket::open().unwrap();
        let mut other = NftSocket::open().unwrap();
        let table = |name: &str| {
            let mut b = Batch::new();
            b.add_table(Family::Ip, name, None);
            b
        };
        let present = |s: &mut NftSocket, name: &str| {
            decode::list_tables(s, Some(Family::Ip)).unwrap().iter().any(|t| t.name == name)
        };
        let g = s.genid().unwrap();
        assert_eq!(s.genid().unwrap(), g, "no commit, same generation");
        s.commit_guarded(&table("fresh"), Some(g)).unwrap();
        let g2 = s.genid().unwrap();
        assert_ne!(g2, g, "a commit bumps the generation");
        other.commit(&table("concurrent")).unwrap();
        let err = s.commit_guarded(&table("stale"), Some(g2)).unwrap_err();
        assert!(err.is_stale(), "{err}");
        assert!(!present(&mut s, "stale"), "a refused batch applies nothing");
        // the socket is still in sync: a guarded commit with the current generation works
        let g3 = s.genid().unwrap();
        s.commit_guarded(&table("current"), Some(g3)).unwrap();
        assert!(present(&mut s, "current"));
        // transact: a concurrent commit between planning and commit makes it plan again (fast)
        let mut calls = Vec::new();
        s.transact(|_, fast| -> anyhow::Result<Batch> {
            calls.push(fast);
            if calls.len() == 1 {
                other.commit(&table(&format!("racer{}", calls.len()))).unwrap();
            }
            Ok(table("retried"))
        })
        .unwrap();
        assert_eq!(calls, [true, true], "stale once, then a fast plan again");
        assert!(present(&mut s, "retried") && present(&mut s, "racer1"));
        // always contended: after GUARDED_TRIES fast attempts, the full plan is committed unguarded
        let mut calls = Vec::new();
        s.transact(|_, fast| -> anyhow::Result<Batch> {
            calls.push(fast);
            other.commit(&table(&format!("busy{}", calls.len()))).unwrap();
            Ok(table("fallback"))
        })
        .unwrap();
        assert_eq!(calls.len(), nftlib::sock::GUARDED_TRIES + 1);
        assert_eq!(calls.last(), Some(&false));
        assert!(present(&mut s, "fallback"));
    });
}

/// Asserts a batch only appends (no delete, flush, table or chain declaration except `new_chains`).
fn assert_add_only(b: &Batch, new_chains: &[&str]) {
    let whats: Vec<&str> = b.msgs.iter().map(|m| m.what.as_str()).collect();
    assert!(b.only_adds(), "{whats:#?}");
    assert!(!b.is_empty());
    for m in &b.msgs {
        assert_ne!(m.kind, nftlib::msg::NEWTABLE, "{whats:#?}");
        if m.kind == nftlib::msg::NEWCHAIN {
            assert!(new_chains.iter().any(|c| m.what.ends_with(&format!(" {c}"))), "{whats:#?}");
        }
    }
}

/// Runs three attachments' ADDs in two namespaces: `fast` through the public API (the add-only
/// path), `full` by committing the old self-contained batches. Before the third ADD in `fast`,
/// its fast plan is inspected with `check`. Both rulesets must read the same.
fn fast_vs_full(tag: &str, api: fn(usize), full: fn(&mut NftSocket, usize), check: fn(&mut NftSocket, usize)) {
    let (fast, slow) = (Netns::create(&unique(&format!("fwf{tag}"))), Netns::create(&unique(&format!("fws{tag}"))));
    fast.run_in(move || {
        api(0);
        api(1);
        check(&mut NftSocket::open().unwrap(), 2);
        api(2);
        api(2); // a repeated ADD of the same attachment (repair path) leaves the same text
    });
    slow.run_in(move || {
        let mut s = NftSocket::open().unwrap();
        for i in 0..3 {
            full(&mut s, i);
        }
    });
    let (a, b) = (netfilter(&fast).text(), netfilter(&slow).text());
    assert!(a.contains("table"), "{a}");
    assert_eq!(a, b, "fast path ruleset differs from the full path's");
}

fn masq_ips(i: usize) -> Vec<IpNet> {
    vec![format!("198.18.200.{}/24", i + 2).parse().unwrap(), format!("fd00:200::{}/64", i + 2).parse().unwrap()]
}

#[test]
fn ipmasq_second_attachment_add_is_add_only() {
    use cni_multi::firewall::ipmasq;
    fast_vs_full(
        "im",
        |i| {
            let spec = firewall::ipmasq::MasqSpec {
                network: "fastnet",
                container_id: &format!("cid{i}"),
                ifname: "eth0",
                ips: &masq_ips(i),
            };
            firewall::ipmasq::ensure(Some("nftables"), &spec).unwrap()
        },
        |s, i| {
            let existing = decode::list_rules(s, Family::Inet, ipmasq::TABLE, Some(ipmasq::CHAIN)).unwrap();
            s.commit(&ipmasq::setup_batch(&existing, "fastnet", &format!("cid{i}"), "eth0", &masq_ips(i))).unwrap();
        },
        |s, i| {
            let st = TableState::read(s, Family::Inet, ipmasq::TABLE).unwrap();
            assert_add_only(&ipmasq::setup_batch_fast(&st, "fastnet", &format!("cid{i}"), "eth0", &masq_ips(i)), &[]);
        },
    );
}

fn fast_pm_spec(i: usize) -> PortmapSpec {
    let mut s = pm_spec("fast", format!("198.18.201.{}/24", i + 2).parse().unwrap());
    s.container_id = format!("pm-cid{i}");
    for m in &mut s.mappings {
        m.host_port += i as u16;
    }
    s
}

#[test]
fn portmap_second_attachment_add_is_add_only() {
    fast_vs_full(
        "pm",
        |i| portmap::nft_ensure(&fast_pm_spec(i)).unwrap(),
        |s, i| s.commit(&portmap::nft_setup_batch(&fast_pm_spec(i)).unwrap()).unwrap(),
        |s, i| {
            let st = TableState::read(s, Family::Ip, portmap::NFT_TABLE).unwrap();
            assert_add_only(&portmap::nft_setup_batch_fast(&st, &fast_pm_spec(i)).unwrap(), &[]);
        },
    );
}

fn fast_fw_spec(i: usize) -> FirewallSpec {
    FirewallSpec {
        network: "fwnet".into(),
        ifname: "eth0".into(),
        container_id: format!("fw-cid{i}"),
        ips: masq_ips(i),
        admin_chain: "CNI-ADMIN".into(),
        ingress_policy: IngressPolicy::Isolated,
        bridge: Some(if i == 0 { "fastbr0".into() } else { "fastbr1".into() }),
        firewalld_zone: None,
    }
}

#[test]
fn firewall_plugin_second_attachment_add_is_add_only() {
    fast_vs_full(
        "fw",
        |i| filter::nft_add(&fast_fw_spec(i)).unwrap(),
        |s, i| {
            let mut comments = Vec::new();
            for c in [filter::NFT_PRIV, filter::NFT_STAGE1, filter::NFT_STAGE2] {
                let rules = decode::list_rules(s, Family::Inet, filter::NFT_TABLE, Some(c)).unwrap();
                comments.extend(rules.into_iter().filter_map(|r| r.comment));
            }
            s.commit(&filter::nft_add_batch(&fast_fw_spec(i), &comments)).unwrap();
        },
        |s, i| {
            let st = TableState::read(s, Family::Inet, filter::NFT_TABLE).unwrap();
            assert_add_only(&filter::nft_add_batch_fast(&st, &fast_fw_spec(i)), &[]);
        },
    );
}

fn spoof_args(i: usize) -> (String, String, [u8; 6]) {
    (format!("ms-cid{i}"), format!("vethfast{i}"), [2, 0, 0, 0, 0, i as u8 + 1])
}

fn spoof_port<'a>(cid: &'a str, veth: &'a str, mac: [u8; 6]) -> macspoof::Port<'a> {
    macspoof::Port { network: "fastnet", container_id: cid, ifname: "eth0", host_veth: veth, mac }
}

#[test]
fn macspoof_second_attachment_add_is_add_only() {
    fast_vs_full(
        "ms",
        |i| {
            let (cid, veth, mac) = spoof_args(i);
            let mac = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            macspoof::ensure("fastnet", &cid, "eth0", &veth, &mac).unwrap()
        },
        |s, i| {
            let (cid, veth, mac) = spoof_args(i);
            let pre = decode::list_rules(s, Family::Bridge, macspoof::TABLE, Some(macspoof::BASE_CHAIN)).unwrap();
            s.commit(&macspoof::setup_batch(&pre, &spoof_port(&cid, &veth, mac))).unwrap();
        },
        |s, i| {
            let (cid, veth, mac) = spoof_args(i);
            let st = TableState::read(s, Family::Bridge, macspoof::TABLE).unwrap();
            let ic = macspoof::iface_chain(&cid, "eth0");
            let mc = macspoof::mac_chain(&cid, "eth0");
            assert_add_only(&macspoof::setup_batch_fast(&st, &spoof_port(&cid, &veth, mac)), &[&ic, &mc]);
        },
    );
}

/// Concurrent ADDs (two writers racing in one netns) with the add-only path: every attachment's
/// rules are there, the shared chains hold their rules exactly once.
#[test]
fn concurrent_fast_adds_keep_shared_chains_exact() {
    let host = Netns::create(&unique("fwcc"));
    let writers: Vec<_> = (0..2usize)
        .map(|w| {
            let path = host.path.clone();
            std::thread::spawn(move || {
                run_in_netns(&path, move || {
                    for i in (w..24).step_by(2) {
                        portmap::nft_ensure(&fast_pm_spec(i)).unwrap();
                        filter::nft_add(&fast_fw_spec(i)).unwrap();
                    }
                })
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    host.run_in(|| {
        let mut s = NftSocket::open().unwrap();
        let pm = TableState::read(&mut s, Family::Ip, portmap::NFT_TABLE).unwrap();
        assert_eq!(pm.rules_of(portmap::HOSTPORTS_ALL).count(), 2);
        assert_eq!(pm.rules_of("prerouting").count(), 1);
        assert_eq!(pm.rules_of("output").count(), 1);
        let fw = TableState::read(&mut s, Family::Inet, filter::NFT_TABLE).unwrap();
        assert_eq!(fw.rules_of(filter::NFT_FORWARD).count(), 2);
        assert_eq!(fw.rules_of(filter::NFT_STAGE2).count(), 2, "one drop per bridge");
        for i in 0..24 {
            let pm_cid = fast_pm_spec(i).container_id;
            let n = pm.rules_of(portmap::HOSTPORTS).filter(|r| r.comment.as_deref() == Some(pm_cid.as_str())).count();
            assert_eq!(n, 2, "{pm_cid}");
            let fw_tag = filter::nft_comment(&fast_fw_spec(i));
            let n = fw.rules_of(filter::NFT_PRIV).filter(|r| r.comment.as_deref() == Some(fw_tag.as_str())).count();
            assert_eq!(n, 4, "{fw_tag}: two rules per IP");
        }
    });
}

/// The native read of iptables-nft's tables ([`firewall::iptables_nft`], what DEL and GC use
/// instead of `iptables-save`) renders every rule of the CNI layouts exactly as `iptables-save`
/// prints it, in both families; a teardown planned from a read that someone else's commit made
/// stale is refused whole (and re-read by the caller); a table held by iptables-legacy is never
/// read natively.
#[test]
fn iptables_nft_native_read_is_iptables_save() {
    use cni_multi::firewall::iptables::{parse_save_table, IptablesBackend};
    use cni_multi::firewall::iptables_nft;
    let host = Netns::create(&unique("fwnat"));
    host.must(&["ip", "link", "set", "lo", "up"]);
    let extra = "*filter\n:CNI-X - [0:0]\n-A CNI-X -i br+ ! -o br0 -p tcp -m tcp --dport 8080 -j DROP\n\
                 -A CNI-X -s 198.18.7.0/25 -p udp -m udp --sport 53 -g CNI-FORWARD\n-A CNI-X -m mark --mark 0x10 -j RETURN\nCOMMIT\n";
    host.run_in(move || {
        let ips: Vec<IpNet> = vec!["198.18.7.2/24".parse().unwrap(), "fd00:7::2/64".parse().unwrap()];
        let b = firewall::ipmasq::backend(BackendKind::Iptables);
        b.ensure_masquerade("nat-net", "cid-a", "eth0", &ips).unwrap();
        for ip in &ips {
            portmap::iptables_ensure(&pm_spec("native", *ip)).unwrap();
            let mut s = pm_spec("native", *ip);
            s.container_id = "pm-other".into();
            portmap::iptables_ensure(&s).unwrap();
        }
        let fw = FirewallSpec {
            network: "fwnet".into(),
            ifname: "eth0".into(),
            container_id: "cid-a".into(),
            ips: ips.clone(),
            admin_chain: "CNI-ADMIN".into(),
            ingress_policy: IngressPolicy::Isolated,
            bridge: Some("br0".into()),
            firewalld_zone: None,
        };
        filter::iptables_add(&fw).unwrap();
        IptablesBackend.restore(false, extra).unwrap();
    });
    let mut compared = 0;
    for (v6, tool) in [(false, "iptables-save"), (true, "ip6tables-save")] {
        for table in ["nat", "filter"] {
            let saved = parse_save_table(&host.must(&[tool, "-t", table]), table);
            let native = host.run_in(move || iptables_nft::read(v6, table).expect("nft holds the table").unwrap());
            assert!(native.native.is_some());
            let mut want = saved.rules.clone();
            let mut got = native.rules.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{tool} -t {table}");
            let (mut a, mut b) = (saved.chains.clone(), native.chains.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "{tool} -t {table} chains");
            compared += got.len();
        }
    }
    assert!(compared >= 30, "only {compared} rules compared");
    // a read of some chains: their rules alone, every chain's name
    let part = host.run_in(|| {
        let only = ["POSTROUTING".to_string(), "CNI-HOSTPORT-DNAT".to_string()];
        iptables_nft::read_chains(false, "nat", Some(&only)).unwrap().unwrap()
    });
    let full = parse_save_table(&host.must(&["iptables-save", "-t", "nat"]), "nat");
    let want: Vec<_> =
        full.rules.iter().filter(|(c, _)| c == "POSTROUTING" || c == "CNI-HOSTPORT-DNAT").cloned().collect();
    assert!(want.len() >= 3 && part.rules.len() == want.len(), "{:?} vs {want:?}", part.rules);
    assert!(part.rules.iter().all(|r| want.contains(r)));
    assert_eq!(part.chains.len(), full.chains.len());

    // stale: planned from a read, then someone commits: nothing of the plan is applied
    let chain = firewall::iptables::chain_name("nat-net", "cid-a");
    let applied = host.run_in(move || {
        let st = iptables_nft::read(false, "nat").unwrap().unwrap();
        let lines = firewall::iptables::chain_teardown_lines(&st, &chain);
        IptablesBackend.restore(false, "*nat\n:CNI-Y - [0:0]\nCOMMIT\n").unwrap();
        let r = iptables_nft::apply(false, "nat", &st, &lines, true);
        r.as_ref().map_err(|e| assert!(iptables_nft::retry(e), "{e:#}")).is_ok()
    });
    assert!(!applied, "a plan from a stale read must not commit");
    let chain = firewall::iptables::chain_name("nat-net", "cid-a");
    assert!(host.must(&["iptables-save", "-t", "nat"]).contains(&chain));
    // the façade re-reads and succeeds
    host.run_in(|| {
        let ips: Vec<IpNet> = vec!["198.18.7.2/24".parse().unwrap(), "fd00:7::2/64".parse().unwrap()];
        let spec = firewall::ipmasq::MasqSpec { network: "nat-net", container_id: "cid-a", ifname: "eth0", ips: &ips };
        firewall::ipmasq::remove(&spec).unwrap();
        portmap::iptables_remove("pmnetnative", "pm-cid", None).unwrap();
    });
    let after = netfilter(&host).text();
    assert!(!after.contains(&chain), "{after}");
    assert!(!after.contains(&cni_multi::names::portmap_dn_chain("pmnetnative", "pm-cid")), "{after}");
    assert!(after.contains(&cni_multi::names::portmap_dn_chain("pmnetnative", "pm-other")), "{after}");

    // iptables-legacy holding the table: the tools are used
    if host.exec(&["iptables-legacy", "-t", "nat", "-S"]).status.success() {
        assert!(host.run_in(|| iptables_nft::read(false, "nat").is_none()));
        assert!(host.run_in(|| iptables_nft::read(true, "nat").is_some()) || iptables_nft::legacy_holds(true, "nat"));
    }
}

/// Every restore input of the three layouts (ipMasq, portmap with hairpin and a host IP, the
/// firewall plugin with isolation; both families; first ADD, a second ADD over existing chains,
/// and the teardowns) applied natively ([`iptables_nft::write`]) leaves exactly what
/// `iptables-restore` leaves: the same chains (base chain hooks and priorities included) and,
/// chain by chain, the same rule expressions with the same x_tables payloads, so every
/// iptables-nft tool reads them as its own. The tool then deletes a natively written rule.
#[test]
fn iptables_nft_native_write_is_iptables_restore() {
    use cni_multi::firewall::iptables::{chain_teardown_lines, masq_setup_input, IptablesBackend, NatState};
    use cni_multi::firewall::iptables_nft::{self, write};
    use cni_multi::firewall::nft::decode::{list_chains, list_rules_checked};
    use cni_multi::firewall::nft::{sock::NftSocket, Family};

    let tool = Netns::create(&unique("fwxtool"));
    let native = Netns::create(&unique("fwxnat"));
    type Plan = fn(bool, &NatState) -> Option<String>;
    fn fw() -> FirewallSpec {
        FirewallSpec {
            network: "fwnet".into(),
            ifname: "eth0".into(),
            container_id: "cid-a".into(),
            ips: vec!["198.18.8.2/24".parse().unwrap(), "fd00:8::2/64".parse().unwrap()],
            admin_chain: "CNI-ADMIN".into(),
            ingress_policy: IngressPolicy::Isolated,
            bridge: Some("br0".into()),
            firewalld_zone: None,
        }
    }
    fn pm(v6: bool) -> PortmapSpec {
        let mut s = pm_spec("x", if v6 { "fd00:8::2/64" } else { "198.18.8.2/24" }.parse().unwrap());
        s.mappings[1].host_ip = Some(if v6 { "fd00:9::1" } else { "198.18.9.1" }.parse().unwrap());
        s
    }
    fn ips(v6: bool) -> Vec<IpNet> {
        vec![if v6 { "fd00:8::2/64" } else { "198.18.8.2/24" }.parse().unwrap()]
    }
    let adds: [(&str, Plan); 3] = [
        ("nat", |v6, st| masq_setup_input(st, "xnet", "cid-a", &ips(v6))),
        ("nat", |v6, st| portmap::iptables_setup_input(st, &pm(v6)).unwrap()),
        ("filter", |v6, st| filter::iptables_add_input(st, &fw(), v6)),
    ];
    let dels: [(&str, Plan); 3] = [
        ("nat", |_, st| {
            let l = chain_teardown_lines(st, &firewall::iptables::chain_name("xnet", "cid-a"));
            firewall::iptables::wrap_table("nat", &l)
        }),
        ("nat", |_, st| {
            firewall::iptables::wrap_table("nat", &portmap::iptables_teardown_lines(st, "pmnetx", "pm-cid"))
        }),
        ("filter", |v6, st| filter::iptables_del_input(st, &fw(), v6)),
    ];
    // applies each plan in both namespaces, each planned from its own namespace's state
    let apply = |plans: &[(&'static str, Plan)], label: &str| {
        for &(table, plan) in plans {
            for v6 in [false, true] {
                tool.run_in(move || {
                    let st = firewall::iptables::IptablesBackend.save_tool(v6, table).unwrap();
                    if let Some(input) = plan(v6, &st) {
                        IptablesBackend.restore(v6, &input).unwrap();
                    }
                });
                let label = label.to_string();
                native.run_in(move || {
                    let st = iptables_nft::read(v6, table).unwrap().unwrap();
                    if let Some(input) = plan(v6, &st) {
                        assert_eq!(
                            write::restore(v6, &st, &input).unwrap(),
                            write::Outcome::Applied,
                            "{label}: {input}"
                        );
                    }
                });
            }
        }
    };
    let dump = |ns: &Netns| {
        ns.run_in(|| {
            let mut s = NftSocket::open().unwrap();
            let mut out = Vec::new();
            for f in [Family::Ip, Family::Ip6] {
                for t in ["nat", "filter"] {
                    let mut chains: Vec<String> = list_chains(&mut s, f, t)
                        .unwrap()
                        .into_iter()
                        .map(|c| {
                            format!("{} {} {:?} {:?} {:?} {:?}", t, c.name, c.chain_type, c.hook, c.priority, c.policy)
                        })
                        .collect();
                    chains.sort();
                    out.extend(chains);
                    for (r, complete) in list_rules_checked(&mut s, f, t, None).unwrap() {
                        out.push(format!("{f:?} {t} {} complete={complete} {:?}", r.chain, r.exprs));
                    }
                }
            }
            out
        })
    };
    let compare = |step: &str| {
        let (a, b) = (dump(&tool), dump(&native));
        assert!(a.len() > 10, "{step}: {a:#?}");
        assert_eq!(a, b, "{step}: the tool's rules (left) and ours (right) differ");
        let save = |ns: &Netns| {
            ["iptables-save", "ip6tables-save"]
                .iter()
                .flat_map(|t| {
                    ns.must(&[t]).lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(save(&tool), save(&native), "{step}: iptables-save differs");
    };
    apply(&adds, "first ADD");
    compare("first ADD");
    // a second attachment's worth of change over existing chains (declared = flushed)
    apply(&adds, "second ADD");
    compare("second ADD");
    apply(&dels, "teardown");
    compare("teardown");
    apply(&adds, "ADD again");
    compare("ADD again");
    // the tool deletes what we wrote, by its own text
    let line = native
        .must(&["iptables-save", "-t", "nat"])
        .lines()
        .find(|l| l.starts_with("-A CNI-DN-") && l.contains("DNAT"))
        .expect("a DNAT rule")
        .to_string();
    let mut del = vec!["iptables", "-t", "nat", "-D"];
    let args = firewall::iptables::split_args(line.trim_start_matches("-A "));
    del.extend(args.iter().map(String::as_str));
    native.must(&del);
    assert!(!native.must(&["iptables-save", "-t", "nat"]).contains(&line));
}
