//! The one netlink connection: neli's socket (protocol route or netfilter) behind a [`Transport`],
//! sequence numbers, the one receive loop, and request/ACK/dump handling with ext-ack text.
//! [`Netlink`] is the rtnetlink API on top; `firewall::nft::sock` is nf_tables' and ctnetlink's.
//!
//! Receiving: one `recvfrom(MSG_TRUNC)` per datagram into a buffer that fits what the kernel
//! sends (a dump skb is at most 32 KiB; error replies are capped to the request's header). When
//! a datagram is larger all the same, the buffer grows to its size and an idempotent request
//! (a GET or a dump) is asked again; a truncated reply to a change is an EMSGSIZE error.

use std::io;

use neli::consts::socket::{Msg as MsgFlags, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::wire::{self, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_DUMP_INTR};
use crate::sys::netns::NetNs;

pub use super::wire::NlError;

/// Initial receive buffer: the largest datagram the kernel builds for a dump (32 KiB).
const RECV_BUF: usize = 32 * 1024;
/// How long a dump is asked again while the kernel flags it interrupted, and the longest pause
/// between two tries (see [`Conn::dump`]).
const DUMP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);
const DUMP_PAUSE_MAX: std::time::Duration = std::time::Duration::from_millis(10);

/// Where requests go and replies come from: the kernel's socket, or a test's recording fake.
pub trait Transport: Send {
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Receive one datagram into `buf` and return its full length (larger than `buf.len()` when
    /// it was truncated). `wait` false: `Ok(None)` when nothing is queued.
    fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<Option<usize>>;
    /// The kernel socket's descriptor, if there is one (the fake has none).
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// The netlink protocols we open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Route,
    Netfilter,
}

/// neli's socket, bound in the calling thread's network namespace.
struct KernelSocket(NlSocket);

impl KernelSocket {
    fn open(proto: Proto) -> io::Result<KernelSocket> {
        let family = match proto {
            Proto::Route => NlFamily::Route,
            Proto::Netfilter => NlFamily::Netfilter,
        };
        let sock = NlSocket::connect(family, None, Groups::empty())?;
        // ext-ack gives the kernel's reason for a rejected request; best effort.
        if let Err(e) = sock.enable_ext_ack(true) {
            tracing::debug!("NETLINK_EXT_ACK unavailable: {e}");
        }
        match proto {
            // Strict checking lets the kernel filter dumps by the header's fields (an address
            // dump for one link instead of every address of every link: O(1) per ADD on a node
            // with thousands of pods). Kernels without it ignore the filter; callers filter again.
            Proto::Route => {
                if let Err(e) = sock.enable_strict_checking(true) {
                    tracing::debug!("NETLINK_GET_STRICT_CHK unavailable: {e}");
                }
            }
            // room for the ACKs of a large nftables batch
            Proto::Netfilter => {
                let _ = sock.set_recv_buffer_size(1 << 20);
            }
        }
        // error replies echo only the request's header, so every reply to a change is small
        if let Err(e) = crate::sys::sockopt::netlink_cap_ack(&sock) {
            tracing::debug!("NETLINK_CAP_ACK unavailable: {e}");
        }
        Ok(KernelSocket(sock))
    }
}

impl Transport for KernelSocket {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.send(buf, MsgFlags::empty()).map(|_| ())
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.0.as_raw_fd())
    }
    fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<Option<usize>> {
        let flags = if wait { MsgFlags::TRUNC } else { MsgFlags::TRUNC | MsgFlags::DONTWAIT };
        loop {
            match self.0.recv(&mut *buf, flags) {
                Ok((n, _)) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if !wait && e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

/// One message of a reply: its type, flags and payload (after the nlmsghdr).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub ty: u16,
    pub payload: Vec<u8>,
}

/// What a request is, for [`Conn::exchange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A change: its only reply is the ACK (or an error).
    Change,
    /// A GET of one object: replies, then the ACK. Asked again when a reply was truncated.
    Get,
    /// A dump: replies up to NLMSG_DONE (an ACK before it does not end it). Asked again when a
    /// reply was truncated.
    Dump,
}

/// What [`Conn::recv`] got.
pub(crate) enum Datagram<'a> {
    Data(&'a [u8]),
    /// Nothing queued (non-blocking receive).
    Empty,
    /// Larger than the buffer: lost; the buffer now fits it.
    Truncated,
}

/// A connection: transport, sequence numbers and the receive buffer.
pub struct Conn {
    t: Box<dyn Transport>,
    seq: u32,
    buf: Vec<u8>,
    /// Prefix of error messages that are not bare kernel replies ("netlink", "nftables").
    prefix: &'static str,
}

impl Conn {
    /// A socket of `proto` in the calling thread's network namespace (or, in unit tests, the
    /// recording fake a test installed).
    pub fn open(proto: Proto, prefix: &'static str) -> io::Result<Conn> {
        #[cfg(test)]
        if let Some(t) = super::fake::transport(proto) {
            return Ok(Conn::with_transport(t, prefix));
        }
        Ok(Conn::with_transport(Box::new(KernelSocket::open(proto)?), prefix))
    }

    /// The kernel socket's descriptor (`None` for a fake transport).
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.t.raw_fd()
    }

    pub fn with_transport(t: Box<dyn Transport>, prefix: &'static str) -> Conn {
        Conn { t, seq: 0, buf: vec![0; RECV_BUF], prefix }
    }

    /// Start the sequence at `seq` (nftables seeds it from the clock, as nft does).
    pub fn seed(&mut self, seq: u32) {
        self.seq = seq;
    }

    /// Reserve `n` consecutive sequence numbers; returns the first.
    pub fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(n);
        s
    }

    /// Send finished bytes (one message or a batch).
    pub fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), NlError> {
        if bytes.len() < NLMSG_HDRLEN {
            return Err(NlError::reply(self.prefix, what, wire::EMSGSIZE, Some("request too long to encode".into())));
        }
        self.t.send(bytes).map_err(|e| NlError::io(self.prefix, what, &e))
    }

    /// The one receive loop: one datagram per call.
    pub(crate) fn recv(&mut self, wait: bool, what: &str) -> Result<Datagram<'_>, NlError> {
        let n = match self.t.recv(&mut self.buf, wait) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(Datagram::Empty),
            Err(e) => return Err(NlError::io(self.prefix, what, &e)),
        };
        if n == 0 {
            return Err(NlError::local(self.prefix, &format!("{what}: netlink socket closed")));
        }
        if n > self.buf.len() {
            tracing::debug!(size = n, "netlink reply larger than the receive buffer; growing it");
            self.buf.resize(n, 0);
            return Ok(Datagram::Truncated);
        }
        Ok(Datagram::Data(self.buf.get(..n).unwrap_or_default()))
    }

    /// Send one request (its seq stamped here) and collect the replies to it up to the ACK (or
    /// NLMSG_DONE for a dump). Returns the replies and whether the kernel flagged a dump
    /// interrupted.
    pub(crate) fn exchange(&mut self, mut req: Vec<u8>, kind: Kind, what: &str) -> Result<(Vec<Reply>, bool), NlError> {
        loop {
            let seq = self.next_seq(1);
            wire::set_seq(&mut req, seq);
            self.send(&req, what)?;
            match self.collect(seq, kind == Kind::Dump, what)? {
                Some(r) => return Ok(r),
                None if kind != Kind::Change => continue,
                None => {
                    let ext = Some("reply larger than the receive buffer".to_string());
                    return Err(NlError::reply(self.prefix, what, wire::EMSGSIZE, ext));
                }
            }
        }
    }

    /// Run a dump and return a whole one. The kernel flags a dump interrupted when the table
    /// changed between two of its parts (a commit of another process, between two receives):
    /// the parts may then disagree, so the dump is asked again, as `nft` and `ip` do, at once
    /// for the first tries and then after pauses growing to 10 ms (concurrent writers commit in
    /// bursts), until [`DUMP_DEADLINE`]; then it fails with EINTR. Every dump goes through here.
    pub(crate) fn dump(&mut self, req: &[u8], what: &str) -> Result<Vec<Reply>, NlError> {
        self.dump_within(req, what, DUMP_DEADLINE)
    }

    fn dump_within(&mut self, req: &[u8], what: &str, deadline: std::time::Duration) -> Result<Vec<Reply>, NlError> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::ZERO;
        let mut tries = 0u32;
        loop {
            tries = tries.saturating_add(1);
            let (out, intr) = self.exchange(req.to_vec(), Kind::Dump, what)?;
            if !intr {
                return Ok(out);
            }
            if start.elapsed() >= deadline {
                let ext = Some(format!("dump interrupted {tries} times in {} ms", start.elapsed().as_millis()));
                return Err(kernel_error(self.prefix, what, wire::EINTR, ext));
            }
            tracing::debug!(tries, "{what}: dump interrupted by a concurrent change, asking again");
            if tries >= 3 {
                pause = (pause * 2).clamp(std::time::Duration::from_millis(1), DUMP_PAUSE_MAX);
                std::thread::sleep(pause);
            }
        }
    }

    /// Replies for `seq` until the ACK/error or NLMSG_DONE; None when one was truncated.
    fn collect(&mut self, seq: u32, dump: bool, what: &str) -> Result<Option<(Vec<Reply>, bool)>, NlError> {
        let prefix = self.prefix;
        let mut out = Vec::new();
        let mut intr = false;
        loop {
            let data = match self.recv(true, what)? {
                Datagram::Data(d) => d,
                Datagram::Empty => continue,
                Datagram::Truncated => {
                    // Drop whatever else is queued for this request (the kernel builds the next
                    // part of a dump inside each receive, so an empty queue means the end). A
                    // truncated reply to a change can only be an error: ACKs are small.
                    while let Datagram::Data(_) | Datagram::Truncated = self.recv(false, what)? {}
                    return Ok(None);
                }
            };
            for m in wire::split(data) {
                if m.seq != seq {
                    continue; // a late reply to an earlier request
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    intr = true;
                }
                match m.ty {
                    NLMSG_ERROR => {
                        let (err, ext) = wire::parse_error(&m);
                        if err == 0 && dump {
                            continue;
                        }
                        if err == 0 {
                            return Ok(Some((out, intr)));
                        }
                        return Err(kernel_error(prefix, what, -err, ext));
                    }
                    NLMSG_DONE => {
                        let err = wire::get_i32(m.body).unwrap_or(0);
                        if err < 0 {
                            return Err(kernel_error(prefix, what, -err, wire::ext_ack(&m)));
                        }
                        return Ok(Some((out, intr)));
                    }
                    _ => out.push(Reply { ty: m.ty, payload: m.body.to_vec() }),
                }
            }
        }
    }
}

