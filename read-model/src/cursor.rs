//! Opaque ListPosts page tokens.
//!
//! A token is base64url (no padding) of 29 bytes:
//! `version(1) | created_at_ms(8) | post_id(8) | filter fingerprint(8) | check(4)`,
//! integers big-endian, `check` the first 4 bytes of SHA-256 over the rest.
//! It is a keyset cursor (the last post returned), so posts created between
//! pages neither shift nor repeat entries. The check catches corruption, the
//! fingerprint catches reuse with other filters. A hand-made token that passes
//! both only moves the starting point of a listing the caller may read anyway,
//! so no secret key is needed.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use postmesh_proto::PostId;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 + 8 + 8 + 4;

/// Where a page ended: the last post returned, in newest-first order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The post's created_at, milliseconds since the epoch.
    pub created_at_ms: i64,
    /// The post's id.
    pub post_id: i64,
}

/// Why a page token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64url, or the wrong length.
    #[error("is not a page token this service issued")]
    Malformed,
    /// Made by an incompatible version of this service.
    #[error("has unsupported token version {0}")]
    WrongVersion(u8),
    /// The bytes were altered.
    #[error("is corrupted")]
    Corrupted,
    /// Issued for a different set of filters.
    #[error("was issued for different filters; send the same filters as the first page")]
    OtherFilters,
}

/// Encodes `position` for the filters with `fingerprint`.
pub fn encode(position: Position, fingerprint: [u8; 8]) -> String {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&position.created_at_ms.to_be_bytes());
    bytes.extend_from_slice(&position.post_id.to_be_bytes());
    bytes.extend_from_slice(&fingerprint);
    let check = checksum(&bytes);
    bytes.extend_from_slice(&check);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a token, accepting it only for filters with `fingerprint`.
pub fn decode(token: &str, fingerprint: [u8; 8]) -> Result<Position, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| TokenError::Malformed)?;
    match bytes.first() {
        None => return Err(TokenError::Malformed),
        Some(&VERSION) => {}
        Some(&other) => return Err(TokenError::WrongVersion(other)),
    }
    if bytes.len() != LEN {
        return Err(TokenError::Malformed);
    }
    let (body, check) = bytes.split_at(LEN - 4);
    if checksum(body) != check {
        return Err(TokenError::Corrupted);
    }
    let word = |range: std::ops::Range<usize>| {
        let mut out = [0u8; 8];
        out.copy_from_slice(&body[range]);
        out
    };
    let position = Position {
        created_at_ms: i64::from_be_bytes(word(1..9)),
        post_id: i64::from_be_bytes(word(9..17)),
    };
    if word(17..25) != fingerprint {
        return Err(TokenError::OtherFilters);
    }
    if PostId::new(position.post_id).is_err() {
        return Err(TokenError::Corrupted);
    }
    Ok(position)
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let digest = Sha256::new_with_prefix(b"postmesh.page-token")
        .chain_update(body)
        .finalize();
    let mut out = [0u8; 4];
    out.copy_from_slice(&digest[..4]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FP: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
    const POSITION: Position = Position {
        created_at_ms: 1_700_000_000_123,
        post_id: 4242,
    };

    #[test]
    fn round_trips() {
        let token = encode(POSITION, FP);
        assert_eq!(decode(&token, FP), Ok(POSITION));
        // URL-safe: usable in query strings without escaping.
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn other_filters_are_refused() {
        let token = encode(POSITION, FP);
        assert_eq!(decode(&token, [0; 8]), Err(TokenError::OtherFilters));
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = URL_SAFE_NO_PAD.decode(encode(POSITION, FP)).unwrap();
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut forged = bytes.clone();
                forged[index] ^= 1 << bit;
                let token = URL_SAFE_NO_PAD.encode(&forged);
                assert!(decode(&token, FP).is_err(), "flip of byte {index} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        for token in ["", "!!!", "bm90IGEgdG9rZW4", "AQ", "{\"post_id\":1}"] {
            assert!(decode(token, FP).is_err(), "{token:?} accepted");
        }
        assert_eq!(decode("", FP), Err(TokenError::Malformed));
        assert_eq!(decode("%%%", FP), Err(TokenError::Malformed));
    }

    #[test]
    fn other_versions_are_named() {
        let mut bytes = URL_SAFE_NO_PAD.decode(encode(POSITION, FP)).unwrap();
        bytes[0] = 2;
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode(&bytes), FP),
            Err(TokenError::WrongVersion(2))
        );
    }

    #[test]
    fn truncated_tokens_are_malformed() {
        let token = encode(POSITION, FP);
        assert_eq!(decode(&token[..token.len() - 4], FP), Err(TokenError::Malformed));
    }
}
