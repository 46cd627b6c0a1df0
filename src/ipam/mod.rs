//! IPAM plugins.
pub mod common;
pub mod dhcp;
pub mod host_local;
pub mod range;
pub mod resolvconf;
pub mod static_;
pub mod store;
