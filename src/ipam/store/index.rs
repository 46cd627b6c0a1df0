//! The index file's text, and the in-memory view of the leases built on it.
//!
//! One line per lease, in address order: `<ip> <inode> a <id> <ifname>` (an attachment),
//! `<ip> <inode> l <id>` (a legacy file), `<ip> <inode> u` (unknown owner) or `<ip> <inode> e`
//! (an empty file). Ids and interface names never hold whitespace (an owner with whitespace
//! is read as unknown, as the reference compares it), so a line splits on single spaces.
//!
//! The file is a version line, the directory's stamp and the number of leases, the lines,
//! then `end <checksum of everything before, hex>`.
//!
//! The view keeps the lines as text. A lookup by address binary-searches them; a change
//! splices one line in or out; a lookup by owner searches the text for the owner's fields.
//! An operation therefore costs a few copies of the file's bytes, not a parse of every lease:
//! with a parsed map, reading and rewriting the index of 1000 leases took 1.5 ms of an ADD.

use std::cmp::Ordering;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;

use super::Owner;

pub(super) const MAGIC: &str = "cni-multi-index 2";

/// One reservation as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lease {
    /// inode number of the file (0: unknown, reread when the directory is listed)
    pub ino: u64,
    pub owner: Owner,
    /// the file was empty (a writer died between create and write)
    pub empty: bool,
}

/// What identifies the directory's state: any entry added, removed or renamed changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DirStamp {
    pub dev: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl DirStamp {
    pub fn of(m: &fs::Metadata) -> DirStamp {
        DirStamp { dev: m.dev(), ino: m.ino(), mtime: (m.mtime(), m.mtime_nsec()), ctime: (m.ctime(), m.ctime_nsec()) }
    }
}

/// Every lease of the directory, as index lines in address order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct View {
    lines: String,
    count: usize,
}

impl View {
    /// The view of `rows`, which must be in address order without duplicates.
    pub fn from_sorted(rows: &[(IpAddr, Lease)]) -> View {
        let mut lines = String::with_capacity(rows.len() * 48);
        for (ip, l) in rows {
            push_line(&mut lines, *ip, l);
        }
        View { lines, count: rows.len() }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.find(ip).is_ok()
    }

    /// Add or replace the lease of `ip`.
    pub fn insert(&mut self, ip: IpAddr, lease: &Lease) {
        let ip = ip.to_canonical();
        let mut line = String::with_capacity(64);
        push_line(&mut line, ip, lease);
        match self.find(ip) {
            Ok((start, end)) => self.lines.replace_range(start..end, &line),
            Err(at) => {
                self.lines.insert_str(at, &line);
                self.count += 1;
            }
        }
    }

