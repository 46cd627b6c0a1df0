//! Persistent tun/tap devices: TUNSETIFF, TUNSETOWNER/GROUP, TUNSETPERSIST on /dev/net/tun.
//! Acts in the calling thread's network namespace (wrap in `ns.run(..)`): the device is made in
//! the namespace `/dev/net/tun` was opened in.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use nix::errno::Errno;
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

/// The steps of a creation, for error messages (a failed step is reported by its index).
const STEPS: [&str; 5] = ["SELinux context", "TUNSETIFF", "TUNSETOWNER", "TUNSETGROUP", "TUNSETPERSIST"];
const STEP_SELINUX: u8 = 0;

/// A failed step and its errno (no allocation: also built in a forked child).
type Failure = (u8, i32);

fn failure_to_io((step, errno): Failure, context: Option<&str>) -> io::Error {
    let what = STEPS.get(usize::from(step)).copied().unwrap_or("tap creation");
    let e = io::Error::from_raw_os_error(errno);
    match context {
        Some(c) if step == STEP_SELINUX => {
            io::Error::new(e.kind(), format!("failed to set SELinux context {c:?}: {e}"))
        }
        _ => io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

/// The ifreq for `spec` (its name checked).
fn request(spec: &TapSpec) -> io::Result<IfReq> {
    let name = spec.name.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {:?}", spec.name)));
    }
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
    Ok(req)
}

fn open_tun() -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open("/dev/net/tun")
}

/// The ioctls on an open /dev/net/tun: only system calls, nothing allocated, so that a forked
/// child can run them too.
fn make(fd: RawFd, req: &mut IfReq, owner: Option<u32>, group: Option<u32>) -> Result<(), Failure> {
    let ok = |r: libc::c_int, step: u8| if r < 0 { Err((step, Errno::last_raw())) } else { Ok(()) };
    // SAFETY: fd is an open /dev/net/tun descriptor the caller owns; TUNSETIFF reads and writes
    // a struct ifreq, and `req` is a properly sized, initialised #[repr(C)] ifreq that outlives the call.
    ok(unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, req as *mut IfReq) }, 1)?;
    if let Some(uid) = owner {
        // SAFETY: TUNSETOWNER takes the uid by value; fd is valid (see above).
        ok(unsafe { libc::ioctl(fd, libc::TUNSETOWNER as _, uid as libc::c_ulong) }, 2)?;
    }
    if let Some(gid) = group {
        // SAFETY: TUNSETGROUP takes the gid by value; fd is valid (see above).
        ok(unsafe { libc::ioctl(fd, libc::TUNSETGROUP as _, gid as libc::c_ulong) }, 3)?;
    }
    // SAFETY: TUNSETPERSIST takes a flag by value; fd is valid (see above).
    ok(unsafe { libc::ioctl(fd, libc::TUNSETPERSIST as _, 1 as libc::c_ulong) }, 4)
}

/// Create a persistent tun/tap device; returns its name (as the kernel chose, for patterns).
/// The device stays after this returns; delete it with `Netlink::link_del`.
pub fn create_persistent(spec: &TapSpec) -> io::Result<String> {
    let mut req = request(spec)?;
    let file = open_tun()?;
    make(file.as_raw_fd(), &mut req, spec.owner, spec.group).map_err(|f| failure_to_io(f, None))?;
    let end = req.name.iter().position(|&c| c == 0).unwrap_or(req.name.len());
    Ok(String::from_utf8_lossy(req.name.get(..end).unwrap_or(&[])).into_owned())
}

