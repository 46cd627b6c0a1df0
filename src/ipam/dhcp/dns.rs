//! Domain-name lists as DHCP carries them: RFC 1035 §3.1 labels, with §4.1.4 compression
//! pointers (DHCPv4 option 119, RFC 3397; DHCPv6 option 24 uses the same encoding). Pointers
//! are offsets into the option's own data.

use anyhow::{anyhow, bail};

/// How many pointers one name may follow (a loop guard; real lists need a handful).
const MAX_JUMPS: usize = 32;

/// Decode the names of a list, in order (empty names skipped).
pub fn decode_names(data: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (name, next) = read_name(data, pos)?;
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
        pos = next;
    }
    Ok(out)
}

/// One name starting at `start`; returns it and the offset after it (after the first pointer,
/// when the name ends in one).
fn read_name(data: &[u8], start: usize) -> anyhow::Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    let mut len_total = 0usize;
    loop {
        let &len = data.get(pos).ok_or_else(|| anyhow!("domain name runs past the end of the option"))?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                pos += 1;
                break;
            }
            0x00 => {
                let label = data
                    .get(pos + 1..pos + 1 + len as usize)
                    .ok_or_else(|| anyhow!("domain label runs past the end of the option"))?;
                len_total += label.len() + 1;
                if len_total > 255 {
                    bail!("domain name longer than 255 bytes");
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + len as usize;
            }
            0xc0 => {
                let &lo = data.get(pos + 1).ok_or_else(|| anyhow!("truncated compression pointer"))?;
                let target = (((len & 0x3f) as usize) << 8) | lo as usize;
                jumps += 1;
                if jumps > MAX_JUMPS || target >= data.len() {
                    bail!("bad compression pointer in domain name");
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => bail!("unsupported domain label type {len:#x}"),
        }
    }
    Ok((labels.join("."), end.unwrap_or(pos)))
}

/// Encode names without compression (for tests and for the encoders that need it).
pub fn encode_names(names: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for n in names {
        for l in n.split('.').filter(|l| !l.is_empty()) {
            b.push(l.len().min(63) as u8);
            b.extend_from_slice(l.as_bytes().get(..l.len().min(63)).unwrap_or(&[]));
        }
        b.push(0);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_compressed_lists() {
        assert_eq!(decode_names(&encode_names(&["a.example", "b"])).unwrap(), vec!["a.example", "b"]);
        // RFC 3397 §3 example: eng.apple.com, marketing.apple.com (second points at "apple.com")
        let mut v = b"\x03eng\x05apple\x03com\x00".to_vec();
        v.extend_from_slice(b"\x09marketing\xc0\x04");
        assert_eq!(decode_names(&v).unwrap(), vec!["eng.apple.com", "marketing.apple.com"]);
        // a pointer loop and a pointer past the end are errors, not hangs
        assert!(decode_names(b"\xc0\x00").is_err());
        assert!(decode_names(b"\x01a\xc0\x09").is_err());
        assert!(decode_names(b"\x05ab").is_err());
        assert!(decode_names(b"\x80").is_err());
    }
}
