//! The reference's hashed chain names and comment prefixes (SHA-512 lives in `crate::digest`).

pub use crate::digest::sha512;

/// Lower-case hex of SHA-512.
pub fn sha512_hex(data: &[u8]) -> String {
    sha512(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The reference's `MustFormatHashWithPrefix(len, prefix, s)`: prefix + hex digest, cut to `len`.
pub fn hash_with_prefix(len: usize, prefix: &str, s: &str) -> String {
    let mut out = format!("{prefix}{}", sha512_hex(s.as_bytes()));
    out.truncate(len.min(out.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            sha512_hex(b""),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(
            sha512_hex(b"abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        // two-block message (FIPS 180-2 example)
        assert_eq!(
            sha512_hex(b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
        );
        // padding boundary: 111 and 112 bytes
        let a111 = vec![b'a'; 111];
        let a112 = vec![b'a'; 112];
        assert_ne!(sha512(&a111), sha512(&a112));
        assert_eq!(
            sha512_hex(&vec![b'a'; 1000]),
            "67ba5535a46e3f86dbfbed8cbbaf0125c76ed549ff8b0b9e03e0c88cf90fa634fa7b12b47d77b694de488ace8d9a65967dc96df599727d3292a8d9d447709c97"
        );
    }

    #[test]
    fn reference_chain_name_shape() {
        let c = hash_with_prefix(28, "CNI-", &format!("{}{}", "mynet", "cid"));
        assert_eq!(c.len(), 28);
        assert!(c.starts_with("CNI-"));
    }
}
