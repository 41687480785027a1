//! The check every relay and fault test ends with: the read model equals the
//! event store, post by post and version by version.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use postmesh_proto::v1::{event_store_client::EventStoreClient, Post, PostEvent, ReadAllRequest};
use postmesh_read_model::{timestamp_to_millis, ReadModelStore, ReadStore};

/// Every event in the store at `endpoint`, in position order.
pub async fn read_all_events(endpoint: &str) -> Vec<PostEvent> {
    let mut client = EventStoreClient::connect(endpoint.to_owned())
        .await
        .unwrap()
        .max_decoding_message_size(16 * 1024 * 1024);
    let mut stream = client.read_all(ReadAllRequest::default()).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        events.push(item.unwrap().event.unwrap());
    }
    events
}

/// The fields that must agree, timestamps at the read model's millisecond precision.
fn key(post: &Post) -> (i64, i64, String, String, String, bool, i64, i64) {
    let ms = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, timestamp_to_millis);
    (
        post.post_id,
        post.version,
        post.title.clone(),
        post.content.clone(),
        post.author_name.clone(),
        post.deleted,
        ms(&post.created_at),
        ms(&post.updated_at),
    )
}

/// Differences between the event store and the read model; empty when they agree.
pub async fn differences(events: &[PostEvent], store: &ReadStore) -> Vec<String> {
    let mut expected_posts: BTreeMap<i64, &Post> = BTreeMap::new();
    let mut expected_versions = BTreeMap::new();
    for event in events {
        let post = event.post.as_ref().unwrap();
        let newer = expected_posts
            .get(&event.post_id)
            .is_none_or(|p| p.version < event.version);
        if newer {
            expected_posts.insert(event.post_id, post);
        }
        expected_versions.insert((event.post_id, event.version), key(post));
    }
    let Ok(posts) = store.all_posts().await else {
        return vec!["read model unreachable".into()];
    };
    let Ok(versions) = store.all_versions().await else {
        return vec!["read model unreachable".into()];
    };
    let mut problems = Vec::new();
    let actual_posts: BTreeMap<i64, Post> = posts.into_iter().map(|p| (p.post_id, p)).collect();
    for (id, want) in &expected_posts {
        match actual_posts.get(id) {
            None => problems.push(format!("post {id} missing")),
            Some(got) if key(got) != key(want) => problems.push(format!(
                "post {id}: read model {:?} != event store {:?}",
                key(got),
                key(want)
            )),
            Some(_) => {}
        }
    }
    for id in actual_posts.keys() {
        if !expected_posts.contains_key(id) {
            problems.push(format!("post {id} is in the read model but not in the event store"));
        }
    }
    let actual_versions: BTreeMap<(i64, i64), _> = versions
        .into_iter()
        .map(|v| ((v.post.post_id, v.post.version), key(&v.post)))
        .collect();
    for (k, want) in &expected_versions {
        match actual_versions.get(k) {
            None => problems.push(format!("version {k:?} missing")),
            Some(got) if got != want => problems.push(format!("version {k:?} differs")),
            Some(_) => {}
        }
    }
    for k in actual_versions.keys() {
        if !expected_versions.contains_key(k) {
            problems.push(format!("version {k:?} is extra"));
        }
    }
    problems
}

/// Waits until the read model equals the event store; panics with the
/// remaining differences after `timeout`.
pub async fn assert_converges(endpoint: &str, store: &ReadStore, timeout: Duration) -> Vec<PostEvent> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let events = read_all_events(endpoint).await;
        let problems = differences(&events, store).await;
        if problems.is_empty() {
            return events;
        }
        if std::time::Instant::now() >= deadline {
            let shown: Vec<_> = problems.iter().take(20).collect();
            panic!("read model did not converge ({} problems): {shown:#?}", problems.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
