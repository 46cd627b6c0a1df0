//! A minimal, synchronous D-Bus client: just enough of the wire protocol to call methods with
//! string arguments on the system bus (the firewall plugin's firewalld backend).
//!
//! Why not a crate: the design allows only a fixed set of dependencies, and the static binary must
//! stay small; the part of D-Bus needed here (unix socket, SASL `EXTERNAL`, `Hello`, one method
//! call and its reply or error) is a few hundred lines.
//!
//! What is implemented (D-Bus specification 0.41):
//! - addresses `unix:path=…` and `unix:abstract=…` (first usable entry of a `;` list, `%xx`
//!   escapes), from `DBUS_SYSTEM_BUS_ADDRESS`, default `unix:path=/var/run/dbus/system_bus_socket`;
//! - authentication: a NUL byte, `AUTH EXTERNAL <hex of the decimal uid>`, `OK <guid>`, `BEGIN`;
//! - messages: writing METHOD_CALLs in little-endian with `s` arguments; reading any message in
//!   either byte order with any body signature (decoded into [`Value`]), keeping only the reply
//!   whose `REPLY_SERIAL` matches (signals such as `NameAcquired` are skipped);
//! - every read and write is bounded by the connection's timeout.
//!
//! Not implemented: unix fd passing, other transports, other auth mechanisms, being called.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The environment variable naming the system bus.
pub const SYSTEM_BUS_ENV: &str = "DBUS_SYSTEM_BUS_ADDRESS";
/// The system bus when the variable is unset.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

pub const BUS_NAME: &str = "org.freedesktop.DBus";
pub const BUS_PATH: &str = "/org/freedesktop/DBus";
pub const BUS_INTERFACE: &str = "org.freedesktop.DBus";

/// Largest message accepted (the specification allows 128 MiB; replies here are tiny).
const MAX_MESSAGE: usize = 8 << 20;
/// Nesting limit for containers in a signature (the specification's 32 + 32).
const MAX_DEPTH: usize = 64;

/// Where the bus listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Address {
    /// The first entry of a D-Bus address list that this client can connect to.
    pub fn parse(list: &str) -> Result<Address> {
        for entry in list.split(';').filter(|e| !e.is_empty()) {
            let Some((transport, params)) = entry.split_once(':') else { continue };
            if transport != "unix" {
                continue;
            }
            for kv in params.split(',') {
                let Some((k, v)) = kv.split_once('=') else { continue };
                match k {
                    "path" => {
                        use std::os::unix::ffi::OsStringExt;
                        return Ok(Address::Path(PathBuf::from(std::ffi::OsString::from_vec(unescape(v)?))));
                    }
                    "abstract" => return Ok(Address::Abstract(unescape(v)?)),
                    _ => {}
                }
            }
        }
        bail!("no usable address in {list:?} (supported: unix:path=…, unix:abstract=…)")
    }

    /// `DBUS_SYSTEM_BUS_ADDRESS`, or the default system bus.
    pub fn system() -> Result<Address> {
        match std::env::var(SYSTEM_BUS_ENV) {
            Ok(v) if !v.is_empty() => Address::parse(&v).context(SYSTEM_BUS_ENV),
            _ => Address::parse(DEFAULT_SYSTEM_BUS),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Path(p) => write!(f, "unix:path={}", p.display()),
            Address::Abstract(a) => write!(f, "unix:abstract={}", String::from_utf8_lossy(a)),
        }
    }
}

fn unescape(v: &str) -> Result<Vec<u8>> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.ok_or_else(|| anyhow!("bad %-escape in address value {v:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A decoded D-Bus value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Double(f64),
    Str(String),
    ObjectPath(String),
    Signature(String),
    UnixFd(u32),
    /// Arrays, dictionaries included (their entries are two-element `Struct`s).
    Array(Vec<Value>),
    Struct(Vec<Value>),
    Variant(Box<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::ObjectPath(s) | Value::Signature(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The strings of an `as` (None if this is not an array of strings).
    pub fn as_strings(&self) -> Option<Vec<String>> {
        match self {
            Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_string)).collect(),
            _ => None,
        }
    }
}

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MethodCall,
    MethodReturn,
    Error,
    Signal,
    Unknown(u8),
}

