//! ListPosts filters as SQL over the SQLite read model.
//!
//! User text only ever reaches SQLite as a bound parameter, never as SQL:
//! an exact `author_name = ?`, a case-insensitive substring through the
//! FTS5 trigram index (a quoted phrase, so FTS5's query syntax stays
//! literal), or, for text the trigram index cannot serve, `instr` on the
//! lowered text (no `LIKE`, so `%` and `_` are ordinary characters).
//!
//! Which texts take which path:
//! - three characters or more (no NUL): the FTS5 trigram index, with a
//!   quoted phrase per column (`title : "<text>"`). The trigram tokenizer
//!   folds case (Unicode-aware) and matches a phrase as a substring, so this
//!   is exactly "contains, ignoring case". The index's rowid is a post's
//!   [`search_key`] complemented ([`rowid`]), which sorts as ListPosts'
//!   `(created_at, post_id)` backwards, so FTS5 hands the matches over
//!   newest first in its own, forward order and the page stops after
//!   `limit` of them ([`Listing::indexed`]) instead of finding every match
//!   and sorting. Posts queued for the index (changed in the last moments,
//!   see `super::indexer`) are tested by `instr` on their lowered text
//!   instead ([`Listing::queued`]), so they fold ASCII only until the index
//!   has them.
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

/// [`POST_COLUMNS`] of the listing queries' `p` (the posts table).
const PAGE_COLUMNS: &str =
    "p.post_id, p.version, p.title, p.content, p.author_name, p.created_at, p.updated_at, p.deleted";

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

/// Bits of a [`search_key`] below its creation time: the post id's.
pub(crate) const KEY_ID_BITS: u32 = 20;
/// The post id bits of a key.
pub(crate) const KEY_ID_MASK: i64 = (1 << KEY_ID_BITS) - 1;
/// Creation times a key keeps apart (in ms, either side of the epoch: up
/// to the year 2248); later or earlier ones share the key of the bound,
/// which only makes their pages take the exact step on more posts.
pub(crate) const KEY_MS_MAX: i64 = (1 << (63 - KEY_ID_BITS)) - 1;

/// A creation time as the part of a key above the id bits.
fn key_ms(created_at_ms: i64) -> i64 {
    created_at_ms.clamp(-KEY_MS_MAX - 1, KEY_MS_MAX)
}

/// A post's key in the search index: its creation time (ms) in the high
/// bits and the low [`KEY_ID_BITS`] of its id below, so that the index's
/// rowid order is ListPosts' `(created_at, post_id)` order but where two
/// posts of one millisecond have ids further apart than 2^20 (never for
/// ids in commit order). The store gives a post whose key is taken the next
/// free one of its millisecond. As SQL over a posts row: [`search_key_sql`].
pub(crate) fn search_key(created_at_ms: i64, post_id: i64) -> i64 {
    (key_ms(created_at_ms) << KEY_ID_BITS) | (post_id & KEY_ID_MASK)
}

/// The search index's rowid for `key`: its bitwise complement, so that the
/// newest post has the lowest rowid. FTS5 walks its doclists forward at
/// about twice the speed it walks them backward (a first page of a
/// substring over 100,000 posts: 0.09 ms against 0.19 ms, plain SQLite), and
/// ListPosts wants the newest first. The complement reverses the order of
/// every `i64`, with no overflow at the ends.
pub(crate) fn rowid(key: i64) -> i64 {
    !key
}

/// [`rowid`] in SQL, of the expression `expr`. The complement is its own
/// inverse, so this also turns an index rowid back into its key.
pub(crate) fn rowid_sql(expr: &str) -> String {
    format!("~{expr}")
}

/// [`search_key`] of the posts row `alias`, in SQL.
pub(crate) fn search_key_sql(alias: &str) -> String {
    format!(
        "((max(min({alias}.created_at, {max}), {min}) << {bits}) | ({alias}.post_id & {mask}))",
        max = KEY_MS_MAX,
        min = -KEY_MS_MAX - 1,
        bits = KEY_ID_BITS,
        mask = KEY_ID_MASK,
    )
}

