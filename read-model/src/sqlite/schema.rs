//! The tables of one SQLite read model (the live one or a staging one) and
//! the statements that create, swap and drop them.
//!
//! Indexes are declared as `UNIQUE` constraints rather than `CREATE INDEX`:
//! SQLite names a constraint's index after its table
//! (`sqlite_autoindex_<table>_<n>`) and renames it with the table, so a
//! staging table renamed into place carries its indexes without a rebuild,
//! and `ensure_schema` on the swapped-in model finds them. (A named index
//! would keep its staging name, and ensuring the schema again would build a
//! second copy.) Each constraint holds trivially because `post_id`, or
//! `(post_id, version)`, is unique already; it is there for its index.
//!
//! The meta table (checkpoint, leases) is swapped with the model, as the
//! contract asks: a rebuilt model carries the checkpoint it was built to.
//!
//! Triggers are the exception: they keep their names and mention the queue
//! table by name, so a swap drops the staging ones and creates them anew
//! under the live names, in the same transaction.
//!
//! The search index follows the posts behind them: triggers only queue a
//! changed post in `pending_<posts>` (with the text the index holds for it,
//! to delete), and the store's indexer moves the queue into the index when
//! the writer is idle (see `super::indexer`). Searches read the queued
//! posts' text directly, so no change is missing from them meanwhile.

use super::query::{rowid_sql, search_key_sql};

/// Default name of the latest-state table.
pub const POSTS: &str = "posts";
/// Default name of the per-version table.
pub const POST_VERSIONS: &str = "post_versions";

/// The names of one model's tables and triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Names {
    /// One row per post, its newest applied version.
    pub posts: String,
    /// One row per `(post_id, version)`.
    pub versions: String,
    /// The FTS5 trigram index over `posts`' title and content, its rowids
    /// the complements of the posts' keys (`query::rowid`).
    pub search: String,
    /// The search index of earlier versions (its rowids post ids, later
    /// the keys themselves): re-indexed into `search` where found.
    pub legacy_search: String,
    /// The catch-up's checkpoint and the leases (a few rows), swapped with
    /// the model so a rebuilt one carries its own checkpoint.
    pub meta: String,
    /// Posts whose title or content changed since the search index last
    /// took them, with the text it holds for them.
    pub pending: String,
    /// Each indexed post's key in the search index (its rowid there; see
    /// `query::search_key`).
    pub keys: String,
}

impl Names {
    /// The live model's names.
    pub fn live() -> Self {
        Self::with(POSTS, POST_VERSIONS)
    }

    fn with(posts: &str, versions: &str) -> Self {
        Self {
            posts: posts.to_owned(),
            versions: versions.to_owned(),
            // A prefix, not a suffix: no staging tag can make a posts or
            // versions table collide with a search table (or its shadows).
            search: format!("fts_{posts}"),
            legacy_search: format!("search_{posts}"),
            meta: format!("meta_{posts}"),
            pending: format!("pending_{posts}"),
            keys: format!("keys_{posts}"),
        }
    }

    /// A staging model's names: `<table>_<tag>`, the tag reduced to
    /// `[A-Za-z0-9_]` so it can never close the quoted identifier.
    pub fn staging(&self, tag: &str) -> Self {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Self::with(&format!("{}_{tag}", self.posts), &format!("{}_{tag}", self.versions))
    }

    /// The triggers queueing the changes of `posts` for the search index.
    fn triggers(&self) -> [String; 3] {
        ["insert", "update", "delete"].map(|what| format!("{}_{what}", self.pending))
    }

    /// The triggers of earlier versions, which wrote the search index in
    /// the writer's transaction: dropped when the schema is ensured.
    fn legacy_triggers(&self) -> [String; 3] {
        ["insert", "update", "delete"].map(|what| format!("{}_{what}", self.legacy_search))
    }