impl Kind {
    fn from_byte(b: u8) -> Kind {
        match b {
            1 => Kind::MethodCall,
            2 => Kind::MethodReturn,
            3 => Kind::Error,
            4 => Kind::Signal,
            other => Kind::Unknown(other),
        }
    }
}

/// A decoded message (header fields that are absent are None).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub flags: u8,
    pub serial: u32,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub reply_serial: Option<u32>,
    pub destination: Option<String>,
    pub sender: Option<String>,
    pub signature: String,
    pub body: Vec<Value>,
}

/// An ERROR reply: its name (e.g. `org.freedesktop.DBus.Error.ServiceUnknown`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for MethodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}: {}", self.name, self.message)
        }
    }
}

impl std::error::Error for MethodError {}

// ---- marshalling -------------------------------------------------------------------------------

/// Little-endian writer; offsets (and so padding) are relative to the start of the message.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// `s` and `o`: u32 length, bytes, NUL.
    fn string(&mut self, s: &str) -> Result<()> {
        if s.as_bytes().contains(&0) {
            bail!("D-Bus strings cannot contain NUL: {s:?}");
        }
        self.u32(u32::try_from(s.len()).context("string too long")?);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }
    /// `g`: u8 length, bytes, NUL.
    fn signature(&mut self, s: &str) -> Result<()> {
        self.u8(u8::try_from(s.len()).map_err(|_| anyhow!("signature too long"))?);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }
    /// One header field: struct (byte code, variant) with the variant holding `sig`.
    fn field_str(&mut self, code: u8, sig: &str, value: &str) -> Result<()> {
        self.pad(8);
        self.u8(code);
        self.signature(sig)?;
        if sig == "g" {
            self.signature(value)
        } else {
            self.string(value)
        }
    }
}

/// A METHOD_CALL in little-endian byte order with string arguments (body signature `s…`).
pub fn encode_call(
    serial: u32,
    destination: &str,
    path: &str,
    interface: &str,
    member: &str,
    args: &[&str],
) -> Result<Vec<u8>> {
    let mut body = Writer { buf: Vec::new() };
    for a in args {
        body.string(a)?;
    }
    let sig = "s".repeat(args.len());
    let mut w = Writer { buf: Vec::with_capacity(128 + body.buf.len()) };
    w.u8(b'l');
    w.u8(1); // METHOD_CALL
    w.u8(0); // flags
    w.u8(1); // protocol version
    w.u32(u32::try_from(body.buf.len()).context("body too long")?);
    w.u32(serial);
    w.u32(0); // header field array length, patched below
    let start = w.buf.len(); // 16, already 8-aligned
    w.field_str(1, "o", path)?;
    if !interface.is_empty() {
        w.field_str(2, "s", interface)?;
    }
    w.field_str(3, "s", member)?;
    w.field_str(6, "s", destination)?;
    if !args.is_empty() {
        w.field_str(8, "g", &sig)?;
    }
    let len = u32::try_from(w.buf.len() - start).context("header too long")?;
    w.buf[12..16].copy_from_slice(&len.to_le_bytes());
    w.pad(8);
    w.buf.extend_from_slice(&body.buf);
    Ok(w.buf)
}

