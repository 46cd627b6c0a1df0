//! nf_tables over NETLINK_NETFILTER, without the `nft` binary.
//!
//! Layout:
//! - this file: nf_tables constants, nfgenmsg and the message builders (tables, chains, rules,
//!   sets, set elements) collected into a [`Batch`] — one datagram, one kernel transaction. The
//!   netlink header, attribute writer/reader, splitter, ext-ack parser and the error type are the
//!   shared ones of [`crate::netlink::wire`];
//! - [`expr`]: the rule expressions (payload, cmp, meta, ct, immediate/verdicts, nat, masq, lookup,
//!   counter, bitwise) and a few match helpers that encode exactly what `nft` encodes;
//! - [`sock`]: the netfilter connection ([`crate::netlink::socket::Conn`]), transaction commit
//!   (every reply must be an ACK) and GET dumps;
//! - [`decode`]: parsing of dumped tables, chains and rules (handle, chain, userdata comment).
//!
//! Messages carry the same attributes in the same order as `nft` 1.0.6 sends them, so the
//! golden-bytes tests can compare against captures of `nft -f` (see `golden/`). The one deliberate
//! difference: every message inside a batch asks for an ACK (`NLM_F_ACK`), so a commit can prove
//! that every single message was accepted.

pub mod cond;
pub mod decode;
pub mod expr;
pub mod plan;
pub mod sock;

pub use expr::{Expr, Verdict};

// ---- nfnetlink constants (the netlink header's are the shared ones) ------------------------------

pub use crate::netlink::wire::{
    Attrs, NlError, NLA_F_NESTED, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};

/// The one netlink error type, under the name the nftables code has always used.
pub type NftError = NlError;

/// Prefix of nftables error messages ("nftables: add rule inet t c: ...").
pub const ERR_PREFIX: &str = "nftables";

/// A failure that is not a kernel reply (encoding, protocol).
pub fn local_error(what: &str) -> NlError {
    NlError::local(ERR_PREFIX, what)
}

pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// NFNL_BATCH_GENID: attribute of the BATCH_BEGIN message; the kernel rejects the whole batch
/// with ERESTART when the ruleset generation is no longer this one (nothing is applied).
pub const NFNL_BATCH_GENID: u16 = 1;
/// NFTA_GEN_ID in the NEWGEN reply to GETGEN.
pub const NFTA_GEN_ID: u16 = 1;

/// nf_tables message types (low byte of nlmsg_type).
pub mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const GETSET: u8 = 10;
    pub const DELSET: u8 = 11;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DELSETELEM: u8 = 14;
    pub const NEWGEN: u8 = 15;
    pub const GETGEN: u8 = 16;
}

/// Address families (NFPROTO_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Family {
    Inet = 1,
    Ip = 2,
    Arp = 3,
    Netdev = 5,
    Bridge = 7,
    Ip6 = 10,
}

