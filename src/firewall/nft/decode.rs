//! Decoding of dumped tables, chains and rules. Unknown attributes are skipped; malformed input
//! yields partial objects, never a panic.

use super::expr::{Base, CmpOp, Expr, Verdict};
use super::sock::NftSocket;
use super::{attr, msg, Attrs, Family, NftError, SetElem, UDATA_COMMENT};
use crate::netlink::wire::{attrs, find as get, get_u32_be as be32, get_u64_be};

fn get_str(a: &[u8], ty: u16) -> Option<String> {
    get(a, ty).map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_string())
}

fn get_be32(a: &[u8], ty: u16) -> Option<u32> {
    get(a, ty).and_then(be32)
}

fn get_be64(a: &[u8], ty: u16) -> Option<u64> {
    get(a, ty).and_then(get_u64_be)
}

/// The comment in nft userdata TLVs (type 0), if any.
pub fn udata_comment(udata: &[u8]) -> Option<String> {
    let mut off = 0usize;
    while let (Some(&ty), Some(&len)) = (udata.get(off), udata.get(off + 1)) {
        let len = usize::from(len);
        let val = udata.get(off + 2..off + 2 + len)?;
        if ty == UDATA_COMMENT {
            return Some(String::from_utf8_lossy(val).trim_end_matches('\0').to_string());
        }
        off += 2 + len;
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub family: u8,
    pub name: String,
    pub handle: u64,
    pub comment: Option<String>,
    /// NFTA_TABLE_FLAGS (0 = plain table, as we create it).
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub handle: u64,
    pub is_base: bool,
    /// Base chains: type ("filter", "nat", "route"), hook number, priority, policy (1 = accept).
    pub chain_type: Option<String>,
    pub hook: Option<u32>,
    pub priority: Option<i32>,
    pub policy: Option<u32>,
    /// The chain's comment (NFTA_CHAIN_USERDATA, nft's comment TLV), if any.
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
    pub exprs: Vec<Expr>,
}

pub fn decode_table(family: u8, body: &[u8]) -> TableInfo {
    let a = body;
    TableInfo {
        family,
        name: get_str(a, attr::TABLE_NAME).unwrap_or_default(),
        handle: get_be64(a, attr::TABLE_HANDLE).unwrap_or(0),
        comment: get(a, attr::TABLE_USERDATA).and_then(udata_comment),
        flags: get_be32(a, attr::TABLE_FLAGS).unwrap_or(0),
    }
}

pub fn decode_chain(family: u8, body: &[u8]) -> ChainInfo {
    let a = body;
    let h = get(a, attr::CHAIN_HOOK).unwrap_or_default();
    ChainInfo {
        family,
        table: get_str(a, attr::CHAIN_TABLE).unwrap_or_default(),
        name: get_str(a, attr::CHAIN_NAME).unwrap_or_default(),
        handle: get_be64(a, attr::CHAIN_HANDLE).unwrap_or(0),
        is_base: get(a, attr::CHAIN_HOOK).is_some(),
        chain_type: get_str(a, attr::CHAIN_TYPE),
        hook: get_be32(h, attr::HOOK_HOOKNUM),
        priority: get_be32(h, attr::HOOK_PRIORITY).map(|p| p as i32),
        policy: get_be32(a, attr::CHAIN_POLICY),
        comment: get(a, attr::CHAIN_USERDATA).and_then(udata_comment),
    }
}

fn data_value(p: &[u8]) -> Vec<u8> {
    get(p, attr::DATA_VALUE).unwrap_or_default().to_vec()
}

/// Decodes one expression (list element body). Unknown expressions come back as None.
pub fn decode_expr(elem: &[u8]) -> Option<Expr> {
    let name = get_str(elem, 1)?;
    let d = get(elem, 2).unwrap_or_default();
    let u = |t| get_be32(d, t);
    Some(match name.as_str() {
        "payload" => Expr::Payload {
            dreg: u(1)?,
            base: match u(2)? {
                0 => Base::LinkLayer,
                1 => Base::Network,
                _ => Base::Transport,
            },
            offset: u(3)?,
            len: u(4)?,
        },
        "cmp" => Expr::Cmp {
            sreg: u(1)?,
            op: match u(2)? {
                0 => CmpOp::Eq,
                1 => CmpOp::Neq,
                2 => CmpOp::Lt,
                3 => CmpOp::Lte,
                4 => CmpOp::Gt,
                _ => CmpOp::Gte,
            },
            data: data_value(get(d, 3)?),
        },
        "meta" => Expr::Meta { key: u(2)?, dreg: u(1)? },
        "ct" => Expr::Ct { key: u(2)?, dreg: u(1)? },
        "bitwise" => {
            Expr::Bitwise { sreg: u(1)?, dreg: u(2)?, mask: data_value(get(d, 4)?), xor: data_value(get(d, 5)?) }
        }
        "immediate" => {
            let dreg = u(1)?;
            let ia = get(d, 2)?;
            if let Some(va) = get(ia, attr::DATA_VERDICT) {
                let code = get_be32(va, 1)? as i32;
                let chain = get_str(va, 2).unwrap_or_default();
                Expr::Verdict(match code {
                    0 => Verdict::Drop,
                    1 => Verdict::Accept,
                    -3 => Verdict::Jump(chain),
                    -4 => Verdict::Goto(chain),
                    -5 => Verdict::Return,
                    _ => Verdict::Continue,
                })
            } else {
                Expr::Immediate { dreg, data: get(ia, attr::DATA_VALUE).unwrap_or_default().to_vec() }
            }
        }
        "lookup" => Expr::Lookup {
            sreg: u(2)?,
            set: get_str(d, 1)?,
            set_id: u(4),
            dreg: u(3),
            invert: u(5).unwrap_or(0) & 1 != 0,
        },
        "counter" => Expr::Counter,
        "nat" => Expr::Nat { nat_type: u(1)?, family: u(2)?, addr_min: u(3), proto_min: u(5), flags: u(7) },
        "masq" => Expr::Masq,
        "fib" => Expr::Fib { flags: u(3)?, result: u(2)?, dreg: u(1)? },
        "match" | "target" => Expr::Xt {
            target: name == "target",
            name: get_str(d, 1)?,
            rev: u(2).unwrap_or(0),
            info: get(d, 3).unwrap_or_default().to_vec(),
        },
        _ => return None,
    })
}

pub fn decode_rule(family: u8, body: &[u8]) -> RuleInfo {
    decode_rule_checked(family, body).0
}

/// [`decode_rule`], plus whether every expression was understood (a rule with an expression this
/// decoder skips must never be taken for one of ours).
pub fn decode_rule_checked(family: u8, body: &[u8]) -> (RuleInfo, bool) {
    let a = body;
    let elems: Vec<_> = attrs(get(a, attr::RULE_EXPRESSIONS).unwrap_or_default()).collect();
    let exprs: Vec<Expr> = elems.iter().filter_map(|(_, e)| decode_expr(e)).collect();
    let complete = exprs.len() == elems.len();
    let info = RuleInfo {
        family,
        table: get_str(a, attr::RULE_TABLE).unwrap_or_default(),
        chain: get_str(a, attr::RULE_CHAIN).unwrap_or_default(),
        handle: get_be64(a, attr::RULE_HANDLE).unwrap_or(0),
        comment: get(a, attr::RULE_USERDATA).and_then(udata_comment),
        exprs,
    };
    (info, complete)
}

// ---- list operations ---------------------------------------------------------------------------

/// All tables of `family` (None = every family).
pub fn list_tables(s: &mut NftSocket, family: Option<Family>) -> Result<Vec<TableInfo>, NftError> {
    let fam = family.map(|f| f as u8).unwrap_or(0);
    Ok(s.dump(msg::GETTABLE, fam, &[])?.into_iter().map(|(f, b)| decode_table(f, &b)).collect())
}

/// Chains of one table. A missing table gives an empty list.
pub fn list_chains(s: &mut NftSocket, family: Family, table: &str) -> Result<Vec<ChainInfo>, NftError> {
    let rows = match s.dump(msg::GETCHAIN, family as u8, &[]) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(rows.into_iter().map(|(f, b)| decode_chain(f, &b)).filter(|c| c.table == table).collect())
}

/// Rules of one chain (or of the whole table when `chain` is None). Missing table/chain = empty.
pub fn list_rules(
    s: &mut NftSocket,
    family: Family,
    table: &str,
    chain: Option<&str>,
) -> Result<Vec<RuleInfo>, NftError> {
    Ok(list_rules_checked(s, family, table, chain)?.into_iter().map(|(r, _)| r).collect())
}

/// Deletes the rules of one chain that `pick` selects. A commit that fails with ENOENT (a
/// concurrent writer deleted one of them first) is read and tried again; after three tries each
/// rule goes in a transaction of its own, where ENOENT only means it is already gone.
pub fn delete_rules_where(
    s: &mut NftSocket,
    family: Family,
    table: &str,
    chain: &str,
    pick: impl Fn(&RuleInfo) -> bool,
) -> Result<(), NftError> {
    for _ in 0..3 {
        let mut b = super::Batch::new();
        for r in list_rules(s, family, table, Some(chain))?.iter().filter(|r| pick(r)) {
            b.del_rule(family, table, chain, r.handle);
        }
        match s.commit(&b) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    for r in list_rules(s, family, table, Some(chain))?.iter().filter(|r| pick(r)) {
        let mut b = super::Batch::new();
        b.del_rule(family, table, chain, r.handle);
        match s.commit(&b) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`list_rules`] with [`decode_rule_checked`]'s completeness flag per rule.
pub fn list_rules_checked(
    s: &mut NftSocket,
    family: Family,
    table: &str,
    chain: Option<&str>,
) -> Result<Vec<(RuleInfo, bool)>, NftError> {
    let mut f = Attrs::new();
    f.put_str(attr::RULE_TABLE, table);
    if let Some(c) = chain {
        f.put_str(attr::RULE_CHAIN, c);
    }
    let filter = f.finish()?;
    let rows = match s.dump(msg::GETRULE, family as u8, &filter) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(rows
        .into_iter()
        .map(|(f, b)| decode_rule_checked(f, &b))
        .filter(|(r, _)| r.table == table && chain.is_none_or(|c| r.chain == c))
        .collect())
}

/// The elements of one set, as the kernel dumps them (missing table or set = none).
pub fn list_set_elems(s: &mut NftSocket, family: Family, table: &str, set: &str) -> Result<Vec<SetElem>, NftError> {
    let mut f = Attrs::new();
    f.put_str(attr::SET_ELEM_LIST_TABLE, table).put_str(attr::SET_ELEM_LIST_SET, set);
    let filter = f.finish()?;
    let rows = match s.dump(msg::GETSETELEM, family as u8, &filter) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(rows.iter().flat_map(|(_, b)| decode_set_elems(b)).collect())
}

/// The elements of one NEWSETELEM message (a dump row).
pub fn decode_set_elems(body: &[u8]) -> Vec<SetElem> {
    attrs(get(body, attr::SET_ELEM_LIST_ELEMENTS).unwrap_or_default())
        .map(|(_, e)| SetElem {
            key: get(e, attr::SET_ELEM_KEY).map(data_value).unwrap_or_default(),
            data: get(e, attr::SET_ELEM_DATA).map(data_value),
            flags: get_be32(e, attr::SET_ELEM_FLAGS),
            udata: get(e, attr::SET_ELEM_USERDATA).unwrap_or_default().to_vec(),
        })
        .collect()
}
