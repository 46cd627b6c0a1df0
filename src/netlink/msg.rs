//! Netlink message encoding and attribute parsing. Encoders build complete requests with
//! seq and pid 0; the socket stamps the sequence number when sending. Kept as plain byte
//! work (no generics) so the exact bytes are visible and testable without a socket.

use std::net::IpAddr;

use super::consts::{NLA_F_NESTED, NLA_TYPE_MASK};

const ALIGN: usize = 4;

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(ALIGN) {
        buf.push(0);
    }
}

/// A netlink request under construction.
#[derive(Debug, Clone)]
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// Start a message: 16-byte nlmsghdr followed by the family header `hdr`.
    pub fn new(ty: u16, flags: u16, hdr: &[u8]) -> Msg {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&[0; 8]); // seq, pid
        buf.extend_from_slice(hdr);
        pad(&mut buf);
        Msg { buf }
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }

    pub fn u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.attr(ty, &[v])
    }

    pub fn u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string, as the kernel and iproute2 expect for names.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    pub fn ip(&mut self, ty: u16, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    /// Open a nested attribute; close it with [`Msg::end`] passing the returned token.
    /// `flag` is true to set NLA_F_NESTED (iproute2 sets it only for some nests).
    pub fn begin(&mut self, ty: u16, flag: bool) -> usize {
        let at = self.buf.len();
        let ty = if flag { ty | NLA_F_NESTED } else { ty };
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    /// Append raw bytes (a struct inside a nest, such as the veth peer's ifinfomsg).
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        pad(&mut self.buf);
        self
    }

    pub fn end(&mut self, token: usize) -> &mut Self {
        let len = (self.buf.len() - token) as u16;
        if let Some(b) = self.buf.get_mut(token..token + 2) {
            b.copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The finished message bytes (length filled in, seq and pid 0).
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        if let Some(b) = self.buf.get_mut(0..4) {
            b.copy_from_slice(&len.to_ne_bytes());
        }
        self.buf
    }
}

/// Iterate the attributes in `buf`: yields (type without flag bits, payload).
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

pub struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let len = usize::from(u16::from_ne_bytes(self.buf.get(0..2)?.try_into().ok()?));
        let ty = u16::from_ne_bytes(self.buf.get(2..4)?.try_into().ok()?);
        let data = self.buf.get(4..len)?;
        let next = len.div_ceil(ALIGN) * ALIGN;
        self.buf = self.buf.get(next..).unwrap_or(&[]);
        Some((ty & NLA_TYPE_MASK, data))
    }
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
