//! The executable itself: how it starts and what an exec of it maps (docs/bench.md, "The exec").

use crate::harness::runtime::bin;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// The release binary `make test` names (CNI_MULTI_RELEASE_BIN); None under a bare `cargo test`,
/// whose binary is cargo's debug build for the host, linked without the Makefile's flags.
fn release_bin() -> Option<&'static str> {
    match std::env::var("CNI_MULTI_RELEASE_BIN") {
        Ok(p) if !p.is_empty() => Some(bin()),
        _ => {
            eprintln!("CNI_MULTI_RELEASE_BIN is not set (not `make test`): the release binary's checks are skipped");
            None
        }
    }
}

/// (name, address, size) of every section of a 64-bit little-endian ELF file.
fn sections(path: &str) -> Vec<(String, u64, u64)> {
    let f = std::fs::read(path).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes(f[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
    assert_eq!(&f[..5], b"\x7fELF\x02", "{path}: not a 64-bit ELF file");
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28) as usize, u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18) as usize;
    (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            let name_at = strtab + u32_at(h);
            let len = f[name_at..].iter().position(|&b| b == 0).unwrap();
            (String::from_utf8_lossy(&f[name_at..name_at + len]).into_owned(), u64_at(h + 0x10), u64_at(h + 0x20))
        })
        .collect()
}

/// The release binary is linked with scripts/hot-text.ld: the functions a plugin run executes
/// come first in the text, together (a `.text.hot` section right after `.init`, before the rest
/// of the text), so a run maps a few of the text's 64 KiB windows instead of nearly all of them.
#[test]
fn exec_release_binary_has_the_hot_text_first() {
    let Some(path) = release_bin() else { return };
    let s = sections(path);
    let index = |name: &str| s.iter().position(|(n, _, _)| n == name);
    let hot = index(".text.hot").unwrap_or_else(|| panic!("{path}: no .text.hot section: {s:?}"));
    let text = index(".text").unwrap();
    assert_eq!(index(".init").map(|i| i + 1), Some(hot), "{s:?}");
    assert_eq!(hot + 1, text, "{s:?}");
    let (_, addr, size) = &s[hot];
    assert!(*size >= 256 << 10, ".text.hot holds {size} bytes: the script names too few of the functions");
    let gap = s[text].1.checked_sub(addr + size);
    assert!(gap.is_some_and(|g| g < 4096), ".text does not follow .text.hot: {s:?}");
}

/// A run that only answers VERSION maps few pages of the binary (page faults, counted by the
/// kernel for that process). The same run of the binary linked in the linker's own order took
/// 40 (its first page of nearly every 64 KiB window of the text), 29 with the hot text and the
/// C entry point (no Rust runtime start-up); 26 once a run that uses no nftables stopped
/// registering a thread-local destructor at exit.
#[test]
fn exec_version_run_maps_few_pages() {
    let Some(path) = release_bin() else { return };
    let mut faults = Vec::new();
    for _ in 0..5 {
        // reaped below with wait4, for its resource usage
        #[allow(clippy::zombie_processes)]
        let child = Command::new(path)
            .arg("loopback")
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.unwrap(), &mut out).unwrap();
        let mut status = 0;
        let mut usage = std::mem::MaybeUninit::<nix::libc::rusage>::zeroed();
        // SAFETY: waits for our own child; status and usage are valid for writes
        let r = unsafe { nix::libc::wait4(pid.as_raw(), &mut status, 0, usage.as_mut_ptr()) };
        assert_eq!(r, pid.as_raw());
        assert!(out.contains("supportedVersions"), "{out}");
        // SAFETY: wait4 succeeded and filled it
        let usage = unsafe { usage.assume_init() };
        faults.push(usage.ru_minflt + usage.ru_majflt);
    }
    let least = *faults.iter().min().unwrap();
    assert!(least <= 32, "a VERSION run took {faults:?} page faults");
}

/// The binary has no Rust runtime start-up (src/main.rs): it ignores SIGPIPE itself, so a
/// runtime that closed its end of the stdout pipe gets an exit status and a reason on stderr,
/// not a plugin killed by a signal. (The Go reference is killed by SIGPIPE there.)
#[test]
fn exec_a_closed_stdout_pipe_is_an_exit_not_a_sigpipe() {
    // close-on-exec: a process another test spawns meanwhile must not inherit the read end
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(r);
    let out = Command::new(bin())
        .arg("loopback")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), None, "killed by a signal: {:?}", out.status);
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error writing the result to stdout"), "{err}");
}
