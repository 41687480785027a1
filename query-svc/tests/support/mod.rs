//! Helpers shared by the integration tests: server URLs and polling; the
//! event builders and unique names come from the read model's test kit.
#![allow(dead_code)]

pub use postmesh_read_model::testing::{created, event, mongodb_url, unique};
use postmesh_read_model::{
    testing::{Fixture, MongoFixture, SqliteFixture},
    ReadStore,
};

/// Drops the store's whole database or file (best effort).
pub async fn drop_database(store: &ReadStore) {
    if store.as_sqlite().is_some() {
        SqliteFixture::new().dispose(store.clone()).await;
    } else {
        MongoFixture::from_env().dispose(store.clone()).await;
    }
}

/// Redis the tests run against.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
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
