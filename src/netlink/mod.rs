//! One typed netlink layer over neli; plugins never build bytes.
pub mod addr;
pub mod link;
pub mod neigh;
pub mod route;
pub mod socket;