impl Family {
    pub fn from_u8(v: u8) -> Option<Family> {
        Some(match v {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        }
    }
}

/// Netfilter hooks (same numbers for ip/ip6/inet/bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// Well-known priorities (`nft` names).
pub mod prio {
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SRCNAT: i32 = 100;
    /// bridge family `dstnat`, used by the reference's macspoofchk chain.
    pub const BRIDGE_DSTNAT: i32 = -300;
}

mod attr {
    // NFTA_TABLE_*
    pub const TABLE_NAME: u16 = 1;
    pub const TABLE_FLAGS: u16 = 2;
    pub const TABLE_HANDLE: u16 = 4;
    pub const TABLE_USERDATA: u16 = 6;
    // NFTA_CHAIN_*
    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_HANDLE: u16 = 2;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const CHAIN_USERDATA: u16 = 12;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
    // NFTA_RULE_*
    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_COMPAT: u16 = 5;
    pub const RULE_USERDATA: u16 = 7;
    pub const RULE_COMPAT_PROTO: u16 = 1;
    pub const RULE_COMPAT_FLAGS: u16 = 2;
    // NFTA_SET_*
    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_DATA_TYPE: u16 = 6;
    pub const SET_DATA_LEN: u16 = 7;
    pub const SET_DESC: u16 = 9;
    pub const SET_ID: u16 = 10;
    pub const SET_USERDATA: u16 = 13;
    pub const SET_DESC_SIZE: u16 = 1;
    // NFTA_SET_ELEM_LIST_* / NFTA_SET_ELEM_*
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_LIST_SET_ID: u16 = 4;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_DATA: u16 = 2;
    pub const SET_ELEM_FLAGS: u16 = 3;
    pub const SET_ELEM_USERDATA: u16 = 6;
    // generic
    pub const LIST_ELEM: u16 = 1;
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
}

/// Set flags (NFT_SET_*).
pub mod set_flags {
    pub const ANONYMOUS: u32 = 0x1;
    pub const CONSTANT: u32 = 0x2;
    pub const INTERVAL: u32 = 0x4;
    pub const MAP: u32 = 0x8;
    pub const TIMEOUT: u32 = 0x10;
}

/// nft's datatype ids, as stored in NFTA_SET_KEY_TYPE / NFTA_SET_DATA_TYPE.
pub mod datatype {
    pub const VERDICT: u32 = 1;
    pub const IPV4_ADDR: u32 = 7;
    pub const IPV6_ADDR: u32 = 8;
    pub const ETHER_ADDR: u32 = 9;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    pub const MARK: u32 = 19;
    pub const CT_STATE: u32 = 26;
    pub const PKT_TYPE: u32 = 31;
    pub const FIB_ADDRTYPE: u32 = 38;
    pub const IFNAME: u32 = 41;
}

/// nft's userdata TLV type for comments (NFTNL_UDATA_{TABLE,CHAIN,RULE}_COMMENT are all 0).
pub const UDATA_COMMENT: u8 = 0;
/// Longest comment nft accepts (NFT_USERDATA_MAXLEN is 256, knftables limits to 128).
pub const COMMENT_MAX: usize = 128;

/// Userdata carrying a comment, as nft writes it: TLV { type 0, len, "text\0" }.
/// Comments longer than [`COMMENT_MAX`] bytes are cut (on a char boundary), as knftables does.
pub fn comment_udata(comment: &str) -> Vec<u8> {
    let mut end = comment.len().min(COMMENT_MAX);
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    let text = comment.get(..end).unwrap_or_default();
    let mut v = Vec::with_capacity(text.len() + 3);
    v.push(UDATA_COMMENT);
    v.push(u8::try_from(text.len() + 1).unwrap_or(u8::MAX));
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    v
}

// ---- objects -----------------------------------------------------------------------------------

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// "filter", "nat" or "route".
    pub chain_type: &'static str,
    pub hook: Hook,
    pub priority: i32,
    /// `Some(true)` = accept, `Some(false)` = drop, None = not sent (kernel default accept).
    pub policy_accept: Option<bool>,
}

/// A rule to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// For maps: (data type, data length).
    pub data: Option<(u32, u32)>,
    /// Batch-local id so rules/elements in the same batch can refer to a new set.
    pub id: u32,
    /// NFTA_SET_DESC's size (what nft sends for a constant set; the kernel picks its backend by it).
    pub size: Option<u32>,
    /// NFTA_SET_USERDATA (nft's hints, [`set_udata`]); empty = not sent.
    pub udata: Vec<u8>,
}

/// nft's set userdata: the key's byte order (1 host, 2 big endian) and, for an interval set,
/// "merge elements" (NFTNL_UDATA_SET_KEYBYTEORDER and _MERGE_ELEMENTS, u32 in host order). nft
/// also stores the key's expression (`typeof`), which only its printing of named sets reads; we
/// do not send it.
pub fn set_udata(byteorder: u32, interval: bool) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend(byteorder.to_ne_bytes());
    if interval {
        v.extend([2, 4]);
        v.extend(1u32.to_ne_bytes());
    }
    v
}

/// An anonymous constant set as nft makes one for `{ a, b, ... }` in a rule: created in the
/// rule's batch (named `__set%d`, the kernel picks the number), bound to that one rule and
/// deleted with it. [`Batch::add_rule`] declares it before the rule that looks it up
/// ([`Expr::AnonLookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    pub key_type: u32,
    pub key_len: u32,
    /// 1 host order (marks, names), 2 big endian (addresses, ports, protocols)
    pub byteorder: u32,
    /// ranges (NFT_SET_INTERVAL, elements as nft's interval encoding) or single values
    pub interval: bool,
    pub elems: Vec<SetElem>,
    /// NFTA_SET_DESC size as nft computes it
    pub size: u32,
}