    /// Remove the lease of `ip`; whether there was one.
    pub fn remove(&mut self, ip: IpAddr) -> bool {
        match self.find(ip) {
            Ok((start, end)) => {
                self.lines.replace_range(start..end, "");
                self.count -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// The addresses held by (id, ifname), and those held by `id` in legacy files, each in
    /// address order.
    pub fn owned_by(&self, id: &str, ifname: &str) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let id = id.trim();
        let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plain(id) {
            return (Vec::new(), Vec::new());
        }
        // One search, for " {id}" (in both tails), then the line around each match: the
        // tails hold no newline but their last byte, so a line that ends with one holds a match.
        // A tail can also end a line of another kind (an attachment of id `l` on interface `x`
        // ends with the legacy tail of id `x`), so each line is checked against both, and its
        // owner parsed; a line with several matches is looked at once.
        let attached_tail = plain(ifname).then(|| format!(" a {id} {ifname}\n"));
        let legacy_tail = format!(" l {id}\n");
        let (mut attached, mut legacy) = (Vec::new(), Vec::new());
        let mut done = 0;
        for (pos, _) in self.lines.match_indices(&format!(" {id}")) {
            if pos < done {
                continue;
            }
            let start = self.lines.get(..pos).and_then(|s| s.rfind('\n')).map_or(0, |p| p + 1);
            let end = self.lines.get(pos..).and_then(|s| s.find('\n')).map_or(self.lines.len(), |p| pos + p + 1);
            done = end;
            let line = self.lines.get(start..end).unwrap_or_default();
            let is_attached = attached_tail.as_deref().is_some_and(|t| line.ends_with(t));
            let is_legacy = line.ends_with(legacy_tail.as_str());
            if !is_attached && !is_legacy {
                continue;
            }
            if let Some((ip, lease)) = parse_line(line) {
                if is_attached && lease.owner.is(id, ifname) {
                    attached.push(ip);
                }
                if is_legacy && lease.owner.is_legacy_of(id) {
                    legacy.push(ip);
                }
            }
        }
        (attached, legacy)
    }

    /// Every lease, in address order (lines that do not parse are left out).
    pub fn entries(&self) -> Vec<(IpAddr, Lease)> {
        self.lines.split_inclusive('\n').filter_map(parse_line).collect()
    }

    /// The byte range of the line of `ip` (with its newline), or where it would go.
    fn find(&self, ip: IpAddr) -> Result<(usize, usize), usize> {
        let ip = ip.to_canonical();
        let text = self.lines.as_bytes();
        // lo and hi are line starts; the line of ip, if any, lies between them
        let (mut lo, mut hi) = (0, text.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let start = text.get(lo..mid).and_then(|s| s.iter().rposition(|b| *b == b'\n')).map_or(lo, |p| lo + p + 1);
            let end =
                text.get(start..hi).and_then(|s| s.iter().position(|b| *b == b'\n')).map_or(hi, |p| start + p + 1);
            let here = text
                .get(start..end)
                .and_then(|l| l.split(|b| *b == b' ').next())
                .and_then(|f| std::str::from_utf8(f).ok())
                .and_then(|f| f.parse::<IpAddr>().ok());
            // a line that does not parse cannot be in a checksummed index cni-multi wrote;
            // treating it as greater keeps the search finite
            match here.map_or(Ordering::Greater, |h| h.cmp(&ip)) {
                Ordering::Less => lo = end,
                Ordering::Greater => hi = start,
                Ordering::Equal => return Ok((start, end)),
            }
        }
        Err(lo)
    }
}

/// Append the line of one lease.
fn push_line(s: &mut String, ip: IpAddr, l: &Lease) {
    push_ip(s, ip);
    s.push(' ');
    push_num(s, l.ino, false);
    match (&l.owner, l.empty) {
        (Owner::Attachment { id, ifname }, _) => {
            s.push_str(" a ");
            s.push_str(id);
            s.push(' ');
            s.push_str(ifname);
        }
        (Owner::Legacy(id), _) => {
            s.push_str(" l ");
            s.push_str(id);
        }
        (Owner::Unknown, true) => s.push_str(" e"),
        (Owner::Unknown, false) => s.push_str(" u"),
    }
    s.push('\n');
}

/// One line (its newline optional) back into its lease.
fn parse_line(line: &str) -> Option<(IpAddr, Lease)> {
    let mut f = line.strip_suffix('\n').unwrap_or(line).split(' ');
    let ip = f.next()?.parse::<IpAddr>().ok()?;
    let ino = f.next()?.parse::<u64>().ok()?;
    let (owner, empty) = match (f.next()?, f.next(), f.next()) {
        ("a", Some(id), Some(ifname)) => (Owner::Attachment { id: id.into(), ifname: ifname.into() }, false),
        ("l", Some(id), None) => (Owner::Legacy(id.into()), false),
        ("u", None, None) => (Owner::Unknown, false),
        ("e", None, None) => (Owner::Unknown, true),
        _ => return None,
    };
    f.next().is_none().then_some((ip, Lease { ino, owner, empty }))
}

/// The whole index file for `view` and the directory's `stamp`.
pub(super) fn render(stamp: &DirStamp, view: &View) -> Vec<u8> {
    let mut s = String::with_capacity(128 + view.lines.len());
    s.push_str(MAGIC);
    s.push_str("\ndir");
    for n in [stamp.dev, stamp.ino] {
        s.push(' ');
        push_num(&mut s, n, false);
    }
    for n in [stamp.mtime.0, stamp.mtime.1, stamp.ctime.0, stamp.ctime.1] {
        s.push(' ');
        push_num(&mut s, n as u64, n < 0);
    }
    s.push(' ');
    push_num(&mut s, view.count as u64, false);
    s.push('\n');
    s.push_str(&view.lines);
    let sum = checksum(s.as_bytes());
    s.push_str("end ");
    for k in (0..16).rev() {
        s.extend(char::from_digit(((sum >> (4 * k)) & 0xf) as u32, 16));
    }
    s.push('\n');
    s.into_bytes()
}

/// Parse an index file; `None` unless it is complete, intact and of this version.
pub(super) fn parse(buf: Vec<u8>) -> Option<(DirStamp, View)> {
    let mut text = String::from_utf8(buf).ok()?;
    let body_len = text.strip_suffix('\n')?.rfind('\n')? + 1;
    let (body, trailer) = text.split_at(body_len);
    let sum = u64::from_str_radix(trailer.strip_prefix("end ")?.strip_suffix('\n')?, 16).ok()?;
    if sum != checksum(body.as_bytes()) {
        return None;
    }
    let (magic, rest) = body.split_once('\n')?;
    let (head, lines) = rest.split_once('\n')?;
    if magic != MAGIC {
        return None;
    }
    let head: Vec<&str> = head.split(' ').collect();
    if head.first() != Some(&"dir") || head.len() != 8 {
        return None;
    }
    let signed = |i: usize| head.get(i).and_then(|v| v.parse::<i64>().ok());
    let unsigned = |i: usize| head.get(i).and_then(|v| v.parse::<u64>().ok());
    let stamp = DirStamp {
        dev: unsigned(1)?,
        ino: unsigned(2)?,
        mtime: (signed(3)?, signed(4)?),
        ctime: (signed(5)?, signed(6)?),
    };
    let count = usize::try_from(unsigned(7)?).ok()?;
    let start = body_len - lines.len();
    // the lines are what cni-multi wrote (the checksum says so): kept as they are
    text.truncate(body_len);
    text.drain(..start);
    Some((stamp, View { lines: text, count }))
}

/// A 64-bit checksum of the index (8 bytes a step): detects a torn or edited index, not an
/// adversary (the directory is root's).
pub(super) fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    // whole words as arrays: a load each (a slice copy would be a memcpy call per word)
    let (words, rest) = bytes.as_chunks::<8>();
    for w in words {
        h = (h ^ u64::from_le_bytes(*w)).wrapping_mul(K).rotate_left(31);
    }
    for b in rest {
        h = (h ^ u64::from(*b)).wrapping_mul(K).rotate_left(31);
    }
    h ^ (h >> 29)
}

/// Decimal digits of `n` (with a leading '-' if `neg`: `n` is then the two's complement).
pub(super) fn push_num(s: &mut String, n: u64, neg: bool) {
    let mut v = if neg { n.wrapping_neg() } else { n };
    if neg {
        s.push('-');
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    s.extend(digits.get(i..).unwrap_or_default().iter().map(|d| char::from(*d)));
}

/// The canonical file name of `ip` (same text as `ip_file_name`), appended.
pub(super) fn push_ip(s: &mut String, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            for (k, o) in v4.octets().into_iter().enumerate() {
                if k > 0 {
                    s.push('.');
                }
                push_num(s, u64::from(o), false);
            }
        }
        v6 => s.push_str(&v6.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn att(id: &str, ifname: &str, ino: u64) -> Lease {
        Lease { ino, owner: Owner::Attachment { id: id.into(), ifname: ifname.into() }, empty: false }
    }

    #[test]
    fn numbers_and_addresses_format_like_display() {
        for ip in ["0.0.0.0", "198.18.0.2", "255.255.255.255", "10.0.100.9", "fd00::2", "::ffff:198.18.0.1", "::"] {
            let ip = ip.parse::<IpAddr>().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, super::super::ip_file_name(ip));
        }
        for (n, neg) in
            [(0u64, false), (7, false), (1_796_521_969, false), (u64::MAX, false), (5u64.wrapping_neg(), true)]
        {
            let mut s = String::new();
            push_num(&mut s, n, neg);
            let want = if neg { (n as i64).to_string() } else { n.to_string() };
            assert_eq!(s, want);
        }
    }

    #[test]
    fn round_trips_every_owner_kind() {
        let owners = [
            (Owner::Attachment { id: "c1".into(), ifname: "eth0".into() }, false),
            (Owner::Legacy("old".into()), false),
            (Owner::Unknown, false),
            (Owner::Unknown, true),
        ];
        let rows: Vec<(IpAddr, Lease)> = owners
            .into_iter()
            .enumerate()
            .map(|(i, (owner, empty))| (ip(&format!("fd00::{i}")), Lease { ino: i as u64 + 7, owner, empty }))
            .collect();
        let view = View::from_sorted(&rows);
        let stamp = DirStamp { dev: u64::MAX, ino: 2, mtime: (-3, 4), ctime: (5, 6) };
        let text = render(&stamp, &view);
        let back = parse(text.clone()).unwrap();
        assert_eq!(back, (stamp, view.clone()));
        assert_eq!(back.1.entries(), rows);
        assert_eq!(back.1.len(), 4);
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("cni-multi-index 2\ndir 18446744073709551615 2 -3 4 5 6 4\nfd00:: 7 a c1 eth0\n"));
        assert!(text.ends_with('\n') && text.lines().last().unwrap().starts_with("end "));
        // every byte counts: a flipped bit, a dropped byte, an older version
        for bad in [
            text.replace("a c1", "a c2"),
            text.replacen('\n', "", 1),
            text.replace("index 2", "index 1"),
            text[..text.len() - 1].to_string(),
        ] {
            assert_eq!(parse(bad.into_bytes()), None);
        }
    }

