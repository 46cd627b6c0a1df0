//! The netlink wire format, shared by every protocol we speak (rtnetlink in this module's
//! siblings, nf_tables and ctnetlink in `firewall/`): the message header and its flags, the one
//! attribute writer (native and big-endian values, nests), the one attribute reader, the datagram
//! splitter, the NLMSG_ERROR/ext-ack parser and the one error type, which carries the kernel's
//! message. Plain byte work, no socket: every function here is tested without root.

use std::fmt;
use std::net::IpAddr;

// ---- header and flags (linux/netlink.h) --------------------------------------------------------

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ECHO: u16 = 0x8;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
// GET requests
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
// NEW requests
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
// NLMSG_ERROR replies
/// The echoed request is only its header (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
/// Ext-ack TLVs follow the echoed request (NETLINK_EXT_ACK).
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// NLMSGERR_ATTR_MSG: the kernel's text for a rejected request.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

// attribute type bits
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

const ALIGN: usize = 4;

/// `n` rounded up to the netlink alignment (4).
pub fn align4(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

fn pad(buf: &mut Vec<u8>) {
    buf.resize(align4(buf.len()), 0);
}

// ---- the error type ----------------------------------------------------------------------------

/// A netlink failure: the kernel's errno (positive; 0 when not a kernel reply, such as an encoding
/// or protocol failure), what was asked, the kernel's ext-ack text, and the rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: i32,
    /// The request that failed ("add rule inet t c"); empty when the caller adds context itself.
    pub what: String,
    /// NLMSGERR_ATTR_MSG of the reply, when the kernel sent one.
    pub ext_ack: Option<String>,
    /// The whole message, as displayed.
    pub msg: String,
}

mod errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
    pub const EMSGSIZE: i32 = 90;
    pub const ENOBUFS: i32 = 105;
    pub const ERESTART: i32 = 85;
    pub const EADDRNOTAVAIL: i32 = 99;
    /// a bridge that has the most ports the kernel allows (BR_MAX_PORTS)
    pub const EXFULL: i32 = 54;
    /// the kernel's internal "operation not supported" that some drivers let out (not EOPNOTSUPP)
    pub const ENOTSUPP: i32 = 524;
}
pub use errno::{EINTR, EINVAL, EMSGSIZE, EXFULL};

/// The text of a kernel errno, as std renders it. musl's strerror has no text for some that
/// netlink returns ("No error information" for EXFULL, a full bridge): those get their names.
pub fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    if !text.starts_with("No error information") {
        return text;
    }
    let name = match errno {
        errno::EXFULL => "Exchange full",
        errno::ENOTSUPP => "Operation not supported (ENOTSUPP)",
        _ => return text,
    };
    format!("{name} (os error {errno})")
}

impl NlError {
    /// A kernel error reply with no further context: `strerror[: ext-ack]`.
    pub fn new(errno: i32, ext: Option<&str>) -> NlError {
        let base = strerror(errno);
        let msg = match ext {
            Some(t) if !t.is_empty() => format!("{base}: {t}"),
            _ => base,
        };
        NlError { errno, what: String::new(), ext_ack: ext.map(str::to_string), msg }
    }

    /// A kernel error reply to `what`, rendered `prefix: what: strerror (errno N)[: ext]`
    /// (or `prefix: what[: ext]` when `errno` is 0).
    pub fn reply(prefix: &str, what: &str, errno: i32, ext: Option<String>) -> NlError {
        let mut msg = format!("{prefix}: {what}");
        if errno != 0 {
            msg.push_str(&format!(": {} (errno {errno})", strerror(errno)));
        }
        if let Some(a) = &ext {
            msg.push_str(&format!(": {a}"));
        }
        NlError { errno, what: what.to_string(), ext_ack: ext, msg }
    }

    /// A failure that is not a kernel reply (errno 0): encoding, protocol, closed socket.
    pub fn local(prefix: &str, what: &str) -> NlError {
        NlError::reply(prefix, what, 0, None)
    }

    /// A failed socket call.
    pub fn io(prefix: &str, what: &str, e: &std::io::Error) -> NlError {
        let errno = e.raw_os_error().unwrap_or(0);
        NlError { errno, what: format!("{what}: {e}"), ext_ack: None, msg: format!("{prefix}: {what}: {e}") }
    }

    pub fn is_exists(&self) -> bool {
        self.errno == errno::EEXIST
    }

