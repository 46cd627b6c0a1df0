//! Add-only planning: what of a table is already right, so a batch declares only what is missing.
//!
//! Why: a commit that deletes anything (rules, a flush, chains) or re-declares an existing chain
//! leaves destroy work that the next close() of a netfilter socket waits for (an RCU grace
//! period, 5–20 ms; see [`super::sock::CachedSocket`]). A commit that only adds is free.
//!
//! The planners take `Option<&TableState>`: `None` = the full, self-contained plan (declare
//! everything, flush and rewrite shared chains), `Some(state)` = the fast plan against that
//! state, to be committed guarded by its generation id ([`super::sock::NftSocket::transact`]).

use super::decode::{
    decode_rule_checked, list_chains, list_rules_checked, list_set_elems, list_tables, ChainInfo, RuleInfo,
};
use super::expr::Expr;
use super::sock::NftSocket;
use super::{AnonSet, BaseChain, Batch, Family, NftError, Rule, SetElem, ANON_SET_NAME};

/// One table as dumped: whether it exists as a plain table, its chains, its rules (with the
/// decoder's completeness flag).
#[derive(Debug, Clone, Default)]
pub struct TableState {
    /// The table exists with flags 0 (re-adding it would change nothing).
    pub plain_table: bool,
    pub chains: Vec<ChainInfo>,
    pub rules: Vec<(RuleInfo, bool)>,
    /// The elements of the anonymous sets (`__setN`) the rules look up, by name.
    pub anon_sets: Vec<(String, Vec<SetElem>)>,
}

impl TableState {
    /// Reads a table (three dumps). A missing table gives the empty state.
    pub fn read(s: &mut NftSocket, family: Family, table: &str) -> Result<TableState, NftError> {
        let tables = list_tables(s, Some(family))?;
        let Some(t) = tables.iter().find(|t| t.name == table) else { return Ok(TableState::default()) };
        let rules = list_rules_checked(s, family, table, None)?;
        let mut anon_sets: Vec<(String, Vec<SetElem>)> = Vec::new();
        for (r, _) in &rules {
            for e in &r.exprs {
                if let Expr::Lookup { set, .. } = e {
                    if set.starts_with("__set") && !anon_sets.iter().any(|(n, _)| n == set) {
                        anon_sets.push((set.clone(), list_set_elems(s, family, table, set)?));
                    }
                }
            }
        }
        Ok(TableState { plain_table: t.flags == 0, chains: list_chains(s, family, table)?, rules, anon_sets })
    }

    /// Rules of one chain, in order.
    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a RuleInfo> + 'a {
        self.rules.iter().filter(move |(r, _)| r.chain == chain).map(|(r, _)| r)
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name == name)
    }

    /// The chain exists exactly as `base` describes it (a regular chain when None).
    pub fn chain_is(&self, name: &str, base: Option<&BaseChain>) -> bool {
        self.chains.iter().any(|c| {
            c.name == name
                && match base {
                    None => !c.is_base,
                    Some(b) => {
                        c.is_base
                            && c.chain_type.as_deref() == Some(b.chain_type)
                            && c.hook == Some(b.hook as u32)
                            && c.priority == Some(b.priority)
                            && c.policy.unwrap_or(1) == u32::from(b.policy_accept.unwrap_or(true))
                    }
                }
        })
    }

    /// The chain holds exactly `want`, in order (same expressions and comments as the kernel
    /// reports them back, every expression understood).
    pub fn chain_rules_are(&self, chain: &str, want: &[Rule]) -> bool {
        let have: Vec<&(RuleInfo, bool)> = self.rules.iter().filter(|(r, _)| r.chain == chain).collect();
        have.len() == want.len() && have.iter().zip(want).all(|(&(h, complete), w)| *complete && self.same_rule(w, h))
    }

    /// `want` is `have`, handles aside: the same expressions as the kernel reports them back,
    /// where a lookup in an anonymous set of `want` is one of a `__setN` holding the same
    /// elements.
    fn same_rule(&self, want: &Rule, have: &RuleInfo) -> bool {
        let Some(d) = as_dumped(want) else { return false };
        let anon: Vec<&AnonSet> = want
            .exprs
            .iter()
            .filter_map(|e| match e {
                Expr::AnonLookup { set, .. } => Some(&**set),
                _ => None,
            })
            .collect();
        let mut anon = anon.into_iter();
        d.table == have.table
            && d.chain == have.chain
            && d.comment == have.comment
            && d.exprs.len() == have.exprs.len()
            && d.exprs.iter().zip(&have.exprs).all(|(w, h)| match (w, h) {
                (
                    Expr::Lookup { sreg, set, dreg: None, invert, .. },
                    Expr::Lookup { sreg: hs, set: name, dreg: None, invert: hi, .. },
                ) if set == ANON_SET_NAME => {
                    let want_set = anon.next();
                    sreg == hs
                        && invert == hi
                        && want_set.is_some_and(|ws| {
                            self.anon_sets.iter().any(|(n, elems)| n == name && same_elems(&ws.elems, elems))
                        })
                }
                (w, h) => w == h,
            })
    }
}

