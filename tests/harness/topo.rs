//! Topology builders: the namespace layouts the kernel-facing tests need beyond the host +
//! containers of a [`World`](super::World). Each one owns its netnses ([`Netns`], deleted on drop)
//! and temp dir (`tempfile`, removed on drop); nothing is created in the machine's root netns.
//!
//! - [`NsSet`]: netnses made by role name, a scratch dir and a CNI_PATH; runs a plugin (ours or
//!   the reference) in one of them (interface plugins: `iface`, `iface_vm`, `vpc_routed`)
//! - [`Outside`]: container ─ veth ─ host ─ veth ─ outside, routed, dual stack (masquerade,
//!   portmap, conntrack)
//! - [`TwoBridges`]: a host with two bridges and three containers on them (firewall isolation)
//! - [`World::host_bridge_with_addr`], [`World::write_resolv_conf`]: the set-ups the testdata
//!   scenarios name (`differential`, `clients`)
//! - [`DhcpServer`]: a server netns whose bridge runs dnsmasq (DHCPv4, optionally DHCPv6 + RA),
//!   with veths plugged into it from other netnses (`dhcp`)

use super::config::Subnets;
use super::plugin::{Impl, REFERENCE_DIR};
use super::runtime::Out;
use super::world::{enter_before_exec, must, unique, wait_for, Netns, World};
use ipnet::IpNet;
use nix::sched::CloneFlags;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("cni-multi-it-{tag}-")).tempdir().expect("temp dir")
}

/// Netnses made by role name (`h`, `c1`, …: `<unique>-<role>`, `lo` up), a scratch dir and the
/// CNI_PATH plugins delegate through (the reference directory unless [`NsSet::use_our_ipam`]).
/// Tests address the netnses by name.
pub struct NsSet {
    pub tag: String,
    pub dir: PathBuf,
    nses: Vec<Netns>,
    /// CNI_PATH for plugin runs
    pub cni_path: String,
    _tmp: tempfile::TempDir,
}

/// How the plugin reaches our host-local on CNI_PATH.
#[derive(Clone, Copy, Debug)]
pub enum IpamVia {
    /// a symlink to our binary: delegation runs in-process
    InProcess,
    /// a wrapper script that execs our binary: delegation runs by exec, as for a foreign IPAM
    Exec,
}

impl NsSet {
    pub fn new(tag: &str) -> NsSet {
        let tag = unique(tag);
        let tmp = temp_dir(&tag);
        NsSet { dir: tmp.path().to_path_buf(), tag, nses: Vec::new(), cni_path: REFERENCE_DIR.to_string(), _tmp: tmp }
    }

    /// Create netns `<tag>-<n>` with `lo` up; returns its name (path: /run/netns/<name>).
    pub fn netns(&mut self, n: &str) -> String {
        let ns = Netns::create(&format!("{}-{n}", self.tag));
        ns.must(&["ip", "link", "set", "lo", "up"]);
        let name = ns.name.clone();
        self.nses.push(ns);
        name
    }

    /// How many netnses were made so far.
    pub fn count(&self) -> usize {
        self.nses.len()
    }

    /// Run a command inside netns `ns` (`ip netns exec`, so /sys is the netns's).
    pub fn exec(&self, ns: &str, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        super::world::sh(&v)
    }

