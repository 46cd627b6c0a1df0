//! Add-only planning: what of a table is already right, so a batch declares only what is missing.
//!
//! Why: a commit that deletes anything (rules, a flush, chains) or re-declares an existing chain
//! leaves destroy work that the next close() of a netfilter socket waits for (an RCU grace
//! period, 5–20 ms; see [`super::sock::CachedSocket`]). A commit that only adds is free.
//!
//! The planners take `Option<&TableState>`: `None` = the full, self-contained plan (declare
//! everything, flush and rewrite shared chains), `Some(state)` = the fast plan against that
//! state, to be committed guarded by its generation id ([`super::sock::NftSocket::transact`]).

use super::decode::{decode_rule_checked, list_chains, list_rules_checked, list_tables, ChainInfo, RuleInfo};
use super::sock::NftSocket;
use super::{BaseChain, Batch, Family, NftError, Rule};

/// One table as dumped: whether it exists as a plain table, its chains, its rules (with the
/// decoder's completeness flag).
#[derive(Debug, Clone, Default)]
pub struct TableState {
    /// The table exists with flags 0 (re-adding it would change nothing).
    pub plain_table: bool,
    pub chains: Vec<ChainInfo>,
    pub rules: Vec<(RuleInfo, bool)>,
}

impl TableState {
    /// Reads a table (three dumps). A missing table gives the empty state.
    pub fn read(s: &mut NftSocket, family: Family, table: &str) -> Result<TableState, NftError> {
        let tables = list_tables(s, Some(family))?;
        let Some(t) = tables.iter().find(|t| t.name == table) else { return Ok(TableState::default()) };
        Ok(TableState {
            plain_table: t.flags == 0,
            chains: list_chains(s, family, table)?,
            rules: list_rules_checked(s, family, table, None)?,
        })
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
        have.len() == want.len()
            && have
                .iter()
                .zip(want)
                .all(|(&(h, complete), w)| *complete && as_dumped(w).is_some_and(|d| same_rule(&d, h)))
    }
}

/// `rule` as the decoder reads it back.
fn as_dumped(rule: &Rule) -> Option<RuleInfo> {
    let mut b = Batch::new();
    b.add_rule(rule);
    let m = b.msgs.first()?;
    let (r, complete) = decode_rule_checked(m.family, &m.payload);
    complete.then_some(r)
}

/// Same rule, handles aside.
fn same_rule(a: &RuleInfo, b: &RuleInfo) -> bool {
    a.table == b.table && a.chain == b.chain && a.comment == b.comment && a.exprs == b.exprs
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