/// The same elements in any order (the kernel dumps a hash set in its own order, an interval
/// set from the top, and keeps a value sent twice once); a missing flags attribute is flags 0.
fn same_elems(want: &[SetElem], have: &[SetElem]) -> bool {
    let norm = |v: &[SetElem]| {
        let mut v: Vec<(Vec<u8>, u32, Vec<u8>)> =
            v.iter().map(|e| (e.key.clone(), e.flags.unwrap_or(0), e.udata.clone())).collect();
        v.sort();
        v.dedup();
        v
    };
    norm(want) == norm(have)
}

/// `have` holds the expressions of `want` as the kernel reports them back (comment and handle
/// aside; `want` without anonymous sets).
pub fn same_exprs(want: &Rule, have: &RuleInfo) -> bool {
    as_dumped(want).is_some_and(|d| d.exprs == have.exprs)
}

/// `rule` as the decoder reads it back.
fn as_dumped(rule: &Rule) -> Option<RuleInfo> {
    let mut b = Batch::new();
    b.add_rule(rule);
    // the rule is the batch's last message (after the anonymous sets it declares)
    let m = b.msgs.last()?;
    let (r, complete) = decode_rule_checked(m.family, &m.payload);
    complete.then_some(r)
}

impl Batch {
    /// `add table` unless the fast state shows the plain table already there.
    pub fn ensure_table(&mut self, st: Option<&TableState>, family: Family, name: &str, comment: Option<&str>) {
        if !st.is_some_and(|s| s.plain_table) {
            self.add_table(family, name, comment);
        }
    }

    /// `add chain` unless the fast state shows it already there with the same hook/type/
    /// priority/policy (a different one is re-declared, as the full plan does).
    pub fn ensure_chain(
        &mut self,
        st: Option<&TableState>,
        family: Family,
        table: &str,
        name: &str,
        base: Option<&BaseChain>,
        comment: Option<&str>,
    ) {
        if !st.is_some_and(|s| s.chain_is(name, base)) {
            self.add_chain(family, table, name, base, comment);
        }
    }

    /// Makes a shared chain hold exactly `want`: flush and rewrite, unless the fast state shows
    /// these rules already there (or the chain is new in this batch: nothing to flush).
    pub fn ensure_chain_rules(
        &mut self,
        st: Option<&TableState>,
        family: Family,
        table: &str,
        chain: &str,
        want: &[Rule],
    ) {
        match st {
            Some(s) if s.chain_rules_are(chain, want) => return,
            Some(s) if !s.has_chain(chain) => {}
            _ => {
                self.flush_chain(family, table, chain);
            }
        }
        for r in want {
            self.add_rule(r);
        }
    }

    /// True when the batch only adds (no delete, no flush): its commit leaves nothing to destroy
    /// unless it re-declares an existing chain (which the fast planners avoid).
    pub fn only_adds(&self) -> bool {
        use super::msg::{DELCHAIN, DELRULE, DELSET, DELSETELEM, DELTABLE};
        !self.msgs.iter().any(|m| [DELTABLE, DELCHAIN, DELRULE, DELSET, DELSETELEM].contains(&m.kind))
    }
}
