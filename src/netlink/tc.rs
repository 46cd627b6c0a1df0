//! Traffic control for the bandwidth plugin: tbf and ingress qdiscs, and a match-all u32
//! filter redirecting to another device (mirred). Encoded like the reference's netlink library.

use anyhow::Context;

use super::consts::*;
use super::socket::Netlink;
use super::wire::{attrs, get_str, get_u32, Msg};

/// Token bucket parameters as the kernel takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u64,
    /// Queue limit in bytes.
    pub limit: u32,
    /// Bucket size in psched ticks.
    pub buffer: u32,
}

/// A qdisc read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    pub tbf: Option<Tbf>,
}

/// A classifier read back from the kernel (one message of `tc filter show`; a u32 filter comes
/// as its hash table and its key node, the node carrying the classid and the actions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub kind: String,
    pub prio: u16,
    /// ETH_P_* (host byte order).
    pub protocol: u16,
    pub classid: Option<u32>,
    /// The target link of each mirred egress redirect action, in action order (0 when the
    /// target link is gone).
    pub redirects: Vec<u32>,
}

/// `major:minor` as a tc handle.
pub fn handle(major: u16, minor: u16) -> u32 {
    (u32::from(major) << 16) | u32::from(minor)
}

/// Microseconds per psched tick, from /proc/net/psched (as the reference computes it).
pub fn tick_in_usec() -> f64 {
    let parse = || -> Option<f64> {
        let s = std::fs::read_to_string("/proc/net/psched").ok()?;
        let v: Vec<u64> = s.split_whitespace().filter_map(|p| u64::from_str_radix(p, 16).ok()).collect();
        let (&t2us, &us2t, &res) = (v.first()?, v.get(1)?, v.get(2)?);
        let t2us = if res == 1_000_000_000 { us2t } else { t2us };
        (us2t != 0).then(|| t2us as f64 / us2t as f64 * (res as f64 / 1_000_000.0))
    };
    parse().unwrap_or(15.625)
}

/// Go's `uint32(f)` of a float64 on amd64, which the reference's tbf arithmetic relies on: the
/// float is truncated toward zero into an int64 (CVTTSD2SQ, which gives 0x8000000000000000 for
/// NaN and for anything outside the int64 range) and the low 32 bits are kept. So a value past
/// `u32::MAX` wraps instead of saturating as Rust's `as u32` does, and ±Inf/NaN give 0.
pub fn go_f64_to_u32(f: f64) -> u32 {
    // 2^63 is exactly representable; every float below it and at or above -2^63 fits an i64
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    let i = if f.is_nan() || !(-TWO_63..TWO_63).contains(&f) { i64::MIN } else { f as i64 };
    i as u32
}

impl Tbf {
    /// The reference's tbf for `rate_bits`/`burst_bits` with `latency_ms` of queueing:
    /// rate = bits/8, buffer = burst time in ticks, limit = rate × latency + burst.
    pub fn from_bits(rate_bits: u64, burst_bits: u64, latency_ms: f64) -> Tbf {
        Tbf::from_bits_with_tick(rate_bits, burst_bits, latency_ms, tick_in_usec())
    }

    /// [`Tbf::from_bits`] for a given psched tick (µs per tick), with the reference's float to
    /// uint32 conversions ([`go_f64_to_u32`]) and uint32 arithmetic, so that huge bursts (the
    /// MaxUint32 bits containerd sends) give the reference's buffer and limit bit for bit.
    pub fn from_bits_with_tick(rate_bits: u64, burst_bits: u64, latency_ms: f64, tick_usec: f64) -> Tbf {
        let rate = rate_bits / 8;
        let burst = (burst_bits / 8) as u32; // Go's uint32(uint64): the low 32 bits
                                             // buffer(): time2Tick(uint32(burst × 1e6 / rate)); a rate of 0 gives +Inf, hence 0
        let burst_usec = go_f64_to_u32(f64::from(burst) * 1_000_000.0 / rate as f64);
        let buffer = go_f64_to_u32(f64::from(burst_usec) * tick_usec);
        // limit(): uint32(rate × latency / 1e6) + burst, in uint32
        let latency_usec = 1_000_000.0 * (latency_ms / 1000.0);
        let limit = go_f64_to_u32(rate as f64 * latency_usec / 1_000_000.0).wrapping_add(burst);
        Tbf { rate, limit, buffer }
    }
}

/// struct tcmsg.
fn tcmsg(index: u32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&handle.to_ne_bytes());
    h[12..16].copy_from_slice(&parent.to_ne_bytes());
    h[16..20].copy_from_slice(&info.to_ne_bytes());
    h
}

/// struct tc_tbf_qopt: rate and peakrate tc_ratespec (12 bytes each), limit, buffer, mtu.
fn tbf_qopt(t: &Tbf) -> [u8; 36] {
    let mut q = [0u8; 36];
    q[8..12].copy_from_slice(&u32::try_from(t.rate).unwrap_or(u32::MAX).to_ne_bytes());
    q[24..28].copy_from_slice(&t.limit.to_ne_bytes());
    q[28..32].copy_from_slice(&t.buffer.to_ne_bytes());
    q
}

