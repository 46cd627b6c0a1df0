//! The executable: the C runtime's `main`, straight into [`cni_multi::cli::main`].
//!
//! No Rust runtime start-up (`#![no_main]`): a plugin is exec'd once per request and its whole
//! run is ~1 ms, and the runtime's start-up did work no plugin needs on every run: a
//! `sigaltstack` with a guard page for the main thread's stack-overflow message (mmap,
//! mprotect, two signal handlers, and munmap at exit) and a second poll of fds 0-2. What of it
//! a plugin needs is done by `cni_multi::sys::stdio` before `main` (fds 0-2 kept open,
//! SIGPIPE ignored), and argv comes from here. docs/bench.md, "The exec".
#![cfg_attr(not(test), no_main)]

/// Small allocations from a static arena (see `sys::alloc`): no mmap/munmap churn per request.
#[global_allocator]
static ALLOC: cni_multi::sys::alloc::Arena = cni_multi::sys::alloc::Arena;

/// The C entry point. The one `unsafe` outside src/sys (Cargo.toml's house rules): the symbol
/// the C runtime calls, and reading the argv and environment it passes.
#[cfg(not(test))]
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn main(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
    envp: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // SAFETY: the C runtime calls `main` with exec's argc and argv: `argc` pointers to
    // NUL-terminated strings that live as long as the process.
    let args = unsafe { cni_multi::sys::stdio::args_from_c_main(argc, argv) };
    // SAFETY: and with exec's environment block, null-terminated, alive as long as the process
    // (see record_env_from_c_main for who may change it, and when)
    unsafe { cni_multi::sys::stdio::record_env_from_c_main(envp) };
    std::process::exit(cni_multi::cli::main(args))
}
