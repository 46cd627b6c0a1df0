//! Random bytes for names and transaction ids (not for secrets).

/// Fill `buf` from the kernel's generator (`getrandom(2)`, one syscall, no file opened); if that
/// fails, from the clock and pid, which is enough for the uses here: a clash of a veth name is
/// retried, a DHCP transaction id only has to differ from a neighbour's.
pub fn fill(buf: &mut [u8]) {
    // SAFETY: the kernel writes at most buf.len() bytes into buf, which is valid for that length
    let n = unsafe { nix::libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).is_ok_and(|n| n == buf.len()) {
        return;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = t ^ (u128::from(std::process::id()) << 64);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed.rotate_left((i as u32 % 16) * 8) & 0xff) as u8;
    }
}

/// A random u32.
pub fn u32() -> u32 {
    let mut b = [0u8; 4];
    fill(&mut b);
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_and_differs() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        super::fill(&mut a);
        super::fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(super::u32(), super::u32());
    }
}
