//! ListPosts filters as MongoDB query documents.
//!
//! User input only ever appears as a *value* (an `$eq` operand or an escaped
//! `$regex` pattern), never as a key, so text such as `$where` or
//! `{"$gt": ""}` is compared literally and cannot become an operator.

use mongodb::bson::{doc, DateTime, Document};
use sha2::{Digest, Sha256};

use crate::cursor::Position;

/// The filters of one ListPosts call. Empty strings mean "no filter".
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
    /// The query document: every set filter ANDed, plus the keyset condition
    /// "strictly after `after` in newest-first order" when paging on.
    pub fn to_document(&self, after: Option<&Position>) -> Document {
        let mut conditions: Vec<Document> = Vec::new();
        if !self.author_name.is_empty() {
            conditions.push(doc! { "author_name": { "$eq": self.author_name.as_str() } });
        }
        if !self.title.is_empty() {
            conditions.push(doc! { "title": contains_ignoring_case(&self.title) });
        }
        if !self.content.is_empty() {
            conditions.push(doc! { "content": contains_ignoring_case(&self.content) });
        }
        if !self.include_deleted {
            conditions.push(doc! { "deleted": { "$eq": false } });
        }
        if let Some(position) = after {
            conditions.push(after_position(position));
        }
        match conditions.len() {
            0 => Document::new(),
            1 => conditions.pop().unwrap_or_default(),
            _ => doc! { "$and": conditions },
        }
    }

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

/// The order ListPosts returns: newest first, ties broken by the higher id.
pub fn newest_first() -> Document {
    doc! { "created_at": -1, "post_id": -1 }
}

/// Documents that come strictly after `position` in [`newest_first`] order.
pub fn after_position(position: &Position) -> Document {
    let created_at = DateTime::from_millis(position.created_at_ms);
    doc! {
        "$or": [
            { "created_at": { "$lt": created_at } },
            { "created_at": { "$eq": created_at }, "post_id": { "$lt": position.post_id } },
        ]
    }
}

/// `{$regex, $options: "i"}` matching `text` literally anywhere in the field.
fn contains_ignoring_case(text: &str) -> Document {
    doc! { "$regex": literal_pattern(text), "$options": "i" }
}

/// A regex pattern matching exactly `text`. `regex::escape` backslash-escapes
/// every metacharacter, which both PCRE (MongoDB) and RE2 (FerretDB) read as
/// the literal character; NUL is spelled `\x00` because a pattern may not
/// contain a raw NUL byte.
pub fn literal_pattern(text: &str) -> String {
    regex::escape(text).replace('\0', "\\x00")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mongodb::bson::Bson;

    use super::*;

    #[test]
    fn no_filters_match_live_posts_only() {
        let filter = ListFilter::default();
        assert_eq!(filter.to_document(None), doc! { "deleted": { "$eq": false } });
        let all = ListFilter {
            include_deleted: true,
            ..ListFilter::default()
        };
        assert_eq!(all.to_document(None), Document::new());
    }

    #[test]
    fn filters_combine_with_and() {
        let filter = ListFilter {
            author_name: "ann".into(),
            title: "Rust".into(),
            content: "tokio".into(),
            include_deleted: true,
        };
        let expected = doc! { "$and": [
            { "author_name": { "$eq": "ann" } },
            { "title": { "$regex": "Rust", "$options": "i" } },
            { "content": { "$regex": "tokio", "$options": "i" } },
        ] };
        assert_eq!(filter.to_document(None), expected);
    }

    #[test]
    fn user_text_never_becomes_an_operator() {
        for nasty in ["$where", "{\"$gt\": \"\"}", "$ne", "a.b", "this.x == 1"] {
            let filter = ListFilter {
                author_name: nasty.into(),
                include_deleted: true,
                ..ListFilter::default()
            };
            let document = filter.to_document(None);
            // The only top-level key is the field name; the value sits under $eq.
            assert_eq!(document.keys().collect::<Vec<_>>(), vec!["author_name"]);
            let inner = document.get_document("author_name").unwrap();
            assert_eq!(inner.get("$eq"), Some(&Bson::String(nasty.into())));
        }
    }

    #[test]
    fn regex_metacharacters_are_escaped() {
        assert_eq!(literal_pattern(".*"), r"\.\*");
        assert_eq!(literal_pattern("a|b"), r"a\|b");
        assert_eq!(literal_pattern("(x)[y]{2}^$"), r"\(x\)\[y\]\{2\}\^\$");
        assert_eq!(literal_pattern("a\0b"), r"a\x00b");
        assert_eq!(literal_pattern("plain words"), "plain words");
        // The escaped pattern matches the text itself and nothing looser.
        for text in [".*", "a|b", "$where", "{\"$gt\": \"\"}", "x+?", "\\d"] {
            let re = regex::Regex::new(&format!("(?i){}", literal_pattern(text))).unwrap();
            assert!(re.is_match(&format!("before {text} after")));
        }
        let re = regex::Regex::new(&literal_pattern("a|b")).unwrap();
        assert!(!re.is_match("a"));
        assert!(!re.is_match("b"));
    }

    #[test]
    fn keyset_condition_is_strictly_after() {
        let position = Position {
            created_at_ms: 1_000,
            post_id: 42,
        };
        let expected = doc! { "$or": [
            { "created_at": { "$lt": DateTime::from_millis(1_000) } },
            { "created_at": { "$eq": DateTime::from_millis(1_000) }, "post_id": { "$lt": 42_i64 } },
        ] };
        assert_eq!(after_position(&position), expected);
        let filter = ListFilter::default();
        let document = filter.to_document(Some(&position));
        assert_eq!(document.get_array("$and").unwrap().len(), 2);
    }

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
