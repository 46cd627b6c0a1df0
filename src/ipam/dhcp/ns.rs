//! The container-side work of the daemon: looking the interface up, setting it up or down,
//! removing a released address (netlink sockets bound in the container netns, through
//! `Netlink::in_netns`), and opening the DHCP sockets there (UDP, and for DHCPv4 the packet
//! socket its broadcasts go out on and its replies are read from; the calling thread enters the
//! netns through the `sys::netns` guard only for the `socket`/`bind` calls; the sockets stay
//! bound in the container netns afterwards).
//!
//! It also finds the *lower device* of a container link in the daemon's own netns (the bridge
//! behind a veth, the parent of a macvlan/ipvlan): a release whose container link is already
//! gone (bridge deletes it before calling IPAM DEL) is sent from there.

use super::raw4::Packet4;
use crate::netlink::{Family, Netlink};
use crate::sys::netns::{NetNs, NsError};
use anyhow::{anyhow, Context};
use ipnet::IpNet;
use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The netns or the interface no longer exists: stop maintaining the lease.
#[derive(Debug)]
pub struct Gone(pub String);

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Gone {}

pub fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Gone>().is_some())
}

/// Open a container netns; a missing path is `Gone`.
pub fn open(path: &Path) -> anyhow::Result<NetNs> {
    let p = path.to_string_lossy();
    match NetNs::open(&p) {
        Ok(ns) => Ok(ns),
        Err(NsError::NotExist(_)) => Err(Gone(format!("netns {p} does not exist")).into()),
        Err(e) => Err(anyhow!(e)),
    }
}

/// An interface as seen from inside its netns.
#[derive(Debug, Clone)]
pub struct IfInfo {
    pub index: u32,
    pub mac: [u8; 6],
    pub up: bool,
    /// IPv4 addresses configured on it
    pub addrs: Vec<Ipv4Addr>,
}

/// The interface `ifname` through a socket bound in its netns (`Gone` when it is missing).
fn lookup(nl: &mut Netlink, netns: &Path, ifname: &str) -> anyhow::Result<IfInfo> {
    let link = nl
        .link_by_name(ifname)?
        .ok_or_else(|| Gone(format!("interface {ifname} not found in netns {}", netns.display())))?;
    let addrs = nl
        .addrs(Some(link.index), Some(Family::V4))?
        .into_iter()
        .filter_map(|a| match a.addr.addr() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    Ok(IfInfo { index: link.index, mac: link.mac.unwrap_or_default(), up: link.is_up(), addrs })
}

/// A netlink socket in the container netns and the interface's state; the link is set up
/// when `bring_up` and it is down (as the reference does), else a down link is an error.
fn prepare(netns: &Path, ifname: &str, bring_up: bool) -> anyhow::Result<(NetNs, Netlink, IfInfo)> {
    let ns = open(netns)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let mut info = lookup(&mut nl, netns, ifname)?;
    if !info.up {
        if !bring_up {
            anyhow::bail!("interface {ifname} in netns {} is down", netns.display());
        }
        nl.link_set_up(info.index, true).with_context(|| format!("setting {ifname} up"))?;
        info.up = true;
    }
    Ok((ns, nl, info))
}

/// A UDP socket (`family`) with SO_REUSEADDR, SO_BROADCAST (v4) and SO_BINDTODEVICE, bound
/// to the wildcard address and `port`, in the calling thread's netns.
fn dhcp_socket(ifname: &str, v6: bool, port: u16) -> anyhow::Result<UdpSocket> {
    let af = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket(af, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).context("creating DHCP socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    if !v6 {
        setsockopt(&fd, sockopt::Broadcast, &true).context("SO_BROADCAST")?;
    }
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(ifname))
        .with_context(|| format!("SO_BINDTODEVICE {ifname}"))?;
    let bound = if v6 {
        bind(fd.as_raw_fd(), &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)))
    } else {
        bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))
    };
    bound.with_context(|| format!("binding UDP port {port} on {ifname}"))?;
    Ok(UdpSocket::from(fd))
}

/// The DHCPv4 client's sockets in the container netns: UDP 0.0.0.0:68 on the interface for the
/// unicasts to the server (from the leased address on the interface), and a packet socket on it
/// for the broadcasts and the replies (`raw4`).
pub fn open_client_socket(netns: &Path, ifname: &str, bring_up: bool) -> anyhow::Result<(UdpSocket, Packet4, IfInfo)> {
    let (ns, _nl, info) = prepare(netns, ifname, bring_up)?;
    let (sock, raw) = ns.run(|| -> anyhow::Result<_> {
        let sock = dhcp_socket(ifname, false, super::client::CLIENT_PORT)?;
        let raw = Packet4::open(info.index).with_context(|| format!("opening a packet socket on {ifname}"))?;
        Ok((sock, raw))
    })?;
    Ok((sock, raw, info))
}

