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
//! Triggers are the exception: they keep their names and mention the search
//! table by name, so a swap drops the staging ones and creates them anew
//! under the live names, in the same transaction.

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
    /// The FTS5 trigram index over `posts`' title and content.
    pub search: String,
    /// The catch-up's checkpoint and the leases (a few rows), swapped with
    /// the model so a rebuilt one carries its own checkpoint.
    pub meta: String,
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
            search: format!("search_{posts}"),
            meta: format!("meta_{posts}"),
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

    /// The triggers keeping `search` in step with `posts`.
    fn triggers(&self) -> [String; 3] {
        ["insert", "update", "delete"].map(|what| format!("{}_{what}", self.search))
    }

    /// Creates the tables, the search index and its triggers where missing.
    pub fn create(&self) -> String {
        let Self {
            posts,
            versions,
            search,
            meta,
        } = self;
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
-- renames would leave dangling. The triggers hand it the old values.
CREATE VIRTUAL TABLE IF NOT EXISTS "{search}" USING fts5(title, content, content='', tokenize='trigram');
-- 'checkpoint' (position), 'lease:<name>' (owner, expires_at in ms).
CREATE TABLE IF NOT EXISTS "{meta}" (
    key TEXT PRIMARY KEY,
    position INTEGER,
    owner TEXT,
    expires_at INTEGER
);
{triggers}"#,
            triggers = self.create_triggers(),
        )
    }

    fn create_triggers(&self) -> String {
        let Self { posts, search, .. } = self;
        let [insert, update, delete] = self.triggers();
        format!(
            r#"
CREATE TRIGGER IF NOT EXISTS "{insert}" AFTER INSERT ON "{posts}" BEGIN
    INSERT INTO "{search}" (rowid, title, content) VALUES (new.post_id, new.title, new.content);
END;
CREATE TRIGGER IF NOT EXISTS "{update}" AFTER UPDATE OF title, content ON "{posts}"
WHEN old.title IS NOT new.title OR old.content IS NOT new.content BEGIN
    INSERT INTO "{search}" ("{search}", rowid, title, content) VALUES ('delete', old.post_id, old.title, old.content);
    INSERT INTO "{search}" (rowid, title, content) VALUES (new.post_id, new.title, new.content);
END;
CREATE TRIGGER IF NOT EXISTS "{delete}" AFTER DELETE ON "{posts}" BEGIN
    INSERT INTO "{search}" ("{search}", rowid, title, content) VALUES ('delete', old.post_id, old.title, old.content);
END;
"#
        )
    }

    /// Drops the triggers, the search index and the tables (indexes go with
    /// their tables).
    pub fn drop_all(&self) -> String {
        let mut sql = self.drop_triggers();
        for table in [&self.search, &self.posts, &self.versions, &self.meta] {
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
        assert_eq!(staged.search, "search_posts_re_build__DROP_TABLE_posts");
        assert_eq!(staged.meta, "meta_posts_re_build__DROP_TABLE_posts");
        assert_ne!(live.staging("fts").posts, live.search);
    }
}
