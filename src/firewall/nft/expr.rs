//! nf_tables rule expressions, encoded with the attribute order `nft` uses.

use super::{attr, AnonSet, Attrs};
use std::net::IpAddr;

/// Registers: 0 = verdict, 1..4 = the 16-byte registers (what nft uses).
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;

/// Payload bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Base {
    LinkLayer = 0,
    Network = 1,
    Transport = 2,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lt = 2,
    Lte = 3,
    Gt = 4,
    Gte = 5,
}

/// meta keys (subset).
pub mod meta_key {
    pub const LEN: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    pub const MARK: u32 = 3;
    pub const IIF: u32 = 4;
    pub const OIF: u32 = 5;
    pub const IIFNAME: u32 = 6;
    pub const OIFNAME: u32 = 7;
    pub const NFPROTO: u32 = 15;
    pub const L4PROTO: u32 = 16;
    pub const PKTTYPE: u32 = 19;
}

/// ct keys (subset).
pub mod ct_key {
    pub const STATE: u32 = 0;
    pub const DIRECTION: u32 = 1;
    pub const STATUS: u32 = 2;
    pub const MARK: u32 = 3;
}

/// ct state bits.
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
    pub const UNTRACKED: u32 = 64;
}

/// nat types.
pub const NAT_SNAT: u32 = 0;
pub const NAT_DNAT: u32 = 1;
/// NF_NAT_RANGE_* flags.
pub const NAT_RANGE_MAP_IPS: u32 = 1;
pub const NAT_RANGE_PROTO_SPECIFIED: u32 = 2;

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        dreg: u32,
        base: Base,
        offset: u32,
        len: u32,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    Ct {
        key: u32,
        dreg: u32,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    Lookup {
        sreg: u32,
        set: String,
        set_id: Option<u32>,
        dreg: Option<u32>,
        invert: bool,
    },
    /// `lookup` in an anonymous set that the rule's batch declares (`{ a, b }` in nft syntax);
    /// the kernel reports it back as a [`Expr::Lookup`] of `__setN`.
    AnonLookup {
        sreg: u32,
        set: Box<AnonSet>,
        invert: bool,
    },
    Counter,
    Nat {
        nat_type: u32,
        family: u32,
        addr_min: Option<u32>,
        proto_min: Option<u32>,
        flags: Option<u32>,
    },
    Masq,
    /// `fib <flags> <result>` (e.g. `fib daddr type`).
    Fib {
        flags: u32,
        result: u32,
        dreg: u32,
    },
    /// An x_tables extension run by nf_tables (`match` or `target`; how iptables-nft writes
    /// `-m comment`, `-m conntrack`, `-j MASQUERADE`, ...): name, revision, the xt info struct.
    Xt {
        target: bool,
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
}

/// fib flags / results.
pub const FIB_F_SADDR: u32 = 1;
pub const FIB_F_DADDR: u32 = 2;
pub const FIB_RESULT_ADDRTYPE: u32 = 3;
/// RTN_LOCAL
pub const RTN_LOCAL: u32 = 2;

// attribute numbers per expression
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;

impl Expr {
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Meta { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Lookup { .. } | Expr::AnonLookup { .. } => "lookup",
            Expr::Counter => "counter",
            Expr::Nat { .. } => "nat",
            Expr::Masq => "masq",
            Expr::Fib { .. } => "fib",
            Expr::Xt { target: false, .. } => "match",
            Expr::Xt { target: true, .. } => "target",
        }
    }

    /// Writes NFTA_EXPR_NAME and NFTA_EXPR_DATA into a list element.
    pub fn encode(&self, a: &mut Attrs) {
        a.put_str(EXPR_NAME, self.name());
        a.nested(EXPR_DATA, |d| match self {
            Expr::Payload { dreg, base, offset, len } => {
                d.put_u32_be(1, *dreg).put_u32_be(2, *base as u32).put_u32_be(3, *offset).put_u32_be(4, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                d.put_u32_be(1, *sreg).put_u32_be(2, *op as u32);
                d.nested(3, |v| {
                    v.put(attr::DATA_VALUE, data);
                });
            }
            Expr::Meta { key, dreg } => {
                d.put_u32_be(2, *key).put_u32_be(1, *dreg);
            }
            Expr::Ct { key, dreg } => {
                d.put_u32_be(2, *key).put_u32_be(1, *dreg);
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                let len = u32::try_from(mask.len()).unwrap_or(u32::MAX);
                d.put_u32_be(1, *sreg).put_u32_be(2, *dreg).put_u32_be(3, len);
                d.nested(4, |v| {
                    v.put(attr::DATA_VALUE, mask);
                });
                d.nested(5, |v| {
                    v.put(attr::DATA_VALUE, xor);
                });
            }
            Expr::Immediate { dreg, data } => {
                d.put_u32_be(1, *dreg);
                d.nested(2, |v| {
                    v.put(attr::DATA_VALUE, data);
                });
            }
            Expr::Verdict(verdict) => {
                d.put_u32_be(1, REG_VERDICT);
                d.nested(2, |v| {
                    v.nested(attr::DATA_VERDICT, |vv| {
                        vv.put(1, &verdict.code().to_be_bytes());
                        if let Verdict::Jump(c) | Verdict::Goto(c) = verdict {
                            vv.put_str(2, c);
                        }
                    });
                });
            }
            Expr::Lookup { sreg, set, set_id, dreg, invert } => {
                d.put_u32_be(2, *sreg).put_str(1, set);
                if let Some(id) = set_id {
                    d.put_u32_be(4, *id);
                }
                if let Some(r) = dreg {
                    d.put_u32_be(3, *r);
                }
                if *invert {
                    d.put_u32_be(5, 1);
                }
            }
            Expr::AnonLookup { sreg, invert, .. } => {
                // outside a batch (which declares the set and binds it by id) only the shape
                d.put_u32_be(2, *sreg).put_str(1, super::ANON_SET_NAME);
                if *invert {
                    d.put_u32_be(5, 1);
                }
            }
            Expr::Counter => {}
            Expr::Nat { nat_type, family, addr_min, proto_min, flags } => {
                d.put_u32_be(1, *nat_type).put_u32_be(2, *family);
                if let Some(r) = addr_min {
                    d.put_u32_be(3, *r);
                }
                if let Some(r) = proto_min {
                    d.put_u32_be(5, *r);
                }
                if let Some(f) = flags {
                    d.put_u32_be(7, *f);
                }
            }
            Expr::Masq => {}
            Expr::Fib { flags, result, dreg } => {
                d.put_u32_be(3, *flags).put_u32_be(2, *result).put_u32_be(1, *dreg);
            }
            Expr::Xt { name, rev, info, .. } => {
                d.put_str(1, name).put_u32_be(2, *rev).put(3, info);
            }
        });
    }
}

// ---- match helpers: the expression sequences nft generates -------------------------------------

/// `meta nfproto ipv4|ipv6` (needed in inet/bridge tables before an ip/ip6 payload match).
pub fn nfproto(v6: bool) -> Vec<Expr> {
    vec![
        Expr::Meta { key: meta_key::NFPROTO, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![if v6 { 10 } else { 2 }] },
    ]
}

/// Offset of the source (or destination) address in the IPv4/IPv6 header.
fn addr_offset(v6: bool, src: bool) -> u32 {
    match (v6, src) {
        (false, true) => 12,
        (false, false) => 16,
        (true, true) => 8,
        (true, false) => 24,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `ip[6] saddr|daddr [!=] addr/prefix`, encoded as nft does: a byte-aligned prefix loads only
/// the prefix bytes; any other prefix loads the whole address and masks it with `bitwise`.
pub fn match_addr(src: bool, addr: IpAddr, prefix: u8, op: CmpOp) -> Vec<Expr> {
    let v6 = addr.is_ipv6();
    let full = ip_bytes(addr);
    let full_len = full.len();
    let prefix = usize::from(prefix).min(full_len * 8);
    let offset = addr_offset(v6, src);
    let mut out = Vec::new();
    // a /0 has no byte to load: nft masks the whole address with zeros, as for any other prefix
    if prefix % 8 == 0 && prefix > 0 {
        let n = prefix / 8;
        let data = full.get(..n).unwrap_or_default().to_vec();
        out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len: n as u32 });
        out.push(Expr::Cmp { sreg: REG_1, op, data });
    } else {
        let mut mask = vec![0u8; full_len];
        for (i, m) in mask.iter_mut().enumerate() {
            let bits = prefix.saturating_sub(i * 8).min(8);
            *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        let data: Vec<u8> = full.iter().zip(&mask).map(|(b, m)| b & m).collect();
        out.push(Expr::Payload { dreg: REG_1, base: Base::Network, offset, len: full_len as u32 });
        out.push(Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask, xor: vec![0u8; full_len] });
        out.push(Expr::Cmp { sreg: REG_1, op, data });
    }
    out
}

/// `iifname|oifname "name"` (the name padded to IFNAMSIZ, as nft sends it).
pub fn match_ifname(input: bool, name: &str) -> Vec<Expr> {
    let mut data = name.as_bytes().to_vec();
    data.resize(16.max(data.len() + 1), 0);
    vec![
        Expr::Meta { key: if input { meta_key::IIFNAME } else { meta_key::OIFNAME }, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data },
    ]
}

/// `ether saddr XX:..` (bridge family).
pub fn match_ether_saddr(mac: [u8; 6]) -> Vec<Expr> {
    vec![
        Expr::Payload { dreg: REG_1, base: Base::LinkLayer, offset: 6, len: 6 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: mac.to_vec() },
    ]
}

/// `meta l4proto P th dport N` as nft encodes `tcp dport N` / `udp dport N` in ip/ip6/inet.
pub fn match_l4_dport(proto: u8, port: u16) -> Vec<Expr> {
    vec![
        Expr::Meta { key: meta_key::L4PROTO, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![proto] },
        Expr::Payload { dreg: REG_1, base: Base::Transport, offset: 2, len: 2 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: port.to_be_bytes().to_vec() },
    ]
}

/// `ct state established,related` style: any of `bits` set.
pub fn match_ct_state(bits: u32) -> Vec<Expr> {
    vec![
        Expr::Ct { key: ct_key::STATE, dreg: REG_1 },
        Expr::Bitwise { sreg: REG_1, dreg: REG_1, mask: bits.to_ne_bytes().to_vec(), xor: vec![0; 4] },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Neq, data: vec![0; 4] },
    ]
}