/// [`create_persistent`] for a device labelled with the SELinux `context` (spec.name must be a
/// plain name, not a pattern). The kernel labels a tun device with the context of the task that
/// creates it, so that task must switch to `context` first, and SELinux allows that switch (a
/// dynamic transition) only in a single-threaded process and seldom back. So a forked child,
/// single-threaded by construction, switches and creates the device, then exits: the caller's
/// context never changes and nothing is switched back. `/dev/net/tun` is opened here, before the
/// fork, so the device is made in the calling thread's network namespace.
pub fn create_persistent_labelled(spec: &TapSpec, context: &str) -> io::Result<String> {
    if context.is_empty() || context.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid SELinux context {context:?}")));
    }
    let mut req = request(spec)?;
    let file = open_tun()?;
    // everything the child needs is made before the fork: it only makes system calls
    let attr = CString::new("/proc/thread-self/attr/current").map_err(io::Error::other)?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (tun_fd, wr_fd) = (file.as_raw_fd(), wr.as_raw_fd());
    // SAFETY: the child runs only `labelled_child`, which makes system calls on descriptors and
    // buffers prepared above (no allocation, no lock, no unwinding: async-signal-safe, as a
    // child of a possibly multi-threaded process must be) and ends with `_exit`.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => labelled_child(&attr, context.as_bytes(), tun_fd, &mut req, spec, wr_fd),
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut report = [0u8; 5];
            let n = read_full(File::from(rd), &mut report);
            let status = loop {
                match nix::sys::wait::waitpid(child, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let clean = matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0)));
            match (n, report) {
                (5, [0xff, ..]) if clean => {}
                (5, [step, a, b, c, d]) => {
                    return Err(failure_to_io((step, i32::from_ne_bytes([a, b, c, d])), Some(context)))
                }
                _ => return Err(io::Error::other(format!("the child creating tap {:?} ended: {status:?}", spec.name))),
            }
            // the parent still holds the queue the child attached: closing it leaves the device
            drop(file);
            Ok(spec.name.to_string())
        }
    }
}

/// The forked child of [`create_persistent_labelled`]: switch to `context`, create the device,
/// report `[0xff, 0…]` or `[step, errno]` on `report` and exit. System calls only.
fn labelled_child(attr: &CString, context: &[u8], tun: RawFd, req: &mut IfReq, spec: &TapSpec, report: RawFd) -> ! {
    let r = (|| -> Result<(), Failure> {
        // SAFETY: `attr` is a NUL-terminated path made before the fork.
        let fd = unsafe { libc::open(attr.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err((STEP_SELINUX, Errno::last_raw()));
        }
        // SAFETY: `context` is a live byte slice; fd was just opened for writing.
        let n = unsafe { libc::write(fd, context.as_ptr().cast(), context.len()) };
        let err = Errno::last_raw();
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        if n < 0 {
            return Err((STEP_SELINUX, err));
        }
        if n as usize != context.len() {
            return Err((STEP_SELINUX, libc::EIO));
        }
        make(tun, req, spec.owner, spec.group)
    })();
    let (step, errno) = r.err().unwrap_or((0xff, 0));
    let e = errno.to_ne_bytes();
    let msg = [step, e[0], e[1], e[2], e[3]];
    // SAFETY: `report` is the pipe's write end, `msg` a live 5-byte buffer; `_exit` ends the
    // child without running the parent's atexit handlers or destructors.
    unsafe {
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(if step == 0xff { 0 } else { 1 })
    }
}

/// Read until `buf` is full or EOF; the number of bytes read.
fn read_full(mut f: File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match f.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Netlink;
    use crate::sys::netns::NetNs;

    fn spec(name: &str) -> TapSpec<'_> {
        TapSpec { name, tap: true, multi_queue: false, vnet_hdr: false, owner: Some(4242), group: None }
    }

    /// Without SELinux the forked child cannot take the context: the error names it, the step
    /// is the child's first (so no device was made, in the namespace /dev/net/tun was opened
    /// in), and the caller goes on making devices as before (its own context was never touched).
    /// Root only: it makes an anonymous network namespace.
    #[test]
    fn labelled_creation_happens_in_a_child_that_reports_its_failure() {
        if !nix::unistd::geteuid().is_root() || crate::sys::selinux::enabled() {
            eprintln!("skipping: needs root and a kernel without SELinux");
            return;
        }
        let e = create_persistent_labelled(&spec("tapx0"), "").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = create_persistent_labelled(&spec("tapx0"), "a\0b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");

        let ns = NetNs::new_anonymous().unwrap();
        let ctx = "system_u:system_r:container_t:s0";
        let e = ns.run(|| Ok(create_persistent_labelled(&spec("tapx0"), ctx))).unwrap().unwrap_err();
        assert!(e.to_string().starts_with(&format!("failed to set SELinux context {ctx:?}: ")), "{e}");
        let mut nl = Netlink::in_netns(&ns).unwrap();
        assert!(nl.link_by_name("tapx0").unwrap().is_none(), "the child went past the context");
        // the calling thread is unchanged: the unlabelled path still works in the same namespace
        assert_eq!(ns.run(|| Ok(create_persistent(&spec("tapx1")))).unwrap().unwrap(), "tapx1");
        assert!(nl.link_by_name("tapx1").unwrap().is_some());
        // the child's report decodes to the step and errno it failed with
        let e = failure_to_io((2, libc::EPERM), Some(ctx));
        assert!(e.to_string().starts_with("TUNSETOWNER: "), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }
}
