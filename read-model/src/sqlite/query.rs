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
//!   is exactly "contains, ignoring case". A page looks in a [`Window`] of
//!   the newest posts first, then in the rest. Posts queued for the index
//!   (changed in the last moments, see `super::indexer`) are tested by
//!   `instr` on their lowered text instead, so they fold ASCII only until
//!   the index has them.
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

/// Posts the first window of a substring search covers (see [`Window`]).
pub(crate) const WINDOW: i64 = 4096;

/// A stretch of ListPosts' order a substring search looks in first: the
/// newest [`WINDOW`] posts (of the other filters) after the page's cursor.
///
/// Why: FTS5 answers a phrase in rowid (post id) order, cheaply and
/// stopping early, but ListPosts' order is `(created_at, post_id)`, so the
/// complete query must find every match before it can sort them: about
/// 8 ms for a topic in 1 % of 100,000 posts, and more the more posts match.
/// Post ids follow commit order and `created_at` follows the clock, so the
/// newest posts hold a narrow range of ids: the search restricted to that
/// range (`rowid BETWEEN`) reads a few hundred index entries, and fills the
/// page whenever a match is no rarer than about 1 in 200. When it does not,
/// the complete query runs on the rest. Correct whatever the ids: the
/// window's own posts bound the range, so a wide range is only slower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The window's oldest post (inclusive); `None` when the window reaches
    /// the oldest post.
    pub oldest: Option<Position>,
    /// The smallest and largest post id in the window.
    pub ids: (i64, i64),
}

/// ListPosts' filters as SQL conditions and their parameters.
#[derive(Clone, Debug)]
pub(crate) struct Listing<'a> {
    names: &'a Names,
    /// ` AND …` conditions but the search (author, deleted, and the
    /// short-text scans), in order with `binds`.
    conditions: String,
    binds: Vec<Bind>,
    /// The author condition alone, if any: what a [`Window`] is cut with,
    /// so that it is read from a covering index without touching a row.
    author: Option<String>,
    /// The FTS5 expression of the indexed substring filters, if any.
    matching: Option<String>,
    /// The indexed substring filters, `(column, text)`: what a post queued
    /// for the index is tested with directly.
    searched: Vec<(&'static str, String)>,
}

impl<'a> Listing<'a> {
    /// The conditions of `filter` over `names`' tables.
    pub fn new(names: &'a Names, filter: &ListFilter) -> Self {
        let mut conditions = String::new();
        let mut binds = Vec::new();
        if !filter.author_name.is_empty() {
            conditions.push_str(" AND author_name = ?");
            binds.push(Bind::Text(filter.author_name.clone()));
        }
        if !filter.include_deleted {
            conditions.push_str(" AND deleted = 0");
        }
        let mut phrases = Vec::new();
        let mut searched = Vec::new();
        for (column, text) in [("title", &filter.title), ("content", &filter.content)] {
            if text.is_empty() {
                continue;
            }
            if indexed(text) {
                phrases.push(format!("{column} : {}", phrase(text)));
                searched.push((column, text.clone()));
            } else {
                conditions.push_str(&format!(" AND instr(lower({column}), lower(?)) > 0"));
                binds.push(Bind::Text(text.clone()));
            }
        }
        Self {
            names,
            conditions,
            binds,
            author: (!filter.author_name.is_empty()).then(|| filter.author_name.clone()),
            matching: (!phrases.is_empty()).then(|| phrases.join(" AND ")),
            searched,
        }
    }

    /// Whether a substring filter goes through the search index (and so
    /// [`window`](Self::window) first).
    pub fn searches(&self) -> bool {
        self.matching.is_some()
    }

    /// `FROM posts WHERE <filters but the search>`, strictly after `after`;
    /// with only the author's filter for a window's bounds (a window is
    /// any stretch of the order: the page applies the other filters in it).
    fn from(&self, after: Option<&Position>, bounds: bool) -> Query {
        let (conditions, mut binds) = match (bounds, &self.author) {
            (false, _) => (self.conditions.clone(), self.binds.clone()),
            (true, Some(author)) => (" AND author_name = ?".to_owned(), vec![Bind::Text(author.clone())]),
            (true, None) => (String::new(), Vec::new()),
        };
        let mut sql = format!("FROM \"{}\" WHERE 1{conditions}", self.names.posts);
        if let Some(position) = after {
            // A row value: SQLite seeks the (created_at, post_id) index with it.
            sql.push_str(" AND (created_at, post_id) < (?, ?)");
            binds.push(Bind::Int(position.created_at_ms));
            binds.push(Bind::Int(position.post_id));
        }
        Query { sql, binds }
    }