/// Reader over a whole message; `base` keeps alignment relative to the message start.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    fn align(&mut self, n: usize) -> Result<()> {
        let p = self.pos.div_ceil(n) * n;
        if p > self.buf.len() {
            bail!("truncated message (padding)");
        }
        self.pos = p;
        Ok(())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end =
            self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| anyhow!("truncated message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.align(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        if self.big {
            a.reverse();
        }
        Ok(a) // now little-endian
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.fixed::<4>()?))
    }
    fn text(&mut self, len: usize) -> Result<String> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            bail!("string not NUL-terminated");
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| anyhow!("string is not UTF-8"))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        self.text(len)
    }
    fn signature(&mut self) -> Result<String> {
        let len = self.u8()? as usize;
        self.text(len)
    }

    /// One value of the single complete type `sig`.
    fn value(&mut self, sig: &[u8], depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            bail!("values nested too deeply");
        }
        let Some(&c) = sig.first() else { bail!("empty type") };
        Ok(match c {
            b'y' => Value::Byte(self.u8()?),
            b'b' => match self.u32()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => bail!("bad boolean {other}"),
            },
            b'n' => Value::I16(i16::from_le_bytes(self.fixed::<2>()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.fixed::<2>()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.fixed::<4>()?)),
            b'u' => Value::U32(self.u32()?),
            b'h' => Value::UnixFd(self.u32()?),
            b'x' => Value::I64(i64::from_le_bytes(self.fixed::<8>()?)),
            b't' => Value::U64(u64::from_le_bytes(self.fixed::<8>()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.fixed::<8>()?)),
            b's' => Value::Str(self.string()?),
            b'o' => Value::ObjectPath(self.string()?),
            b'g' => Value::Signature(self.signature()?),
            b'v' => {
                let inner = self.signature()?;
                let ib = inner.as_bytes();
                if type_end(ib, 0, 0)? != ib.len() {
                    bail!("variant signature {inner:?} is not one complete type");
                }
                Value::Variant(Box::new(self.value(ib, depth + 1)?))
            }
            b'a' => {
                let len = self.u32()? as usize;
                let elem = &sig[1..type_end(sig, 1, depth + 1)?];
                self.align(alignment(elem.first().copied().unwrap_or(b'y')))?;
                let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len());
                let end = end.ok_or_else(|| anyhow!("array longer than the message"))?;
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value(elem, depth + 1)?);
                }
                if self.pos != end {
                    bail!("array element crosses the array's end");
                }
                Value::Array(items)
            }
            b'(' | b'{' => {
                self.align(8)?;
                let close = type_end(sig, 0, depth)? - 1;
                let mut i = 1;
                let mut fields = Vec::new();
                while i < close {
                    let e = type_end(sig, i, depth + 1)?;
                    fields.push(self.value(&sig[i..e], depth + 1)?);
                    i = e;
                }
                Value::Struct(fields)
            }
            other => bail!("unsupported type code {:?}", other as char),
        })
    }
}

fn alignment(code: u8) -> usize {
    match code {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1, // y g v
    }
}

/// Index just past the single complete type starting at `sig[i]`.
fn type_end(sig: &[u8], i: usize, depth: usize) -> Result<usize> {
    if depth > MAX_DEPTH {
        bail!("signature nested too deeply");
    }
    match sig.get(i) {
        None => bail!("incomplete signature"),
        Some(b'a') => type_end(sig, i + 1, depth + 1),
        Some(open @ (b'(' | b'{')) => {
            let close = if *open == b'(' { b')' } else { b'}' };
            let mut j = i + 1;
            while sig.get(j) != Some(&close) {
                j = type_end(sig, j, depth + 1)?;
            }
            if j == i + 1 {
                bail!("empty struct in signature");
            }
            Ok(j + 1)
        }
        Some(c) if b"ybnqiuxtdsoghv".contains(c) => Ok(i + 1),
        Some(c) => bail!("bad type code {:?} in signature", *c as char),
    }
}

/// Total length of the message at the start of `buf` once its 16-byte fixed header is there
/// (None while fewer than 16 bytes are buffered).
pub fn message_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(head) = buf.get(..16) else { return Ok(None) };
    let big = match head[0] {
        b'l' => false,
        b'B' => true,
        other => bail!("bad endianness byte {other:#x}"),
    };
    let word = |o: usize| {
        let mut a = [head[o], head[o + 1], head[o + 2], head[o + 3]];
        if big {
            a.reverse();
        }
        u32::from_le_bytes(a) as usize
    };
    let (body, fields) = (word(4), word(12));
    let total = (16 + fields).div_ceil(8) * 8 + body;
    if total > MAX_MESSAGE {
        bail!("message of {total} bytes is too large");
    }
    Ok(Some(total))
}

