//! [`ReadStore`]: the one read-store type callers hold, chosen by URL.

use std::time::Duration;

use postmesh_proto::v1::{Post, PostEvent};

use crate::{
    cursor::Position, mongo, Applied, ListFilter, MongoStore, PostVersion, ReadModelStore, SqliteStore, StoreError,
};

/// The read model's store, whichever implementation its URL chose. Cheap to
/// clone; clones share one connection pool.
///
/// Adding an implementation: a module with a type implementing
/// [`ReadModelStore`], a variant here, its URL scheme in
/// [`connect_with_timeout`](Self::connect_with_timeout), an arm in
/// `delegate!`, and an instantiation of the store suite
/// (`read-model/tests/`).
#[derive(Clone, Debug)]
pub enum ReadStore {
    /// An embedded SQLite file: `sqlite://path?mode=rwc` URLs.
    Sqlite(SqliteStore),
    /// MongoDB (FerretDB works too): `mongodb://` and `mongodb+srv://` URLs.
    Mongo(MongoStore),
}

/// Hands a call to the implementation behind a [`ReadStore`].
macro_rules! delegate {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            ReadStore::Sqlite($store) => $call,
            ReadStore::Mongo($store) => $call,
        }
    };
}

impl ReadStore {
    /// A store for `url` with [`mongo::DEFAULT_CONNECT_TIMEOUT`]. `database`
    /// names the MongoDB database (a SQLite URL names its file itself).
    /// Stores connect lazily, so this succeeds while the server is down or
    /// the file missing; only a malformed or unknown URL fails here.
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        Self::connect_with_timeout(url, database, mongo::DEFAULT_CONNECT_TIMEOUT).await
    }

    /// As [`connect`](Self::connect), with `timeout` for finding and
    /// connecting to the server (unless the URL sets its own), or for
    /// waiting on another writer's lock of a SQLite file.
    pub async fn connect_with_timeout(url: &str, database: &str, timeout: Duration) -> Result<Self, StoreError> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite(SqliteStore::connect_with_timeout(url, timeout).await?)),
            "mongodb" | "mongodb+srv" => Ok(Self::Mongo(
                MongoStore::connect_with_timeout(url, database, timeout).await?,
            )),
            _ => Err(StoreError::Usage(format!(
                "unsupported read store URL scheme {scheme:?}: use sqlite:// or mongodb:// (or mongodb+srv://)"
            ))),
        }
    }

    /// The MongoDB store, when that is what this is (for MongoDB-only tests
    /// and tools).
    pub fn as_mongo(&self) -> Option<&MongoStore> {
        match self {
            Self::Mongo(store) => Some(store),
            Self::Sqlite(_) => None,
        }
    }

    /// The SQLite store, when that is what this is (for SQLite-only tests
    /// and tools).
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        match self {
            Self::Sqlite(store) => Some(store),
            Self::Mongo(_) => None,
        }
    }
}

impl ReadModelStore for ReadStore {
    fn system(&self) -> &'static str {
        delegate!(self, store => store.system())
    }

    async fn ensure_schema(&self) -> Result<(), StoreError> {
        delegate!(self, store => store.ensure_schema().await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, store => store.ping().await)
    }

    async fn apply_batch(&self, events: &[PostEvent]) -> Result<Vec<Applied>, StoreError> {
        delegate!(self, store => store.apply_batch(events).await)
    }

    async fn get(&self, post_id: i64) -> Result<Option<Post>, StoreError> {
        delegate!(self, store => store.get(post_id).await)
    }

    async fn version(&self, post_id: i64, version: i64) -> Result<Option<PostVersion>, StoreError> {
        delegate!(self, store => store.version(post_id, version).await)
    }

    async fn history(&self, post_id: i64) -> Result<Vec<PostVersion>, StoreError> {
        delegate!(self, store => store.history(post_id).await)
    }

    async fn list(&self, filter: &ListFilter, after: Option<&Position>, limit: i64) -> Result<Vec<Post>, StoreError> {
        delegate!(self, store => store.list(filter, after, limit).await)
    }

    async fn all_posts(&self) -> Result<Vec<Post>, StoreError> {
        delegate!(self, store => store.all_posts().await)
    }

    async fn all_versions(&self) -> Result<Vec<PostVersion>, StoreError> {
        delegate!(self, store => store.all_versions().await)
    }

    async fn count_positions(&self, after: i64, through: i64) -> Result<u64, StoreError> {
        delegate!(self, store => store.count_positions(after, through).await)
    }

    async fn checkpoint(&self) -> Result<i64, StoreError> {
        delegate!(self, store => store.checkpoint().await)
    }

    async fn advance_checkpoint(&self, from: i64, to: i64) -> Result<bool, StoreError> {
        delegate!(self, store => store.advance_checkpoint(from, to).await)
    }

    async fn try_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        delegate!(self, store => store.try_lease(name, owner, ttl).await)
    }

    fn staging(&self, tag: &str) -> Self {
        match self {
            Self::Sqlite(store) => Self::Sqlite(store.staging(tag)),
            Self::Mongo(store) => Self::Mongo(store.staging(tag)),
        }
    }

    async fn swap_in(&self, staged: &Self) -> Result<(), StoreError> {
        match (self, staged) {
            (Self::Sqlite(live), Self::Sqlite(staged)) => live.swap_in(staged).await,
            (Self::Mongo(live), Self::Mongo(staged)) => live.swap_in(staged).await,
            (Self::Sqlite(_), Self::Mongo(_)) | (Self::Mongo(_), Self::Sqlite(_)) => Err(StoreError::Usage(
                "cannot swap a staging store of one kind into a store of another".into(),
            )),
        }
    }

    async fn discard(&self) {
        delegate!(self, store => store.discard().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_url_scheme_picks_the_store() {
        let store = ReadStore::connect("mongodb://127.0.0.1:1", "db").await;
        assert!(matches!(store, Ok(ReadStore::Mongo(_))));
        let file = std::env::temp_dir().join("postmesh-scheme-test-never-opened.db");
        let store = ReadStore::connect(&format!("sqlite://{}?mode=rwc", file.display()), "db").await;
        assert!(matches!(store, Ok(ReadStore::Sqlite(_))));
        for url in ["postgres://127.0.0.1/db", "127.0.0.1:27017", ""] {
            let error = ReadStore::connect(url, "db").await.err();
            assert!(
                matches!(&error, Some(StoreError::Usage(message)) if message.contains("scheme")),
                "{url}: {error:?}"
            );
        }
    }
}
