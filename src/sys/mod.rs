//! The only place with `unsafe` (every block has a `// SAFETY:` comment).
pub mod detach;
pub mod listen_fds;
pub mod netns;
pub mod selinux;
pub mod sysctl;
pub mod tun;
