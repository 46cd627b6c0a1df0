//! The NETLINK_NETFILTER socket: batch commit and GET dumps.

use super::{encode_msg, nft_type, Batch, NftError, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

/// One netlink message as received.
#[derive(Debug, Clone)]
pub struct RawMsg {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte netlink header.
    pub body: Vec<u8>,
}

/// Splits a datagram into messages (malformed tails are dropped, never panic).
pub fn split_msgs(buf: &[u8]) -> Vec<RawMsg> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(hdr) = buf.get(off..off + 16) {
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < 16 {
            break;
        }
        let Some(body) = buf.get(off + 16..off + len) else { break };
        out.push(RawMsg {
            ty: u16::from_ne_bytes([hdr[4], hdr[5]]),
            flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            seq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            body: body.to_vec(),
        });
        off += (len + 3) & !3;
    }
    out
}

/// Parses an NLMSG_ERROR body: (error code as negative errno or 0, ext-ack message if any).
pub fn parse_error(m: &RawMsg) -> (i32, Option<String>) {
    let b = &m.body;
    let Some(e) = b.get(0..4) else { return (-libc_einval(), None) };
    let err = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
    // TLVs follow the echoed request: capped (0x100) = header only, else the full request.
    let orig_len = b.get(4..8).map(|l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize).unwrap_or(16);
    let tlv_start = if m.flags & 0x100 != 0 { 4 + 16 } else { 4 + ((orig_len + 3) & !3) };
    let mut msg = None;
    if m.flags & 0x200 != 0 {
        let mut off = tlv_start;
        while let Some(h) = b.get(off..off + 4) {
            let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
            let ty = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
            if len < 4 {
                break;
            }
            if ty == 1 {
                if let Some(s) = b.get(off + 4..off + len) {
                    msg = Some(String::from_utf8_lossy(s).trim_end_matches('\0').to_string());
                }
            }
            off += (len + 3) & !3;
        }
    }
    (err, msg)
}

fn libc_einval() -> i32 {
    22
}

/// Dumped objects: (nfgen family, attributes).
pub type DumpRows = Vec<(u8, Vec<u8>)>;

/// A NETLINK_NETFILTER socket bound in the current network namespace.
pub struct NftSocket {
    sock: NlSocket,
    seq: u32,
    /// a committed batch deleted or updated objects: the last close waits for a grace period
    release_waits: bool,
}

const RECV_BUF: usize = 1 << 16;

/// Generation-guarded attempts of [`NftSocket::transact`] before it falls back to full plans.
pub const GUARDED_TRIES: usize = 8;

/// Identity of the calling thread's network namespace (device, inode of its nsfs file).
fn current_netns() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").ok().map(|m| (m.dev(), m.ino()))
}

thread_local! {
    static CACHE: std::cell::RefCell<Option<((u64, u64), NftSocket)>> = const { std::cell::RefCell::new(None) };
}

/// A socket borrowed from the per-thread cache; given back on drop.
///
/// Why a cache: releasing a bound NETLINK_NETFILTER socket runs nf_tables' NETLINK_URELEASE
/// notifier (`nft_rcv_nl_event`), which `flush_work()`s the namespace's transaction destroy work,
/// and that work frees the objects of the last commit after `synchronize_rcu()`. So a close (or
/// the process exit, which releases a socket left open) right after a commit that deleted rules
/// (a flush too), chains, tables or set elements, or re-declared a chain that already exists (a
/// chain-update transaction), blocks for the rest of an RCU grace period (5–20 ms here). A commit
/// that only adds new objects queues nothing and costs nothing at close. Socket options make no
/// difference (ext-ack, cap-ack, group subscriptions, SO_LINGER, shutdown: measured). One socket
/// per thread and namespace pays it at most once, at exit. The cache is keyed by the thread's current netns, so a thread that switches
/// namespaces gets a socket bound in the right one.
pub struct CachedSocket {
    sock: Option<NftSocket>,
    ns: Option<(u64, u64)>,
}

impl std::ops::Deref for CachedSocket {
    type Target = NftSocket;
    fn deref(&self) -> &NftSocket {
        // Always Some until drop.
        match self.sock.as_ref() {
            Some(s) => s,
            None => unreachable_socket(),
        }
    }
}

