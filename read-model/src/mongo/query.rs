//! ListPosts filters as MongoDB query documents.
//!
//! User input only ever appears as a *value* (an `$eq` operand or an escaped
//! `$regex` pattern), never as a key, so text such as `$where` or
//! `{"$gt": ""}` is compared literally and cannot become an operator.

use mongodb::bson::{doc, DateTime, Document};

use crate::{cursor::Position, ListFilter};

/// The query document of `filter`: every set filter ANDed, plus the keyset
/// condition "strictly after `after` in newest-first order" when paging on.
pub(crate) fn to_document(filter: &ListFilter, after: Option<&Position>) -> Document {
    let mut conditions: Vec<Document> = Vec::new();
    if !filter.author_name.is_empty() {
        conditions.push(doc! { "author_name": { "$eq": filter.author_name.as_str() } });
    }
    if !filter.title.is_empty() {
        conditions.push(doc! { "title": contains_ignoring_case(&filter.title) });
    }
    if !filter.content.is_empty() {
        conditions.push(doc! { "content": contains_ignoring_case(&filter.content) });
    }
    if !filter.include_deleted {
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

/// The order ListPosts returns: newest first, ties broken by the higher id.
pub(crate) fn newest_first() -> Document {
    doc! { "created_at": -1, "post_id": -1 }
}

/// Documents that come strictly after `position` in [`newest_first`] order.
fn after_position(position: &Position) -> Document {
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
fn literal_pattern(text: &str) -> String {
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
        assert_eq!(to_document(&filter, None), doc! { "deleted": { "$eq": false } });
        let all = ListFilter {
            include_deleted: true,
            ..ListFilter::default()
        };
        assert_eq!(to_document(&all, None), Document::new());
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
        assert_eq!(to_document(&filter, None), expected);
    }

    #[test]
    fn user_text_never_becomes_an_operator() {
        for nasty in ["$where", "{\"$gt\": \"\"}", "$ne", "a.b", "this.x == 1"] {
            let filter = ListFilter {
                author_name: nasty.into(),
                include_deleted: true,
                ..ListFilter::default()
            };
            let document = to_document(&filter, None);
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
        let document = to_document(&ListFilter::default(), Some(&position));
        assert_eq!(document.get_array("$and").unwrap().len(), 2);
    }
}
