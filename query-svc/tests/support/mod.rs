//! Helpers shared by the integration tests: unique names, server URLs, events.
#![allow(dead_code)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use postmesh_proto::v1::{EventType, Post, PostEvent};
use prost_types::Timestamp;
use query_svc::store::ReadStore;

/// MongoDB (or FerretDB) the tests run against.
pub fn mongodb_url() -> String {
    std::env::var("TEST_MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// Redis the tests run against.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
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

/// A store on a fresh database of its own.
pub async fn fresh_store(prefix: &str) -> ReadStore {
    let store = ReadStore::connect(&mongodb_url(), &unique(prefix))
        .await
        .expect("connect");
    store.ensure_indexes().await.expect("ensure_indexes");
    store
}

/// Drops the store's whole database (best effort).
pub async fn drop_database(store: &ReadStore) {
    let client = mongodb::Client::with_uri_str(mongodb_url()).await.expect("client");
    let _ = client.database(store.database_name()).drop().await;
}

fn ts(millis: i64) -> Timestamp {
    query_svc::store::millis_to_timestamp(millis)
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
            created_at: Some(ts(created_ms)),
            updated_at: Some(ts(occurred)),
            deleted: event_type == EventType::PostDeleted,
        }),
        occurred_at: Some(ts(occurred)),
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

/// Polls `condition` until it holds or `timeout` passes; true when it held.
pub async fn wait_until<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
