//! Addresses with IFA_F_* flags for the interface plugins (the vrf plugin restores IPv6
//! addresses with them).

use anyhow::Context;
use ipnet::IpNet;

use super::addr::Family;
use super::consts::*;
use super::socket::Netlink;
use super::wire::Msg;

/// IFA_F_NODAD: no duplicate address detection (the address is usable at once).
pub const IFA_F_NODAD: u32 = 0x02;
/// IFA_F_NOPREFIXROUTE: no prefix route for the address.
pub const IFA_F_NOPREFIXROUTE: u32 = 0x200;

/// `ip addr add A/P dev X` with IFA_FLAGS (and the 8-bit header flags) set to `flags`.
pub(crate) fn addr_add_flags_msg(index: u32, addr: IpNet, flags: u32) -> Vec<u8> {
    let ip = addr.addr();
    let i = index.to_ne_bytes();
    let hdr = [Family::of(&ip).af(), addr.prefix_len(), (flags & 0xff) as u8, 0, i[0], i[1], i[2], i[3]];
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &hdr);
    m.put_ip(IFA_LOCAL, ip).put_ip(IFA_ADDRESS, ip);
    if let IpNet::V4(n) = addr {
        if n.prefix_len() < 31 {
            m.put_ip(IFA_BROADCAST, std::net::IpAddr::V4(n.broadcast()));
        }
    }
    if flags != 0 {
        m.put_u32(IFA_FLAGS, flags);
    }
    m.finish()
}

impl Netlink {
    /// Add `addr` to link `index` with IFA_F_* `flags` (e.g. [`IFA_F_NODAD`]).
    pub fn addr_add_flags(&mut self, index: u32, addr: IpNet, flags: u32) -> anyhow::Result<()> {
        self.ack(addr_add_flags_msg(index, addr, flags))
            .with_context(|| format!("failed to add address {addr} (flags {flags:#x}) to link {index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_travel_in_header_and_attribute() {
        let m = addr_add_flags_msg(7, "fd00::2/64".parse().unwrap(), IFA_F_NODAD);
        // nlmsghdr (16) + ifaddrmsg: family, prefix, flags, scope, index
        assert_eq!(&m[16..24], &[AF_INET6, 64, 0x02, 0, 7, 0, 0, 0]);
        // the last attribute is IFA_FLAGS = NODAD
        let tail = &m[m.len() - 8..];
        assert_eq!(u16::from_ne_bytes([tail[2], tail[3]]), IFA_FLAGS);
        assert_eq!(u32::from_ne_bytes([tail[4], tail[5], tail[6], tail[7]]), IFA_F_NODAD);
        // without flags it is a plain add
        let plain = addr_add_flags_msg(7, "198.18.0.2/24".parse().unwrap(), 0);
        assert_eq!(plain, super::super::addr::addr_msg(true, 7, "198.18.0.2/24".parse().unwrap()));
    }
}