    /// The object named by the request is not there (link, address, route, table, chain, ...).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, errno::ENODEV | errno::ENOENT | errno::ESRCH | errno::EADDRNOTAVAIL)
    }

    /// A condition that clears up by itself, so that the runtime should try again later (CNI
    /// code 11): a dump the kernel kept interrupting past [`super::socket`]'s deadline (EINTR),
    /// EAGAIN, or a socket whose receive queue overflowed (ENOBUFS).
    pub fn is_transient(&self) -> bool {
        matches!(self.errno, errno::EINTR | errno::EAGAIN | errno::ENOBUFS)
    }

    /// An nf_tables batch carried a generation id that is no longer current (nothing applied).
    pub fn is_stale(&self) -> bool {
        self.errno == errno::ERESTART
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for NlError {}

// ---- the attribute writer ----------------------------------------------------------------------

/// Writes netlink attributes (4-byte aligned). An attribute or nest that does not fit the u16
/// length field poisons the writer; [`Attrs::finish`] then reports it.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    buf: Vec<u8>,
    too_long: bool,
}

/// An open nested attribute of [`Attrs::begin`]; close it with [`Attrs::end`].
#[must_use]
#[derive(Debug, Clone, Copy)]
pub struct Nest(usize);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let Ok(len) = u16::try_from(4 + data.len()) else {
            self.too_long = true;
            return self;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }
    pub fn put_u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.put(ty, &[v])
    }
    pub fn put_u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }
    pub fn put_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }
    /// Network byte order, as nf_tables and ctnetlink want their integers.
    pub fn put_u16_be(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }
    pub fn put_u32_be(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }
    pub fn put_u64_be(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }
    /// A NUL-terminated string, as the kernel and iproute2/nft send names.
    pub fn put_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v)
    }
    /// 4 or 16 address bytes.
    pub fn put_ip(&mut self, ty: u16, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.put(ty, &a.octets()),
            IpAddr::V6(a) => self.put(ty, &a.octets()),
        }
    }
    /// Raw bytes, padded (a struct inside a nest, such as the veth peer's ifinfomsg).
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }

    /// Open a nested attribute. `flag` sets NLA_F_NESTED (nf_tables requires it; iproute2 sets
    /// it only on some rtnetlink nests, and the golden tests keep its choice).
    pub fn begin(&mut self, ty: u16, flag: bool) -> Nest {
        let at = self.buf.len();
        let ty = if flag { ty | NLA_F_NESTED } else { ty };
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        Nest(at)
    }

    /// Close a nest: its length is everything written since [`Attrs::begin`].
    pub fn end(&mut self, nest: Nest) -> &mut Self {
        let Ok(len) = u16::try_from(self.buf.len().saturating_sub(nest.0)) else {
            self.too_long = true;
            return self;
        };
        if let Some(b) = self.buf.get_mut(nest.0..nest.0 + 2) {
            b.copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// A nested attribute with NLA_F_NESTED set, filled by `f`.
    pub fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let n = self.begin(ty, true);
        f(self);
        self.end(n)
    }

    /// The attributes, or an error when one did not fit its length field.
    pub fn finish(self) -> Result<Vec<u8>, NlError> {
        if self.too_long {
            return Err(NlError::local("netlink", "attribute longer than 65535 bytes"));
        }
        Ok(self.buf)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A whole request under construction: nlmsghdr (seq and pid 0: the socket stamps the sequence
/// number), the family header, then attributes written through `Deref` to [`Attrs`].
#[derive(Debug, Clone)]
pub struct Msg {
    attrs: Attrs,
}

impl Msg {
    pub fn new(ty: u16, flags: u16, family_hdr: &[u8]) -> Msg {
        let mut attrs = Attrs { buf: Vec::with_capacity(128), too_long: false };
        attrs.buf.extend_from_slice(&header(0, ty, flags, 0));
        attrs.raw(family_hdr);
        Msg { attrs }
    }

    /// The finished message (length filled in). A message with an attribute too long to encode
    /// comes back empty, which [`crate::netlink::socket`] refuses to send (EMSGSIZE).
    pub fn finish(self) -> Vec<u8> {
        let Attrs { mut buf, too_long } = self.attrs;
        let Ok(len) = u32::try_from(buf.len()) else { return Vec::new() };
        if too_long {
            return Vec::new();
        }
        if let Some(b) = buf.get_mut(0..4) {
            b.copy_from_slice(&len.to_ne_bytes());
        }
        buf
    }
}

impl std::ops::Deref for Msg {
    type Target = Attrs;
    fn deref(&self) -> &Attrs {
        &self.attrs
    }
}

impl std::ops::DerefMut for Msg {
    fn deref_mut(&mut self) -> &mut Attrs {
        &mut self.attrs
    }
}

/// A struct nlmsghdr (pid 0).
pub fn header(len: u32, ty: u16, flags: u16, seq: u32) -> [u8; NLMSG_HDRLEN] {
    let mut h = [0u8; NLMSG_HDRLEN];
    h[0..4].copy_from_slice(&len.to_ne_bytes());
    h[4..6].copy_from_slice(&ty.to_ne_bytes());
    h[6..8].copy_from_slice(&flags.to_ne_bytes());
    h[8..12].copy_from_slice(&seq.to_ne_bytes());
    h
}

/// One complete message: header, family header, attributes (padded to 4).
pub fn message(ty: u16, flags: u16, seq: u32, family_hdr: &[u8], attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + family_hdr.len() + attrs.len();
    let mut v = Vec::with_capacity(align4(len));
    v.extend_from_slice(&header(u32::try_from(len).unwrap_or(u32::MAX), ty, flags, seq));
    v.extend_from_slice(family_hdr);
    v.extend_from_slice(attrs);
    pad(&mut v);
    v
}

/// Write `seq` into a finished message's header.
pub fn set_seq(msg: &mut [u8], seq: u32) {
    if let Some(b) = msg.get_mut(8..12) {
        b.copy_from_slice(&seq.to_ne_bytes());
    }
}

/// Add `flags` to a built message's header.
pub fn add_flags(msg: &mut [u8], flags: u16) {
    if let Some(b) = msg.get_mut(6..8) {
        let f = u16::from_ne_bytes([b[0], b[1]]) | flags;
        b.copy_from_slice(&f.to_ne_bytes());
    }
}

// ---- the attribute reader ----------------------------------------------------------------------

/// Iterate the attributes in `buf`: yields (type without flag bits, payload). Stops at the first
/// malformed attribute (never panics).
pub fn attrs(buf: &[u8]) -> AttrIter<'_> {
    AttrIter { buf }
}

#[derive(Debug, Clone)]
pub struct AttrIter<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let len = usize::from(get_u16(self.buf)?);
        let ty = get_u16(self.buf.get(2..)?)?;
        if len < 4 {
            self.buf = &[];
            return None;
        }
        let Some(data) = self.buf.get(4..len) else {
            self.buf = &[];
            return None;
        };
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some((ty & NLA_TYPE_MASK, data))
    }
}

