//! The standard streams as the process found them, and the rest of the process start-up.
//!
//! Any of fds 0-2 that is closed at start is opened on /dev/null before `main`, so that a later
//! `open` cannot land on fd 1 and receive the result meant for stdout (what Rust's runtime
//! start-up does; the binary has none, see src/main.rs). That also hides that they were closed:
//! a closed stdout would swallow the result and exit 0, a closed stdin would read as an empty
//! config. So the constructor run from `.init_array` records which of them were closed first,
//! and the binary's entry answers as the reference does on a closed descriptor (stdin: code 5,
//! bad file descriptor; stdout: exit 1). It also ignores SIGPIPE, as Rust's runtime does: a
//! runtime that stops reading gets an error from our write, not a killed plugin.

use std::sync::atomic::{AtomicU8, Ordering};

/// Bit `n` set: fd `n` (0, 1 or 2) was closed when the process started.
static CLOSED: AtomicU8 = AtomicU8::new(0);

/// Poll fds 0-2 without waiting: POLLNVAL marks a closed one, which is recorded and then
/// opened on /dev/null. Then SIGPIPE is ignored.
extern "C" fn record_closed_std_fds() {
    let mut fds = [0, 1, 2].map(|fd| nix::libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: `fds` is a valid array of three pollfd structs that outlives the call; a zero
    // timeout makes poll return at once; it touches no other memory.
    let n = unsafe { nix::libc::poll(fds.as_mut_ptr(), 3, 0) };
    // poll itself can fail (EINVAL under an RLIMIT_NOFILE below 3, ENOMEM): then ask each fd
    // (F_GETFD fails with EBADF on a closed one), as Rust's start-up does
    let closed = |i: usize, p: &nix::libc::pollfd| match n {
        // SAFETY: F_GETFD only reads the descriptor's flags; no memory is touched
        -1 => (unsafe { nix::libc::fcntl(i as i32, nix::libc::F_GETFD) }) == -1,
        _ => p.revents & nix::libc::POLLNVAL != 0,
    };
    if n != 0 {
        let mut bits = 0u8;
        for (i, p) in fds.iter().enumerate() {
            if closed(i, p) {
                bits |= 1 << i;
                // the lowest free descriptor is this one: the lower ones are open (or were
                // opened here a step before)
                // SAFETY: a NUL-terminated path literal; the descriptor is kept open on purpose
                if unsafe { nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDWR) } < 0 {
                    // as Rust's runtime: no process without its standard descriptors
                    std::process::abort();
                }
            }
        }
        CLOSED.store(bits, Ordering::Relaxed);
    }
    // SAFETY: sets this process's SIGPIPE disposition to "ignore"; no handler runs, no memory
    // is touched. Exec'd children get the default back (std::process resets it).
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN) };
}

/// The environment block the C runtime passed to `main` (null until [`record_env_from_c_main`]).
static ENVP: std::sync::atomic::AtomicPtr<*const std::ffi::c_char> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Keep `envp` for [`vars_with_prefix`].
///
/// # Safety
/// `envp` must be the environment block the C runtime passes to `main`: a null-terminated array
/// of pointers to NUL-terminated `NAME=value` strings, alive as long as the process. The C
/// library's `setenv`/`unsetenv` keep it that (they rewrite entries in place or move to a new
/// array, and never free the strings exec gave), but must not run while another thread reads
/// it: a plugin run sets nothing, and the dhcp daemon unsets its `LISTEN_*` variables at start,
/// before it has threads, on a path that never reads this block.
pub unsafe fn record_env_from_c_main(envp: *const *const std::ffi::c_char) {
    ENVP.store(envp.cast_mut(), Ordering::Relaxed);
}

/// The variables whose name starts with `prefix`, as the process was started with them, in
/// their order. Only those are copied: `std::env::vars_os` copies every variable of what can
/// be a large runtime environment (two allocations each) to keep a few. Without a recorded
/// block (a test binary with Rust's own `main`) it asks `std::env`.
pub fn vars_with_prefix(prefix: &[u8]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    use std::os::unix::ffi::OsStrExt;
    let envp = ENVP.load(Ordering::Relaxed);
    if envp.is_null() {
        return std::env::vars_os().filter(|(k, _)| k.as_encoded_bytes().starts_with(prefix)).collect();
    }
    let mut out = Vec::new();
    for i in 0.. {
        // SAFETY: record_env_from_c_main's caller vouches for a null-terminated array of
        // pointers that lives as long as the process and is not changed; i stops at the null
        let p = unsafe { *envp.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: as above, each entry is a NUL-terminated string
        let entry = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes();
        if !entry.starts_with(prefix) {
            continue;
        }
        // as std: an entry without `=` (or with it first) is not a variable
        if let Some(eq) = entry.iter().skip(1).position(|b| *b == b'=').map(|e| e + 1) {
            let (k, v) = (&entry[..eq], &entry[eq + 1..]);
            out.push((std::ffi::OsStr::from_bytes(k).to_os_string(), std::ffi::OsStr::from_bytes(v).to_os_string()));
        }
    }
    out
}

/// argv as the C runtime passes it to `main`, as strings (lossy UTF-8, as `args_os` gives it).
///
/// # Safety
/// `argv` must point to `argc` pointers, each to a NUL-terminated string that outlives the call
/// (exec's argv, as the C runtime passes it to `main`).
pub unsafe fn args_from_c_main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> Vec<String> {
    let n = usize::try_from(argc).unwrap_or(0);
    let mut args = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: i < argc, inside the array the caller vouches for
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: the caller vouches that every entry is a NUL-terminated string that outlives us
        args.push(unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned());
    }
    args
}

/// Run by the C runtime before `main` (and, in a binary with Rust's runtime start-up, before it).
#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_STD_FDS: extern "C" fn() = record_closed_std_fds;

fn was_closed(fd: u8) -> bool {
    // naming the constructor keeps its object file, and with it the .init_array entry, linked
    std::hint::black_box(&RECORD_CLOSED_STD_FDS);
    CLOSED.load(Ordering::Relaxed) & (1 << fd) != 0
}

/// stdin read from fd 0 itself. std's `Stdin` reads a closed or write-only fd 0 (EBADF) as an
/// empty input, which would turn an unreadable config into a decode error instead of code 5;
/// and its first use allocates std's 8 KiB read buffer (a size our allocator hands to musl's,
/// which sets itself up on that first call: four system calls and page faults for nothing, a
/// plugin reads its stdin once).
pub struct Fd0;

impl std::io::Read for Fd0 {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: fd 0 is open for the whole process: the constructor above opened /dev/null on
        // it if it was closed at start, and nothing in this program closes it
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
        loop {
            match nix::unistd::read(fd, buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from_raw_os_error(e as i32)),
                Ok(n) => return Ok(n),
            }
        }
    }
}

/// Whether stdin (fd 0) was closed when the process started.
pub fn stdin_was_closed() -> bool {
    was_closed(0)
}

/// Whether stdout (fd 1) was closed when the process started.
pub fn stdout_was_closed() -> bool {
    was_closed(1)
}
