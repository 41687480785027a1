//! Test harness for the end-to-end suite: where the shared servers are, how
//! to give each test its own database and stream, how to start the services
//! (in-process on port 0, or as real processes that can be killed), and a TCP
//! proxy that can pause or cut a dependency without touching the server
//! other tests share.

#![allow(clippy::unwrap_used)]

pub mod compare;
pub mod faults;
pub mod load;
pub mod mariadb;
pub mod mesh;
pub mod procs;
pub mod proxy;
pub mod security;
pub mod servers;
pub mod services;
pub mod webdriver;
pub mod wire;

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Shared Redis for tests (scripts/servers.sh starts it).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// MariaDB account allowed to create databases.
pub fn mysql_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://postmesh:postmesh@127.0.0.1:3306".into())
}

/// Shared FerretDB/MongoDB.
pub fn mongodb_url() -> String {
    std::env::var("TEST_MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// Which read store a test's read model lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBackend {
    /// The default: a SQLite file in a temp dir of the test's own.
    Sqlite,
    /// A database of the test's own on the shared FerretDB (TEST_MONGODB_URL).
    Mongo,
}

/// A read model only this test uses (a file, or a MongoDB database); keep
/// it (or a clone) alive while the services use it.
#[derive(Clone, Debug)]
pub struct TestReadStore {
    /// READ_STORE_URL for the services.
    pub url: String,
    /// READ_STORE_DATABASE (MongoDB only; SQLite ignores it).
    pub database: String,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl TestReadStore {
    /// A fresh read model of `backend`.
    pub fn new(backend: ReadBackend) -> Self {
        match backend {
            ReadBackend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Self {
                    url: format!("sqlite://{}?mode=rwc", dir.path().join("read.db").display()),
                    database: String::new(),
                    _dir: Some(std::sync::Arc::new(dir)),
                }
            }
            ReadBackend::Mongo => Self::on_mongo(&mongodb_url()),
        }
    }

    /// A fresh database on the MongoDB-compatible server at `url`.
    pub fn on_mongo(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            database: unique("rm"),
            _dir: None,
        }
    }

    /// The URL of a SQLite read model in a file of its own under the temp
    /// dir, for a process that outlives the caller's scope (the file stays).
    pub fn sqlite_outliving_the_test() -> String {
        let dir = std::env::temp_dir().join("postmesh-tests");
        format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{}.db", unique("rm"))).display()
        )
    }

    /// A client of it, as the tests read it.
    pub async fn connect(&self) -> postmesh_read_model::ReadStore {
        postmesh_read_model::ReadStore::connect(&self.url, &self.database)
            .await
            .unwrap()
    }
}

/// A name no other test (or earlier run) uses: for databases, streams, channels.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("{prefix}_{}_{n}_{salt:08x}", std::process::id())
}

/// Polls `check` until it returns true or `timeout` passes; returns whether it did.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which event store a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file in a temp dir.
    Sqlite,
    /// A fresh database on the shared MariaDB.
    Mysql,
}

/// A database URL that only this test uses; keep the returned guard alive.
pub struct TestDatabase {
    /// URL for command-svc.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Creates an empty database of the given kind.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("events.db").display());
                Self { url, _dir: Some(dir) }
            }
            Backend::Mysql => {
                use sea_orm::ConnectionTrait;
                let name = unique("pm");
                let admin = sea_orm::Database::connect(mysql_url())
                    .await
                    .expect("MariaDB must be running: scripts/servers.sh up");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
                    .await
                    .unwrap();
                admin.close().await.ok();
                Self {
                    url: format!("{}/{name}", mysql_url().trim_end_matches('/')),
                    _dir: None,
                }
            }
        }
    }
}

/// Opens a Redis connection.
pub async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be running: scripts/servers.sh up")
}

/// Length of a stream (0 when it does not exist).
pub async fn stream_len(url: &str, stream: &str) -> usize {
    let mut conn = redis(url).await;
    redis::cmd("XLEN").arg(stream).query_async(&mut conn).await.unwrap_or(0)
}

/// Adds a poison entry to `stream`: post 42, an `event` that is not
/// protobuf. The relay dead-letters it at once (no retries).
pub async fn add_poison_entry(url: &str, stream: &str) {
    let mut conn = redis(url).await;
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("post_id")
        .arg("42")
        .arg("event")
        .arg(b"\xff\xfe not protobuf".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Every entry of a stream as (id, field map).
pub async fn stream_entries(url: &str, stream: &str) -> Vec<(String, std::collections::HashMap<String, Vec<u8>>)> {
    let mut conn = redis(url).await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<Vec<u8>>(&v).unwrap_or_default()))
                .collect();
            (entry.id, fields)
        })
        .collect()
}
