//! Entering the container netns for the few things that must happen inside it (opening the
//! DHCP socket, looking up the interface). Each call runs on a short-lived thread that
//! enters the namespace and dies, so the daemon's own threads never change namespace and a
//! deleted netns is never kept alive by us.
//! TODO: move to `sys::netns` once that layer lands.

use anyhow::{anyhow, Context};
use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::ffi::OsString;
use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The netns or the interface no longer exists: stop maintaining the lease.
#[derive(Debug)]
pub struct Gone(pub String);

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Gone {}

/// Run `f` on a fresh thread inside the network namespace at `path`.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Gone(format!("netns {} does not exist", path.display())).into())
        }
        Err(e) => return Err(anyhow!("opening netns {}: {e}", path.display())),
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {}", path.display()))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("netns worker thread panicked"))?
    })
}

/// An interface as seen from inside its netns.
#[derive(Debug, Clone)]
pub struct IfInfo {
    pub mac: [u8; 6],
    pub up: bool,
    /// IPv4 addresses configured on it
    pub addrs: Vec<std::net::Ipv4Addr>,
}

/// Look an interface up in the current (thread's) netns.
pub fn lookup_iface(ifname: &str) -> anyhow::Result<Option<IfInfo>> {
    let addrs = getifaddrs().context("listing interfaces")?;
    let mut found = None;
    for a in addrs.filter(|a| a.interface_name == ifname) {
        let up = a.flags.contains(InterfaceFlags::IFF_UP);
        let mac = a.address.as_ref().and_then(|s| s.as_link_addr()).and_then(|l| l.addr());
        let v4 = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip());
        let f = found.get_or_insert(IfInfo { mac: [0; 6], up, addrs: Vec::new() });
        if let Some(m) = mac {
            f.mac = m;
        }
        if let Some(ip) = v4 {
            f.addrs.push(ip);
        }
    }
    Ok(found)
}

/// Set a link up (`ip link set dev NAME up`) in the current thread's netns.
fn set_link_up(ifname: &str) -> anyhow::Result<()> {
    use neli::consts::{nl::NlmF, rtnl::RtAddrFamily, rtnl::Rtm, socket::NlFamily};
    use neli::nl::NlPayload;
    use neli::router::synchronous::NlRouter;
    use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder};
    use neli::utils::Groups;
    let index = nix::net::if_::if_nametoindex(ifname).with_context(|| format!("looking up {ifname}"))?;
    let (rtnl, _) = NlRouter::connect(NlFamily::Route, None, Groups::empty()).context("netlink socket")?;
    let msg = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(i32::try_from(index).context("interface index")?)
        .up()
        .build()
        .context("building link message")?;
    let replies = rtnl
        .send::<_, _, Rtm, Ifinfomsg>(Rtm::Newlink, NlmF::ACK, NlPayload::Payload(msg))
        .with_context(|| format!("setting {ifname} up"))?;
    for r in replies {
        r.with_context(|| format!("setting {ifname} up"))?;
    }
    Ok(())
}

/// Inside the netns: check the interface (setting it up when `bring_up` and it is down, as
/// the reference does) and open a UDP socket on 0.0.0.0:68 bound to it. The socket stays
/// in that netns after the thread leaves.
pub fn open_client_socket(netns: &Path, ifname: &str, bring_up: bool) -> anyhow::Result<(UdpSocket, IfInfo)> {
    let name = ifname.to_string();
    in_netns(netns, move || {
        let info = lookup_iface(&name)?
            .ok_or_else(|| Gone(format!("interface {name} not found in netns {}", netns.display())))?;
        if !info.up {
            if !bring_up {
                anyhow::bail!("interface {name} in netns {} is down", netns.display());
            }
            set_link_up(&name)?;
        }
        let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .context("creating DHCP socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        setsockopt(&fd, sockopt::Broadcast, &true).context("SO_BROADCAST")?;
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(&name))
            .with_context(|| format!("SO_BINDTODEVICE {name}"))?;
        bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, super::client::CLIENT_PORT))
            .with_context(|| format!("binding 0.0.0.0:68 on {name}"))?;
        Ok((UdpSocket::from(fd), info))
    })
}

/// Whether the interface still exists (Err(Gone) when the netns or the link vanished).
pub fn link_exists(netns: &Path, ifname: &str) -> anyhow::Result<()> {
    let name = ifname.to_string();
    in_netns(netns, move || match lookup_iface(&name)? {
        Some(_) => Ok(()),
        None => Err(Gone(format!("interface {name} vanished")).into()),
    })
}

pub fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<Gone>().is_some())
}