/// ListPosts' filters as SQL conditions and their parameters.
#[derive(Clone, Debug)]
pub(crate) struct Listing<'a> {
    names: &'a Names,
    /// ` AND …` conditions on `p` but the search (author, deleted, and the
    /// short-text scans), in order with `binds`.
    conditions: String,
    binds: Vec<Bind>,
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
            conditions.push_str(" AND p.author_name = ?");
            binds.push(Bind::Text(filter.author_name.clone()));
        }
        if !filter.include_deleted {
            conditions.push_str(" AND p.deleted = 0");
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
                conditions.push_str(&format!(" AND instr(lower(p.{column}), lower(?)) > 0"));
                binds.push(Bind::Text(text.clone()));
            }
        }
        Self {
            names,
            conditions,
            binds,
            matching: (!phrases.is_empty()).then(|| phrases.join(" AND ")),
            searched,
        }
    }

    /// Whether a substring filter goes through the search index (and so
    /// [`indexed`](Self::indexed) and [`queued`](Self::queued) make a page).
    pub fn searches(&self) -> bool {
        self.matching.is_some()
    }

    /// ` AND <filters but the search>`, strictly after `after`.
    fn filters(&self, after: Option<&Position>) -> (String, Vec<Bind>) {
        let mut sql = self.conditions.clone();
        let mut binds = self.binds.clone();
        if let Some(position) = after {
            // A row value: SQLite seeks the (created_at, post_id) index with it.
            sql.push_str(" AND (p.created_at, p.post_id) < (?, ?)");
            binds.push(Bind::Int(position.created_at_ms));
            binds.push(Bind::Int(position.post_id));
        }
        (sql, binds)
    }

    /// The page of posts matching every filter, newest first, strictly
    /// after `after`: one query for a listing that does not search.
    pub fn page(&self, after: Option<&Position>, limit: i64) -> Query {
        let (filters, mut binds) = self.filters(after);
        let posts = &self.names.posts;
        binds.push(Bind::Int(limit));
        Query {
            sql: format!(
                "SELECT {PAGE_COLUMNS} FROM \"{posts}\" p WHERE 1{filters} \
                 ORDER BY p.created_at DESC, p.post_id DESC LIMIT ?"
            ),
            binds,
        }
    }

    /// Indexed posts matching every filter, strictly after `after`, newest
    /// key first. Without `range`, at most `limit`: FTS5 walks its index
    /// newest first and stops there, but posts of one millisecond may come
    /// in another order than their ids'. With `range` (of keys: the
    /// millisecond the walk's page ended in), every post of those keys, a
    /// few, for the caller to sort into the exact page. The walk goes
    /// forward over the index's rowids ([`rowid`]), newest post first, and
    /// `after` is a lower bound on them that FTS5 seeks its doclists to.
    pub fn indexed(&self, after: Option<&Position>, range: Option<(i64, i64)>, limit: i64) -> Query {
        let Names {
            posts,
            search,
            keys,
            pending,
            ..
        } = self.names;
        let mut binds = vec![Bind::Text(self.matching.clone().unwrap_or_default())];
        // CROSS JOIN: the index drives the loop, so its order is the page's.
        let key = rowid_sql(&format!("\"{search}\".rowid"));
        let mut sql = format!(
            "SELECT {PAGE_COLUMNS}, {key} AS walk_key FROM \"{search}\" \
             CROSS JOIN \"{keys}\" k ON k.key = {key} CROSS JOIN \"{posts}\" p ON p.post_id = k.post_id \
             WHERE \"{search}\" MATCH ?"
        );
        if let Some(after) = after {
            // FTS5 seeks its doclists to the key range instead of reading them whole.
            sql.push_str(&format!(" AND \"{search}\".rowid >= ?"));
            binds.push(Bind::Int(rowid(search_key(after.created_at_ms, KEY_ID_MASK))));
        }
        if let Some((from, to)) = range {
            sql.push_str(&format!(" AND \"{search}\".rowid BETWEEN ? AND ?"));
            binds.push(Bind::Int(rowid(to)));
            binds.push(Bind::Int(rowid(from)));
        }
        let (filters, filter_binds) = self.filters(after);
        // A queued post's entry in the index may be stale: it is tested by its text.
        sql.push_str(&format!(
            "{filters} AND p.post_id NOT IN (SELECT post_id FROM \"{pending}\")"
        ));
        binds.extend(filter_binds);
        sql.push_str(&format!(" ORDER BY \"{search}\".rowid"));
        if range.is_none() {
            sql.push_str(" LIMIT ?");
            binds.push(Bind::Int(limit));
        }
        Query { sql, binds }
    }

    /// Posts queued for the search index matching every filter (the
    /// searched texts tested on the text itself), strictly after `after`,
    /// newest first, at most `limit`.
    pub fn queued(&self, after: Option<&Position>, limit: i64) -> Query {
        let Names { posts, pending, .. } = self.names;
        let (filters, mut binds) = self.filters(after);
        let mut sql = format!(
            "SELECT {PAGE_COLUMNS} FROM \"{posts}\" p \
             WHERE p.post_id IN (SELECT post_id FROM \"{pending}\"){filters}"
        );
        for (column, text) in &self.searched {
            sql.push_str(&format!(" AND instr(lower(p.{column}), lower(?)) > 0"));
            binds.push(Bind::Text(text.clone()));
        }
        sql.push_str(" ORDER BY p.created_at DESC, p.post_id DESC LIMIT ?");
        binds.push(Bind::Int(limit));
        Query { sql, binds }
    }
}