/// Decode one whole message (`buf` holds exactly it, see [`message_len`]).
pub fn decode(buf: &[u8]) -> Result<Message> {
    let total = message_len(buf)?.ok_or_else(|| anyhow!("truncated message header"))?;
    if buf.len() != total {
        bail!("message is {} bytes, header says {total}", buf.len());
    }
    let mut r = Reader { buf, pos: 0, big: buf.first() == Some(&b'B') };
    r.pos = 1;
    let kind = Kind::from_byte(r.u8()?);
    let flags = r.u8()?;
    if r.u8()? != 1 {
        bail!("unsupported D-Bus protocol version");
    }
    let body_len = r.u32()? as usize;
    let serial = r.u32()?;
    let mut m = Message {
        kind,
        flags,
        serial,
        path: None,
        interface: None,
        member: None,
        error_name: None,
        reply_serial: None,
        destination: None,
        sender: None,
        signature: String::new(),
        body: Vec::new(),
    };
    let Value::Array(fields) = r.value(b"a(yv)", 0)? else { bail!("bad header fields") };
    for f in fields {
        let Value::Struct(pair) = f else { continue };
        let (Some(Value::Byte(code)), Some(Value::Variant(v))) = (pair.first(), pair.get(1)) else { continue };
        let s = v.as_str().map(str::to_string);
        match (code, &**v) {
            (1, _) => m.path = s,
            (2, _) => m.interface = s,
            (3, _) => m.member = s,
            (4, _) => m.error_name = s,
            (5, Value::U32(n)) => m.reply_serial = Some(*n),
            (6, _) => m.destination = s,
            (7, _) => m.sender = s,
            (8, _) => m.signature = s.unwrap_or_default(),
            _ => {}
        }
    }
    r.align(8)?;
    if buf.len() - r.pos != body_len {
        bail!("body length mismatch");
    }
    let sig = m.signature.clone();
    let sb = sig.as_bytes();
    let mut i = 0;
    while i < sb.len() {
        let e = type_end(sb, i, 0)?;
        m.body.push(r.value(&sb[i..e], 0)?);
        i = e;
    }
    if r.pos != buf.len() {
        bail!("body longer than its signature");
    }
    Ok(m)
}

// ---- connection --------------------------------------------------------------------------------

/// One authenticated connection to a bus (after `Hello`).
pub struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
    serial: u32,
    timeout: Duration,
    unique_name: String,
}

impl Connection {
    /// Connect to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured); `timeout` bounds the
    /// setup and, later, each call.
    pub fn system(timeout: Duration) -> Result<Connection> {
        Connection::open(&Address::system()?, timeout)
    }

    /// Connect, authenticate (EXTERNAL, our uid) and say `Hello`.
    pub fn open(addr: &Address, timeout: Duration) -> Result<Connection> {
        let stream = match addr {
            Address::Path(p) => UnixStream::connect(p),
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| UnixStream::connect_addr(&a))
            }
        }
        .with_context(|| format!("connect to D-Bus at {addr}"))?;
        let mut c = Connection { stream, buf: Vec::new(), serial: 0, timeout, unique_name: String::new() };
        let deadline = Instant::now() + timeout;
        c.authenticate(deadline).with_context(|| format!("authenticate to D-Bus at {addr}"))?;
        let reply = c.call_until(deadline, BUS_NAME, BUS_PATH, BUS_INTERFACE, "Hello", &[])?;
        c.unique_name = reply.first().and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(c)
    }

    /// The name the bus gave this connection (`:1.42`).
    pub fn unique_name(&self) -> &str {
        &self.unique_name
    }

    fn authenticate(&mut self, deadline: Instant) -> Result<()> {
        let uid = nix::unistd::getuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        self.send(deadline, format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let line = self.read_line(deadline)?;
        if !line.starts_with("OK ") && line != "OK" {
            bail!("the bus refused EXTERNAL authentication: {line:?}");
        }
        self.send(deadline, b"BEGIN\r\n")
    }

    fn read_line(&mut self, deadline: Instant) -> Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > 4096 {
                bail!("authentication line too long");
            }
            self.fill(deadline)?;
        }
    }

    fn remaining(deadline: Instant) -> Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("D-Bus timed out");
        }
        Ok(left)
    }

    fn send(&mut self, deadline: Instant, bytes: &[u8]) -> Result<()> {
        self.stream.set_write_timeout(Some(Self::remaining(deadline)?))?;
        self.stream.write_all(bytes).map_err(|e| io_error(e, "write to D-Bus"))
    }

    fn fill(&mut self, deadline: Instant) -> Result<()> {
        self.stream.set_read_timeout(Some(Self::remaining(deadline)?))?;
        let mut chunk = [0u8; 4096];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e, "read from D-Bus")),
            }
        };
        if n == 0 {
            bail!("the bus closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Message> {
        loop {
            if let Some(total) = message_len(&self.buf)? {
                if self.buf.len() >= total {
                    let raw: Vec<u8> = self.buf.drain(..total).collect();
                    return decode(&raw);
                }
            }
            self.fill(deadline)?;
        }
    }

    /// Call a method with string arguments; the reply's body, or a [`MethodError`] (in the
    /// anyhow chain) for an ERROR reply.
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[&str],
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + self.timeout;
        self.call_until(deadline, destination, path, interface, member, args)
    }

    fn call_until(
        &mut self,
        deadline: Instant,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[&str],
    ) -> Result<Vec<Value>> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        let msg = encode_call(serial, destination, path, interface, member, args)?;
        self.send(deadline, &msg).with_context(|| format!("{interface}.{member}"))?;
        loop {
            let m = self.read_message(deadline).with_context(|| format!("{interface}.{member}"))?;
            if m.reply_serial != Some(serial) {
                continue; // signals (NameAcquired, …) and anything else not ours
            }
            match m.kind {
                Kind::MethodReturn => return Ok(m.body),
                Kind::Error => {
                    let message = m.body.first().and_then(Value::as_str).unwrap_or_default().to_string();
                    return Err(MethodError { name: m.error_name.unwrap_or_default(), message }.into());
                }
                _ => continue,
            }
        }
    }
}