    /// Creates the tables, the search index and its triggers where missing.
    pub fn create(&self) -> String {
        let Self {
            posts,
            versions,
            search,
            meta,
            pending,
            keys,
            ..
        } = self;
        let legacy: String = self
            .legacy_triggers()
            .iter()
            .map(|name| format!("DROP TRIGGER IF EXISTS \"{name}\";\n"))
            .collect();
        format!(
            r#"
CREATE TABLE IF NOT EXISTS "{posts}" (
    post_id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    author_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    -- ListPosts' order, newest first: the index is walked backwards.
    UNIQUE (created_at, post_id),
    -- ListPosts by author, in the same order.
    UNIQUE (author_name, created_at, post_id)
);
CREATE TABLE IF NOT EXISTS "{versions}" (
    post_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    position INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    author_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (post_id, version),
    -- Versions by log position, for the catch-up's completeness check.
    UNIQUE (position, post_id, version)
);
-- Contentless (content=''): it holds only the trigram index, never a
-- second copy of the text, and names no content table that a swap's
-- renames would leave dangling. The queue hands it the old values. Its
-- rowid is the complement (~) of a post's key (below): ListPosts' order
-- is the index's forward order.
CREATE VIRTUAL TABLE IF NOT EXISTS "{search}" USING fts5(title, content, content='', tokenize='trigram');
-- The indexer's merges take any level of two segments (see merge_search).
INSERT INTO "{search}" ("{search}", rank) VALUES ('usermerge', 2);
-- The key of each post the search index holds; key UNIQUE: no two posts
-- share a rowid there.
CREATE TABLE IF NOT EXISTS "{keys}" (
    post_id INTEGER PRIMARY KEY,
    key INTEGER NOT NULL UNIQUE
);
-- 'checkpoint' (position), 'lease:<name>' (owner, expires_at in ms).
CREATE TABLE IF NOT EXISTS "{meta}" (
    key TEXT PRIMARY KEY,
    position INTEGER,
    owner TEXT,
    expires_at INTEGER
);
-- indexed = 1: the index holds (title, content) for the post, to delete
-- before the new text goes in; 0: it holds nothing for it yet.
CREATE TABLE IF NOT EXISTS "{pending}" (
    post_id INTEGER PRIMARY KEY,
    indexed INTEGER NOT NULL,
    title TEXT,
    content TEXT
);
{legacy}{triggers}"#,
            triggers = self.create_triggers(),
        )
    }

    fn create_triggers(&self) -> String {
        let Self { posts, pending, .. } = self;
        let [insert, update, delete] = self.triggers();
        // DO NOTHING: a post queued already keeps the text the index holds,
        // whatever changed since. (An upsert clause, not OR IGNORE: the
        // outer statement's conflict algorithm would override that one.)
        format!(
            r#"
CREATE TRIGGER IF NOT EXISTS "{insert}" AFTER INSERT ON "{posts}" BEGIN
    INSERT INTO "{pending}" (post_id, indexed) VALUES (new.post_id, 0) ON CONFLICT (post_id) DO NOTHING;
END;
CREATE TRIGGER IF NOT EXISTS "{update}" AFTER UPDATE OF title, content ON "{posts}"
WHEN old.title IS NOT new.title OR old.content IS NOT new.content BEGIN
    INSERT INTO "{pending}" (post_id, indexed, title, content) VALUES (old.post_id, 1, old.title, old.content)
    ON CONFLICT (post_id) DO NOTHING;
END;
CREATE TRIGGER IF NOT EXISTS "{delete}" AFTER DELETE ON "{posts}" BEGIN
    INSERT INTO "{pending}" (post_id, indexed, title, content) VALUES (old.post_id, 1, old.title, old.content)
    ON CONFLICT (post_id) DO NOTHING;
END;
"#
        )
    }

    /// Moves the queued posts up to `?1` (a post id) into the search index,
    /// to run in one write transaction, in order: their old text out (under
    /// their old key), their keys forgotten and given anew (a post whose key
    /// another post holds gets none here: see [`Self::unkeyed`]), then, once
    /// every post has a key, [`Self::index_keyed`].
    pub fn index_pending(&self) -> [String; 3] {
        let Self {
            posts,
            search,
            pending,
            keys,
            ..
        } = self;
        let key = search_key_sql("p");
        let rowid = rowid_sql("k.key");
        [
            format!(
                "INSERT INTO \"{search}\" (\"{search}\", rowid, title, content) \
                 SELECT 'delete', {rowid}, q.title, q.content FROM \"{pending}\" q \
                 JOIN \"{keys}\" k ON k.post_id = q.post_id WHERE q.indexed = 1 AND q.post_id <= ?1"
            ),
            format!("DELETE FROM \"{keys}\" WHERE post_id IN (SELECT post_id FROM \"{pending}\" WHERE post_id <= ?1)"),
            format!(
                "INSERT INTO \"{keys}\" (post_id, key) SELECT p.post_id, {key} \
                 FROM \"{pending}\" q JOIN \"{posts}\" p ON p.post_id = q.post_id WHERE q.post_id <= ?1 \
                 ON CONFLICT DO NOTHING"
            ),
        ]
    }

