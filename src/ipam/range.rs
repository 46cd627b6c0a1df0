//! host-local address ranges and range sets: parsing, validation (the reference's rules,
//! plus stricter gateway checks), and the round-robin iteration order of the allocator.
//!
//! Addresses are handled as `u128` numbers (IPv4 in the low 32 bits) so the arithmetic is
//! the same for both families and can never overflow inside a validated range.

use crate::cni::result::go_parse_cidr;
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One range as written in the config (keys lower-cased by the protocol layer).
/// Empty strings mean "not set", like Go's `net.IP` decoding of `""`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RawRange {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default, rename = "rangestart")]
    pub range_start: Option<String>,
    #[serde(default, rename = "rangeend")]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A validated range: every address in `start..=end` lies in `subnet`, the gateway too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// the subnet, canonical (no host bits)
    pub subnet: IpNet,
    /// first allocatable address (inclusive)
    pub start: IpAddr,
    /// last allocatable address (inclusive)
    pub end: IpAddr,
    /// the gateway (never handed out)
    pub gateway: IpAddr,
}

/// A non-empty list of ranges of one family that do not overlap; one address is
/// allocated per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// The number of an address (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a number, in the family given by `v4`. Values out of IPv4 range are
/// truncated to the low 32 bits; callers only pass numbers taken from validated ranges.
pub fn u128_to_ip(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// Go's canonicalisation: an IPv4-mapped IPv6 address is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Parse `ip` or `ip/prefix` (the prefix is ignored), canonicalised.
pub fn parse_ip_maybe_cidr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    go_parse_cidr(s).map(|n| canonical_ip(n.addr()))
}

fn parse_opt_ip(field: &str, v: &Option<String>) -> Result<Option<IpAddr>, String> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<IpAddr>().map(|ip| Some(canonical_ip(ip))).map_err(|_| format!("invalid {field} {s:?}")),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl Range {
    /// Validate and fill in defaults, following the reference's `Canonicalize` (gateway =
    /// network+1, start = network+1, end = last address, minus broadcast for IPv4), and
    /// additionally reject a gateway of the other family or outside the subnet, and a
    /// start after the end. Errors are plain messages (the caller adds context and code).
    pub fn from_raw(raw: &RawRange) -> Result<Range, String> {
        let subnet_text = raw.subnet.as_deref().map(str::trim).unwrap_or("");
        if subnet_text.is_empty() {
            return Err("missing subnet".into());
        }
        let subnet = go_parse_cidr(subnet_text).ok_or_else(|| format!("invalid CIDR address: {subnet_text}"))?;
        if let IpNet::V6(n) = subnet {
            if n.addr().to_ipv4_mapped().is_some() {
                return Err(format!("subnet {subnet} is an IPv4-mapped IPv6 network; write it as IPv4"));
            }
        }
        // the reference checks the size first: 198.18.0.1/31 is "too small", not "host bits set"
        if subnet.prefix_len() > subnet.max_prefix_len().saturating_sub(2) {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        if subnet.addr() != subnet.network() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix_len(),
                subnet.network()
            ));
        }
        let v4 = subnet.addr().is_ipv4();
        let net = ip_to_u128(subnet.network());
        let last = ip_to_u128(subnet.broadcast());
        let first_host = u128_to_ip(net + 1, v4);

        let gateway = match parse_opt_ip("gateway", &raw.gateway)? {
            None => first_host,
            Some(gw) => {
                if !same_family(gw, subnet.addr()) {
                    return Err(format!(
                        "gateway {gw} is {} but subnet {subnet} is {}",
                        family(gw),
                        family(subnet.addr())
                    ));
                }
                if !subnet.contains(&gw) {
                    return Err(format!("gateway {gw} not in network {subnet}"));
                }
                gw
            }
        };
        let start = match parse_opt_ip("rangeStart", &raw.range_start)? {
            None => first_host,
            Some(ip) => {
                check_in_subnet("RangeStart", ip, &subnet)?;
                ip
            }
        };
        let end = match parse_opt_ip("rangeEnd", &raw.range_end)? {
            None => u128_to_ip(if v4 { last - 1 } else { last }, v4),
            Some(ip) => {
                check_in_subnet("RangeEnd", ip, &subnet)?;
                ip
            }
        };
        if ip_to_u128(start) > ip_to_u128(end) {
            return Err(format!("RangeStart {start} is after RangeEnd {end} in network {subnet}"));
        }
        Ok(Range { subnet, start, end, gateway })
    }

    pub fn is_v4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }

    /// Whether `ip` is an allocatable address of this range (in `start..=end`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        same_family(ip, self.start)
            && self.subnet.contains(&ip)
            && ip_to_u128(ip) >= ip_to_u128(self.start)
            && ip_to_u128(ip) <= ip_to_u128(self.end)
    }

    /// The reference's overlap test: same family and an end of one inside the other.
    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }

    /// Number of addresses in `start..=end`, saturating.
    pub fn size(&self) -> u128 {
        (ip_to_u128(self.end) - ip_to_u128(self.start)).saturating_add(1)
    }
}