/// `tc qdisc add|change dev D parent P handle H tbf ...` without a rate table (the kernel
/// computes it), as the reference sends it.
pub(crate) fn tbf_msg(change: bool, index: u32, handle: u32, parent: u32, t: &Tbf) -> Vec<u8> {
    let flags = if change { NLM_F_REQUEST | NLM_F_ACK } else { NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL };
    let mut m = Msg::new(RTM_NEWQDISC, flags, &tcmsg(index, handle, parent, 0));
    m.put_str(TCA_KIND, "tbf");
    let opts = m.begin(TCA_OPTIONS, false);
    m.put(TCA_TBF_PARMS, &tbf_qopt(t));
    if t.rate > u64::from(u32::MAX) {
        m.put(TCA_TBF_RATE64, &t.rate.to_ne_bytes());
    }
    m.end(opts);
    m.finish()
}

/// `tc qdisc add dev D ingress`.
pub(crate) fn ingress_msg(index: u32) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = Msg::new(RTM_NEWQDISC, flags, &tcmsg(index, handle(0xffff, 0), TC_H_INGRESS, 0));
    m.put_str(TCA_KIND, "ingress");
    m.finish()
}

/// `tc qdisc del dev D parent P [handle H]`.
pub(crate) fn qdisc_del_msg(index: u32, handle: u32, parent: u32) -> Vec<u8> {
    Msg::new(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, &tcmsg(index, handle, parent, 0)).finish()
}

