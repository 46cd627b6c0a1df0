//! Persistent tun/tap devices: TUNSETIFF, TUNSETOWNER/GROUP, TUNSETPERSIST on /dev/net/tun.
//! Acts in the calling thread's network namespace (wrap in `ns.run(..)`).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use nix::libc;

/// What to create.
#[derive(Debug, Clone, Copy)]
pub struct TapSpec<'a> {
    /// Name, or a pattern like "tap%d".
    pub name: &'a str,
    /// true: tap (ethernet frames); false: tun (IP packets).
    pub tap: bool,
    pub multi_queue: bool,
    pub vnet_hdr: bool,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// struct ifreq as TUNSETIFF reads it: a name and the flags (the union's other members unused).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Create a persistent tun/tap device; returns its name (as the kernel chose, for patterns).
/// The device stays after this returns; delete it with `Netlink::link_del`.
pub fn create_persistent(spec: &TapSpec) -> io::Result<String> {
    let name = spec.name.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {:?}", spec.name)));
    }
    let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    let fd = file.as_raw_fd();
    let mut flags = libc::IFF_NO_PI | if spec.tap { libc::IFF_TAP } else { libc::IFF_TUN };
    if spec.multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if spec.vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: flags as libc::c_short, _pad: [0; 22] };
    if let Some(dst) = req.name.get_mut(..name.len()) {
        dst.copy_from_slice(name);
    }
    // SAFETY: fd is an open /dev/net/tun descriptor owned by `file`; TUNSETIFF reads and writes
    // a struct ifreq, and `req` is a properly sized, initialised #[repr(C)] ifreq that outlives the call.
    check(unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, &mut req as *mut IfReq) }, "TUNSETIFF")?;
    if let Some(uid) = spec.owner {
        // SAFETY: TUNSETOWNER takes the uid by value; fd is valid (see above).
        check(unsafe { libc::ioctl(fd, libc::TUNSETOWNER as _, uid as libc::c_ulong) }, "TUNSETOWNER")?;
    }
    if let Some(gid) = spec.group {
        // SAFETY: TUNSETGROUP takes the gid by value; fd is valid (see above).
        check(unsafe { libc::ioctl(fd, libc::TUNSETGROUP as _, gid as libc::c_ulong) }, "TUNSETGROUP")?;
    }
    // SAFETY: TUNSETPERSIST takes a flag by value; fd is valid (see above).
    check(unsafe { libc::ioctl(fd, libc::TUNSETPERSIST as _, 1 as libc::c_ulong) }, "TUNSETPERSIST")?;
    let end = req.name.iter().position(|&c| c == 0).unwrap_or(req.name.len());
    Ok(String::from_utf8_lossy(req.name.get(..end).unwrap_or(&[])).into_owned())
}
