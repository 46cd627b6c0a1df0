//! The rtnetlink socket: sequence numbers, ACK/error handling with ext-ack text, dumps
//! retried when the kernel reports them interrupted.

use std::fmt;

use anyhow::Context;
use neli::consts::socket::{Msg as MsgFlags, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;
use nix::libc;

use super::consts::*;
use super::msg::{attrs, get_i32, get_str, get_u16, get_u32};
use crate::sys::netns::NetNs;

const RECV_BUF: usize = 32 * 1024;
const DUMP_TRIES: usize = 5;

/// A NETLINK_ROUTE socket, bound in the namespace it was opened in.
pub struct Netlink {
    sock: NlSocket,
    seq: u32,
    buf: Vec<u8>,
}

/// A kernel error reply: positive errno and a message (with the ext-ack text when sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: i32,
    pub msg: String,
}

impl NlError {
    pub fn new(errno: i32, ext: Option<&str>) -> NlError {
        let base = std::io::Error::from_raw_os_error(errno).to_string();
        let msg = match ext {
            Some(t) if !t.is_empty() => format!("{base}: {t}"),
            _ => base,
        };
        NlError { errno, msg }
    }
    pub fn is_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for NlError {}

/// Is `err` (anywhere in its chain) a netlink "not found" error?
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<NlError>().is_some_and(NlError::is_not_found)
}

/// Is `err` (anywhere in its chain) a netlink "already exists" error?
pub fn is_exists(err: &anyhow::Error) -> bool {
    err.downcast_ref::<NlError>().is_some_and(NlError::is_exists)
}

/// One message of a reply: its type and payload (after the nlmsghdr).
pub(crate) struct Reply {
    pub ty: u16,
    pub payload: Vec<u8>,
}

impl Netlink {
    /// A socket bound in the calling thread's current network namespace.
    pub fn new() -> anyhow::Result<Netlink> {
        let sock =
            NlSocket::connect(NlFamily::Route, None, Groups::empty()).context("failed to open netlink socket")?;
        if let Err(e) = sock.enable_ext_ack(true) {
            tracing::debug!("NETLINK_EXT_ACK unavailable: {e}");
        }
        // Strict checking lets the kernel filter dumps by the header's fields (an address dump
        // for one link instead of every address of every link: O(1) per ADD on a node with
        // thousands of pods). Kernels without it ignore the filter; callers filter again.
        if let Err(e) = sock.enable_strict_checking(true) {
            tracing::debug!("NETLINK_GET_STRICT_CHK unavailable: {e}");
        }
        Ok(Netlink { sock, seq: 0, buf: vec![0; RECV_BUF] })
    }

    /// A socket bound in `ns`: enters it just long enough to open the socket.
    pub fn in_netns(ns: &NetNs) -> anyhow::Result<Netlink> {
        ns.run(Netlink::new)
    }

    fn send(&mut self, mut req: Vec<u8>) -> anyhow::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        if let Some(b) = req.get_mut(8..12) {
            b.copy_from_slice(&seq.to_ne_bytes());
        }
        self.sock.send(&req, MsgFlags::empty()).context("netlink send failed")?;
        Ok(seq)
    }

    /// Send a request that asks for an ACK; return the replies that came before the ACK.
    pub(crate) fn request(&mut self, req: Vec<u8>) -> anyhow::Result<Vec<Reply>> {
        let seq = self.send(req)?;
        let (out, _) = self.collect(seq, false)?;
        Ok(out)
    }

    /// Send a request that must be acknowledged and has no other reply.
    pub(crate) fn ack(&mut self, req: Vec<u8>) -> anyhow::Result<()> {
        self.request(req).map(|_| ())
    }

    /// Run a dump request, retrying when the kernel marks it interrupted.
    pub(crate) fn dump(&mut self, req: Vec<u8>) -> anyhow::Result<Vec<Reply>> {
        for _ in 0..DUMP_TRIES {
            let seq = self.send(req.clone())?;
            let (out, intr) = self.collect(seq, true)?;
            if !intr {
                return Ok(out);
            }
            tracing::debug!("netlink dump interrupted, retrying");
        }
        Err(anyhow::Error::new(NlError::new(libc::EINTR, Some("dump interrupted repeatedly"))))
    }

    /// Read replies for `seq` until the ACK/error (or NLMSG_DONE for dumps).
    fn collect(&mut self, seq: u32, dump: bool) -> anyhow::Result<(Vec<Reply>, bool)> {
        let mut out = Vec::new();
        let mut intr = false;
        loop {
            // Peek at the datagram's real size first so a large one is never truncated.
            let (size, _) =
                self.sock.recv(&mut self.buf[..], MsgFlags::PEEK | MsgFlags::TRUNC).context("netlink recv failed")?;
            if size > self.buf.len() {
                self.buf.resize(size, 0);
            }
            let (n, _) = self.sock.recv(&mut self.buf[..], MsgFlags::empty()).context("netlink recv failed")?;
            let mut rest = self.buf.get(..n).unwrap_or(&[]);
            while rest.len() >= 16 {
                let Some((len, ty, flags, mseq)) = header(rest) else { break };
                let payload = rest.get(16..len).unwrap_or(&[]);
                rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
                if mseq != seq {
                    continue; // a late reply to an earlier request
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    intr = true;
                }
                match ty {
                    NLMSG_ERROR => {
                        let errno = get_i32(payload).unwrap_or(0);
                        if errno == 0 {
                            return Ok((out, intr));
                        }
                        let ext = ext_ack_msg(payload, flags);
                        return Err(anyhow::Error::new(NlError::new(-errno, ext.as_deref())));
                    }
                    NLMSG_DONE if dump => {
                        let errno = get_i32(payload).unwrap_or(0);
                        if errno < 0 {
                            return Err(anyhow::Error::new(NlError::new(-errno, None)));
                        }
                        return Ok((out, intr));
                    }
                    _ => out.push(Reply { ty, payload: payload.to_vec() }),
                }
            }
        }
    }
}

/// Parse a nlmsghdr: (length, type, flags, seq), when it fits in `b`.
fn header(b: &[u8]) -> Option<(usize, u16, u16, u32)> {
    let len = get_u32(b)? as usize;
    if len < 16 || len > b.len() {
        return None;
    }
    Some((len, get_u16(b.get(4..)?)?, get_u16(b.get(6..)?)?, get_u32(b.get(8..)?)?))
}

/// The NLMSGERR_ATTR_MSG text of an error reply, when the kernel sent one.
fn ext_ack_msg(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let orig_len = if flags & NLM_F_CAPPED != 0 { 16 } else { get_u32(payload.get(4..)?)? as usize };
    let tlvs = payload.get((4 + orig_len).div_ceil(4) * 4..)?;
    attrs(tlvs).find(|(t, _)| *t == NLMSGERR_ATTR_MSG).map(|(_, v)| get_str(v))
}