/// The payload of the first attribute of type `ty` in `buf`.
pub fn find(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

pub fn get_u8(b: &[u8]) -> Option<u8> {
    b.first().copied()
}
pub fn get_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?))
}
pub fn get_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}
pub fn get_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}
pub fn get_u16_be(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(0..2)?.try_into().ok()?))
}
pub fn get_u32_be(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(0..4)?.try_into().ok()?))
}
pub fn get_u64_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(0..8)?.try_into().ok()?))
}

/// A string attribute, without its trailing NUL.
pub fn get_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or(b)).into_owned()
}

pub fn get_ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

// ---- the splitter ------------------------------------------------------------------------------

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nlmsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte header (family header and attributes).
    pub body: &'a [u8],
}

/// Split a datagram into its messages; a malformed tail ends the iteration (never panics).
pub fn split(buf: &[u8]) -> Split<'_> {
    Split { buf }
}

#[derive(Debug, Clone)]
pub struct Split<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Split<'a> {
    type Item = Nlmsg<'a>;
    fn next(&mut self) -> Option<Nlmsg<'a>> {
        let b = self.buf;
        let len = get_u32(b)? as usize;
        let (Some(body), true) = (b.get(NLMSG_HDRLEN..len), len >= NLMSG_HDRLEN) else {
            self.buf = &[];
            return None;
        };
        let m = Nlmsg { ty: get_u16(b.get(4..)?)?, flags: get_u16(b.get(6..)?)?, seq: get_u32(b.get(8..)?)?, body };
        self.buf = b.get(align4(len)..).unwrap_or(&[]);
        Some(m)
    }
}

// ---- NLMSG_ERROR and ext-ack -------------------------------------------------------------------

/// An NLMSG_ERROR message: (0 for an ACK or a negative errno, the ext-ack text if any). A body
/// too short to hold the error code is an EINVAL error, never an ACK.
pub fn parse_error(m: &Nlmsg) -> (i32, Option<String>) {
    let Some(err) = get_i32(m.body) else { return (-EINVAL, None) };
    (err, ext_ack(m))
}

