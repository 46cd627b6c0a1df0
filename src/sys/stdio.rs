//! The standard streams as the process found them.
//!
//! Before `main`, Rust's runtime opens /dev/null on any of fds 0-2 that is closed, so that a
//! later `open` cannot land on fd 1 and receive the result meant for stdout. That also hides
//! that they were closed: a closed stdout would swallow the result and exit 0, a closed stdin
//! would read as an empty config. A constructor run from `.init_array` — before the runtime's
//! own setup — records which of them were closed, and the binary's entry answers as the
//! reference does on a closed descriptor (stdin: code 5, bad file descriptor; stdout: exit 1).

use std::sync::atomic::{AtomicU8, Ordering};

/// Bit `n` set: fd `n` (0, 1 or 2) was closed when the process started.
static CLOSED: AtomicU8 = AtomicU8::new(0);

/// Poll fds 0-2 without waiting: POLLNVAL marks a closed one.
extern "C" fn record_closed_std_fds() {
    let mut fds = [0, 1, 2].map(|fd| nix::libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: `fds` is a valid array of three pollfd structs that outlives the call; a zero
    // timeout makes poll return at once; it touches no other memory.
    let n = unsafe { nix::libc::poll(fds.as_mut_ptr(), 3, 0) };
    if n <= 0 {
        return;
    }
    let mut bits = 0u8;
    for (i, p) in fds.iter().enumerate() {
        if p.revents & nix::libc::POLLNVAL != 0 {
            bits |= 1 << i;
        }
    }
    CLOSED.store(bits, Ordering::Relaxed);
}

/// Run by the C runtime before `main` (and so before Rust's runtime fills closed fds 0-2).
#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_STD_FDS: extern "C" fn() = record_closed_std_fds;

fn was_closed(fd: u8) -> bool {
    // naming the constructor keeps its object file, and with it the .init_array entry, linked
    std::hint::black_box(&RECORD_CLOSED_STD_FDS);
    CLOSED.load(Ordering::Relaxed) & (1 << fd) != 0
}

/// Whether stdin (fd 0) was closed when the process started.
pub fn stdin_was_closed() -> bool {
    was_closed(0)
}

/// Whether stdout (fd 1) was closed when the process started.
pub fn stdout_was_closed() -> bool {
    was_closed(1)
}