/// rtnetlink errors stay bare kernel replies (callers add context); other protocols name the
/// request.
fn kernel_error(prefix: &str, what: &str, errno: i32, ext: Option<String>) -> NlError {
    if prefix == RTNL {
        NlError::new(errno, ext.as_deref())
    } else {
        NlError::reply(prefix, what, errno, ext)
    }
}

const RTNL: &str = "netlink";

/// A NETLINK_ROUTE connection, bound in the namespace it was opened in.
pub struct Netlink {
    conn: Conn,
}

/// Is `err` (anywhere in its chain) a netlink "not found" error?
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<NlError>().is_some_and(NlError::is_not_found)
}

/// Is this one error (of a chain) a transient netlink failure ([`NlError::is_transient`])? The
/// binary's entry registers it as the CNI layer's test for code 11.
pub fn is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<NlError>().is_some_and(NlError::is_transient)
}

/// Is `err` (anywhere in its chain) the kernel's "exchange full" (a bridge at its port limit)?
pub fn is_full(err: &anyhow::Error) -> bool {
    err.downcast_ref::<NlError>().is_some_and(|n| n.errno == super::wire::EXFULL)
}

/// Is `err` (anywhere in its chain) a netlink "already exists" error?
pub fn is_exists(err: &anyhow::Error) -> bool {
    err.downcast_ref::<NlError>().is_some_and(NlError::is_exists)
}

