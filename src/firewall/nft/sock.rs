//! The NETLINK_NETFILTER connection: batch commit and GET dumps, over the shared netlink layer
//! ([`crate::netlink::socket::Conn`]: one socket type, one receive loop, one error type).

use super::{
    encode_msg, local_error, nft_type, Batch, NftError, ERR_PREFIX, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::netlink::socket::{Conn, Datagram, Kind, Proto};
use crate::netlink::wire;

pub use crate::netlink::wire::{parse_error, Nlmsg as RawMsg};

/// The messages of a datagram, collected ([`wire::split`] under its older name).
pub fn split_msgs(buf: &[u8]) -> Vec<RawMsg<'_>> {
    wire::split(buf).collect()
}

/// Dumped objects: (nfgen family, attributes).
pub type DumpRows = Vec<(u8, Vec<u8>)>;

/// A NETLINK_NETFILTER connection bound in the current network namespace.
pub struct NftSocket {
    conn: Conn,
}

/// Generation-guarded attempts of [`NftSocket::transact`] before it falls back to full plans.
pub const GUARDED_TRIES: usize = 8;

thread_local! {
    static CACHE: std::cell::RefCell<Option<((u64, u64), NftSocket)>> = const { std::cell::RefCell::new(None) };
    /// Whether CACHE was ever filled on this thread. A thread-local with a destructor (CACHE)
    /// registers one on first touch (a pthread key, and musl's allocator set up for std's list:
    /// six system calls); this one has none, so a run that never used nftables does not touch
    /// CACHE at exit.
    static FILLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
                        FILLED.with(|f| f.set(true));
                    }
                }
            });
        }
    }
}

/// Call once the plugin has answered, right before the process exits. The last close of a
/// NETLINK_NETFILTER socket runs nf_tables' NETLINK_URELEASE notifier, which flushes the
/// *global* destroy work, so it waits for the RCU grace period of any recent deleting commit
/// in the system: ours (5-20 ms), but also one made just before by another process (an
/// `iptables-restore` of the same plugin: a dump-only socket's close took 6.6 ms right after
/// one, `strace -T`). The kernel would make that close at process exit, inside the time the
/// runtime waits for the plugin, although every batch was committed and ACKed (the rules are in
/// or out of the ruleset) before the plugin answered; only the freeing of old objects is left.
/// So the calling thread's cached socket is always parked for the kernel's unix socket garbage
/// collector, whose worker makes the last close (`sys::detach`): no process is created, no
/// descriptor of the runtime is held, and the plugin's own close costs nothing.
pub fn release_at_exit() {
    if !FILLED.with(|f| f.get()) {
        return;
    }
    let cached = CACHE.with(|c| c.try_borrow_mut().ok().and_then(|mut slot| slot.take()));
    if let Some((_, s)) = cached {
        let Some(fd) = s.conn.raw_fd() else { return };
        if !crate::sys::detach::close_after_exit(fd, move || drop(s)) {
            tracing::debug!("nftables socket not parked: its close waited");
        }
    }
}

impl NftSocket {
    /// A socket for the calling thread's current network namespace, reused across calls.
    pub fn cached() -> Result<CachedSocket, NftError> {
        let ns = crate::sys::netns::current_id();
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
        let mut conn = Conn::open(Proto::Netfilter, ERR_PREFIX)
            .map_err(|e| NftError::io(ERR_PREFIX, "open netfilter netlink socket", &e))?;
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1);
        conn.seed(seed & 0x7fff_ffff);
        Ok(NftSocket { conn })
    }

    /// The current ruleset generation (NFT_MSG_GETGEN), to guard a batch planned from a dump.
    pub fn genid(&mut self) -> Result<u32, NftError> {
        let req = encode_msg(nft_type(super::msg::GETGEN), NLM_F_REQUEST | NLM_F_ACK, 0, 0, 0, &[]);
        let (replies, _) = self.conn.exchange(req, Kind::Get, "get nftables generation")?;
        replies
            .iter()
            .filter(|r| r.ty == nft_type(super::msg::NEWGEN))
            .find_map(|r| wire::find(r.payload.get(4..)?, super::NFTA_GEN_ID).and_then(wire::get_u32_be))
            .ok_or_else(|| local_error("no generation id in GETGEN reply"))
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
        let n = u32::try_from(batch.msgs.len()).map_err(|_| local_error("batch too large"))?;
        let seq = self.conn.next_seq(n + 2);
        let bytes = batch.encode_guarded(seq, genid)?;
        self.conn.send(&bytes, "send nftables batch")?;
        // The kernel processes the batch synchronously inside sendmsg, so every reply is queued
        // by now; drain without blocking and account for each inner message.
        let mut acked = vec![false; batch.msgs.len()];
        let mut first_err: Option<NftError> = None;
        while !acked.iter().all(|a| *a) {
            let data = match self.conn.recv(false, "receive nftables replies")? {
                Datagram::Data(d) => d,
                Datagram::Empty => break,
                Datagram::Truncated => {
                    // only an error reply can be this large (ACKs are small): its message is lost
                    first_err.get_or_insert_with(|| local_error("nftables reply larger than the receive buffer"));
                    continue;
                }
            };
            for m in wire::split(data) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let (err, ext) = parse_error(&m);
                // The whole batch refused at BEGIN (stale generation id): no other reply comes.
                if m.seq == seq && err != 0 {
                    let what = "nftables batch (generation changed since it was planned)";
                    return Err(NftError::reply(ERR_PREFIX, what, err.saturating_neg(), ext));
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
                    first_err = Some(NftError::reply(ERR_PREFIX, &what, err.saturating_neg(), ext));
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let missing = acked.iter().filter(|a| !**a).count();
        if missing > 0 {
            return Err(local_error(&format!(
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
        Err(last.unwrap_or_else(|| local_error("retries exhausted")).into())
    }

    /// A GET dump (`kind` = GETTABLE/GETCHAIN/GETRULE/...), optionally filtered by attributes
    /// (e.g. table and chain for GETRULE). Returns each message's body after the nfgenmsg, with
    /// the message family. A dump interrupted by a concurrent commit is asked again
    /// (`netlink::socket::Conn::dump`).
    pub fn dump(&mut self, kind: u8, family: u8, filter: &[u8]) -> Result<DumpRows, NftError> {
        self.dump_type(nft_type(kind), family, filter)
    }

    /// A dump of any nfnetlink message type (`subsys << 8 | msg`), e.g. ctnetlink.
    pub fn dump_type(&mut self, ty: u16, family: u8, filter: &[u8]) -> Result<DumpRows, NftError> {
        let what = format!("dump (message type {})", ty & 0xff);
        let req = encode_msg(ty, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, 0, family, 0, filter);
        let replies = self.conn.dump(&req, &what)?;
        Ok(replies
            .into_iter()
            .map(|r| (r.payload.first().copied().unwrap_or(0), r.payload.get(4..).unwrap_or_default().to_vec()))
            .collect())
    }

    /// Sends one non-batched request (e.g. a ctnetlink delete) and waits for its ACK.
    pub fn request(&mut self, ty: u16, family: u8, payload: &[u8], what: &str) -> Result<(), NftError> {
        let req = encode_msg(ty, NLM_F_REQUEST | NLM_F_ACK, 0, family, 0, payload);
        self.conn.exchange(req, Kind::Change, what)?;
        Ok(())
    }
}