    /// `ip -n ns ARGS`, which must succeed; its stdout.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", ns];
        v.extend_from_slice(args);
        must(&v)
    }

    /// Run `plugin` (ours or the reference) inside the host netns `host`.
    #[allow(clippy::too_many_arguments)]
    pub fn cni(
        &self,
        which: Impl,
        host: &str,
        plugin: &str,
        cmd: &str,
        netns: Option<&str>,
        ifname: &str,
        args: &str,
        conf: &Value,
    ) -> Out {
        let bin = match which {
            Impl::Ours => super::runtime::bin().to_string(),
            Impl::Reference => format!("{REFERENCE_DIR}/{plugin}"),
        };
        // host-device reads /sys, which only `ip netns exec` remounts for the namespace; the
        // others are spawned straight into the host namespace (one exec less: the VM is slow)
        let mut c = if plugin == "host-device" {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", host, &bin]);
            c
        } else {
            let mut c = Command::new(&bin);
            enter_before_exec(&mut c, &Path::new("/run/netns").join(host), CloneFlags::CLONE_NEWNET);
            c
        };
        if which == Impl::Ours {
            c.arg(plugin);
        }
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", format!("ctr-{}", netns.unwrap_or(&self.tag)))
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !ifname.is_empty() {
            c.env("CNI_IFNAME", ifname);
        }
        if let Some(n) = netns {
            c.env("CNI_NETNS", format!("/run/netns/{n}"));
        }
        if !args.is_empty() {
            c.env("CNI_ARGS", args);
        }
        let mut child = c.spawn().expect("spawn plugin");
        use std::io::Write;
        // a plugin may exit before reading stdin (bad environment): ignore a broken pipe
        let _ = child.stdin.take().unwrap().write_all(&serde_json::to_vec(conf).unwrap());
        child.wait_with_output().unwrap().into()
    }

    /// Delegate IPAM to our own host-local (a symlink to our binary on CNI_PATH: in-process).
    pub fn use_our_ipam(&mut self) {
        self.use_our_ipam_via(IpamVia::InProcess)
    }

    /// CNI_PATH with our host-local reached `via` a symlink (in-process) or a script (exec).
    pub fn use_our_ipam_via(&mut self, via: IpamVia) {
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        match via {
            IpamVia::InProcess => {
                std::os::unix::fs::symlink(super::runtime::bin(), bin.join("host-local")).unwrap();
            }
            IpamVia::Exec => {
                let script = bin.join("host-local");
                let body = format!("#!/bin/sh\nexec '{}' host-local \"$@\"\n", super::runtime::bin());
                std::fs::write(&script, body).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        self.cni_path = bin.to_string_lossy().into_owned();
    }

    /// A host-local IPAM block with its own data dir under this set's dir.
    /// The route carries a gateway: the reference's CHECK fails on gateway-less routes.
    pub fn ipam(&self, sub: &str, subnet: &str) -> Value {
        let gw = subnet.split('/').next().unwrap().trim_end_matches('0').to_string() + "1";
        json!({
            "type": "host-local",
            "dataDir": self.dir.join(sub),
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "198.19.0.0/16", "gw": gw}]
        })
    }

    /// Names of the links in `ns`, except lo.
    pub fn links(&self, ns: &str) -> Vec<String> {
        let out = self.ip(ns, &["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "lo")
            .collect()
    }

    /// Leases left in a host-local data dir (files named like IPs).
    pub fn leases(&self, sub: &str) -> Vec<String> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) {
            for net in rd.flatten() {
                if let Ok(files) = std::fs::read_dir(net.path()) {
                    for f in files.flatten() {
                        let n = f.file_name().to_string_lossy().into_owned();
                        if n.parse::<std::net::IpAddr>().is_ok() {
                            v.push(n);
                        }
                    }
                }
            }
        }
        v
    }
}

impl Drop for NsSet {
    fn drop(&mut self) {
        // the last made first (a container before the host it was attached to)
        while let Some(mut ns) = self.nses.pop() {
            ns.delete();
        }
    }
}

/// container (eth0 198.18.<n>.2/24, fd00:<n>::2/64) ── veth ── host (vc 198.18.<n>.1, fd00:<n>::1)
/// host (vo 198.18.<n+1>.1/24, fd00:<n+1>::1/64) ── veth ── outside (eth0 198.18.<n+1>.2, fd00:<n+1>::2)
///
/// The host forwards both families; the container's default routes point at it. The outside
/// netns has no route back to the container subnet, so a packet that arrives there from the
/// host's address proves masquerading. Every link is up, IPv6 DAD over, when `new` returns.
pub struct Outside {
    pub host: Netns,
    pub outside: Netns,
    pub container: Netns,
    pub c4: IpNet,
    pub c6: IpNet,
    pub host_out4: IpAddr,
    pub host_out6: IpAddr,
    pub out4: IpAddr,
    pub out6: IpAddr,
}