    /// The view answers as a sorted map of the same leases would, through every change.
    #[test]
    fn lookups_and_changes_match_a_sorted_map() {
        use std::collections::BTreeMap;
        let mut want: BTreeMap<IpAddr, Lease> = BTreeMap::new();
        let mut view = View::default();
        // a deterministic shuffle of v4 and v6 addresses (v4 sort before v6, as IpAddr does)
        let mut x = 12345u64;
        for step in 0..600u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = (x >> 33) % 97;
            let a =
                if n.is_multiple_of(3) { ip(&format!("fd00::{n:x}")) } else { ip(&format!("198.18.{}.{}", n / 7, n)) };
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(view.remove(a), want.remove(&a).is_some(), "step {step}");
            } else {
                let l = att(&format!("c{}", n % 11), if n.is_multiple_of(2) { "eth0" } else { "net1" }, step);
                view.insert(a, &l);
                want.insert(a, l);
            }
            assert_eq!(view.len(), want.len());
            for probe in [a, ip("198.18.0.0"), ip("fd00::ffff"), ip("0.0.0.0")] {
                assert_eq!(view.contains(probe), want.contains_key(&probe), "step {step} {probe}");
            }
        }
        let all: Vec<(IpAddr, Lease)> = want.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(view.entries(), all);
        assert_eq!(View::from_sorted(&all), view);
        for id in 0..11 {
            for ifname in ["eth0", "net1"] {
                let mine: Vec<IpAddr> =
                    all.iter().filter(|(_, l)| l.owner.is(&format!("c{id}"), ifname)).map(|(k, _)| *k).collect();
                assert_eq!(view.owned_by(&format!(" c{id} "), ifname), (mine, Vec::new()));
            }
        }
    }

    #[test]
    fn owners_are_matched_field_by_field() {
        let rows = vec![
            // an attachment of id "l" on interface "x" ends like the legacy line of id "x"
            (ip("198.18.0.2"), att("l", "x", 1)),
            (ip("198.18.0.3"), Lease { ino: 2, owner: Owner::Legacy("x".into()), empty: false }),
            // a longer id that ends with another id
            (ip("198.18.0.4"), att("ac1", "eth0", 3)),
            (ip("198.18.0.5"), att("c1", "eth0", 4)),
            (ip("198.18.0.6"), att("c1", "eth00", 5)),
            // the id twice in one line (an interface named as the container)
            (ip("198.18.0.7"), att("x", "x", 8)),
            (ip("fd00::1"), att("c1", "eth0", 6)),
            (ip("fd00::2"), Lease { ino: 7, owner: Owner::Unknown, empty: true }),
        ];
        let v = View::from_sorted(&rows);
        assert_eq!(v.owned_by("x", "eth0"), (vec![], vec![ip("198.18.0.3")]));
        assert_eq!(v.owned_by("l", "x"), (vec![ip("198.18.0.2")], vec![]));
        assert_eq!(v.owned_by("x", "x"), (vec![ip("198.18.0.7")], vec![ip("198.18.0.3")]));
        assert_eq!(v.owned_by("c1", "eth0"), (vec![ip("198.18.0.5"), ip("fd00::1")], vec![]));
        for (id, ifname) in [("", "eth0"), ("c1", ""), ("a c1", "eth0"), ("c1", "eth 0"), ("u", "x")] {
            assert_eq!(v.owned_by(id, ifname), (vec![], vec![]), "{id:?} {ifname:?}");
        }
    }
}