/// `dnat to addr:port` (family 2 or 10).
pub fn dnat_to(addr: IpAddr, port: Option<u16>) -> Vec<Expr> {
    let family = if addr.is_ipv6() { 10 } else { 2 };
    let mut out = vec![Expr::Immediate { dreg: REG_1, data: ip_bytes(addr) }];
    let mut flags = None;
    let mut proto_min = None;
    if let Some(p) = port {
        out.push(Expr::Immediate { dreg: REG_2, data: p.to_be_bytes().to_vec() });
        proto_min = Some(REG_2);
        flags = Some(NAT_RANGE_PROTO_SPECIFIED);
    }
    out.push(Expr::Nat { nat_type: NAT_DNAT, family, addr_min: Some(REG_1), proto_min, flags });
    out
}

/// `snat to addr`.
pub fn snat_to(addr: IpAddr) -> Vec<Expr> {
    let family = if addr.is_ipv6() { 10 } else { 2 };
    vec![
        Expr::Immediate { dreg: REG_1, data: ip_bytes(addr) },
        Expr::Nat { nat_type: NAT_SNAT, family, addr_min: Some(REG_1), proto_min: None, flags: None },
    ]
}

/// `fib daddr type local`.
pub fn match_fib_daddr_local() -> Vec<Expr> {
    vec![
        Expr::Fib { flags: FIB_F_DADDR, result: FIB_RESULT_ADDRTYPE, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: RTN_LOCAL.to_ne_bytes().to_vec() },
    ]
}

/// `ip protocol P` (IPv4 header byte 9).
pub fn match_ip_protocol(proto: u8) -> Vec<Expr> {
    vec![
        Expr::Payload { dreg: REG_1, base: Base::Network, offset: 9, len: 1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![proto] },
    ]
}

/// `meta l4proto P` (robust against IPv6 extension headers).
pub fn match_l4proto(proto: u8) -> Vec<Expr> {
    vec![
        Expr::Meta { key: meta_key::L4PROTO, dreg: REG_1 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: vec![proto] },
    ]
}

/// `th dport N`.
pub fn match_th_dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Payload { dreg: REG_1, base: Base::Transport, offset: 2, len: 2 },
        Expr::Cmp { sreg: REG_1, op: CmpOp::Eq, data: port.to_be_bytes().to_vec() },
    ]
}