impl Outside {
    pub fn new(tag: &str, n: u8) -> Outside {
        let base = unique(tag);
        let [host, outside, container] = ["h", "o", "c"].map(|r| {
            let ns = Netns::create(&format!("{base}-{r}"));
            ns.must(&["ip", "link", "set", "lo", "up"]);
            ns
        });
        let m = n + 1;
        // container <-> host
        host.must(&["ip", "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", &container.name]);
        // host <-> outside
        host.must(&["ip", "link", "add", "vo", "type", "veth", "peer", "name", "eth0", "netns", &outside.name]);
        let addrs = [
            (&container, "eth0", format!("198.18.{n}.2/24"), format!("fd00:{n}::2/64")),
            (&host, "vc", format!("198.18.{n}.1/24"), format!("fd00:{n}::1/64")),
            (&host, "vo", format!("198.18.{m}.1/24"), format!("fd00:{m}::1/64")),
            (&outside, "eth0", format!("198.18.{m}.2/24"), format!("fd00:{m}::2/64")),
        ];
        for (ns, dev, a4, a6) in &addrs {
            ns.must(&["ip", "addr", "add", a4, "dev", dev]);
            ns.must(&["ip", "-6", "addr", "add", a6, "dev", dev, "nodad"]);
            ns.must(&["ip", "link", "set", dev, "up"]);
        }
        // Packets sent before linkwatch has turned the carrier on are dropped: wait for it.
        for (ns, dev, _, _) in &addrs {
            wait_oper_up(ns, dev);
        }
        container.must(&["ip", "route", "add", "default", "via", &format!("198.18.{n}.1")]);
        container.must(&["ip", "-6", "route", "add", "default", "via", &format!("fd00:{n}::1")]);
        host.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        host.must(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // IPv6 is not usable for forwarded traffic until link-local DAD is over.
        for ns in [&host, &outside, &container] {
            wait_no_tentative(ns);
        }
        Outside {
            host,
            outside,
            container,
            c4: format!("198.18.{n}.2/24").parse().unwrap(),
            c6: format!("fd00:{n}::2/64").parse().unwrap(),
            host_out4: format!("198.18.{m}.1").parse().unwrap(),
            host_out6: format!("fd00:{m}::1").parse().unwrap(),
            out4: format!("198.18.{m}.2").parse().unwrap(),
            out6: format!("fd00:{m}::2").parse().unwrap(),
        }
    }
}

/// Wait (up to 2 s) until `dev` in `ns` is operationally up.
pub fn wait_oper_up(ns: &Netns, dev: &str) {
    for _ in 0..100 {
        if ns.ok(&format!("cat /sys/class/net/{dev}/operstate")).trim() == "up" {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{dev} in {} never came up", ns.name);
}

/// Wait (up to 5 s) until no IPv6 address in `ns` is tentative.
pub fn wait_no_tentative(ns: &Netns) {
    for _ in 0..200 {
        if ns.must(&["ip", "-6", "addr", "show", "tentative"]).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("IPv6 DAD never finished in {}", ns.name);
}

/// A host with bridges fwb1 (198.18.<n>.1/24) and fwb2 (198.18.<n+1>.1/24), IPv4 forwarding, and
/// three containers: a1 (.2) and a2 (.3) on fwb1, b1 (.2) on fwb2, each with a default route.
pub struct TwoBridges {
    pub host: Netns,
    /// a1, a2, b1
    pub ctrs: Vec<Netns>,
}

impl TwoBridges {
    pub fn new(tag: &str, n: u8) -> TwoBridges {
        let base = unique(tag);
        let host = Netns::create(&format!("{base}-h"));
        let ctrs: Vec<Netns> = ["a1", "a2", "b1"].iter().map(|c| Netns::create(&format!("{base}-{c}"))).collect();
        for (br, net) in [("fwb1", n), ("fwb2", n + 1)] {
            host.must(&["ip", "link", "add", br, "type", "bridge"]);
            host.must(&["ip", "addr", "add", &format!("198.18.{net}.1/24"), "dev", br]);
            host.must(&["ip", "link", "set", br, "up"]);
        }
        host.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (i, (ctr, (br, net, host_ip))) in
            ctrs.iter().zip([("fwb1", n, 2), ("fwb1", n, 3), ("fwb2", n + 1, 2)]).enumerate()
        {
            let hv = format!("fwv{i}");
            host.must(&["ip", "link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns", &ctr.name]);
            host.must(&["ip", "link", "set", &hv, "master", br, "up"]);
            ctr.must(&["ip", "addr", "add", &format!("198.18.{net}.{host_ip}/24"), "dev", "eth0"]);
            ctr.must(&["ip", "link", "set", "eth0", "up"]);
            ctr.must(&["ip", "route", "add", "default", "via", &format!("198.18.{net}.1")]);
        }
        TwoBridges { host, ctrs }
    }
}

impl World {
    /// Bridge `cmbr0` in the host netns, up, holding <v4a>.254/24: a bridge that exists (with an
    /// address of its own) before the plugin's ADD.
    pub fn host_bridge_with_addr(&self, subnets: &Subnets) {
        self.host.must(&["ip", "link", "add", "cmbr0", "type", "bridge"]);
        self.host.must(&["ip", "addr", "add", &format!("{}.254/24", subnets.v4a), "dev", "cmbr0"]);
        self.host.must(&["ip", "link", "set", "cmbr0", "up"]);
    }

    /// `<tmp>/resolv.conf`: two nameservers (v4 and v6), a domain, a search list and options.
    pub fn write_resolv_conf(&self, subnets: &Subnets) {
        let text = format!(
            "# test resolver\nnameserver {}.53\nnameserver {}::53\ndomain example.test\nsearch a.test b.test\noptions ndots:3 timeout:1\n",
            subnets.v4a, subnets.v6a
        );
        std::fs::write(self.tmp.join("resolv.conf"), text).expect("write resolv.conf");
    }
}

/// A DHCP server netns: bridge `bridge` with 198.19.<n>.1/24 (and fd00:0:d:<n>::1/64 when `v6`)
/// running dnsmasq (2-minute leases from .10 to .50; with `v6` also a stateful DHCPv6 range and
/// RA). Its lease file, log and pid file live in `dir`. Other netnses are plugged into the bridge
/// with [`DhcpServer::plug`]. dnsmasq is killed and the netns deleted on drop.
pub struct DhcpServer {
    pub ns: Netns,
    pub bridge: String,
    pub n: u8,
    pub v6: bool,
    pub dir: PathBuf,
    dnsmasq: Option<Child>,
}

impl DhcpServer {
    pub fn new(name: &str, bridge: &str, n: u8, v6: bool, dir: &Path) -> DhcpServer {
        let ns = Netns::create(name);
        if v6 {
            // the server's addresses are usable at once (no DAD wait before dnsmasq starts)
            ns.set_sysctl("net/ipv6/conf/default/accept_dad", "0");
            ns.set_sysctl("net/ipv6/conf/all/accept_dad", "0");
        }
        ns.must(&["ip", "link", "set", "lo", "up"]);
        ns.must(&["ip", "link", "add", bridge, "type", "bridge", "forward_delay", "0"]);
        ns.must(&["ip", "addr", "add", &format!("198.19.{n}.1/24"), "dev", bridge]);
        if v6 {
            ns.must(&["ip", "addr", "add", &format!("fd00:0:d:{n}::1/64"), "dev", bridge]);
        }
        ns.must(&["ip", "link", "set", bridge, "up"]);
        DhcpServer { ns, bridge: bridge.to_string(), n, v6, dir: dir.to_path_buf(), dnsmasq: None }
    }

    /// The server's (and router's) IPv4 address.
    pub fn srv4(&self) -> String {
        format!("198.19.{}.1", self.n)
    }

    pub fn srv6(&self) -> String {
        format!("fd00:0:d:{}::1", self.n)
    }

    /// A veth `server_if` ─ `other_if` from the bridge into `other`; both ends up.
    pub fn plug(&self, server_if: &str, other: &Netns, other_if: &str) {
        let ns = &self.ns;
        ns.must(&["ip", "link", "add", server_if, "type", "veth", "peer", "name", other_if, "netns", &other.name]);
        ns.must(&["ip", "link", "set", server_if, "master", &self.bridge, "up"]);
        other.must(&["ip", "link", "set", other_if, "up"]);
    }

    pub fn leases_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// Start dnsmasq with `extra` options; returns once it listens (port 67, and 547 with v6).
    pub fn start(&mut self, extra: &[String]) {
        let (n, d) = (self.n, &self.dir);
        let mut cmd = self.ns.command("/usr/sbin/dnsmasq");
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null"])
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .arg(format!("--dhcp-leasefile={}", self.leases_file().display()))
            .arg(format!("--log-facility={}", d.join("dnsmasq.log").display()))
            .args(["--port=0", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root"])
            .arg(format!("--interface={}", self.bridge))
            .args(["--no-ping", "--log-dhcp", "--dhcp-authoritative"])
            .arg(format!("--dhcp-range=198.19.{n}.10,198.19.{n}.50,2m"));
        if self.v6 {
            cmd.arg("--enable-ra").arg(format!("--dhcp-range=fd00:0:d:{n}::10,fd00:0:d:{n}::50,64,2m"));
        }
        let child = cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("dnsmasq");
        self.dnsmasq = Some(child);
        let ok = wait_for(5, || {
            let out = String::from_utf8_lossy(&self.ns.exec(&["ss", "-uanl"]).stdout).into_owned();
            out.contains(":67 ") && (!self.v6 || out.contains(":547 "))
        });
        assert!(ok, "dnsmasq did not start: {}", self.log());
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// dnsmasq's lease file lines (v4 only): (expiry, ip, hostname).
    pub fn leases(&self) -> Vec<(u64, String, String)> {
        std::fs::read_to_string(self.leases_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.parse().ok()?, f.get(2)?.to_string(), f.get(3)?.to_string()))
            })
            .collect()
    }

    /// The leased addresses (v4 and v6 lines).
    pub fn leased_addrs(&self) -> Vec<String> {
        std::fs::read_to_string(self.leases_file())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("duid "))
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect()
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.stop();
        self.ns.delete();
    }
}