    /// The queued posts up to `?1` left without a key by
    /// [`Self::index_pending`]: `(post_id, key it wanted)`.
    pub fn unkeyed(&self) -> String {
        let Self {
            posts, pending, keys, ..
        } = self;
        format!(
            "SELECT p.post_id, {key} FROM \"{pending}\" q JOIN \"{posts}\" p ON p.post_id = q.post_id \
             WHERE q.post_id <= ?1 AND q.post_id NOT IN (SELECT post_id FROM \"{keys}\")",
            key = search_key_sql("p"),
        )
    }

    /// Gives post `?1` key `?2` unless another post holds it.
    pub fn claim_key(&self) -> String {
        format!(
            "INSERT INTO \"{}\" (post_id, key) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            self.keys
        )
    }

    /// The queued posts up to `?1`, keyed, into the index with their current
    /// text, and the queue emptied up to there.
    pub fn index_keyed(&self) -> [String; 2] {
        let (posts, search, pending, keys) = (&self.posts, &self.search, &self.pending, &self.keys);
        let rowid = rowid_sql("k.key");
        [
            format!(
                "INSERT INTO \"{search}\" (rowid, title, content) SELECT {rowid}, p.title, p.content \
                 FROM \"{pending}\" q JOIN \"{posts}\" p ON p.post_id = q.post_id \
                 JOIN \"{keys}\" k ON k.post_id = q.post_id WHERE q.post_id <= ?1"
            ),
            format!("DELETE FROM \"{pending}\" WHERE post_id <= ?1"),
        ]
    }

    /// Whether the file holds an earlier version's search index (keyed by
    /// post id, or by the keys in ascending order), asked before
    /// [`Self::create`].
    pub fn has_legacy_search(&self) -> String {
        format!(
            "SELECT count(*) FROM sqlite_master WHERE name = '{}'",
            self.legacy_search
        )
    }

    /// [`Self::create`] for such a file: the old index dropped and a new one
    /// made, every post queued for it (with no text to delete first). The
    /// indexer fills it behind; searches stay complete, reading the queued
    /// posts' text.
    pub fn create_reindexing(&self) -> String {
        let Self {
            posts,
            pending,
            keys,
            legacy_search,
            ..
        } = self;
        format!(
            "DROP TABLE IF EXISTS \"{legacy_search}\";\n{create}\n\
             DELETE FROM \"{keys}\";\n\
             DELETE FROM \"{pending}\";\n\
             INSERT INTO \"{pending}\" (post_id, indexed) SELECT post_id, 0 FROM \"{posts}\";\n",
            create = self.create(),
        )
    }

    /// Drops the triggers, the search index and the tables (indexes go with
    /// their tables).
    pub fn drop_all(&self) -> String {
        let mut sql = self.drop_triggers();
        for table in [
            &self.search,
            &self.legacy_search,
            &self.posts,
            &self.versions,
            &self.meta,
            &self.pending,
            &self.keys,
        ] {
            sql.push_str(&format!("DROP TABLE IF EXISTS \"{table}\";\n"));
        }
        sql
    }

    fn drop_triggers(&self) -> String {
        self.triggers()
            .iter()
            .map(|name| format!("DROP TRIGGER IF EXISTS \"{name}\";\n"))
            .collect()
    }

    /// Replaces `self`'s model with `staged`'s, to run in one transaction:
    /// drop the live tables, rename the staged ones into place, and give the
    /// triggers their live names.
    pub fn swap_in(&self, staged: &Self) -> String {
        let mut sql = staged.drop_triggers();
        sql.push_str(&self.drop_all());
        for (from, to) in [
            (&staged.posts, &self.posts),
            (&staged.versions, &self.versions),
            (&staged.search, &self.search),
            (&staged.meta, &self.meta),
            (&staged.pending, &self.pending),
            (&staged.keys, &self.keys),
        ] {
            sql.push_str(&format!("ALTER TABLE \"{from}\" RENAME TO \"{to}\";\n"));
        }
        sql.push_str(&self.create_triggers());
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_apart_and_safe() {
        let live = Names::live();
        let staged = live.staging("re\"build; DROP TABLE posts");
        assert_eq!(staged.posts, "posts_re_build__DROP_TABLE_posts");
        assert_eq!(staged.versions, "post_versions_re_build__DROP_TABLE_posts");
        assert_eq!(staged.search, "fts_posts_re_build__DROP_TABLE_posts");
        assert_eq!(staged.legacy_search, "search_posts_re_build__DROP_TABLE_posts");
        assert_eq!(staged.meta, "meta_posts_re_build__DROP_TABLE_posts");
        assert_eq!(staged.pending, "pending_posts_re_build__DROP_TABLE_posts");
        assert_eq!(staged.keys, "keys_posts_re_build__DROP_TABLE_posts");
        assert_ne!(live.staging("fts").posts, live.search);
    }
}
