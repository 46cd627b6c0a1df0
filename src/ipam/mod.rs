//! IPAM plugins.
pub mod dhcp;
pub mod host_local;
pub mod static_;
