//! The shared store test suite and what tests of the read model need
//! (feature `testing`).
//!
//! Every implementation runs the same [`suite`] against real servers: one
//! [`Fixture`] that makes fresh stores of it, and one line,
//!
//! ```ignore
//! postmesh_read_model::store_suite!(postmesh_read_model::testing::MongoFixture::from_env());
//! ```
//!
//! in a test file of its own (`read-model/tests/mongo.rs` for MongoDB,
//! `read-model/tests/sqlite.rs` for SQLite). A new
//! implementation adds a fixture and such a file; tests only it can run (raw
//! driver checks) go beside the macro.
//!
//! Also here, for those tests and for query-svc's: [`event`] and [`created`]
//! build valid events, [`unique`] names things no other test uses.

pub mod suite;

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use postmesh_proto::v1::{EventType, Post, PostEvent};

use crate::{millis_to_timestamp, ReadModelStore, ReadStore};

/// Makes stores of one implementation for the [`suite`].
pub trait Fixture: Sync {
    /// A store on data no other test uses (its own database or file), its
    /// schema ensured. `prefix` names it, for finding leftovers.
    fn fresh(&self, prefix: &str) -> impl Future<Output = ReadStore> + Send;

    /// Removes everything [`fresh`](Self::fresh) made for `store` (best effort).
    fn dispose(&self, store: ReadStore) -> impl Future<Output = ()> + Send;

    /// A store whose server (or file) does not answer, set to give up after
    /// `timeout`: its calls must fail as outages.
    fn unreachable(&self, timeout: Duration) -> impl Future<Output = ReadStore> + Send;
}

/// Stores on a database of their own on the MongoDB (or FerretDB) at
/// `TEST_MONGODB_URL`.
#[derive(Clone, Debug)]
pub struct MongoFixture {
    url: String,
}

impl MongoFixture {
    /// The server at `TEST_MONGODB_URL` (default `mongodb://127.0.0.1:27017`).
    pub fn from_env() -> Self {
        Self { url: mongodb_url() }
    }

    /// The MongoDB-compatible server at `url` (SecantusDB: [`secantus_url`]).
    pub fn at(url: &str) -> Self {
        Self { url: url.to_owned() }
    }
}

impl Fixture for MongoFixture {
    async fn fresh(&self, prefix: &str) -> ReadStore {
        let store = ReadStore::connect(&self.url, &unique(prefix)).await.expect("connect");
        store.ensure_schema().await.expect("ensure_schema");
        store
    }

    async fn dispose(&self, store: ReadStore) {
        let Some(store) = store.as_mongo() else {
            return;
        };
        if let Ok(client) = mongodb::Client::with_uri_str(&self.url).await {
            let _ = client.database(store.database_name()).drop().await;
        }
    }

    async fn unreachable(&self, timeout: Duration) -> ReadStore {
        // Nothing listens on port 1.
        ReadStore::connect_with_timeout("mongodb://127.0.0.1:1", &unique("qs_down"), timeout)
            .await
            .expect("a lazy client")
    }
}

/// Stores in files of their own under a temporary directory.
#[derive(Clone, Debug)]
pub struct SqliteFixture {
    dir: std::path::PathBuf,
}

impl SqliteFixture {
    /// Files under `$TMPDIR/postmesh-read-model-tests`.
    pub fn new() -> Self {
        Self {
            dir: std::env::temp_dir().join("postmesh-read-model-tests"),
        }
    }

    /// The URL of a new file no other test uses.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            self.dir.join(format!("{}.db", unique(prefix))).display()
        )
    }
}

impl Default for SqliteFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture for SqliteFixture {
    async fn fresh(&self, prefix: &str) -> ReadStore {
        let store = ReadStore::connect(&self.url(prefix), "unused").await.expect("connect");
        store.ensure_schema().await.expect("ensure_schema");
        store
    }