/// A kernel's netlink error in the words of the reference's netlink library, for a plugin that
/// composes the reference's message around it: the errno as Go prints a `syscall.Errno`
/// (`operation not supported`, `file exists`) in place of our description of the request, with
/// the kernel's ext-ack text appended when it gave one (`: <text>`, which the reference's library
/// does not ask for). The error stays a [`NlError`] with the same errno ([`is_exists`],
/// [`is_not_found`], code 11 for a transient one); any other error is returned as it is.
pub fn go_words(err: anyhow::Error) -> anyhow::Error {
    match err.downcast_ref::<NlError>() {
        Some(n) if n.errno > 0 => {
            let mut msg = crate::sys::go_errno(&io::Error::from_raw_os_error(n.errno));
            if let Some(ext) = n.ext_ack.as_deref().filter(|x| !x.is_empty()) {
                msg.push_str(": ");
                msg.push_str(ext);
            }
            anyhow::Error::new(NlError { msg, ..n.clone() })
        }
        _ => err,
    }
}

/// [`go_words`] under the reference's `fmt.Errorf("<what>: %v", err)`: `<what>: <errno>[: <ext>]`.
pub fn go_context(err: anyhow::Error, what: &str) -> anyhow::Error {
    go_words(err).context(what.to_string())
}