/// `tc filter add dev D parent P protocol all prio N u32 match u32 0 0 [flowid C]
/// action mirred egress redirect dev T [stolen|pass] ...`: one mirred action per entry of
/// `actions` as (target ifindex, verdict TC_ACT_*).
pub(crate) fn redirect_filter_msg(
    index: u32,
    parent: u32,
    prio: u16,
    classid: Option<u32>,
    actions: &[(u32, i32)],
) -> Vec<u8> {
    let info = (u32::from(prio) << 16) | u32::from(ETH_P_ALL.to_be());
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = Msg::new(RTM_NEWTFILTER, flags, &tcmsg(index, 0, parent, info));
    m.put_str(TCA_KIND, "u32");
    let opts = m.begin(TCA_OPTIONS, false);
    // struct tc_u32_sel with one all-zero key: flags TERMINAL, nkeys 1.
    let mut sel = [0u8; 32];
    sel[0] = TC_U32_TERMINAL;
    sel[2] = 1;
    m.put(TCA_U32_SEL, &sel);
    if let Some(c) = classid {
        m.put_u32(TCA_U32_CLASSID, c);
    }
    let acts = m.begin(TCA_U32_ACT, false);
    for (i, &(target, verdict)) in actions.iter().enumerate() {
        let tab = m.begin(i as u16 + 1, false);
        m.put_str(TCA_ACT_KIND, "mirred");
        let aopts = m.begin(TCA_ACT_OPTIONS, false);
        // struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt), eaction, ifindex.
        let mut p = [0u8; 28];
        p[8..12].copy_from_slice(&verdict.to_ne_bytes());
        p[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
        p[24..28].copy_from_slice(&target.to_ne_bytes());
        m.put(TCA_MIRRED_PARMS, &p);
        m.end(aopts).end(tab);
    }
    m.end(acts).end(opts);
    m.finish()
}

/// `tc filter show dev D parent P`.
pub(crate) fn filter_dump_msg(index: u32, parent: u32) -> Vec<u8> {
    Msg::new(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, &tcmsg(index, 0, parent, 0)).finish()
}

pub(crate) fn parse_filter(p: &[u8]) -> Option<Filter> {
    let info = get_u32(p.get(16..)?)?;
    let mut f = Filter { prio: (info >> 16) as u16, protocol: u16::from_be(info as u16), ..Filter::default() };
    let mut opts: &[u8] = &[];
    for (ty, v) in attrs(p.get(20..)?) {
        match ty {
            TCA_KIND => f.kind = get_str(v),
            TCA_OPTIONS => opts = v,
            _ => {}
        }
    }
    if f.kind != "u32" {
        return Some(f);
    }
    for (ty, v) in attrs(opts) {
        match ty {
            TCA_U32_CLASSID => f.classid = get_u32(v),
            TCA_U32_ACT => {
                for (_, action) in attrs(v) {
                    let kind = attrs(action).find(|(t, _)| *t == TCA_ACT_KIND).map(|(_, k)| get_str(k));
                    if kind.as_deref() != Some("mirred") {
                        continue;
                    }
                    let parms = attrs(action)
                        .filter(|(t, _)| *t == TCA_ACT_OPTIONS)
                        .flat_map(|(_, o)| attrs(o))
                        .find(|(t, _)| *t == TCA_MIRRED_PARMS);
                    // struct tc_mirred: tc_gen (20 bytes), eaction, ifindex
                    if let Some((_, m)) = parms {
                        let eaction = m.get(20..).and_then(get_u32);
                        if let (Some(e), Some(target)) = (eaction, m.get(24..).and_then(get_u32)) {
                            if e == TCA_EGRESS_REDIR as u32 {
                                f.redirects.push(target);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

fn parse_qdisc(p: &[u8]) -> Option<Qdisc> {
    let index = get_u32(p.get(4..)?)?;
    let handle = get_u32(p.get(8..)?)?;
    let parent = get_u32(p.get(12..)?)?;
    let mut q = Qdisc { index, handle, parent, kind: String::new(), tbf: None };
    let mut opts: &[u8] = &[];
    for (ty, v) in attrs(p.get(20..)?) {
        match ty {
            TCA_KIND => q.kind = get_str(v),
            TCA_OPTIONS => opts = v,
            _ => {}
        }
    }
    if q.kind == "tbf" {
        let mut t = None;
        for (ty, v) in attrs(opts) {
            match ty {
                TCA_TBF_PARMS => {
                    let rate = u64::from(get_u32(v.get(8..)?)?);
                    t = Some(Tbf { rate, limit: get_u32(v.get(24..)?)?, buffer: get_u32(v.get(28..)?)? });
                }
                TCA_TBF_RATE64 => {
                    if let (Some(t), Some(b)) = (t.as_mut(), v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok())) {
                        t.rate = u64::from_ne_bytes(b);
                    }
                }
                _ => {}
            }
        }
        q.tbf = t;
    }
    Some(q)
}

impl Netlink {
    pub fn qdisc_add_tbf(&mut self, index: u32, handle: u32, parent: u32, tbf: &Tbf) -> anyhow::Result<()> {
        self.ack(tbf_msg(false, index, handle, parent, tbf))
            .with_context(|| format!("failed to add tbf qdisc to link {index}"))
    }

    /// Change an existing tbf qdisc in place.
    pub fn qdisc_change_tbf(&mut self, index: u32, handle: u32, parent: u32, tbf: &Tbf) -> anyhow::Result<()> {
        self.ack(tbf_msg(true, index, handle, parent, tbf))
            .with_context(|| format!("failed to change tbf qdisc of link {index}"))
    }

    /// Add the ingress qdisc (handle ffff:).
    pub fn qdisc_add_ingress(&mut self, index: u32) -> anyhow::Result<()> {
        self.ack(ingress_msg(index)).with_context(|| format!("failed to add ingress qdisc to link {index}"))
    }

    pub fn qdisc_del(&mut self, index: u32, handle: u32, parent: u32) -> anyhow::Result<()> {
        self.ack(qdisc_del_msg(index, handle, parent))
            .with_context(|| format!("failed to delete qdisc of link {index}"))
    }

    /// [`Netlink::qdisc_del`] of a qdisc that may be gone: the kernel's ENOENT (no such qdisc,
    /// or no such link) and EINVAL (the root is the device's default qdisc) are success.
    pub fn qdisc_del_if_present(&mut self, index: u32, handle: u32, parent: u32) -> anyhow::Result<()> {
        match self.ack(qdisc_del_msg(index, handle, parent)) {
            Err(e)
                if e.downcast_ref::<super::wire::NlError>()
                    .is_some_and(|n| n.is_not_found() || n.errno == super::wire::EINVAL) =>
            {
                Ok(())
            }
            r => r.with_context(|| format!("failed to delete qdisc of link {index}")),
        }
    }

    /// Qdiscs, optionally of one link.
    pub fn qdiscs(&mut self, index: Option<u32>) -> anyhow::Result<Vec<Qdisc>> {
        let req = Msg::new(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, &tcmsg(0, 0, 0, 0)).finish();
        let replies = self.dump(req).context("failed to list qdiscs")?;
        Ok(replies
            .iter()
            .filter(|r| r.ty == RTM_NEWQDISC)
            .filter_map(|r| parse_qdisc(&r.payload))
            .filter(|q| index.is_none_or(|i| i == q.index))
            .collect())
    }

    /// The classifiers attached to `parent` of link `index` (none when the link or the qdisc is
    /// not there).
    pub fn filters(&mut self, index: u32, parent: u32) -> anyhow::Result<Vec<Filter>> {
        let replies = self.dump(filter_dump_msg(index, parent)).context("failed to list filters")?;
        Ok(replies.iter().filter(|r| r.ty == RTM_NEWTFILTER).filter_map(|r| parse_filter(&r.payload)).collect())
    }

    /// A match-all u32 filter on `parent` redirecting every packet to link `target`, as the
    /// reference bandwidth plugin leaves it in the kernel: flowid 1:1 and two mirred redirects,
    /// the first "stolen" (it takes the packet), the second "pass" (never reached).
    pub fn filter_add_redirect(&mut self, index: u32, parent: u32, prio: u16, target: u32) -> anyhow::Result<()> {
        let actions = [(target, TC_ACT_STOLEN), (target, TC_ACT_OK)];
        let msg = redirect_filter_msg(index, parent, prio, Some(handle(1, 1)), &actions);
        self.ack(msg).with_context(|| format!("failed to add redirect filter on link {index}"))
    }
}
