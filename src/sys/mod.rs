//! The only place with `unsafe` (every block has a `// SAFETY:` comment).
#![allow(unsafe_code)]
pub mod alloc;
pub mod detach;
#[cfg(test)]
pub mod fake;
pub mod feed;
pub mod listen_fds;
pub mod netns;
pub mod random;
pub mod selinux;
pub mod sockopt;
pub mod sysctl;
pub mod tun;