impl Netlink {
    /// A socket bound in the calling thread's current network namespace.
    pub fn new() -> anyhow::Result<Netlink> {
        use anyhow::Context;
        let conn = Conn::open(Proto::Route, RTNL).context("failed to open netlink socket")?;
        Ok(Netlink { conn })
    }

    /// A socket bound in `ns`: enters it just long enough to open the socket.
    pub fn in_netns(ns: &NetNs) -> anyhow::Result<Netlink> {
        ns.run(Netlink::new)
    }

    /// Send a GET that asks for an ACK; return the replies that came before the ACK.
    pub(crate) fn request(&mut self, req: Vec<u8>) -> anyhow::Result<Vec<Reply>> {
        Ok(self.conn.exchange(req, Kind::Get, "request")?.0)
    }

    /// Send a change that must be acknowledged and has no other reply.
    pub(crate) fn ack(&mut self, req: Vec<u8>) -> anyhow::Result<()> {
        self.conn.exchange(req, Kind::Change, "request")?;
        Ok(())
    }

    /// Send a change that must be acknowledged; return what the kernel sent before the ACK (the
    /// echo of an NLM_F_ECHO request; nothing on kernels that do not echo it).
    pub(crate) fn change(&mut self, req: Vec<u8>) -> anyhow::Result<Vec<Reply>> {
        Ok(self.conn.exchange(req, Kind::Change, "request")?.0)
    }

    /// Run a dump request; a dump the kernel flags interrupted is asked again ([`Conn::dump`]).
    pub(crate) fn dump(&mut self, req: Vec<u8>) -> anyhow::Result<Vec<Reply>> {
        Ok(self.conn.dump(&req, "dump")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Answers every request with `reply(seq)` (datagrams); counts sends and receives.
    struct Scripted {
        reply: fn(u32) -> Vec<Vec<u8>>,
        queue: VecDeque<Vec<u8>>,
        calls: Arc<Mutex<(usize, usize)>>,
    }

    impl Transport for Scripted {
        fn send(&mut self, buf: &[u8]) -> io::Result<()> {
            self.calls.lock().unwrap().0 += 1;
            let seq = wire::split(buf).next().map_or(0, |m| m.seq);
            self.queue.extend((self.reply)(seq));
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], wait: bool) -> io::Result<Option<usize>> {
            self.calls.lock().unwrap().1 += 1;
            match self.queue.pop_front() {
                Some(d) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    Ok(Some(d.len()))
                }
                None if wait => Err(io::Error::other("would block")),
                None => Ok(None),
            }
        }
    }