impl std::ops::DerefMut for CachedSocket {
    fn deref_mut(&mut self) -> &mut NftSocket {
        match self.sock.as_mut() {
            Some(s) => s,
            None => unreachable_socket(),
        }
    }
}

#[cold]
fn unreachable_socket() -> ! {
    // `sock` is only taken in Drop; this cannot be reached. Abort rather than unwind.
    std::process::abort()
}

impl Drop for CachedSocket {
    fn drop(&mut self) {
        if let (Some(sock), Some(ns)) = (self.sock.take(), self.ns) {
            CACHE.with(|c| {
                if let Ok(mut slot) = c.try_borrow_mut() {
                    if slot.is_none() {
                        *slot = Some((ns, sock));
                    }
                }
            });
        }
    }
}

/// Call once the plugin has answered, right before the process exits. A socket that committed
/// a deleting batch is released by nf_tables only after an RCU grace period (its NETLINK_URELEASE
/// notifier flushes the destroy work of that commit, 5–20 ms), and the kernel makes that release
/// at the last close — at process exit, inside the time the runtime waits for the plugin. The
/// batch itself was committed and ACKed (the rules are out of the ruleset) before the plugin
/// answered; only the freeing of the old objects is left. So the calling thread's cached socket
/// is parked for the kernel's unix socket garbage collector, whose worker makes the last close
/// (`sys::detach`): no process is created, no descriptor of the runtime is held, and the
/// plugin's own close costs nothing. Sockets that only added objects are closed as usual.
pub fn release_at_exit() {
    let cached = CACHE.with(|c| c.try_borrow_mut().ok().and_then(|mut slot| slot.take()));
    if let Some((_, s)) = cached {
        if s.release_waits {
            use std::os::fd::AsRawFd;
            let fd = s.sock.as_raw_fd();
            if !crate::sys::detach::close_after_exit(fd, move || drop(s)) {
                tracing::debug!("nftables socket not parked: its close waited");
            }
        }
    }
}

impl NftSocket {
    /// A socket for the calling thread's current network namespace, reused across calls.
    pub fn cached() -> Result<CachedSocket, NftError> {
        let ns = current_netns();
        let hit = CACHE.with(|c| {
            let mut slot = c.try_borrow_mut().ok()?;
            match slot.take() {
                Some((k, s)) if Some(k) == ns => Some(s),
                other => {
                    // a socket of another namespace stays cached for when we return there
                    *slot = other;
                    None
                }
            }
        });
        let sock = match hit {
            Some(s) => s,
            None => NftSocket::open()?,
        };
        Ok(CachedSocket { sock: Some(sock), ns })
    }