/// The first statement of the page of posts matching `filter` strictly
/// after `after` (the whole page but for searches, which also take
/// [`Listing::queued`] and, when a page is full, the exact step): for
/// `EXPLAIN QUERY PLAN`.
pub(crate) fn list(names: &Names, filter: &ListFilter, after: Option<&Position>, limit: i64) -> Query {
    let listing = Listing::new(names, filter);
    if listing.searches() {
        listing.indexed(after, None, limit)
    } else {
        listing.page(after, limit)
    }
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
            format!(
                "SELECT {PAGE_COLUMNS} FROM \"posts\" p WHERE 1 AND p.deleted = 0 \
                 ORDER BY p.created_at DESC, p.post_id DESC LIMIT ?"
            )
        );
        assert_eq!(query.binds, vec![Bind::Int(20)]);
    }

    #[test]
    fn user_text_is_bound_and_quoted_never_sql() {
        let nasty = "x\" OR title : \"*\") --'; DROP TABLE posts";
        let names = Names::live();
        let listing = Listing::new(&names, &filter(nasty, "ab"));
        for query in [listing.indexed(None, None, 5), listing.queued(None, 5)] {
            assert!(!query.sql.contains("DROP"), "{}", query.sql);
        }
        assert_eq!(
            listing.indexed(None, None, 5).binds,
            vec![
                Bind::Text("title : \"x\"\" OR title : \"\"*\"\") --'; DROP TABLE posts\"".into()),
                Bind::Text("ab".into()),
                Bind::Int(5),
            ]
        );
        assert_eq!(
            listing.queued(None, 5).binds,
            vec![Bind::Text("ab".into()), Bind::Text(nasty.into()), Bind::Int(5)]
        );
    }

    #[test]
    fn short_texts_fall_back_to_a_scan_and_long_ones_use_the_index() {
        assert!(!indexed("ab"));
        assert!(!indexed("a\0b"));
        assert!(indexed("abc"));
        assert!(indexed("ééé"));
        let names = Names::live();
        let listing = Listing::new(&names, &filter("rust", "tokio"));
        assert!(listing.searches());
        let walk = listing.indexed(None, None, 5);
        assert!(walk.sql.contains("MATCH ?"), "{}", walk.sql);
        assert!(
            walk.sql.ends_with("ORDER BY \"fts_posts\".rowid LIMIT ?"),
            "{}",
            walk.sql
        );
        // instr only for posts queued for the index, never as a scan.
        assert!(!walk.sql.contains("instr"), "{}", walk.sql);
        assert!(walk.sql.contains("NOT IN (SELECT post_id FROM \"pending_posts\")"));
        assert_eq!(
            walk.binds[0],
            Bind::Text("title : \"rust\" AND content : \"tokio\"".into())
        );
        let queued = listing.queued(None, 5);
        assert!(queued
            .sql
            .contains("p.post_id IN (SELECT post_id FROM \"pending_posts\")"));
        assert!(queued.sql.contains("instr(lower(p.title), lower(?))"));
        assert!(!queued.sql.contains("MATCH"));
    }

    #[test]
    fn the_exact_step_bounds_the_walk_to_a_key_range_and_sorts() {
        let names = Names::live();
        let listing = Listing::new(&names, &filter("rust", ""));
        let after = Position {
            created_at_ms: 7,
            post_id: 3,
        };
        let exact = listing.indexed(Some(&after), Some((search_key(5, 0), search_key(6, KEY_ID_MASK))), 20);
        assert!(
            exact.sql.contains("rowid >= ? AND \"fts_posts\".rowid BETWEEN ? AND ?"),
            "{}",
            exact.sql
        );
        assert!(exact.sql.ends_with("ORDER BY \"fts_posts\".rowid"), "{}", exact.sql);
        assert_eq!(
            exact.binds,
            vec![
                Bind::Text("title : \"rust\"".into()),
                Bind::Int(!search_key(7, KEY_ID_MASK)),
                Bind::Int(!search_key(6, KEY_ID_MASK)),
                Bind::Int(!(5 << KEY_ID_BITS)),
                Bind::Int(7),
                Bind::Int(3),
            ]
        );
    }

    #[test]
    fn keys_sort_as_listings_do() {
        let order = [
            (-5, 9),
            (-5, 10),
            (0, 1),
            (0, 2),
            (1, 0),
            (1_764_000_000_000, 123_456_789),
        ];
        let keys: Vec<i64> = order.iter().map(|&(ms, id)| search_key(ms, id)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(
            search_key(1_764_000_000_000, 123_456_789) >> KEY_ID_BITS,
            1_764_000_000_000
        );
        // Beyond the range: clamped, never wrapped around.
        assert!(search_key(i64::MAX, 1) > search_key(KEY_MS_MAX - 1, KEY_ID_MASK));
        assert!(search_key(i64::MIN, 1) < search_key(-KEY_MS_MAX, 0));
        // As rowids, newest first, the ends included.
        let mut rowids: Vec<i64> = keys.iter().map(|&key| rowid(key)).collect();
        rowids.reverse();
        assert!(rowids.windows(2).all(|w| w[0] < w[1]), "{rowids:?}");
        assert_eq!(rowid(i64::MIN), i64::MAX);
        assert_eq!(rowid(rowid(-7)), -7);
    }

    #[test]
    fn keyset_condition_is_strictly_after() {
        let after = Position {
            created_at_ms: 1_000,
            post_id: 42,
        };
        let query = list(&Names::live(), &ListFilter::default(), Some(&after), 2);
        assert!(query.sql.contains("(p.created_at, p.post_id) < (?, ?)"));
        assert_eq!(query.binds, vec![Bind::Int(1_000), Bind::Int(42), Bind::Int(2)]);
    }
}