/// NLMSGERR_ATTR_MSG of an error reply: the TLVs follow the echoed request, which is only its
/// header when the reply is capped.
pub fn ext_ack(m: &Nlmsg) -> Option<String> {
    if m.flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if m.flags & NLM_F_CAPPED != 0 { NLMSG_HDRLEN } else { get_u32(m.body.get(4..)?)? as usize };
    let tlvs = m.body.get(4 + align4(echoed)..)?;
    find(tlvs, NLMSGERR_ATTR_MSG).map(get_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_nests_and_byte_orders() {
        let mut a = Attrs::new();
        a.put_u16_be(1, 0x0102).put_u32(2, 7).put_str(3, "ab");
        a.nested(4, |n| {
            n.put_u64_be(1, 9);
        });
        let t = a.begin(5, false);
        a.put_u8(1, 3).end(t);
        let b = a.finish().unwrap();
        let got: Vec<_> = attrs(&b).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(got[0], (1, vec![1, 2]));
        assert_eq!(get_u32(&got[1].1), Some(7));
        assert_eq!(get_str(&got[2].1), "ab");
        assert_eq!(got[3].0, 4); // NLA_F_NESTED masked off
        assert_eq!(get_u64_be(find(&got[3].1, 1).unwrap()), Some(9));
        assert_eq!(find(&got[4].1, 1), Some(&[3u8][..]));
        assert_eq!(u16::from_ne_bytes([b[b.len() - 10], b[b.len() - 9]]), 5); // no flag on type 5
        let mut big = Attrs::new();
        big.put(1, &vec![0; 70_000]);
        assert!(big.finish().is_err());
        let mut m = Msg::new(20, NLM_F_REQUEST, &[0; 8]);
        m.put(1, &vec![0; 70_000]);
        assert!(m.finish().is_empty());
    }

    #[test]
    fn reader_and_splitter_stop_on_garbage() {
        assert_eq!(attrs(&[3, 0, 1, 0, 9]).count(), 0);
        assert_eq!(attrs(&[8, 0, 1, 0, 1, 2]).count(), 0);
        let mut two = message(16, NLM_F_MULTI, 5, &[1, 2], &[]);
        two.extend(message(NLMSG_DONE, 0, 5, &[0; 4], &[]));
        let ms: Vec<_> = split(&two).collect();
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[0].ty, ms[0].flags, ms[0].seq, ms[0].body), (16, NLM_F_MULTI, 5, &[1u8, 2][..]));
        two.extend([40, 0, 0, 0, 1]);
        assert_eq!(split(&two).count(), 2);
        assert_eq!(split(&[4, 0, 0, 0]).count(), 0);
    }

    /// Moved from firewall/nft/tests.rs (its assertion unchanged).
    #[test]
    fn error_reply_parsing_with_ext_ack() {
        // NLMSG_ERROR: errno -2, capped echo of a 20-byte request, ext-ack "No such file".
        let mut body = Vec::new();
        body.extend((-2i32).to_ne_bytes());
        body.extend(20u32.to_ne_bytes());
        body.extend([0u8; 12]);
        let mut tlv = Attrs::new();
        tlv.put_str(1, "No such file");
        body.extend(tlv.bytes());
        let m = Nlmsg { ty: NLMSG_ERROR, flags: 0x300, seq: 1, body: &body };
        assert_eq!(parse_error(&m), (-2, Some("No such file".into())));
        // uncapped: the whole 20-byte request is echoed, TLVs after it
        let mut body = Vec::new();
        body.extend((-17i32).to_ne_bytes());
        body.extend(20u32.to_ne_bytes());
        body.extend([0u8; 16]);
        body.extend(tlv.bytes());
        let m = Nlmsg { ty: NLMSG_ERROR, flags: NLM_F_ACK_TLVS, seq: 1, body: &body };
        assert_eq!(parse_error(&m), (-17, Some("No such file".into())));
        let m = Nlmsg { ty: NLMSG_ERROR, flags: 0, seq: 1, body: &[1, 2] };
        assert_eq!(parse_error(&m), (-EINVAL, None));
    }

    #[test]
    fn error_messages() {
        let e = NlError::reply("nftables", "add table ip x", 2, Some("no".into()));
        assert_eq!(e.to_string(), "nftables: add table ip x: No such file or directory (os error 2) (errno 2): no");
        assert!(e.is_not_found() && !e.is_stale());
        assert_eq!(NlError::local("nftables", "dump failed").to_string(), "nftables: dump failed");
    }
}
