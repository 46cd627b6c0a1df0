//! TODO(netlink helper)