    /// The page of posts matching every filter, newest first, strictly
    /// after `after`; within `window` when given.
    pub fn page(&self, after: Option<&Position>, window: Option<&Window>, limit: i64) -> Query {
        let Query { sql: from, mut binds } = self.from(after, false);
        let mut sql = format!("SELECT {POST_COLUMNS} {from}");
        if let Some(oldest) = window.and_then(|w| w.oldest) {
            sql.push_str(" AND (created_at, post_id) >= (?, ?)");
            binds.push(Bind::Int(oldest.created_at_ms));
            binds.push(Bind::Int(oldest.post_id));
        }
        if let Some(matching) = &self.matching {
            let Names { search, pending, .. } = self.names;
            // Indexed posts by the index; posts queued for it by their text.
            sql.push_str(&format!(
                " AND ((post_id IN (SELECT rowid FROM \"{search}\" WHERE \"{search}\" MATCH ?"
            ));
            binds.push(Bind::Text(matching.clone()));
            if let Some(window) = window {
                // FTS5 seeks its doclists to the range instead of reading them whole.
                sql.push_str(" AND rowid BETWEEN ? AND ?");
                binds.push(Bind::Int(window.ids.0));
                binds.push(Bind::Int(window.ids.1));
            }
            sql.push_str(&format!(
                ") AND post_id NOT IN (SELECT post_id FROM \"{pending}\")) \
                 OR (post_id IN (SELECT post_id FROM \"{pending}\")"
            ));
            for (column, text) in &self.searched {
                sql.push_str(&format!(" AND instr(lower({column}), lower(?)) > 0"));
                binds.push(Bind::Text(text.clone()));
            }
            sql.push_str("))");
        }
        sql.push_str(" ORDER BY created_at DESC, post_id DESC LIMIT ?");
        binds.push(Bind::Int(limit));
        Query { sql, binds }
    }

    /// The window's oldest post: the [`WINDOW`]th of the author's (or of
    /// all) after `after`, deleted or not (no row when fewer remain).
    pub fn window_oldest(&self, after: Option<&Position>) -> Query {
        let Query { sql: from, mut binds } = self.from(after, true);
        binds.push(Bind::Int(WINDOW - 1));
        Query {
            sql: format!("SELECT created_at, post_id {from} ORDER BY created_at DESC, post_id DESC LIMIT 1 OFFSET ?"),
            binds,
        }
    }

    /// The smallest and largest post id after `after` down to `oldest`
    /// (NULLs when there is none).
    pub fn window_ids(&self, after: Option<&Position>, oldest: Option<&Position>) -> Query {
        let Query { sql: from, mut binds } = self.from(after, true);
        let mut sql = format!("SELECT min(post_id), max(post_id) {from}");
        if let Some(oldest) = oldest {
            sql.push_str(" AND (created_at, post_id) >= (?, ?)");
            binds.push(Bind::Int(oldest.created_at_ms));
            binds.push(Bind::Int(oldest.post_id));
        }
        Query { sql, binds }
    }
}

/// The page of posts matching `filter`, newest first, strictly after
/// `after`: one complete query (what a window falls back to).
pub(crate) fn list(names: &Names, filter: &ListFilter, after: Option<&Position>, limit: i64) -> Query {
    Listing::new(names, filter).page(after, None, limit)
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
                Bind::Text(nasty.into()),
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
        // instr only for posts queued for the index, never as a scan.
        let (indexed_part, queued_part) = query.sql.split_once(" OR ").unwrap();
        assert!(!indexed_part.contains("instr"), "{}", query.sql);
        assert!(queued_part.starts_with("(post_id IN (SELECT post_id FROM \"pending_posts\")"));
        assert_eq!(
            query.binds[0],
            Bind::Text("title : \"rust\" AND content : \"tokio\"".into())
        );
    }

    #[test]
    fn a_window_is_cut_by_the_author_alone_and_bounds_the_search() {
        let names = Names::live();
        let filter = ListFilter {
            author_name: "ann".into(),
            title: "rust".into(),
            content: "ab".into(),
            ..ListFilter::default()
        };
        let listing = Listing::new(&names, &filter);
        assert!(listing.searches());
        // Only columns of the (author_name, created_at, post_id) index.
        let oldest = listing.window_oldest(None);
        assert!(
            !oldest.sql.contains("deleted") && !oldest.sql.contains("instr"),
            "{}",
            oldest.sql
        );
        assert_eq!(oldest.binds, vec![Bind::Text("ann".into()), Bind::Int(WINDOW - 1)]);
        let window = Window {
            oldest: Some(Position {
                created_at_ms: 7,
                post_id: 3,
            }),
            ids: (3, 90),
        };
        let page = listing.page(None, Some(&window), 20);
        assert!(page.sql.contains("(created_at, post_id) >= (?, ?)"));
        assert!(page.sql.contains("MATCH ? AND rowid BETWEEN ? AND ?)"));
        assert!(page.sql.contains("NOT IN (SELECT post_id FROM \"pending_posts\")"));
        assert!(page.sql.contains("deleted = 0") && page.sql.contains("instr(lower(content)"));
        assert_eq!(
            page.binds,
            vec![
                Bind::Text("ann".into()),
                Bind::Text("ab".into()),
                Bind::Int(7),
                Bind::Int(3),
                Bind::Text("title : \"rust\"".into()),
                Bind::Int(3),
                Bind::Int(90),
                Bind::Text("rust".into()),
                Bind::Int(20),
            ]
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