fn check_in_subnet(what: &str, ip: IpAddr, subnet: &IpNet) -> Result<(), String> {
    if !same_family(ip, subnet.addr()) {
        return Err(format!("{what} {ip} is not the same protocol as subnet {subnet}"));
    }
    if !subnet.contains(&ip) {
        return Err(format!("{what} {ip} not in network {subnet}"));
    }
    Ok(())
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RangeSet {
    /// Validate a set: non-empty, every range valid, one family, no overlaps.
    pub fn from_raw(raw: &[RawRange]) -> Result<RangeSet, String> {
        if raw.is_empty() {
            return Err("empty range set".into());
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(raw.len());
        for r in raw {
            let r = Range::from_raw(r)?;
            if let Some(first) = ranges.first() {
                if first.is_v4() != r.is_v4() {
                    return Err("mixed address families".into());
                }
            }
            ranges.push(r);
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in ranges.iter().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(format!("subnets {a} and {b} overlap"));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn is_v4(&self) -> bool {
        self.0.first().map(Range::is_v4).unwrap_or(true)
    }

    /// The range holding `ip` as an allocatable address.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// The allocation order, resuming after `last_reserved` when it lies in this set.
    pub fn iter_from(&self, last_reserved: Option<IpAddr>) -> RangeIter<'_> {
        RangeIter::new(self, last_reserved)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Round-robin iteration over a range set, in exactly the reference's order: start after
/// the last reserved address (or at the first range's start), walk each range to its end,
/// continue with the next range (wrapping), skip gateways, stop when back at the start.
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<u128>,
    first: Option<u128>,
}

impl<'a> RangeIter<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        let resume = last_reserved.and_then(|ip| set.0.iter().position(|r| r.contains(ip)).map(|i| (i, ip)));
        match resume {
            Some((idx, ip)) => RangeIter { set, idx, cur: Some(ip_to_u128(canonical_ip(ip))), first: None },
            None => RangeIter { set, idx: 0, cur: None, first: set.0.first().map(|r| ip_to_u128(r.start)) },
        }
    }
}

impl<'a> Iterator for RangeIter<'a> {
    /// a candidate address and the range it belongs to
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.set.0.len();
        loop {
            let mut r = self.set.0.get(self.idx)?;
            match self.cur {
                None => {
                    let c = ip_to_u128(r.start);
                    self.cur = Some(c);
                    self.first = Some(c);
                    if c == ip_to_u128(r.gateway) {
                        continue;
                    }
                    return Some((r.start, r));
                }
                Some(c) => {
                    let next = if c >= ip_to_u128(r.end) {
                        self.idx = (self.idx + 1) % n;
                        r = self.set.0.get(self.idx)?;
                        ip_to_u128(r.start)
                    } else {
                        c + 1
                    };
                    self.cur = Some(next);
                    match self.first {
                        None => self.first = Some(next),
                        Some(f) if f == next => return None,
                        Some(_) => {}
                    }
                    if next == ip_to_u128(r.gateway) {
                        continue;
                    }
                    return Some((u128_to_ip(next, r.is_v4()), r));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(subnet: &str, start: Option<&str>, end: Option<&str>, gw: Option<&str>) -> RawRange {
        RawRange {
            subnet: Some(subnet.into()),
            range_start: start.map(Into::into),
            range_end: end.map(Into::into),
            gateway: gw.map(Into::into),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4_and_v6() {
        let r = Range::from_raw(&raw("198.18.0.0/24", None, None, None)).unwrap();
        assert_eq!((r.start, r.end, r.gateway), (ip("198.18.0.1"), ip("198.18.0.254"), ip("198.18.0.1")));
        assert_eq!(r.to_string(), "198.18.0.1-198.18.0.254");
        let r = Range::from_raw(&raw("fd00::/120", None, None, None)).unwrap();
        assert_eq!((r.start, r.end, r.gateway), (ip("fd00::1"), ip("fd00::ff"), ip("fd00::1")));
        let r = Range::from_raw(&raw("198.18.0.0/30", None, None, None)).unwrap();
        assert_eq!((r.start, r.end), (ip("198.18.0.1"), ip("198.18.0.2")));
        let r = Range::from_raw(&raw("fd00::/126", None, None, None)).unwrap();
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::3")));
        // empty strings are "unset", like Go's net.IP
        let r = Range::from_raw(&raw("198.18.0.0/24", Some(""), Some(""), Some(""))).unwrap();
        assert_eq!(r.gateway, ip("198.18.0.1"));
        // an IPv4-mapped start in a v4 subnet is the v4 address
        let r = Range::from_raw(&raw("198.18.0.0/24", Some("::ffff:198.18.0.9"), None, None)).unwrap();
        assert_eq!(r.start, ip("198.18.0.9"));
    }

    #[test]
    fn validation_table() {
        let cases: &[(RawRange, &str)] = &[
            (raw("198.18.0.1/24", None, None, None), "host bits set"),
            (raw("fd00::1/64", None, None, None), "host bits set"),
            (raw("198.18.0.0/31", None, None, None), "too small"),
            (raw("198.18.0.1/31", None, None, None), "Network 198.18.0.1/31 too small to allocate from"),
            (raw("198.18.0.0/32", None, None, None), "too small"),
            (raw("fd00::/127", None, None, None), "too small"),
            (raw("nonsense", None, None, None), "invalid CIDR"),
            (raw("198.18.0.0", None, None, None), "invalid CIDR"),
            (RawRange::default(), "missing subnet"),
            (raw("198.18.0.0/24", Some("198.18.1.5"), None, None), "RangeStart 198.18.1.5 not in network"),
            (raw("198.18.0.0/24", None, Some("198.18.1.5"), None), "RangeEnd 198.18.1.5 not in network"),
            (raw("198.18.0.0/24", Some("fd00::1"), None, None), "not the same protocol"),
            (raw("198.18.0.0/24", Some("198.18.0.50"), Some("198.18.0.5"), None), "is after RangeEnd"),
            (raw("198.18.0.0/24", None, None, Some("fd00::1")), "gateway fd00::1 is IPv6 but subnet"),
            (raw("fd00::/64", None, None, Some("198.18.0.1")), "is IPv4 but subnet"),
            (raw("198.18.0.0/24", None, None, Some("198.18.9.1")), "gateway 198.18.9.1 not in network"),
            (raw("198.18.0.0/24", None, None, Some("bogus")), "invalid gateway"),
            (raw("::ffff:198.18.0.0/120", None, None, None), "IPv4-mapped"),
        ];
        for (r, want) in cases {
            let err = Range::from_raw(r).unwrap_err();
            assert!(err.contains(want), "{r:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn set_validation() {
        assert_eq!(RangeSet::from_raw(&[]).unwrap_err(), "empty range set");
        let mixed = [raw("198.18.0.0/24", None, None, None), raw("fd00::/64", None, None, None)];
        assert_eq!(RangeSet::from_raw(&mixed).unwrap_err(), "mixed address families");
        let overlap = [raw("198.18.0.0/24", None, None, None), raw("198.18.0.0/25", None, None, None)];
        assert_eq!(
            RangeSet::from_raw(&overlap).unwrap_err(),
            "subnets 198.18.0.1-198.18.0.254 and 198.18.0.1-198.18.0.126 overlap"
        );
        // same subnet, disjoint start/end: allowed (the reference compares ranges, not subnets)
        let split = [
            raw("198.18.0.0/24", Some("198.18.0.2"), Some("198.18.0.9"), None),
            raw("198.18.0.0/24", Some("198.18.0.10"), Some("198.18.0.20"), None),
        ];
        let s = RangeSet::from_raw(&split).unwrap();
        assert!(s.contains(ip("198.18.0.15")));
        assert!(!s.contains(ip("198.18.0.21")));
        assert!(!s.contains(ip("fd00::1")));
    }

    fn collect(set: &RangeSet, last: Option<&str>, max: usize) -> Vec<String> {
        set.iter_from(last.map(ip)).take(max).map(|(a, _)| a.to_string()).collect()
    }

    #[test]
    fn iteration_order_skips_gateway_and_wraps() {
        let set = RangeSet::from_raw(&[raw("198.18.0.0/29", None, None, None)]).unwrap();
        // .1 is the gateway; .7 is broadcast
        assert_eq!(collect(&set, None, 100), ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5", "198.18.0.6"]);
        // resume after the last reserved address and wrap around, ending with it (as the reference)
        assert_eq!(
            collect(&set, Some("198.18.0.4"), 100),
            ["198.18.0.5", "198.18.0.6", "198.18.0.2", "198.18.0.3", "198.18.0.4"]
        );
        // last reserved outside the set: start from the beginning
        assert_eq!(collect(&set, Some("198.18.5.4"), 2), ["198.18.0.2", "198.18.0.3"]);
        assert_eq!(collect(&set, Some("fd00::4"), 1), ["198.18.0.2"]);
    }

    #[test]
    fn iteration_across_ranges_of_a_set() {
        let set = RangeSet::from_raw(&[
            raw("198.18.0.0/24", Some("198.18.0.10"), Some("198.18.0.11"), None),
            raw("198.18.1.0/24", Some("198.18.1.1"), Some("198.18.1.3"), None),
        ])
        .unwrap();
        // gateway of the second range is 198.18.1.1 and is skipped
        assert_eq!(collect(&set, None, 100), ["198.18.0.10", "198.18.0.11", "198.18.1.2", "198.18.1.3"]);
        assert_eq!(collect(&set, Some("198.18.1.2"), 100), ["198.18.1.3", "198.18.0.10", "198.18.0.11", "198.18.1.2"]);
    }

    #[test]
    fn iteration_terminates_when_only_gateway() {
        let set = RangeSet::from_raw(&[raw("198.18.0.0/30", Some("198.18.0.1"), Some("198.18.0.1"), None)]).unwrap();
        assert!(collect(&set, None, 10).is_empty());
        assert!(collect(&set, Some("198.18.0.1"), 10).is_empty());
        let v6 = RangeSet::from_raw(&[raw("fd00::/64", Some("fd00::ffff"), None, None)]).unwrap();
        assert_eq!(collect(&v6, None, 2), ["fd00::ffff", "fd00::1:0"]);
        // the v6 range runs to the very last address, which is allocatable
        let v6 = RangeSet::from_raw(&[raw("fd00::/126", None, None, None)]).unwrap();
        assert_eq!(collect(&v6, None, 10), ["fd00::2", "fd00::3"]);
    }

    #[test]
    fn custom_gateway_frees_first_host() {
        let set = RangeSet::from_raw(&[raw("198.18.0.0/29", None, None, Some("198.18.0.6"))]).unwrap();
        assert_eq!(collect(&set, None, 100), ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5"]);
    }

    #[test]
    fn ip_or_cidr() {
        assert_eq!(parse_ip_maybe_cidr("198.18.0.5/24"), Some(ip("198.18.0.5")));
        assert_eq!(parse_ip_maybe_cidr(" fd00::5 "), Some(ip("fd00::5")));
        assert_eq!(parse_ip_maybe_cidr("::ffff:198.18.0.5"), Some(ip("198.18.0.5")));
        assert_eq!(parse_ip_maybe_cidr("bogus"), None);
    }
}
