//! Just enough SELinux for tap's `selinuxContext`: is SELinux active, and label the calling
//! thread so that objects it creates (a tun/tap device) get that context.

use std::io;
use std::path::Path;

/// True when the kernel has SELinux enabled (selinuxfs is mounted).
pub fn enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Switch the calling thread to `context` (a dynamic transition: the policy must allow it).
/// Devices the thread creates afterwards carry that context.
pub fn set_thread_context(context: &str) -> io::Result<()> {
    if context.is_empty() || context.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid SELinux context {context:?}")));
    }
    std::fs::write("/proc/thread-self/attr/current", context)
        .map_err(|e| io::Error::new(e.kind(), format!("failed to set SELinux context {context:?}: {e}")))
}

/// The calling thread's current context.
pub fn thread_context() -> io::Result<String> {
    let s = std::fs::read_to_string("/proc/thread-self/attr/current")?;
    Ok(s.trim_end_matches(['\0', '\n']).to_string())
}