/// The DHCPv6 client socket ([::]:546 on the interface) in the container netns. DHCPv6 is
/// sent from the link-local address: wait (up to `wait`) until it exists and finished DAD.
pub fn open_client_socket6(
    netns: &Path,
    ifname: &str,
    bring_up: bool,
    wait: Duration,
) -> anyhow::Result<(UdpSocket, IfInfo)> {
    let (ns, mut nl, info) = prepare(netns, ifname, bring_up)?;
    let deadline = Instant::now() + wait;
    loop {
        let ready = nl.addrs(Some(info.index), Some(Family::V6))?.iter().any(|a| {
            matches!(a.addr.addr(), std::net::IpAddr::V6(ip) if ip.segments().first() == Some(&0xfe80))
                && a.flags & (crate::netlink::addr::IFA_F_TENTATIVE | crate::netlink::addr::IFA_F_DADFAILED) == 0
        });
        if ready {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!("interface {ifname} has no usable IPv6 link-local address (IPv6 disabled, or DAD)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock = ns.run(|| dhcp_socket(ifname, true, super::v6::CLIENT_PORT))?;
    Ok((sock, info))
}

/// Whether the interface still exists (Err(Gone) when the netns or the link vanished).
pub fn link_exists(netns: &Path, ifname: &str) -> anyhow::Result<IfInfo> {
    let ns = open(netns)?;
    let mut nl = Netlink::in_netns(&ns)?;
    lookup(&mut nl, netns, ifname).map_err(|e| {
        if is_gone(&e) {
            Gone(format!("interface {ifname} vanished")).into()
        } else {
            e
        }
    })
}

/// Set the interface up or down (the lease expired unrenewed / was re-acquired).
pub fn set_link(netns: &Path, ifname: &str, up: bool) -> anyhow::Result<()> {
    let ns = open(netns)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let info = lookup(&mut nl, netns, ifname)?;
    if info.up != up {
        nl.link_set_up(info.index, up)?;
    }
    Ok(())
}

/// Put `net` on the interface (already there: nothing to do).
pub fn add_addr(netns: &Path, ifname: &str, net: IpNet) -> anyhow::Result<()> {
    let ns = open(netns)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let info = lookup(&mut nl, netns, ifname)?;
    match nl.addr_add(info.index, net) {
        Err(e) if !crate::netlink::socket::is_exists(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Remove `addr` (any prefix length) from the interface, if it is there.
pub fn remove_addr(netns: &Path, ifname: &str, addr: std::net::IpAddr) -> anyhow::Result<()> {
    let ns = open(netns)?;
    let mut nl = Netlink::in_netns(&ns)?;
    let info = lookup(&mut nl, netns, ifname)?;
    let family = Family::of(&addr);
    for a in nl.addrs(Some(info.index), Some(family))? {
        if a.addr.addr() == addr {
            nl.addr_del(info.index, IpNet::new(addr, a.addr.prefix_len())?)?;
        }
    }
    Ok(())
}

/// The device in the daemon's own netns through which the container link reaches its
/// network: for a veth, the bridge its peer is enslaved to; for a macvlan/ipvlan/macvtap,
/// its parent. `None` when there is none (ptp, host-device, or the daemon runs elsewhere).
pub fn lower_device(netns: &Path, ifname: &str) -> anyhow::Result<Option<String>> {
    let ns = open(netns)?;
    let mut c = Netlink::in_netns(&ns)?;
    let Some(link) = c.link_by_name(ifname)? else { return Ok(None) };
    let (Some(peer), Some(_nsid)) = (link.link, link.link_netnsid) else { return Ok(None) };
    let mut host = Netlink::new()?;
    let Some(lower) = host.link_by_index(peer)? else { return Ok(None) };
    match link.kind.as_deref() {
        // the peer of our veth points back at it; the release goes out through its bridge
        Some("veth") if lower.kind.as_deref() == Some("veth") && lower.link == Some(link.index) => match lower.master {
            Some(m) => Ok(host.link_by_index(m)?.map(|b| b.name)),
            None => Ok(None),
        },
        Some("macvlan" | "macvtap" | "ipvlan" | "ipvtap") => Ok(Some(lower.name)),
        _ => Ok(None),
    }
}

/// A DHCPv4 socket in the daemon's own netns for releases of vanished links: bound to `dev`
/// (port 68, or any port when a local client holds 68), or unbound for a routed unicast.
pub fn host_socket_on(dev: Option<&str>) -> anyhow::Result<UdpSocket> {
    match dev {
        Some(d) => dhcp_socket(d, false, super::client::CLIENT_PORT).or_else(|_| dhcp_socket(d, false, 0)),
        None => UdpSocket::bind("0.0.0.0:0").context("creating DHCP socket"),
    }
}

/// A DHCPv6 socket on `dev` in the daemon's own netns (port 546, or any port) and its index.
pub fn host_socket6_on(dev: &str) -> anyhow::Result<(UdpSocket, u32)> {
    let index = nix::net::if_::if_nametoindex(dev).with_context(|| format!("looking up {dev}"))?;
    let sock = dhcp_socket(dev, true, super::v6::CLIENT_PORT).or_else(|_| dhcp_socket(dev, true, 0))?;
    Ok((sock, index))
}
