//! command-svc and event-relay in-process, wired to each other through a
//! stream, database and channel of this test's own.

use postmesh_proto::v1::{post_command_client::PostCommandClient, CreatePostRequest};
use tonic::transport::Channel;

use crate::{redis_url, unique, Backend, ReadBackend, TestDatabase, TestReadStore};

/// Names that isolate one test.
#[derive(Clone, Debug)]
pub struct Names {
    /// Redis stream (and DLQ prefix).
    pub stream: String,
    /// The read model: its URL, and its database on MongoDB.
    pub read_store: TestReadStore,
    /// MongoDB database of the read model (`read_store.database`).
    pub database: String,
    /// Notification channel.
    pub channel: String,
}

impl Names {
    /// Fresh names, the read model in SQLite (the default store).
    pub fn fresh() -> Self {
        Self::with(TestReadStore::new(ReadBackend::Sqlite))
    }

    /// Fresh names, the read model in `backend`.
    pub fn on(backend: ReadBackend) -> Self {
        Self::with(TestReadStore::new(backend))
    }

    /// Fresh names with the read model in `read_store`.
    pub fn with(read_store: TestReadStore) -> Self {
        Self {
            stream: unique("posts.events"),
            database: read_store.database.clone(),
            read_store,
            channel: unique("posts.applied"),
        }
    }
}

/// A write side for relay tests.
pub struct WriteSide {
    /// The database guard.
    pub db: TestDatabase,
    /// The running command-svc.
    pub running: command_svc::startup::Running,
    /// A client.
    pub client: PostCommandClient<Channel>,
}

impl WriteSide {
    /// command-svc on SQLite publishing to `names.stream` on `redis`.
    pub async fn start(names: &Names, redis: &str) -> Self {
        let db = TestDatabase::create(Backend::Sqlite).await;
        let config = command_svc::config::Config::for_tests(db.url.clone(), redis, &names.stream);
        let running = command_svc::startup::spawn(config).await.expect("command-svc starts");
        let client = PostCommandClient::connect(running.endpoint()).await.unwrap();
        Self { db, running, client }
    }

    /// `http://addr` of command-svc.
    pub fn endpoint(&self) -> String {
        self.running.endpoint()
    }

    /// Creates a post, returns its id.
    pub async fn create(&self, title: &str) -> i64 {
        self.client
            .clone()
            .create_post(CreatePostRequest {
                title: title.into(),
                content: format!("content of {title}"),
                author_name: "relay-test".into(),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .post_id
    }
}

/// Relay settings for `names` on the shared servers.
pub fn relay_config(names: &Names) -> event_relay::config::Config {
    event_relay::config::Config::for_tests(
        &redis_url(),
        &names.stream,
        &names.read_store.url,
        &names.database,
        &names.channel,
    )
}
