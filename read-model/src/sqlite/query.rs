//! ListPosts filters as SQL over the SQLite read model.
//!
//! User text only ever reaches SQLite as a bound parameter, never as SQL:
//! an exact `author_name = ?`, a case-insensitive substring through the
//! FTS5 trigram index (a quoted phrase, so FTS5's query syntax stays
//! literal), or, for text the trigram index cannot serve, `instr` on the
//! lowered text (no `LIKE`, so `%` and `_` are ordinary characters).
//!
//! Which texts take which path:
//! - three characters or more (no NUL): `post_id IN (SELECT rowid FROM
//!   search WHERE search MATCH 'title : "<text>"')`. The trigram tokenizer
//!   folds case (Unicode-aware) and matches a phrase as a substring, so this
//!   is exactly "contains, ignoring case".
//! - one or two characters, or a NUL: the trigram index holds no shorter
//!   tokens, so these fall back to scanning the posts in ListPosts' order
//!   (the `(created_at, post_id)` index, newest first) and testing
//!   `instr(lower(title), lower(?))` on each until the page is full. Such
//!   short texts match most posts, so the page fills early; a rare one scans
//!   the table. `lower` folds ASCII only, so on this path `É` does not match
//!   `é` (the indexed path folds it).

use crate::{cursor::Position, ListFilter};

use super::schema::Names;

/// The columns of a post, in the order [`super::post_from_row`] reads them.
pub(crate) const POST_COLUMNS: &str = "post_id, version, title, content, author_name, created_at, updated_at, deleted";

/// A value bound to a `?` of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    /// An integer.
    Int(i64),
    /// A text.
    Text(String),
}

/// A statement and its parameters, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Query {
    /// The SQL, with `?` placeholders.
    pub sql: String,
    /// One value per placeholder.
    pub binds: Vec<Bind>,
}

/// Shortest text the trigram index can find.
const TRIGRAM: usize = 3;

/// Whether the trigram index serves a substring search for `text`.
fn indexed(text: &str) -> bool {
    text.chars().count() >= TRIGRAM && !text.contains('\0')
}

/// `text` as an FTS5 string: in double quotes, inner ones doubled, so every
/// character (`*`, `:`, `AND`, `NEAR`, parentheses...) is literal text.
fn phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The page of posts matching `filter`, newest first, strictly after `after`.
pub(crate) fn list(names: &Names, filter: &ListFilter, after: Option<&Position>, limit: i64) -> Query {
    let mut sql = format!("SELECT {POST_COLUMNS} FROM \"{}\" WHERE 1", names.posts);
    let mut binds = Vec::new();
    if !filter.author_name.is_empty() {
        sql.push_str(" AND author_name = ?");
        binds.push(Bind::Text(filter.author_name.clone()));
    }
    if !filter.include_deleted {
        sql.push_str(" AND deleted = 0");
    }
    let mut phrases = Vec::new();
    for (column, text) in [("title", &filter.title), ("content", &filter.content)] {
        if text.is_empty() {
            continue;
        }
        if indexed(text) {
            phrases.push(format!("{column} : {}", phrase(text)));
        } else {
            sql.push_str(&format!(" AND instr(lower({column}), lower(?)) > 0"));
            binds.push(Bind::Text(text.clone()));
        }
    }
    if !phrases.is_empty() {
        sql.push_str(&format!(
            " AND post_id IN (SELECT rowid FROM \"{0}\" WHERE \"{0}\" MATCH ?)",
            names.search
        ));
        binds.push(Bind::Text(phrases.join(" AND ")));
    }
    if let Some(position) = after {
        // A row value: SQLite seeks the (created_at, post_id) index with it.
        sql.push_str(" AND (created_at, post_id) < (?, ?)");
        binds.push(Bind::Int(position.created_at_ms));
        binds.push(Bind::Int(position.post_id));
    }
    sql.push_str(" ORDER BY created_at DESC, post_id DESC LIMIT ?");
    binds.push(Bind::Int(limit));
    Query { sql, binds }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(title: &str, content: &str) -> ListFilter {
        ListFilter {
            title: title.into(),
            content: content.into(),
            ..ListFilter::default()
        }
    }

    #[test]
    fn no_filters_list_live_posts_in_order() {
        let query = list(&Names::live(), &ListFilter::default(), None, 20);
        assert_eq!(
            query.sql,
            format!("SELECT {POST_COLUMNS} FROM \"posts\" WHERE 1 AND deleted = 0 ORDER BY created_at DESC, post_id DESC LIMIT ?")
        );
        assert_eq!(query.binds, vec![Bind::Int(20)]);
    }

    #[test]
    fn user_text_is_bound_and_quoted_never_sql() {
        let nasty = "x\" OR title : \"*\") --'; DROP TABLE posts";
        let query = list(&Names::live(), &filter(nasty, "ab"), None, 5);
        assert!(!query.sql.contains("DROP"));
        assert_eq!(
            query.binds,
            vec![
                Bind::Text("ab".into()),
                Bind::Text("title : \"x\"\" OR title : \"\"*\"\") --'; DROP TABLE posts\"".into()),
                Bind::Int(5),
            ]
        );
    }

    #[test]
    fn short_texts_fall_back_to_a_scan_and_long_ones_use_the_index() {
        assert!(!indexed("ab"));
        assert!(!indexed("a\0b"));
        assert!(indexed("abc"));
        assert!(indexed("ééé"));
        let query = list(&Names::live(), &filter("rust", "tokio"), None, 5);
        assert!(query.sql.contains("MATCH ?"));
        assert!(!query.sql.contains("instr"));
        assert_eq!(
            query.binds[0],
            Bind::Text("title : \"rust\" AND content : \"tokio\"".into())
        );
    }

    #[test]
    fn keyset_condition_is_strictly_after() {
        let after = Position {
            created_at_ms: 1_000,
            post_id: 42,
        };
        let query = list(&Names::live(), &ListFilter::default(), Some(&after), 2);
        assert!(query.sql.contains("(created_at, post_id) < (?, ?)"));
        assert_eq!(query.binds, vec![Bind::Int(1_000), Bind::Int(42), Bind::Int(2)]);
    }
}