fn io_error(e: std::io::Error, what: &str) -> anyhow::Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => anyhow!("{what}: timed out"),
        _ => anyhow::Error::new(e).context(what.to_string()),
    }
}

/// The [`MethodError`] in an error's chain, if the bus or the service answered with one.
pub fn method_error(e: &anyhow::Error) -> Option<&MethodError> {
    e.chain().find_map(|c| c.downcast_ref::<MethodError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse(DEFAULT_SYSTEM_BUS).unwrap(),
            Address::Path("/var/run/dbus/system_bus_socket".into())
        );
        assert_eq!(
            Address::parse("tcp:host=x,port=1;unix:guid=ab,path=/tmp/a%20b,x=y").unwrap(),
            Address::Path("/tmp/a b".into())
        );
        assert_eq!(
            Address::parse("unix:abstract=/tmp/dbus-XYZ,guid=1").unwrap(),
            Address::Abstract(b"/tmp/dbus-XYZ".to_vec())
        );
        assert!(Address::parse("tcp:host=localhost,port=1").is_err());
        assert!(Address::parse("unix:tmpdir=/tmp").is_err());
        assert!(Address::parse("unix:path=/a%zz").is_err());
        assert!(Address::parse("").is_err());
    }

    /// `Hello`, laid out by hand from the specification: fields PATH, INTERFACE, MEMBER,
    /// DESTINATION (each 8-aligned), no SIGNATURE, no body.
    #[test]
    fn hello_golden() {
        let got = encode_call(1, BUS_NAME, BUS_PATH, BUS_INTERFACE, "Hello", &[]).unwrap();
        let want = hex("6c 01 00 01  00 00 00 00  01 00 00 00  6d 00 00 00
             01 01 6f 00  15 00 00 00  2f 6f 72 67  2f 66 72 65  65 64 65 73  6b 74 6f 70  2f 44 42 75  73 00 00 00
             02 01 73 00  14 00 00 00  6f 72 67 2e  66 72 65 65  64 65 73 6b  74 6f 70 2e  44 42 75 73  00 00 00 00
             03 01 73 00  05 00 00 00  48 65 6c 6c  6f 00 00 00
             06 01 73 00  14 00 00 00  6f 72 67 2e  66 72 65 65  64 65 73 6b  74 6f 70 2e  44 42 75 73  00 00 00 00");
        assert_eq!(got, want);
        let m = decode(&got).unwrap();
        assert_eq!(
            (m.kind, m.serial, m.member.as_deref(), m.signature.as_str()),
            (Kind::MethodCall, 1, Some("Hello"), "")
        );
    }

    /// `GetNameOwner("org.fedoraproject.FirewallD1")` as `dbus-send` (libdbus) sent it, captured
    /// with `dbus-monitor --binary` on a private bus. The daemon had appended a SENDER field
    /// (`07 01 73 00 04 00 00 00 ":1.1" 00`, 13 bytes, after 1 byte padding the SIGNATURE field
    /// to 8); without it the header field array is 0x7f instead of 0x8d bytes long (the 3
    /// padding bytes after it go too), and the rest is byte for byte ours.
    #[test]
    fn get_name_owner_matches_libdbus() {
        let got = encode_call(2, BUS_NAME, BUS_PATH, BUS_INTERFACE, "GetNameOwner", &["org.fedoraproject.FirewallD1"]);
        let libdbus = hex("6c010001 21000000 02000000 7f000000 01016f00 15000000 2f6f7267 2f667265
             65646573 6b746f70 2f444275 73000000 02017300 14000000 6f72672e 66726565
             6465736b 746f702e 44427573 00000000 03017300 0c000000 4765744e 616d654f
             776e6572 00000000 06017300 14000000 6f72672e 66726565 6465736b 746f702e
             44427573 00000000 08016700 01730000
             1c000000 6f72672e 6665646f 72617072 6f6a6563 742e4669 72657761 6c6c4431
             00");
        assert_eq!(got.unwrap(), libdbus);
    }

    /// `addSource("trusted", "198.18.0.2/32")`: the SIGNATURE field and the `ss` body.
    #[test]
    fn add_source_golden() {
        let got = encode_call(
            2,
            "org.fedoraproject.FirewallD1",
            "/org/fedoraproject/FirewallD1",
            "org.fedoraproject.FirewallD1.zone",
            "addSource",
            &["trusted", "198.18.0.2/32"],
        )
        .unwrap();
        let want = hex(
            "6c 01 00 01  1e 00 00 00  02 00 00 00  a0 00 00 00
             01 01 6f 00  1d 00 00 00  2f 6f 72 67  2f 66 65 64  6f 72 61 70  72 6f 6a 65  63 74 2f 46  69 72 65 77  61 6c 6c 44  31 00 00 00
             02 01 73 00  21 00 00 00  6f 72 67 2e  66 65 64 6f  72 61 70 72  6f 6a 65 63  74 2e 46 69  72 65 77 61  6c 6c 44 31  2e 7a 6f 6e  65 00 00 00  00 00 00 00
             03 01 73 00  09 00 00 00  61 64 64 53  6f 75 72 63  65 00 00 00  00 00 00 00
             06 01 73 00  1c 00 00 00  6f 72 67 2e  66 65 64 6f  72 61 70 72  6f 6a 65 63  74 2e 46 69  72 65 77 61  6c 6c 44 31  00 00 00 00
             08 01 67 00  02 73 73 00
             07 00 00 00  74 72 75 73  74 65 64 00  0d 00 00 00  31 39 38 2e  31 38 2e 30  2e 32 2f 33  32 00",
        );
        assert_eq!(got, want);
        let m = decode(&got).unwrap();
        assert_eq!(m.body, vec![Value::Str("trusted".into()), Value::Str("198.18.0.2/32".into())]);
        assert_eq!(m.interface.as_deref(), Some("org.fedoraproject.FirewallD1.zone"));
        assert_eq!(m.destination.as_deref(), Some("org.fedoraproject.FirewallD1"));
    }

    /// Messages dbus-daemon 1.14 sent, captured with `dbus-monitor --binary`.
    #[test]
    fn decode_bus_replies() {
        // the reply to Hello: METHOD_RETURN (flags NO_REPLY_EXPECTED), `s` ":1.1"
        let hello_reply = hex("6c020101 09000000 01000000 3d000000 06017300 04000000 3a312e31 00000000
             05017500 01000000 08016700 01730000 07017300 14000000 6f72672e 66726565
             6465736b 746f702e 44427573 00000000 04000000 3a312e31 00");
        assert_eq!(message_len(&hello_reply).unwrap(), Some(hello_reply.len()));
        let m = decode(&hello_reply).unwrap();
        assert_eq!((m.kind, m.flags, m.serial, m.reply_serial), (Kind::MethodReturn, 1, 1, Some(1)));
        assert_eq!((m.sender.as_deref(), m.destination.as_deref()), (Some(BUS_NAME), Some(":1.1")));
        assert_eq!(m.body, vec![Value::Str(":1.1".into())]);

        // GetNameOwner of a name nobody owns: ERROR NameHasNoOwner with its message
        let no_owner = hex("6c030101 4d000000 03000000 75000000 06017300 04000000 3a312e31 00000000
             04017300 29000000 6f72672e 66726565 6465736b 746f702e 44427573 2e457272
             6f722e4e 616d6548 61734e6f 4f776e65 72000000 00000000 05017500 02000000
             08016700 01730000 07017300 14000000 6f72672e 66726565 6465736b 746f702e
             44427573 00000000 48000000 436f756c 64206e6f 74206765 74206f77 6e657220
             6f66206e 616d6520 276f7267 2e666564 6f726170 726f6a65 63742e46 69726577
             616c6c44 31273a20 6e6f2073 75636820 6e616d65 00");
        let m = decode(&no_owner).unwrap();
        assert_eq!((m.kind, m.reply_serial), (Kind::Error, Some(2)));
        assert_eq!(m.error_name.as_deref(), Some("org.freedesktop.DBus.Error.NameHasNoOwner"));
        assert_eq!(
            m.body[0].as_str(),
            Some("Could not get owner of name 'org.fedoraproject.FirewallD1': no such name")
        );

        // ListNames: `as` ["org.freedesktop.DBus", ":1.2"]
        let names = hex("6c020101 29000000 03000000 3d000000 06017300 04000000 3a312e32 00000000
             05017500 02000000 08016700 02617300 07017300 14000000 6f72672e 66726565
             6465736b 746f702e 44427573 00000000 25000000 14000000 6f72672e 66726565
             6465736b 746f702e 44427573 00000000 04000000 3a312e32 00");
        let m = decode(&names).unwrap();
        assert_eq!(m.body[0].as_strings().unwrap(), vec![BUS_NAME.to_string(), ":1.2".to_string()]);

        // two messages back to back: message_len finds the boundary
        let mut both = hello_reply.clone();
        both.extend_from_slice(&no_owner);
        assert_eq!(message_len(&both).unwrap(), Some(hello_reply.len()));
    }

    /// A hand-built big-endian METHOD_RETURN with body `asb`: ["a", "bc"], true.
    #[test]
    fn decode_big_endian() {
        let mut items = Vec::new();
        items.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0]); // "a", NUL, padding to 4
        items.extend_from_slice(&[0, 0, 0, 2, b'b', b'c', 0]); // "bc", NUL
        let mut body = (items.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(&items);
        body.push(0); // padding to 4 for the boolean
        body.extend_from_slice(&[0, 0, 0, 1]);
        let mut fields = vec![5, 1, b'u', 0, 0, 0, 0, 7]; // REPLY_SERIAL 7
        fields.extend_from_slice(&[8, 1, b'g', 0, 3, b'a', b's', b'b', 0]); // SIGNATURE "asb"
        let mut msg = vec![b'B', 2, 0, 1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
        msg.extend_from_slice(&9u32.to_be_bytes());
        msg.extend_from_slice(&(fields.len() as u32).to_be_bytes());
        msg.extend_from_slice(&fields);
        while !msg.len().is_multiple_of(8) {
            msg.push(0);
        }
        msg.extend_from_slice(&body);
        let m = decode(&msg).unwrap();
        assert_eq!((m.serial, m.reply_serial, m.signature.as_str()), (9, Some(7), "asb"));
        assert_eq!(m.body[0].as_strings().unwrap(), vec!["a".to_string(), "bc".to_string()]);
        assert_eq!(m.body[1].as_bool(), Some(true));
    }

    #[test]
    fn signatures() {
        assert_eq!(type_end(b"a{sv}", 0, 0).unwrap(), 5);
        assert_eq!(type_end(b"(ias)u", 0, 0).unwrap(), 5);
        assert!(type_end(b"(", 0, 0).is_err());
        assert!(type_end(b"()", 0, 0).is_err());
        assert!(type_end(b"a", 0, 0).is_err());
        assert!(type_end(b"z", 0, 0).is_err());
        assert!(type_end("a".repeat(200).as_bytes(), 0, 0).is_err());
    }

    /// Garbage never panics: every prefix and every single-byte corruption of a real message.
    #[test]
    fn hostile_bytes_do_not_panic() {
        let good = encode_call(3, "a.b", "/x", "a.b", "M", &["p", "q"]).unwrap();
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
            let _ = message_len(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff, b'a', b'(', b'v'] {
                let mut b = good.clone();
                b[i] = v;
                let _ = decode(&b);
            }
        }
        assert!(encode_call(1, "a", "/", "a.b", "M", &["nul\0inside"]).is_err());
    }
}
