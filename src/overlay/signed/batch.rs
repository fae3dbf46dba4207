//! Items signed together (docs/security.md "Signed items"): the items a
//! node writes at one time (a REGISTER's directory entry and "seen" mark)
//! get one signature over the SHA-256 digests of their signed bytes. Each
//! item carries that signature with the list of digests, so each copy is
//! checked on its own — its digest must be in the list, and the list be
//! signed by the writer — and a node that holds several of them checks the
//! signature once ([`super::Verified`] remembers it).
//!
//! After the signed expiry (8 bytes, `ring/seal.rs`) such a signature is:
//! [`TAG`], the count of digests (2 to [`MAX_ITEMS`]), the digests (32
//! bytes each), then the signature over [`message`]. A signature of one
//! item is never read as one of several: an Ed25519 one is exactly 64 bytes
//! and an ECDSA one (DER) starts with 0x30.

use sha2::{Digest, Sha256};

/// First byte of a signature over several items.
const TAG: u8 = 0xBA;
/// Most items one signature covers.
pub const MAX_ITEMS: usize = 8;
/// Length of a signature of one item with an Ed25519 key.
const ED25519_LEN: usize = 64;
const DIGEST_LEN: usize = 32;

/// The digest of one item's signed bytes.
pub fn digest(signed_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(signed_bytes).into()
}

/// What the writer signs for items signed together: their digests, `n` ×
/// 32 bytes.
pub fn message(digests: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + digests.len());
    out.extend_from_slice(b"p2psip-items-v1");
    out.extend_from_slice(&((digests.len() / DIGEST_LEN) as u64).to_be_bytes());
    out.extend_from_slice(digests);
    out
}

/// The digests of a group, one after the other.
pub fn flat(digests: &[[u8; 32]]) -> Vec<u8> {
    digests.concat()
}

/// The signature an item of a group carries (after its expiry).
pub fn join(digests: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + digests.len() + signature.len());
    out.push(TAG);
    out.push(u8::try_from(digests.len() / DIGEST_LEN).unwrap_or(u8::MAX));
    out.extend_from_slice(digests);
    out.extend_from_slice(signature);
    out
}

/// A signature over several items read back: (digests, signature); `None`
/// when it is the signature of one item (or not well formed, and then it
/// is checked as one item's, and fails).
pub fn split(signature: &[u8]) -> Option<(&[u8], &[u8])> {
    if signature.len() == ED25519_LEN {
        return None;
    }
    let (&tag, rest) = signature.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count);
    if tag != TAG || !(2..=MAX_ITEMS).contains(&count) || rest.len() <= count * DIGEST_LEN {
        return None;
    }
    Some(rest.split_at(count * DIGEST_LEN))
}

/// Whether `digest` is one of `digests`.
pub fn covers(digests: &[u8], digest: &[u8; 32]) -> bool {
    digests
        .chunks_exact(DIGEST_LEN)
        .any(|d| d == digest.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_signature_reads_back_and_a_single_one_is_not_taken_for_one() {
        let digests = flat(&[digest(b"a"), digest(b"b")]);
        let joined = join(&digests, &[7; 64]);
        let (read, signature) = split(&joined).expect("a group");
        assert_eq!(read, digests.as_slice());
        assert_eq!(signature, &[7; 64]);
        assert!(covers(read, &digest(b"b")));
        assert!(!covers(read, &digest(b"c")));
        // One item's Ed25519 signature that happens to start with the tag.
        let mut single = [0u8; 64];
        single[0] = TAG;
        single[1] = 2;
        assert_eq!(split(&single), None);
        // ECDSA (DER), a short or empty signature, a count out of range.
        assert_eq!(split(&[0x30; 72]), None);
        assert_eq!(split(&[TAG, 2]), None);
        assert_eq!(split(&[]), None);
        assert_eq!(split(&join(&flat(&[digest(b"a")]), &[7; 64])), None);
        // The digests with no signature after them.
        assert_eq!(split(&joined[..2 + 64]), None);
        assert_ne!(message(&digests), message(&digests[..32]));
    }
}
