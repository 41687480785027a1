//! [`ReadStoreArgs`]: the settings that pick and reach the read store, the
//! same in query-svc and event-relay (contract C3).
//!
//! `READ_STORE_URL` picks the implementation by scheme: `sqlite://FILE?mode=rwc`
//! (the default, a file in the working directory beside the event store's
//! default file, never that file itself) or `mongodb://…` with
//! `READ_STORE_DATABASE`. `MONGODB_URL`, `MONGODB_DATABASE` and
//! `MONGODB_TIMEOUT_MS` are still read, as deprecated fallbacks for one
//! release, when their `READ_STORE_*` counterparts are unset.

use std::time::Duration;

use clap::Args;
use postmesh_common::config::millis;

use crate::{ReadStore, StoreError};

/// The read store when nothing is configured: an embedded SQLite file.
pub const DEFAULT_URL: &str = "sqlite://postmesh-read.db?mode=rwc";

/// The MongoDB database when none is configured.
pub const DEFAULT_DATABASE: &str = "posts";

/// How long a call waits for an unreachable server or a locked file when
/// nothing is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the read model lives. Resolve with [`url`](Self::url),
/// [`database`](Self::database) and [`timeout`](Self::timeout), or
/// [`connect`](Self::connect).
#[derive(Args, Clone, Debug, Default)]
pub struct ReadStoreArgs {
    /// The read model's store, by scheme: `sqlite://FILE?mode=rwc` (an
    /// embedded file, created on first start; the default is
    /// `sqlite://postmesh-read.db?mode=rwc`) or `mongodb://HOST:PORT`
    /// (MongoDB; FerretDB works too).
    #[arg(long = "read-store-url", env = "READ_STORE_URL")]
    pub url: Option<String>,
    /// MongoDB database holding the read model (default `posts`; a SQLite
    /// URL names its file itself).
    #[arg(long = "read-store-database", env = "READ_STORE_DATABASE")]
    pub database: Option<String>,
    /// How long a call waits for an unreachable MongoDB (server selection,
    /// connect) or for another writer's lock on the SQLite file, before it
    /// fails as unavailable (milliseconds; default 3000).
    #[arg(long = "read-store-timeout-ms", env = "READ_STORE_TIMEOUT_MS", value_parser = millis)]
    pub timeout: Option<Duration>,
    /// Deprecated: use READ_STORE_URL (read when it is unset).
    #[arg(long = "mongodb-url", env = "MONGODB_URL", hide = true)]
    pub mongodb_url: Option<String>,
    /// Deprecated: use READ_STORE_DATABASE (read when it is unset).
    #[arg(long = "mongodb-database", env = "MONGODB_DATABASE", hide = true)]
    pub mongodb_database: Option<String>,
    /// Deprecated: use READ_STORE_TIMEOUT_MS (read when it is unset).
    #[arg(long = "mongodb-timeout-ms", env = "MONGODB_TIMEOUT_MS", value_parser = millis, hide = true)]
    pub mongodb_timeout: Option<Duration>,
}

impl ReadStoreArgs {
    /// Settings for `url` (and `database`, for MongoDB), as tests use them.
    pub fn new(url: &str, database: &str) -> Self {
        Self {
            url: Some(url.to_owned()),
            database: Some(database.to_owned()),
            ..Self::default()
        }
    }

    /// The store's URL: READ_STORE_URL, else the deprecated MONGODB_URL,
    /// else [`DEFAULT_URL`].
    pub fn url(&self) -> &str {
        set(&self.url).or(set(&self.mongodb_url)).unwrap_or(DEFAULT_URL)
    }

    /// The MongoDB database: READ_STORE_DATABASE, else the deprecated
    /// MONGODB_DATABASE, else [`DEFAULT_DATABASE`].
    pub fn database(&self) -> &str {
        set(&self.database)
            .or(set(&self.mongodb_database))
            .unwrap_or(DEFAULT_DATABASE)
    }

    /// The timeout (at least a millisecond).
    pub fn timeout(&self) -> Duration {
        self.timeout
            .or(self.mongodb_timeout)
            .unwrap_or(DEFAULT_TIMEOUT)
            .max(Duration::from_millis(1))
    }

    /// The deprecated settings in use, for a warning at start-up.
    pub fn deprecated_in_use(&self) -> Vec<&'static str> {
        let mut used = Vec::new();
        if set(&self.url).is_none() && set(&self.mongodb_url).is_some() {
            used.push("MONGODB_URL (use READ_STORE_URL)");
        }
        if set(&self.database).is_none() && set(&self.mongodb_database).is_some() {
            used.push("MONGODB_DATABASE (use READ_STORE_DATABASE)");
        }
        if self.timeout.is_none() && self.mongodb_timeout.is_some() {
            used.push("MONGODB_TIMEOUT_MS (use READ_STORE_TIMEOUT_MS)");
        }
        used
    }

    /// The store these settings name, after a warning per deprecated
    /// setting in use (connections open lazily: only a malformed or unknown
    /// URL fails here).
    pub async fn connect(&self) -> Result<ReadStore, StoreError> {
        for setting in self.deprecated_in_use() {
            tracing::warn!(setting, "deprecated setting in use");
        }
        ReadStore::connect_with_timeout(self.url(), self.database(), self.timeout()).await
    }
}

/// A setting that is present and not empty (an empty variable means unset).
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_store_settings_win_over_the_deprecated_ones_and_default_to_sqlite() {
        let none = ReadStoreArgs::default();
        assert_eq!(none.url(), DEFAULT_URL);
        assert!(none.url().starts_with("sqlite://"));
        assert_eq!(none.database(), "posts");
        assert_eq!(none.timeout(), Duration::from_secs(3));
        assert!(none.deprecated_in_use().is_empty());

        let old = ReadStoreArgs {
            mongodb_url: Some("mongodb://old:27017".into()),
            mongodb_database: Some("olddb".into()),
            mongodb_timeout: Some(Duration::from_millis(500)),
            ..ReadStoreArgs::default()
        };
        assert_eq!(old.url(), "mongodb://old:27017");
        assert_eq!(old.database(), "olddb");
        assert_eq!(old.timeout(), Duration::from_millis(500));
        assert_eq!(old.deprecated_in_use().len(), 3);

        let both = ReadStoreArgs {
            url: Some("sqlite://x.db?mode=rwc".into()),
            database: Some(String::new()),
            timeout: Some(Duration::ZERO),
            ..old
        };
        assert_eq!(both.url(), "sqlite://x.db?mode=rwc");
        assert_eq!(both.database(), "olddb", "an empty setting counts as unset");
        assert_eq!(both.timeout(), Duration::from_millis(1));
        assert_eq!(both.deprecated_in_use(), ["MONGODB_DATABASE (use READ_STORE_DATABASE)"]);
    }
}
