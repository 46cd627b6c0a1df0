//! Decoding of dumped tables, chains and rules. Unknown attributes are skipped; malformed input
//! yields partial objects, never a panic.

use super::expr::{Base, CmpOp, Expr, Verdict};
use super::sock::NftSocket;
use super::{attr, msg, Attrs, Family, NftError, NLA_F_NESTED, UDATA_COMMENT};

/// Iterates the (type without flags, payload) pairs of an attribute stream.
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(h) = buf.get(off..off + 4) {
        let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
        let ty = u16::from_ne_bytes([h[2], h[3]]) & !(NLA_F_NESTED | 0x4000);
        if len < 4 {
            break;
        }
        let Some(p) = buf.get(off + 4..off + len) else { break };
        out.push((ty, p));
        off += (len + 3) & !3;
    }
    out
}

fn get(a: &[(u16, &[u8])], ty: u16) -> Option<Vec<u8>> {
    a.iter().find(|(t, _)| *t == ty).map(|(_, p)| p.to_vec())
}

fn get_str(a: &[(u16, &[u8])], ty: u16) -> Option<String> {
    get(a, ty).map(|v| String::from_utf8_lossy(&v).trim_end_matches('\0').to_string())
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?))
}

fn get_be32(a: &[(u16, &[u8])], ty: u16) -> Option<u32> {
    get(a, ty).and_then(|v| be32(&v))
}

fn get_be64(a: &[(u16, &[u8])], ty: u16) -> Option<u64> {
    get(a, ty).and_then(|v| Some(u64::from_be_bytes(v.get(0..8)?.try_into().ok()?)))
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
    let a = attrs(body);
    TableInfo {
        family,
        name: get_str(&a, attr::TABLE_NAME).unwrap_or_default(),
        handle: get_be64(&a, attr::TABLE_HANDLE).unwrap_or(0),
        comment: get(&a, attr::TABLE_USERDATA).and_then(|u| udata_comment(&u)),
        flags: get_be32(&a, attr::TABLE_FLAGS).unwrap_or(0),
    }
}

pub fn decode_chain(family: u8, body: &[u8]) -> ChainInfo {
    let a = attrs(body);
    let hook = get(&a, attr::CHAIN_HOOK).unwrap_or_default();
    let h = attrs(&hook);
    ChainInfo {
        family,
        table: get_str(&a, attr::CHAIN_TABLE).unwrap_or_default(),
        name: get_str(&a, attr::CHAIN_NAME).unwrap_or_default(),
        handle: get_be64(&a, attr::CHAIN_HANDLE).unwrap_or(0),
        is_base: get(&a, attr::CHAIN_HOOK).is_some(),
        chain_type: get_str(&a, attr::CHAIN_TYPE),
        hook: get_be32(&h, attr::HOOK_HOOKNUM),
        priority: get_be32(&h, attr::HOOK_PRIORITY).map(|p| p as i32),
        policy: get_be32(&a, attr::CHAIN_POLICY),
    }
}

fn data_value(p: &[u8]) -> Vec<u8> {
    get(&attrs(p), attr::DATA_VALUE).unwrap_or_default()
}

/// Decodes one expression (list element body). Unknown expressions come back as None.
pub fn decode_expr(elem: &[u8]) -> Option<Expr> {
    let a = attrs(elem);
    let name = get_str(&a, 1)?;
    let data = get(&a, 2).unwrap_or_default();
    let d = attrs(&data);
    let u = |t| get_be32(&d, t);
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
            data: data_value(&get(&d, 3)?),
        },
        "meta" => Expr::Meta { key: u(2)?, dreg: u(1)? },
        "ct" => Expr::Ct { key: u(2)?, dreg: u(1)? },
        "bitwise" => {
            Expr::Bitwise { sreg: u(1)?, dreg: u(2)?, mask: data_value(&get(&d, 4)?), xor: data_value(&get(&d, 5)?) }
        }
        "immediate" => {
            let dreg = u(1)?;
            let imm = get(&d, 2)?;
            let ia = attrs(&imm);
            if let Some(v) = get(&ia, attr::DATA_VERDICT) {
                let va = attrs(&v);
                let code = get_be32(&va, 1)? as i32;
                let chain = get_str(&va, 2).unwrap_or_default();
                Expr::Verdict(match code {
                    0 => Verdict::Drop,
                    1 => Verdict::Accept,
                    -3 => Verdict::Jump(chain),
                    -4 => Verdict::Goto(chain),
                    -5 => Verdict::Return,
                    _ => Verdict::Continue,
                })
            } else {
                Expr::Immediate { dreg, data: get(&ia, attr::DATA_VALUE).unwrap_or_default() }
            }
        }
        "lookup" => Expr::Lookup {
            sreg: u(2)?,
            set: get_str(&d, 1)?,
            set_id: u(4),
            dreg: u(3),
            invert: u(5).unwrap_or(0) & 1 != 0,
        },
        "counter" => Expr::Counter,
        "nat" => Expr::Nat { nat_type: u(1)?, family: u(2)?, addr_min: u(3), proto_min: u(5), flags: u(7) },
        "masq" => Expr::Masq,
        "fib" => Expr::Fib { flags: u(3)?, result: u(2)?, dreg: u(1)? },
        _ => return None,
    })
}

pub fn decode_rule(family: u8, body: &[u8]) -> RuleInfo {
    decode_rule_checked(family, body).0
}

/// [`decode_rule`], plus whether every expression was understood (a rule with an expression this
/// decoder skips must never be taken for one of ours).
pub fn decode_rule_checked(family: u8, body: &[u8]) -> (RuleInfo, bool) {
    let a = attrs(body);
    let list = get(&a, attr::RULE_EXPRESSIONS).unwrap_or_default();
    let elems = attrs(&list);
    let exprs: Vec<Expr> = elems.iter().filter_map(|(_, e)| decode_expr(e)).collect();
    let complete = exprs.len() == elems.len();
    let info = RuleInfo {
        family,
        table: get_str(&a, attr::RULE_TABLE).unwrap_or_default(),
        chain: get_str(&a, attr::RULE_CHAIN).unwrap_or_default(),
        handle: get_be64(&a, attr::RULE_HANDLE).unwrap_or(0),
        comment: get(&a, attr::RULE_USERDATA).and_then(|u| udata_comment(&u)),
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
