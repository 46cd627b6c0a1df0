//! Just enough SELinux for tap's `selinuxContext`: is SELinux active. (The device is labelled
//! by a forked child: `tun::create_persistent_labelled`.)

use std::path::Path;

/// True when the kernel has SELinux enabled (selinuxfs is mounted).
pub fn enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}