    fn conn(reply: fn(u32) -> Vec<Vec<u8>>) -> (Conn, Arc<Mutex<(usize, usize)>>) {
        let calls = Arc::new(Mutex::new((0, 0)));
        let t = Scripted { reply, queue: VecDeque::new(), calls: calls.clone() };
        (Conn::with_transport(Box::new(t), RTNL), calls)
    }

    fn req() -> Vec<u8> {
        wire::message(18, wire::NLM_F_REQUEST, 0, &[0; 16], &[])
    }

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&wire::header(16, 0, 0, seq));
        wire::message(NLMSG_ERROR, wire::NLM_F_CAPPED, seq, &body, &[])
    }

    /// A dump whose first datagram is 40 KiB (more than the 32 KiB buffer), then NLMSG_DONE.
    fn big_dump(seq: u32) -> Vec<Vec<u8>> {
        let mut d = wire::message(16, wire::NLM_F_MULTI, seq, &[0; 16], &vec![0; 40 * 1024]);
        d.extend(wire::message(NLMSG_DONE, wire::NLM_F_MULTI, seq, &0i32.to_ne_bytes(), &[]));
        vec![d]
    }

    #[test]
    fn one_recv_per_datagram() {
        let (mut c, calls) = conn(|seq| vec![wire::message(16, 0, seq, &[0; 16], &[]), ack(seq, 0)]);
        let (replies, intr) = c.exchange(req(), Kind::Get, "get").unwrap();
        assert_eq!((replies.len(), intr), (1, false));
        assert_eq!(*calls.lock().unwrap(), (1, 2)); // no peek before each read
    }

    #[test]
    fn truncated_dump_is_asked_again_with_a_buffer_that_fits() {
        let (mut c, calls) = conn(big_dump);
        let (replies, _) = c.exchange(req(), Kind::Dump, "dump").unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].payload.len(), 16 + 40 * 1024);
        // first try: the truncated datagram, then an empty queue; second try: it fits
        assert_eq!(*calls.lock().unwrap(), (2, 3));
    }

    /// One dump part and NLMSG_DONE for `seq`, flagged interrupted or not.
    fn dump_part(seq: u32, interrupted: bool) -> Vec<Vec<u8>> {
        let flags = wire::NLM_F_MULTI | if interrupted { NLM_F_DUMP_INTR } else { 0 };
        let mut d = wire::message(16, flags, seq, &[0; 16], &[]);
        d.extend(wire::message(NLMSG_DONE, flags, seq, &0i32.to_ne_bytes(), &[]));
        vec![d]
    }

    fn dump_interrupted_7_times(seq: u32) -> Vec<Vec<u8>> {
        dump_part(seq, seq <= 7)
    }

    /// Under a burst of concurrent commits a dump can be interrupted many times in a row (the
    /// stress test's GC saw 5 and failed): it is asked again until whole.
    #[test]
    fn interrupted_dump_is_asked_again_until_whole() {
        let (mut c, calls) = conn(dump_interrupted_7_times);
        let replies = c.dump(&req(), "dump").unwrap();
        assert_eq!(replies.len(), 1);
        assert_eq!(calls.lock().unwrap().0, 8, "seven interrupted tries, then the whole dump");
    }

    /// A dump that is never whole fails with EINTR once the deadline has passed.
    #[test]
    fn dump_interrupted_past_the_deadline_is_eintr() {
        fn always(seq: u32) -> Vec<Vec<u8>> {
            dump_part(seq, true)
        }
        let (mut c, calls) = conn(always);
        let t = std::time::Instant::now();
        let e = c.dump_within(&req(), "dump", std::time::Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.errno, wire::EINTR);
        assert!(t.elapsed() >= std::time::Duration::from_millis(30));
        assert!(calls.lock().unwrap().0 > 3, "asked again before giving up");
        // the runtime is told to try again later (code 11), once the binary's entry has
        // registered netlink's test, as `cli::main` does
        crate::cni::error::add_transient_test(is_transient);
        let c = crate::cni::CniError::from_anyhow(&anyhow::Error::new(e).context("failed to list links"));
        assert_eq!(c.code, crate::cni::code::TRY_AGAIN, "{c:?}");
        assert!(c.msg.starts_with("failed to list links: "), "{c:?}");
        // a kernel refusal is not transient
        let refused = anyhow::Error::new(NlError::new(22, None));
        assert_eq!(crate::cni::CniError::from_anyhow(&refused).code, crate::cni::code::INTERNAL);
    }

    /// A plugin composes the reference's message around the kernel's errno in Go's words; what
    /// the error is stays readable (exists, transient), and a non-kernel error is kept whole.
    #[test]
    fn go_words_keep_the_errno_and_the_ext_ack_and_drop_our_wording() {
        let nl =
            |errno, ext| anyhow::Error::new(NlError::new(errno, ext)).context("failed to create veth pair \"a\"/\"b\"");
        let e = go_words(nl(95, Some("Unknown device type"))).context("could not add \"br0\"");
        assert_eq!(format!("{e:#}"), "could not add \"br0\": operation not supported: Unknown device type");
        let e = go_words(nl(17, None));
        assert_eq!((format!("{e:#}"), is_exists(&e)), ("file exists".to_string(), true));
        crate::cni::error::add_transient_test(is_transient);
        let e = go_words(nl(11, None)).context("failed to make veth pair");
        let c = crate::cni::CniError::from_anyhow(&e);
        assert_eq!(
            (c.code, c.msg.as_str()),
            (crate::cni::code::TRY_AGAIN, "failed to make veth pair: resource temporarily unavailable")
        );
        let other = go_words(anyhow::anyhow!("no such link").context("lookup"));
        assert_eq!(format!("{other:#}"), "lookup: no such link");
    }

    #[test]
    fn truncated_reply_to_a_change_is_an_error_not_a_resend() {
        let (mut c, calls) = conn(big_dump);
        let e = c.exchange(req(), Kind::Change, "change").unwrap_err();
        assert_eq!(e.errno, wire::EMSGSIZE);
        assert_eq!(calls.lock().unwrap().0, 1);
    }

    #[test]
    fn errors_carry_errno_and_refuse_unencodable_requests() {
        let (mut c, _) = conn(|seq| vec![ack(seq, 17)]);
        let e = c.exchange(req(), Kind::Change, "add").unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert_eq!(e.msg, NlError::new(17, None).msg);
        let e = c.exchange(Vec::new(), Kind::Change, "add").unwrap_err();
        assert_eq!(e.errno, wire::EMSGSIZE);
    }

    /// The reference's `fmt.Errorf("create qdisc: %v", err)` of a netlink errno: Go's text, the
    /// ext-ack after it, our own context dropped; the errno still answers the tests on it.
    #[test]
    fn go_context_words_a_kernel_error_as_the_reference() {
        use anyhow::Context;
        let kernel = |errno, ext: Option<&str>| {
            Err::<(), _>(anyhow::Error::new(NlError::new(errno, ext))).context("failed to add tbf qdisc to link 3")
        };
        let e = go_context(kernel(22, None).unwrap_err(), "create qdisc");
        assert_eq!(format!("{e:#}"), "create qdisc: invalid argument");
        let e =
            go_context(kernel(101, Some("Nexthop has invalid gateway")).unwrap_err(), "Failed to add default route");
        assert_eq!(
            format!("{e:#}"),
            "Failed to add default route: network is unreachable: Nexthop has invalid gateway"
        );
        let e = go_context(kernel(2, None).unwrap_err(), "create ifb qdisc: create qdisc");
        assert!(is_not_found(&e), "{e:#}");
        assert_eq!(format!("{e:#}"), "create ifb qdisc: create qdisc: no such file or directory");
        assert!(is_transient(go_context(kernel(4, None).unwrap_err(), "x").root_cause()));
        // not a kernel reply: the chain stays, under the context
        let e = go_context(anyhow::anyhow!("socket closed"), "adding link");
        assert_eq!(format!("{e:#}"), "adding link: socket closed");
    }
}
