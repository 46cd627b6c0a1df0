//! The only place with `unsafe` (every block has a `// SAFETY:` comment).
#![allow(unsafe_code)]
pub mod alloc;
pub mod detach;
#[cfg(test)]
pub mod fake;
pub mod feed;
pub mod listen_fds;
pub mod netns;
pub mod packet;
pub mod random;
pub mod selinux;
pub mod sockopt;
pub mod stdio;
pub mod sysctl;
pub mod tun;

/// An OS error as Go prints a syscall error (`no such file or directory`): the reference's
/// `open <path>: <this>` and the like (flannel's files, sysctl writes).
pub fn go_errno(e: &std::io::Error) -> String {
    use nix::errno::Errno;
    let Some(n) = e.raw_os_error() else { return e.to_string() };
    let text = match Errno::from_raw(n) {
        Errno::ENOENT => "no such file or directory",
        Errno::EACCES => "permission denied",
        Errno::EPERM => "operation not permitted",
        Errno::ENOTDIR => "not a directory",
        Errno::EISDIR => "is a directory",
        Errno::EEXIST => "file exists",
        Errno::EROFS => "read-only file system",
        Errno::ENOSPC => "no space left on device",
        Errno::ELOOP => "too many levels of symbolic links",
        Errno::ENAMETOOLONG => "file name too long",
        Errno::EIO => "input/output error",
        // where nix's texts (the kernel headers' comments) are not Go's (glibc's)
        Errno::EOPNOTSUPP => "operation not supported",
        Errno::EAGAIN => "resource temporarily unavailable",
        Errno::ENOMEM => "cannot allocate memory",
        Errno::ERANGE => "numerical result out of range",
        Errno::EDOM => "numerical argument out of domain",
        Errno::EBADF => "bad file descriptor",
        Errno::ENOTTY => "inappropriate ioctl for device",
        Errno::ENFILE => "too many open files in system",
        Errno::EXDEV => "invalid cross-device link",
        Errno::EDEADLK => "resource deadlock avoided",
        Errno::ESTALE => "stale file handle",
        Errno::EBADMSG => "bad message",
        Errno::EILSEQ => "invalid or incomplete multibyte or wide character",
        // Go prints an errno it has no text for by its number (the kernel's ENOTSUPP, 524)
        Errno::UnknownErrno => return format!("errno {n}"),
        other => return other.desc().to_lowercase(),
    };
    text.to_string()
}

/// Whether the running kernel is at least `major.minor` (from uname; false when it cannot tell).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    nix::sys::utsname::uname().is_ok_and(|u| release_at_least(&u.release().to_string_lossy(), major, minor))
}

/// `release` ("6.18.44-fc-v1272", "5.15.0-91-generic") is at least `major.minor`.
fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut nums = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_errno_texts() {
        use nix::errno::Errno;
        let t = |n: Errno| super::go_errno(&std::io::Error::from_raw_os_error(n as i32));
        assert_eq!(t(Errno::ENOENT), "no such file or directory");
        assert_eq!(t(Errno::EISDIR), "is a directory");
        assert_eq!(t(Errno::ELOOP), "too many levels of symbolic links");
        assert_eq!(t(Errno::EINVAL), "invalid argument");
        assert_eq!(t(Errno::EOPNOTSUPP), "operation not supported");
        assert_eq!(t(Errno::EAGAIN), "resource temporarily unavailable");
        assert_eq!(t(Errno::ERANGE), "numerical result out of range");
        assert_eq!(t(Errno::EADDRNOTAVAIL), "cannot assign requested address");
        assert_eq!(super::go_errno(&std::io::Error::from_raw_os_error(524)), "errno 524");
    }

    #[test]
    fn kernel_release_comparison() {
        use super::release_at_least as at_least;
        assert!(at_least("6.18.44-fc-v1272", 6, 9));
        assert!(at_least("6.9", 6, 9));
        assert!(at_least("7.0.1", 6, 9));
        assert!(!at_least("6.8.12-amd64", 6, 9));
        assert!(!at_least("5.15.0-91-generic", 6, 2));
        assert!(!at_least("", 6, 2));
        assert!(!at_least("linux", 6, 2));
    }
}