    async fn dispose(&self, store: ReadStore) {
        let Some(store) = store.as_sqlite() else {
            return;
        };
        let file = store.file().to_owned();
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = file.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }

    async fn unreachable(&self, timeout: Duration) -> ReadStore {
        // A file in a directory that does not exist, opened without creating it.
        let url = format!(
            "sqlite://{}?mode=rw",
            self.dir.join(unique("missing")).join("read.db").display()
        );
        ReadStore::connect_with_timeout(&url, "unused", timeout)
            .await
            .expect("a lazy pool")
    }
}

/// Runs the whole [`suite`] as `#[test]`s against the stores `$fixture` (an
/// expression of a type implementing [`Fixture`]) makes. Use it once per
/// test file; the caller needs tokio (its `macros` feature) for the tests.
#[macro_export]
macro_rules! store_suite {
    ($fixture:expr) => {
        $crate::store_suite!(@sync $fixture;
            any_order_with_duplicates_converges_to_in_order_state,
            batches_in_any_order_with_duplicates_converge_to_in_order_state,
        );
        $crate::store_suite!(@async $fixture;
            a_batch_writes_each_posts_newest_and_reports_every_event,
            a_batch_larger_than_one_write_command_is_applied_whole,
            duplicates_and_older_versions_are_stale,
            a_newer_version_applied_first_wins,
            invalid_events_are_not_outages,
            ensure_schema_is_idempotent,
            swap_in_replaces_the_model_with_its_indexes,
            list_matches_literal_text_only,
            list_pages_newest_first_by_keyset,
            an_unreachable_server_is_unavailable_quickly,
            positions_are_stored_and_counted,
            the_checkpoint_moves_by_compare_and_set_and_swaps_with_the_model,
            a_lease_has_one_owner_until_it_expires,
        );
    };
    (@sync $fixture:expr; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::testing::suite::$name(&$fixture);
            }
        )*
    };
    (@async $fixture:expr; $($name:ident,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::testing::suite::$name(&$fixture).await;
            }
        )*
    };
}

/// MongoDB (or FerretDB) the tests run against: `TEST_MONGODB_URL`.
pub fn mongodb_url() -> String {
    std::env::var("TEST_MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// SecantusDB the MongoDB store suite also runs against: `TEST_SECANTUS_URL`
/// (scripts/servers.sh up secantus).
pub fn secantus_url() -> String {
    std::env::var("TEST_SECANTUS_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27019/?directConnection=true".into())
}

/// A name no other test (or test process) uses: `prefix_<pid>_<time>_<n>`,
/// short enough for a MongoDB database name.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An event with the full state `title`/`content`/`author` after the change.
/// `created_ms` is the post's creation time; the change happens `version`
/// seconds later.
#[allow(clippy::too_many_arguments)]
pub fn event(
    post_id: i64,
    version: i64,
    event_type: EventType,
    title: &str,
    content: &str,
    author: &str,
    created_ms: i64,
) -> PostEvent {
    let occurred = created_ms + (version - 1) * 1000;
    PostEvent {
        position: 0,
        post_id,
        version,
        event_type: event_type as i32,
        post: Some(Post {
            post_id,
            version,
            title: title.to_owned(),
            content: content.to_owned(),
            author_name: author.to_owned(),
            created_at: Some(millis_to_timestamp(created_ms)),
            updated_at: Some(millis_to_timestamp(occurred)),
            deleted: event_type == EventType::PostDeleted,
        }),
        occurred_at: Some(millis_to_timestamp(occurred)),
        traceparent: String::new(),
        tracestate: String::new(),
        actor: String::new(),
    }
}

/// A created event with simple generated text.
pub fn created(post_id: i64, author: &str, created_ms: i64) -> PostEvent {
    event(
        post_id,
        1,
        EventType::PostCreated,
        &format!("title {post_id}"),
        &format!("content {post_id}"),
        author,
        created_ms,
    )
}