/// The name nft gives an anonymous set in a batch; the kernel replaces `%d` with a free number.
pub const ANON_SET_NAME: &str = "__set%d";

/// One set element: key, optional map data, optional flags (1 = interval end), userdata (nft
/// marks the start of a range that runs to the key's last value with [`ELEM_UDATA_OPEN`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElem {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
    pub flags: Option<u32>,
    pub udata: Vec<u8>,
}

/// Element userdata NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN (u32, host order).
pub const ELEM_UDATA_OPEN: [u8; 6] = {
    let f = 1u32.to_ne_bytes();
    [1, 4, f[0], f[1], f[2], f[3]]
};

pub const SET_ELEM_INTERVAL_END: u32 = 1;

/// One message in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMsg {
    pub kind: u8,
    pub flags: u16,
    pub family: u8,
    pub payload: Vec<u8>,
    /// Human description for errors ("add chain inet t c").
    pub what: String,
}

/// A transaction: messages sent in one datagram between BATCH_BEGIN and BATCH_END.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub msgs: Vec<BatchMsg>,
    error: Option<NftError>,
    /// the highest set id used in this batch (new anonymous sets take the next ones)
    last_set_id: u32,
}

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

/// Encodes one netlink message: header + nfgenmsg + attributes.
pub fn encode_msg(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, payload: &[u8]) -> Vec<u8> {
    crate::netlink::wire::message(ty, flags, seq, &nfgenmsg(family, res_id), payload)
}