    /// Opens a new socket in the calling thread's network namespace.
    pub fn open() -> Result<NftSocket, NftError> {
        let sock = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty())
            .map_err(|e| NftError::io("open netfilter netlink socket", &e))?;
        // ext-ack gives the kernel's reason for a rejected message; room for many ACKs. Best effort.
        let _ = sock.enable_ext_ack(true);
        let _ = sock.set_recv_buffer_size(1 << 20);
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1);
        Ok(NftSocket { sock, seq: seed & 0x7fff_ffff, release_waits: false })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    /// The current ruleset generation (NFT_MSG_GETGEN), to guard a batch planned from a dump.
    pub fn genid(&mut self) -> Result<u32, NftError> {
        let what = "get nftables generation";
        let seq = self.next_seq(1);
        let req = encode_msg(nft_type(super::msg::GETGEN), NLM_F_REQUEST | NLM_F_ACK, seq, 0, 0, &[]);
        self.sock.send(&req, Msg::empty()).map_err(|e| NftError::io(what, &e))?;
        let mut genid = None;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let len = match self.sock.recv(&mut buf[..], Msg::empty()) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::io(what, &e)),
            };
            if len == 0 {
                return Err(NftError::encode("netlink socket closed"));
            }
            for m in split_msgs(buf.get(..len).unwrap_or_default()) {
                if m.seq != seq {
                    continue;
                }
                if m.ty == nft_type(super::msg::NEWGEN) {
                    let a = super::decode::attrs(m.body.get(4..).unwrap_or_default());
                    genid = a
                        .iter()
                        .find(|(t, _)| *t == super::NFTA_GEN_ID)
                        .and_then(|(_, v)| Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?)));
                } else if m.ty == NLMSG_ERROR {
                    let (err, ext) = parse_error(&m);
                    if err != 0 {
                        return Err(NftError { errno: err.saturating_neg(), what: what.to_string(), ext_ack: ext });
                    }
                    return genid.ok_or_else(|| NftError::encode("no generation id in GETGEN reply"));
                }
            }
        }
    }

    /// Commits a batch as one transaction. Succeeds only when every message was ACKed.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), NftError> {
        self.commit_guarded(batch, None)
    }

    /// [`NftSocket::commit`], applied only if the ruleset generation is still `genid` (else
    /// nothing is applied and the error [`NftError::is_stale`]).
    pub fn commit_guarded(&mut self, batch: &Batch, genid: Option<u32>) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(batch.msgs.len()).map_err(|_| NftError::encode("batch too large"))?;
        let seq = self.next_seq(n + 2);
        let bytes = batch.encode_guarded(seq, genid)?;
        // what leaves objects for nf_tables' destroy work (see `release_at_exit`): deletions,
        // and re-declared chains/tables (updates); new rules, sets and elements do not
        self.release_waits |= batch
            .msgs
            .iter()
            .any(|m| !matches!(m.kind, super::msg::NEWRULE | super::msg::NEWSET | super::msg::NEWSETELEM));
        self.sock.send(&bytes, Msg::empty()).map_err(|e| NftError::io("send nftables batch", &e))?;
        // The kernel processes the batch synchronously inside sendmsg, so every reply is queued
        // by now; drain without blocking and account for each inner message.
        let mut acked = vec![false; batch.msgs.len()];
        let mut first_err: Option<NftError> = None;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            if acked.iter().all(|a| *a) {
                break;
            }
            let r = self.sock.recv(&mut buf[..], Msg::DONTWAIT);
            let len = match r {
                Ok((len, _)) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::io("receive nftables replies", &e)),
            };
            for m in split_msgs(buf.get(..len).unwrap_or_default()) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let (err, ext) = parse_error(&m);
                // The whole batch refused at BEGIN (stale generation id): no other reply comes.
                if m.seq == seq && err != 0 {
                    let what = "nftables batch (generation changed since it was planned)".to_string();
                    return Err(NftError { errno: err.saturating_neg(), what, ext_ack: ext });
                }
                let idx = m.seq.wrapping_sub(seq.wrapping_add(1)) as usize;
                // Replies to earlier requests on this socket are not ours.
                let Some(slot) = acked.get_mut(idx) else { continue };
                *slot = true;
                if err != 0 && first_err.is_none() {
                    let what = batch
                        .msgs
                        .get(idx)
                        .map(|x| x.what.clone())
                        .unwrap_or_else(|| format!("batch message seq {}", m.seq));
                    first_err = Some(NftError { errno: err.saturating_neg(), what, ext_ack: ext });
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let missing = acked.iter().filter(|a| !**a).count();
        if missing > 0 {
            return Err(NftError::encode(&format!(
                "kernel answered {} of {} messages of the batch",
                acked.len() - missing,
                acked.len()
            )));
        }
        Ok(())
    }

    /// Plans and commits one change. `plan(socket, fast)` reads the current state and builds the
    /// batch. Fast plans add only what is missing (no re-declaration, no flush of a chain that is
    /// already right: a later close() then costs nothing), so they are only valid against the
    /// state they were planned from: they are committed guarded by the generation read before
    /// planning and re-planned when someone committed in between. After [`GUARDED_TRIES`] such
    /// attempts, or when a fast plan fails otherwise, full plans (self-contained: re-declare,
    /// flush and rewrite, as before) are committed unguarded, retried on ENOENT (a concurrent
    /// delete of something the plan deletes).
    pub fn transact<E: From<NftError>>(
        &mut self,
        mut plan: impl FnMut(&mut NftSocket, bool) -> Result<Batch, E>,
    ) -> Result<(), E> {
        for _ in 0..GUARDED_TRIES {
            let genid = match self.genid() {
                Ok(g) => g,
                Err(e) => {
                    tracing::debug!("no nftables generation id ({e}); committing full plans");
                    break;
                }
            };
            let b = plan(self, true)?;
            match self.commit_guarded(&b, Some(genid)) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_stale() => continue,
                Err(e) => {
                    tracing::debug!("fast nftables plan failed ({e}); committing the full plan");
                    break;
                }
            }
        }
        let mut last = None;
        for _ in 0..3 {
            let b = plan(self, false)?;
            match self.commit(&b) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| NftError::encode("retries exhausted")).into())
    }

    /// A GET dump (`kind` = GETTABLE/GETCHAIN/GETRULE/...), optionally filtered by attributes
    /// (e.g. table and chain for GETRULE). Returns each message's body after the nfgenmsg, with
    /// the message family. Retries up to 5 times when the dump was interrupted.
    pub fn dump(&mut self, kind: u8, family: u8, filter: &[u8]) -> Result<DumpRows, NftError> {
        let mut last = None;
        for _ in 0..5 {
            match self.dump_once(kind, family, filter) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = Some(NftError::encode("dump interrupted 5 times")),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| NftError::encode("dump failed")))
    }

    fn dump_once(&mut self, kind: u8, family: u8, filter: &[u8]) -> Result<Option<DumpRows>, NftError> {
        self.dump_type_once(nft_type(kind), family, filter)
    }

    /// A dump of any nfnetlink message type (`subsys << 8 | msg`), e.g. ctnetlink.
    pub fn dump_type(&mut self, ty: u16, family: u8, filter: &[u8]) -> Result<DumpRows, NftError> {
        for _ in 0..5 {
            if let Some(v) = self.dump_type_once(ty, family, filter)? {
                return Ok(v);
            }
        }
        Err(NftError::encode("dump interrupted 5 times"))
    }

    /// Sends one non-batched request (e.g. a ctnetlink delete) and waits for its ACK.
    pub fn request(&mut self, ty: u16, family: u8, payload: &[u8], what: &str) -> Result<(), NftError> {
        let seq = self.next_seq(1);
        let req = encode_msg(ty, NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, payload);
        self.sock.send(&req, Msg::empty()).map_err(|e| NftError::io(what, &e))?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let len = match self.sock.recv(&mut buf[..], Msg::empty()) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::io(what, &e)),
            };
            if len == 0 {
                return Err(NftError::encode("netlink socket closed"));
            }
            for m in split_msgs(buf.get(..len).unwrap_or_default()) {
                if m.seq == seq && m.ty == NLMSG_ERROR {
                    let (err, ext) = parse_error(&m);
                    if err == 0 {
                        return Ok(());
                    }
                    return Err(NftError { errno: err.saturating_neg(), what: what.to_string(), ext_ack: ext });
                }
            }
        }
    }

    fn dump_type_once(&mut self, ty: u16, family: u8, filter: &[u8]) -> Result<Option<DumpRows>, NftError> {
        let kind = ty & 0xff;
        let seq = self.next_seq(1);
        let req = encode_msg(ty, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq, family, 0, filter);
        self.sock.send(&req, Msg::empty()).map_err(|e| NftError::io("send nftables dump request", &e))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let len = match self.sock.recv(&mut buf[..], Msg::empty()) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NftError::io("receive nftables dump", &e)),
            };
            if len == 0 {
                return Err(NftError::encode("netlink socket closed during dump"));
            }
            for m in split_msgs(buf.get(..len).unwrap_or_default()) {
                if m.seq != seq {
                    continue;
                }
                if m.flags & super::NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(if interrupted { None } else { Some(out) }),
                    NLMSG_ERROR => {
                        let (err, ext) = parse_error(&m);
                        if err == 0 {
                            continue;
                        }
                        let what = format!("dump (message type {kind})");
                        return Err(NftError { errno: err.saturating_neg(), what, ext_ack: ext });
                    }
                    _ => {
                        let fam = m.body.first().copied().unwrap_or(0);
                        out.push((fam, m.body.get(4..).unwrap_or_default().to_vec()));
                    }
                }
            }
        }
    }
}
