//! [`KeyDigest`]: a hold's idempotency key as the engine remembers it, 16 bytes inline.
//!
//! The key table of single holds (`Engine::idem`) and each store's aging queue of those keys
//! used to keep every key as a boxed string (a 36-byte UUID in a 48-byte heap block, twice).
//! With ten million keyed holds in the dedupe window that was about 100 bytes per hold. A
//! digest is fixed-size and kept in place: no heap block, one copy per structure.
//!
//! The digest is the first 128 bits of SHA-256 over the key's bytes: stable (no seed, the
//! same in every process and version, so snapshots can store it) and collision resistant
//! even for keys a client chooses to collide: the best known way to find two keys with one
//! digest is a birthday search of about 2^64 SHA-256 evaluations. For keys that are not
//! chosen to collide, the chance that any two of `n` keys kept at once share a digest is
//! at most `n^2 / 2^129`: for 10^8 keys, below 10^-22. Hashing a 36-byte key is one
//! SHA-256 block (SHA-NI where the CPU has it), computed once per request. The maps that
//! hold digests still hash them with their own per-process random seed.

use sha2::{Digest, Sha256};

/// The first 128 bits of SHA-256 of an idempotency key: what the engine keeps of a hold's
/// key. Two `u64`s rather than a `u128`, so that it is 8-byte aligned and an entry of a map
/// keyed by it has no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct KeyDigest([u64; 2]);

impl KeyDigest {
    /// The digest of `key`.
    pub(crate) fn of(key: &str) -> KeyDigest {
        let hash = Sha256::digest(key.as_bytes());
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&hash[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        KeyDigest([word(0), word(1)])
    }

    /// Appends its snapshot encoding: 16 bytes, as the hash gives them.
    pub(crate) fn encode(&self, e: &mut crate::codec::Enc<'_>) {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.0[0].to_be_bytes());
        bytes[8..].copy_from_slice(&self.0[1].to_be_bytes());
        e.bytes(&bytes);
    }

    /// Reads what [`KeyDigest::encode`] wrote.
    pub(crate) fn decode(
        d: &mut crate::codec::Dec<'_>,
    ) -> Result<KeyDigest, crate::codec::DecodeError> {
        let at = d.pos();
        let bytes = d.bytes()?;
        if bytes.len() != 16 {
            return Err(crate::codec::DecodeError::Invalid {
                what: "key digest",
                at,
            });
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        Ok(KeyDigest([word(0), word(1)]))
    }
}

/// The key of a key digest, for writing a snapshot format before 12 (tests: the engine
/// keeps only digests).
pub(crate) type KeyNames<'a> = &'a dyn Fn(&KeyDigest) -> String;

/// Writes a hold idempotency key in a snapshot: its digest (format 12 on), or its text
/// named by `old_keys` (before).
pub(crate) fn encode_key(
    e: &mut crate::codec::Enc<'_>,
    key: &KeyDigest,
    old_keys: Option<KeyNames<'_>>,
) {
    match old_keys {
        None => key.encode(e),
        Some(name) => e.str(&name(key)),
    }
}

/// Reads what [`encode_key`] wrote in snapshot format `version`: a key of a format before
/// 12 is digested.
pub(crate) fn decode_key(
    d: &mut crate::codec::Dec<'_>,
    version: u32,
) -> Result<KeyDigest, crate::codec::DecodeError> {
    if version >= 12 {
        KeyDigest::decode(d)
    } else {
        Ok(KeyDigest::of(&d.string()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_stable_and_tells_keys_apart() {
        // SHA-256("abc") begins ba7816bf 8f01cfea 414140de 5dae2223: the digest is the
        // standard hash, not one seeded per process.
        assert_eq!(
            KeyDigest::of("abc"),
            KeyDigest([0xba78_16bf_8f01_cfea, 0x4141_40de_5dae_2223])
        );
        assert_ne!(KeyDigest::of("k-1"), KeyDigest::of("k-2"));
        assert_ne!(KeyDigest::of(""), KeyDigest::of(" "));
    }

    #[test]
    fn the_encoding_round_trips_and_refuses_another_length() {
        let k = KeyDigest::of("checkout-42");
        let mut buf = Vec::new();
        k.encode(&mut crate::codec::Enc::new(&mut buf));
        assert_eq!(buf.len(), 17);
        let mut d = crate::codec::Dec::new(&buf);
        assert_eq!(KeyDigest::decode(&mut d).unwrap(), k);
        d.finish().unwrap();
        let mut short = Vec::new();
        crate::codec::Enc::new(&mut short).bytes(&[1, 2, 3]);
        assert!(KeyDigest::decode(&mut crate::codec::Dec::new(&short)).is_err());
    }
}
