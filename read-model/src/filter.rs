//! The filters of one ListPosts call, as every implementation receives them.
//! Each implementation translates them into its own query (for MongoDB see
//! `mongo::query`), always treating the user's text as a literal value: a
//! filter never becomes an operator, a pattern or SQL.

use sha2::{Digest, Sha256};

/// The filters of one ListPosts call. Empty strings mean "no filter"; the
/// set ones are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Exact author name.
    pub author_name: String,
    /// Case-insensitive literal substring of the title.
    pub title: String,
    /// Case-insensitive literal substring of the content.
    pub content: String,
    /// Include deleted posts.
    pub include_deleted: bool,
}

impl ListFilter {
    /// A short digest of the filters, stored in page tokens so that a token
    /// is only accepted with the filters it was made for.
    pub fn fingerprint(&self) -> [u8; 8] {
        let mut hasher = Sha256::new();
        hasher.update(b"postmesh.list-filter.v1");
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for field in [&self.author_name, &self.title, &self.content] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.update([u8::from(self.include_deleted)]);
        let digest = hasher.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_filters_apart() {
        let a = ListFilter {
            author_name: "ab".into(),
            title: "c".into(),
            ..ListFilter::default()
        };
        let b = ListFilter {
            author_name: "a".into(),
            title: "bc".into(),
            ..ListFilter::default()
        };
        let c = ListFilter {
            include_deleted: true,
            ..a.clone()
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