pub fn nft_type(kind: u8) -> u16 {
    (NFTNL_SUBSYS << 8) | u16::from(kind)
}
const NFTNL_SUBSYS: u16 = NFNL_SUBSYS_NFTABLES;

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    fn push(&mut self, kind: u8, flags: u16, family: Family, a: Attrs, what: String) {
        match a.finish() {
            Ok(payload) => self.msgs.push(BatchMsg { kind, flags, family: family as u8, payload, what }),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(local_error(&format!("{what}: {}", e.what)));
                }
            }
        }
    }

    /// `add table` (creates, or no-op when it exists). A comment is stored as userdata.
    pub fn add_table(&mut self, family: Family, name: &str, comment: Option<&str>) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::TABLE_NAME, name).put_u32_be(attr::TABLE_FLAGS, 0);
        if let Some(c) = comment {
            a.put(attr::TABLE_USERDATA, &comment_udata(c));
        }
        self.push(msg::NEWTABLE, 0, family, a, format!("add table {} {name}", family.name()));
        self
    }

    /// `delete table`.
    pub fn del_table(&mut self, family: Family, name: &str) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::TABLE_NAME, name);
        self.push(msg::DELTABLE, 0, family, a, format!("delete table {} {name}", family.name()));
        self
    }

    /// `add chain` (regular chain when `base` is None).
    pub fn add_chain(
        &mut self,
        family: Family,
        table: &str,
        name: &str,
        base: Option<&BaseChain>,
        comment: Option<&str>,
    ) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::CHAIN_TABLE, table).put_str(attr::CHAIN_NAME, name);
        if let Some(c) = comment {
            a.put(attr::CHAIN_USERDATA, &comment_udata(c));
        }
        if let Some(b) = base {
            a.put_str(attr::CHAIN_TYPE, b.chain_type);
            if let Some(acc) = b.policy_accept {
                a.put_u32_be(attr::CHAIN_POLICY, u32::from(acc));
            }
            a.nested(attr::CHAIN_HOOK, |h| {
                h.put_u32_be(attr::HOOK_HOOKNUM, b.hook as u32).put(attr::HOOK_PRIORITY, &b.priority.to_be_bytes());
            });
        }
        self.push(msg::NEWCHAIN, NLM_F_CREATE, family, a, format!("add chain {} {table} {name}", family.name()));
        self
    }

    /// `delete chain` (the chain must be empty and unreferenced).
    pub fn del_chain(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::CHAIN_TABLE, table).put_str(attr::CHAIN_NAME, name);
        self.push(msg::DELCHAIN, 0, family, a, format!("delete chain {} {table} {name}", family.name()));
        self
    }

    /// `flush chain` = DELRULE naming only the chain.
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::RULE_TABLE, table).put_str(attr::RULE_CHAIN, chain);
        self.push(msg::DELRULE, 0, family, a, format!("flush chain {} {table} {chain}", family.name()));
        self
    }

    /// `add rule` (appended).
    pub fn add_rule(&mut self, rule: &Rule) -> &mut Self {
        self.add_rule_at(rule, false, None)
    }

    /// [`Batch::add_rule`], at the head of the chain when `head` (`-I chain 1`), with the
    /// x_tables compatibility attribute (`compat` = layer-4 protocol and its inversion; what
    /// nft_compat checks a match against, as iptables-nft sends it with every rule).
    pub fn add_rule_at(&mut self, rule: &Rule, head: bool, compat: Option<(u32, bool)>) -> &mut Self {
        // each anonymous set first, as nft sends it: the set, its elements, then the rule that
        // looks it up by the batch-local id
        let mut ids = Vec::new();
        for e in &rule.exprs {
            if let Expr::AnonLookup { set, .. } = e {
                self.last_set_id += 1;
                let id = self.last_set_id;
                ids.push(id);
                let flags =
                    set_flags::ANONYMOUS | set_flags::CONSTANT | if set.interval { set_flags::INTERVAL } else { 0 };
                self.add_set(&Set {
                    family: rule.family,
                    table: rule.table.clone(),
                    name: ANON_SET_NAME.into(),
                    flags,
                    key_type: set.key_type,
                    key_len: set.key_len,
                    data: None,
                    id,
                    size: Some(set.size),
                    udata: set_udata(set.byteorder, set.interval),
                });
                self.add_elems(rule.family, &rule.table, ANON_SET_NAME, Some(id), &set.elems);
            }
        }
        let mut ids = ids.into_iter();
        let mut a = Attrs::new();
        a.put_str(attr::RULE_TABLE, &rule.table).put_str(attr::RULE_CHAIN, &rule.chain);
        a.nested(attr::RULE_EXPRESSIONS, |l| {
            for e in &rule.exprs {
                match e {
                    Expr::AnonLookup { sreg, invert, .. } => {
                        let bound = Expr::Lookup {
                            sreg: *sreg,
                            set: ANON_SET_NAME.into(),
                            set_id: ids.next(),
                            dreg: None,
                            invert: *invert,
                        };
                        l.nested(attr::LIST_ELEM, |x| bound.encode(x));
                    }
                    e => {
                        l.nested(attr::LIST_ELEM, |x| e.encode(x));
                    }
                }
            }
        });
        if let Some((proto, inv)) = compat {
            // NFT_RULE_COMPAT_F_INV
            let flags = if inv { 1 << 1 } else { 0 };
            a.nested(attr::RULE_COMPAT, |c| {
                c.put_u32_be(attr::RULE_COMPAT_PROTO, proto).put_u32_be(attr::RULE_COMPAT_FLAGS, flags);
            });
        }
        if let Some(c) = &rule.comment {
            a.put(attr::RULE_USERDATA, &comment_udata(c));
        }
        let what = format!("add rule {} {} {}", rule.family.name(), rule.table, rule.chain);
        let flags = if head { NLM_F_CREATE } else { NLM_F_CREATE | NLM_F_APPEND };
        self.push(msg::NEWRULE, flags, rule.family, a, what);
        self
    }

    /// `delete rule ... handle N`.
    pub fn del_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::RULE_TABLE, table).put_str(attr::RULE_CHAIN, chain).put_u64_be(attr::RULE_HANDLE, handle);
        let what = format!("delete rule {} {table} {chain} handle {handle}", family.name());
        self.push(msg::DELRULE, 0, family, a, what);
        self
    }

    /// `add set` / `add map`, with the size and userdata when given (the named sets of the tests
    /// carry neither: the kernel ignores userdata and nft prints them from the key/data types).
    pub fn add_set(&mut self, set: &Set) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::SET_TABLE, &set.table)
            .put_str(attr::SET_NAME, &set.name)
            .put_u32_be(attr::SET_FLAGS, set.flags)
            .put_u32_be(attr::SET_KEY_TYPE, set.key_type)
            .put_u32_be(attr::SET_KEY_LEN, set.key_len);
        if let Some((t, l)) = set.data {
            a.put_u32_be(attr::SET_DATA_TYPE, t).put_u32_be(attr::SET_DATA_LEN, l);
        }
        a.put_u32_be(attr::SET_ID, set.id);
        if let Some(n) = set.size {
            a.nested(attr::SET_DESC, |d| {
                d.put_u32_be(attr::SET_DESC_SIZE, n);
            });
        }
        if !set.udata.is_empty() {
            a.put(attr::SET_USERDATA, &set.udata);
        }
        self.last_set_id = self.last_set_id.max(set.id);
        let what = format!("add set {} {} {}", set.family.name(), set.table, set.name);
        self.push(msg::NEWSET, NLM_F_CREATE, set.family, a, what);
        self
    }

    /// `delete set`.
    pub fn del_set(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut a = Attrs::new();
        a.put_str(attr::SET_TABLE, table).put_str(attr::SET_NAME, name);
        self.push(msg::DELSET, 0, family, a, format!("delete set {} {table} {name}", family.name()));
        self
    }

    fn elems_attrs(table: &str, set: &str, set_id: Option<u32>, elems: &[SetElem]) -> Attrs {
        let mut a = Attrs::new();
        a.put_str(attr::SET_ELEM_LIST_TABLE, table).put_str(attr::SET_ELEM_LIST_SET, set);
        if let Some(id) = set_id {
            a.put_u32_be(attr::SET_ELEM_LIST_SET_ID, id);
        }
        a.nested(attr::SET_ELEM_LIST_ELEMENTS, |l| {
            // libnftnl numbers set elements 1, 2, 3... (the kernel ignores the type); so do we.
            for (i, e) in elems.iter().enumerate() {
                let ty = u16::try_from(i + 1).unwrap_or(attr::LIST_ELEM) & crate::netlink::wire::NLA_TYPE_MASK;
                l.nested(ty, |x| {
                    if let Some(f) = e.flags {
                        x.put_u32_be(attr::SET_ELEM_FLAGS, f);
                    }
                    x.nested(attr::SET_ELEM_KEY, |k| {
                        k.put(attr::DATA_VALUE, &e.key);
                    });
                    if let Some(d) = &e.data {
                        x.nested(attr::SET_ELEM_DATA, |k| {
                            k.put(attr::DATA_VALUE, d);
                        });
                    }
                    if !e.udata.is_empty() {
                        x.put(attr::SET_ELEM_USERDATA, &e.udata);
                    }
                });
            }
        });
        a
    }

    /// `add element`. `set_id` lets a set created earlier in this batch be referenced.
    pub fn add_elems(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        set_id: Option<u32>,
        elems: &[SetElem],
    ) -> &mut Self {
        let a = Batch::elems_attrs(table, set, set_id, elems);
        self.push(msg::NEWSETELEM, NLM_F_CREATE, family, a, format!("add element {} {table} {set}", family.name()));
        self
    }

    /// `delete element`.
    pub fn del_elems(&mut self, family: Family, table: &str, set: &str, elems: &[SetElem]) -> &mut Self {
        let a = Batch::elems_attrs(table, set, None, elems);
        self.push(msg::DELSETELEM, 0, family, a, format!("delete element {} {table} {set}", family.name()));
        self
    }

    /// The datagram: BEGIN (seq `seq`), messages (seq+1..), END. Every inner message asks for an
    /// ACK. Returns the bytes and the seq of the first inner message.
    pub fn encode(&self, seq: u32) -> Result<Vec<u8>, NftError> {
        self.encode_guarded(seq, None)
    }

    /// [`Batch::encode`] with the BEGIN message carrying `genid` (NFNL_BATCH_GENID): the kernel
    /// then applies the batch only if the ruleset generation is still `genid`.
    pub fn encode_guarded(&self, seq: u32, genid: Option<u32>) -> Result<Vec<u8>, NftError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut begin = Attrs::new();
        if let Some(g) = genid {
            begin.put_u32_be(NFNL_BATCH_GENID, g);
        }
        let begin = begin.finish()?;
        let mut out = encode_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &begin);
        let mut s = seq;
        for m in &self.msgs {
            s = s.wrapping_add(1);
            let flags = NLM_F_REQUEST | NLM_F_ACK | m.flags;
            out.extend(encode_msg(nft_type(m.kind), flags, s, m.family, 0, &m.payload));
        }
        s = s.wrapping_add(1);
        out.extend(encode_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, s, 0, NFNL_SUBSYS_NFTABLES, &[]));
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
