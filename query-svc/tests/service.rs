//! PostQuery end to end, in-process, against the default read store (a
//! SQLite file of each test's own) and real Redis (TEST_REDIS_URL), and
//! against FerretDB/MongoDB (TEST_MONGODB_URL) for its outage. Each test has
//! its own read model and notify channel; the test plays event-relay's part with `ReadStore::apply`
//! followed by a PUBLISH.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};
use postmesh_events::notify::Notification;
use postmesh_proto::v1::{
    post_query_client::PostQueryClient, EventType, GetPostHistoryRequest, GetPostRequest, ListPostsRequest, Post,
    PostEvent, WatchPostsRequest,
};
use postmesh_read_model::{testing::SqliteFixture, Applied, ReadModelStore, ReadStore};
use query_svc::{
    config::Config,
    startup::{spawn, Running},
};
use support::{created, event, mongodb_url, redis_url, unique, wait_until};
use tokio::net::{TcpListener, TcpStream};
use tonic::{transport::Channel, Code, Status};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
use tonic_types::StatusExt;

/// A query-svc on a free port, its store and its notify channel.
struct Harness {
    store: ReadStore,
    redis: redis::aio::MultiplexedConnection,
    channel: String,
    running: Running,
    client: PostQueryClient<Channel>,
}

impl Harness {
    async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, |_| {}).await
    }

    /// On the default read store, SQLite (a file of the test's own).
    async fn start_with(prefix: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(&SqliteFixture::new().url(prefix), "unused", tweak).await
    }

    /// On MongoDB (FerretDB), a database of the test's own.
    async fn start_on_mongo_with(prefix: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(&mongodb_url(), &unique(prefix), tweak).await
    }

    async fn start_at(url: &str, database: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let channel = unique("notify");
        let store = ReadStore::connect(url, database).await.unwrap();
        store.ensure_schema().await.unwrap();
        let mut config = Config::for_tests(url, database, &redis_url(), &channel);
        tweak(&mut config);
        let running = spawn(config).await.unwrap();
        let endpoint = running.endpoint();
        assert!(
            wait_until(Duration::from_secs(10), || health(
                endpoint.clone(),
                ServingStatus::Serving
            ))
            .await,
            "query-svc did not become SERVING"
        );
        let client = PostQueryClient::connect(running.endpoint()).await.unwrap();
        let redis = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            store,
            redis,
            channel,
            running,
            client,
        }
    }

    /// What event-relay does: apply, then notify when applied.
    async fn apply(&mut self, event: &PostEvent) {
        if self.store.apply(event).await.unwrap() == Applied::Applied {
            self.publish(event.post_id, event.version).await;
        }
    }

    async fn publish(&mut self, post_id: i64, version: i64) {
        let payload = format!(r#"{{"post_id":{post_id},"version":{version}}}"#);
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async(&mut self.redis)
            .await
            .unwrap();
        assert!(receivers >= 1, "query-svc is not subscribed to {}", self.channel);
    }

    /// What `event-relay rebuild` publishes after swapping collections.
    async fn publish_reset(&mut self) {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(Notification::Reset.encode())
            .query_async(&mut self.redis)
            .await
            .unwrap();
        assert!(receivers >= 1, "query-svc is not subscribed to {}", self.channel);
    }

    /// A change written to the store behind query-svc's back: no notification.
    async fn write_silently(&self, event: &PostEvent) {
        assert_eq!(self.store.apply(event).await.unwrap(), Applied::Applied);
    }

    /// Polls GetPost until it answers `version`; false after 5 s.
    async fn eventually_version(&self, post_id: i64, version: i64) -> bool {
        wait_until(Duration::from_secs(5), || async move {
            matches!(self.get(post_id, 0, true).await, Ok(p) if p.version == version)
        })
        .await
    }

    async fn get(&self, post_id: i64, min_version: i64, include_deleted: bool) -> Result<Post, Status> {
        self.client
            .clone()
            .get_post(GetPostRequest {
                post_id,
                min_version,
                include_deleted,
            })
            .await
            .map(|r| r.into_inner().post.unwrap())
    }

    async fn list(&self, request: ListPostsRequest) -> Result<(Vec<Post>, String), Status> {
        self.client
            .clone()
            .list_posts(request)
            .await
            .map(|r| r.into_inner())
            .map(|r| (r.posts, r.next_page_token))
    }

    async fn stop(self) {
        let database = self.store.clone();
        self.running.stop().await.unwrap();
        support::drop_database(&database).await;
    }
}

async fn health(endpoint: String, wanted: ServingStatus) -> bool {
    let Ok(channel) = Channel::from_shared(endpoint).unwrap().connect().await else {
        return false;
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "posts.v1.PostQuery".into(),
        })
        .await;
    matches!(reply, Ok(r) if r.get_ref().status == wanted as i32)
}

/// The fields named in a status's BadRequest details.
fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

fn updated(post_id: i64, version: i64, title: &str, created_ms: i64) -> PostEvent {
    event(
        post_id,
        version,
        EventType::PostUpdated,
        title,
        "body",
        "ann",
        created_ms,
    )
}

fn deleted(post_id: i64, version: i64, created_ms: i64) -> PostEvent {
    event(
        post_id,
        version,
        EventType::PostDeleted,
        "gone",
        "body",
        "ann",
        created_ms,
    )
}

#[tokio::test]
async fn get_returns_live_posts_and_hides_deleted_ones() {
    let mut h = Harness::start("qs_get").await;
    h.apply(&created(1, "ann", 1_000)).await;
    h.apply(&created(2, "ann", 2_000)).await;
    h.apply(&deleted(2, 2, 2_000)).await;

    let post = h.get(1, 0, false).await.unwrap();
    assert_eq!((post.post_id, post.version, post.title.as_str()), (1, 1, "title 1"));
    assert_eq!(post.created_at.unwrap().seconds, 1);
    assert_eq!(h.get(99, 0, false).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(h.get(2, 0, false).await.unwrap_err().code(), Code::NotFound);
    let gone = h.get(2, 0, true).await.unwrap();
    assert!(gone.deleted);
    assert_eq!(gone.version, 2);

    let bad = h.get(0, 0, false).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), vec!["post_id"]);
    let bad = h.get(-3, -1, false).await.unwrap_err();
    assert_eq!(violated_fields(&bad), vec!["post_id", "min_version"]);
    h.stop().await;
}

#[tokio::test]
async fn min_version_waits_for_the_notification() {
    let mut h = Harness::start("qs_wait").await;
    h.apply(&created(1, "ann", 1_000)).await;

    let client = h.client.clone();
    let started = Instant::now();
    let mut pending = tokio::spawn(async move {
        let mut request = tonic::Request::new(GetPostRequest {
            post_id: 1,
            min_version: 2,
            include_deleted: false,
        });
        request.set_timeout(Duration::from_secs(8));
        client.clone().get_post(request).await
    });
    // It must still be waiting: version 2 does not exist yet.
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut pending)
        .await
        .is_err());
    h.apply(&updated(1, 2, "second", 1_000)).await;
    let post = pending.await.unwrap().unwrap().into_inner().post.unwrap();
    assert_eq!((post.version, post.title.as_str()), (2, "second"));
    // Woken by the notification, long before the 8 s deadline or 5 s cap.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Already there: answers at once.
    assert_eq!(h.get(1, 1, false).await.unwrap().version, 2);
    h.stop().await;
}

#[tokio::test]
async fn min_version_not_reached_is_unavailable_naming_both_versions() {
    let mut h = Harness::start_with("qs_wait_fail", |c| c.max_wait = Duration::from_millis(400)).await;
    h.apply(&created(1, "ann", 1_000)).await;

    // The client's deadline is the limit...
    let mut request = tonic::Request::new(GetPostRequest {
        post_id: 1,
        min_version: 5,
        include_deleted: false,
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = h.client.clone().get_post(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("version 1"), "{}", status.message());
    assert!(status.message().contains("min_version 5"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_millis(300));

    // ...and MAX_WAIT_MS caps a longer one. A notification for another
    // version that does not reach min_version does not end the wait early.
    let client = h.client.clone();
    let started = Instant::now();
    let pending = tokio::spawn(async move {
        let mut request = tonic::Request::new(GetPostRequest {
            post_id: 1,
            min_version: 5,
            include_deleted: false,
        });
        request.set_timeout(Duration::from_secs(10));
        client.clone().get_post(request).await
    });
    h.apply(&updated(1, 2, "v2", 1_000)).await;
    let status = pending.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("min_version 5"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    h.stop().await;
}

#[tokio::test]
async fn list_filters_combine_and_match_literal_text_case_insensitively() {
    let mut h = Harness::start("qs_filters").await;
    let posts = [
        (1, "ann", "Rust in Production", "tokio and tonic"),
        (2, "ann", "Cooking rust off pans", "vinegar"),
        (3, "bob", "RUST tips", "TOKIO tricks"),
        (4, "ann", "has $where inside", "x"),
        (5, "ann", "dot.star .* here", "x"),
        (6, "ann", "json {\"$gt\": \"\"} x", "x"),
        (7, "ann", "a|b pipe", "x"),
        (8, "ann", "ab", "b"),
        (9, "$where", "plain", "x"),
    ];
    for (id, author, title, content) in posts {
        let e = event(id, 1, EventType::PostCreated, title, content, author, id * 1_000);
        h.apply(&e).await;
    }
    let gone = event(
        2,
        2,
        EventType::PostDeleted,
        "Cooking rust off pans",
        "vinegar",
        "ann",
        2_000,
    );
    h.apply(&gone).await;
    let ids = |found: Vec<Post>| found.into_iter().map(|p| p.post_id).collect::<Vec<_>>();
    let list = |author: &str, title: &str, content: &str, include_deleted: bool| ListPostsRequest {
        author_name: author.into(),
        title: title.into(),
        content: content.into(),
        include_deleted,
        page_size: 100,
        page_token: String::new(),
    };

    // Case-insensitive substring, newest first; deleted only on request.
    assert_eq!(ids(h.list(list("", "rust", "", false)).await.unwrap().0), vec![3, 1]);
    assert_eq!(ids(h.list(list("", "rust", "", true)).await.unwrap().0), vec![3, 2, 1]);
    // AND of all three filters; author is exact.
    assert_eq!(
        ids(h.list(list("ann", "rust", "tokio", false)).await.unwrap().0),
        vec![1]
    );
    assert_eq!(
        ids(h.list(list("bob", "rust", "tokio", false)).await.unwrap().0),
        vec![3]
    );
    assert!(h.list(list("an", "", "", false)).await.unwrap().0.is_empty());
    assert!(h.list(list("ANN", "", "", false)).await.unwrap().0.is_empty());
    // Operator and regex syntax is literal text.
    assert_eq!(ids(h.list(list("", "$where", "", false)).await.unwrap().0), vec![4]);
    assert_eq!(ids(h.list(list("", ".*", "", false)).await.unwrap().0), vec![5]);
    assert_eq!(
        ids(h.list(list("", "{\"$gt\": \"\"}", "", false)).await.unwrap().0),
        vec![6]
    );
    assert_eq!(ids(h.list(list("", "a|b", "", false)).await.unwrap().0), vec![7]);
    assert_eq!(
        ids(h.list(list("", "", ".*", false)).await.unwrap().0),
        Vec::<i64>::new()
    );
    assert_eq!(ids(h.list(list("$where", "", "", false)).await.unwrap().0), vec![9]);
    assert!(h
        .list(list("{\"$gt\": \"\"}", "", "", false))
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(h
        .list(list("", "", "{\"$ne\": null}", false))
        .await
        .unwrap()
        .0
        .is_empty());
    // Default page size when 0.
    let mut request = list("", "", "", true);
    request.page_size = 0;
    assert_eq!(h.list(request).await.unwrap().0.len(), 9);
    h.stop().await;
}

#[tokio::test]
async fn pagination_survives_concurrent_inserts() {
    let mut h = Harness::start("qs_pages").await;
    // 250 posts; pairs share a created_at to exercise the post_id tie-break.
    let base = 1_600_000_000_000_i64;
    let events: Vec<PostEvent> = (1..=250)
        .map(|id| created(id, if id % 3 == 0 { "bob" } else { "ann" }, base + (id / 2) * 1_000))
        .collect();
    let results: Vec<_> = stream::iter(events.iter().map(|e| h.store.apply(e)))
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let mut expected: Vec<(i64, i64)> = events
        .iter()
        .map(|e| (base + (e.post_id / 2) * 1_000, e.post_id))
        .collect();
    expected.sort_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut next_id = 1_000;
    loop {
        let (page, next) = h
            .list(ListPostsRequest {
                page_size: 40,
                page_token: token.clone(),
                ..ListPostsRequest::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 40);
        seen.extend(page.iter().map(|p| p.post_id));
        if next.is_empty() {
            break;
        }
        token = next;
        // New posts arrive between pages, newer than everything listed.
        for _ in 0..5 {
            next_id += 1;
            let now = base + 10_000_000 + next_id;
            h.apply(&created(next_id, "ann", now)).await;
        }
    }
    let pre_existing: Vec<i64> = seen.iter().copied().filter(|id| *id <= 250).collect();
    assert_eq!(pre_existing, expected.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "a post was listed twice"
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_page_sizes_and_tokens_are_invalid_arguments() {
    let mut h = Harness::start("qs_tokens").await;
    for id in 1..=5 {
        h.apply(&created(id, "ann", id * 1_000)).await;
    }
    let request = |page_size: i32, page_token: &str, title: &str| ListPostsRequest {
        page_size,
        page_token: page_token.into(),
        title: title.into(),
        ..ListPostsRequest::default()
    };
    for size in [101, -1] {
        let status = h.list(request(size, "", "")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), vec!["page_size"]);
    }
    let (page, token) = h.list(request(2, "", "")).await.unwrap();
    assert_eq!(page.len(), 2);
    assert!(!token.is_empty());
    // The real token works, and continues after the first page.
    let (next, _) = h.list(request(2, &token, "")).await.unwrap();
    assert_eq!(next.iter().map(|p| p.post_id).collect::<Vec<_>>(), vec![3, 2]);

    let mut corrupted = token.clone().into_bytes();
    let middle = corrupted.len() / 2;
    corrupted[middle] = if corrupted[middle] == b'A' { b'B' } else { b'A' };
    let corrupted = String::from_utf8(corrupted).unwrap();
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 29])
    };
    for (bad, title) in [
        (corrupted.as_str(), ""),
        (forged.as_str(), ""),
        ("not a token!", ""),
        ("eyJwb3N0X2lkIjogMX0", ""),
        (token.as_str(), "other filters"),
    ] {
        let status = h.list(request(2, bad, title)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(violated_fields(&status), vec!["page_token"], "{bad}");
    }
    // Every problem is reported at once.
    let status = h.list(request(500, "garbage", "")).await.unwrap_err();
    assert_eq!(violated_fields(&status), vec!["page_size", "page_token"]);
    h.stop().await;
}

#[tokio::test]
async fn history_lists_every_version_in_order() {
    let mut h = Harness::start("qs_history").await;
    // Applied out of order: history is still by version.
    h.apply(&updated(4, 2, "two", 1_000)).await;
    h.apply(&created(4, "ann", 1_000)).await;
    h.apply(&deleted(4, 3, 1_000)).await;
    let versions = h
        .client
        .clone()
        .get_post_history(GetPostHistoryRequest { post_id: 4 })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(versions.iter().map(|p| p.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(versions[1].title, "two");
    assert!(versions[2].deleted);
    let missing = h
        .client
        .clone()
        .get_post_history(GetPostHistoryRequest { post_id: 5 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = h
        .client
        .clone()
        .get_post_history(GetPostHistoryRequest { post_id: 0 })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), vec!["post_id"]);
    h.stop().await;
}

#[tokio::test]
async fn a_watch_sees_create_update_delete_in_order() {
    let mut h = Harness::start("qs_watch").await;
    let mut one = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest {
            post_id: Some(7),
            author_name: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut by_bob = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest {
            post_id: None,
            author_name: Some("bob".into()),
        })
        .await
        .unwrap()
        .into_inner();
    h.apply(&created(8, "bob", 500)).await;
    h.apply(&created(7, "ann", 1_000)).await;
    h.apply(&updated(7, 2, "edited", 1_000)).await;
    // A duplicate delivery is Stale: no notification, nothing streamed twice.
    h.apply(&updated(7, 2, "edited", 1_000)).await;
    h.apply(&deleted(7, 3, 1_000)).await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let change = tokio::time::timeout(Duration::from_secs(5), one.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        let post = change.post.unwrap();
        seen.push((
            post.post_id,
            post.version,
            EventType::try_from(change.event_type).unwrap(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            (7, 1, EventType::PostCreated),
            (7, 2, EventType::PostUpdated),
            (7, 3, EventType::PostDeleted),
        ]
    );
    let bob = tokio::time::timeout(Duration::from_secs(5), by_bob.message())
        .await
        .expect("watch stalled")
        .unwrap()
        .unwrap();
    assert_eq!(bob.post.unwrap().post_id, 8);

    let bad = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest {
            post_id: Some(0),
            author_name: Some(String::new()),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), vec!["post_id", "author_name"]);
    h.stop().await;
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_while_a_fast_one_gets_everything() {
    let mut h = Harness::start_with("qs_slow", |c| c.watch_buffer = 4).await;
    // The slow client advertises small HTTP/2 windows so its backlog reaches
    // the server's queue instead of sitting in transport buffers.
    let slow_channel = Channel::from_shared(h.running.endpoint())
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut slow = PostQueryClient::new(slow_channel)
        .watch_posts(WatchPostsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut fast = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest::default())
        .await
        .unwrap()
        .into_inner();
    const CHANGES: i64 = 120;
    let reader = tokio::spawn(async move {
        let mut versions = Vec::new();
        while versions.len() < CHANGES as usize {
            match tokio::time::timeout(Duration::from_secs(10), fast.message()).await {
                Ok(Ok(Some(change))) => versions.push(change.post.unwrap().version),
                other => panic!("fast watcher ended early: {other:?}"),
            }
        }
        versions
    });
    let body = "x".repeat(16 * 1024);
    for version in 1..=CHANGES {
        let kind = if version == 1 {
            EventType::PostCreated
        } else {
            EventType::PostUpdated
        };
        h.apply(&event(1, version, kind, "big", &body, "ann", 1_000)).await;
    }
    let versions = reader.await.unwrap();
    assert_eq!(versions, (1..=CHANGES).collect::<Vec<_>>());

    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.message()).await {
            Ok(Ok(Some(_))) => received += 1,
            Ok(Ok(None)) => panic!("slow watcher ended without an error after {received}"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("slow watcher was never cut off ({received} received)"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(received < CHANGES, "{received}");
    h.stop().await;
}

#[tokio::test]
async fn the_watcher_cap_refuses_extra_streams() {
    let h = Harness::start_with("qs_cap", |c| c.max_watchers = 1).await;
    let _first = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let refused = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_cleanly() {
    let h = Harness::start("qs_shutdown").await;
    let mut watch = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let endpoint = h.running.endpoint();
    h.running.trigger.trigger();
    let end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("watch stream still open after shutdown");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(5), h.running.handle)
        .await
        .expect("server did not stop");
    stopped.unwrap().unwrap();
    assert!(!health(endpoint, ServingStatus::Serving).await);
    support::drop_database(&h.store).await;
}

/// A TCP forwarder to MongoDB that can be cut (refusing and dropping
/// connections) and restored, to fake an outage without touching the server.
struct Gate {
    addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Gate {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0_u64);
        let gate_open = open.clone();
        let cuts = generation.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate_open.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let target = target.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, open, generation }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a `scheme://host:port/...` URL without credentials.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap().to_owned()
}

#[tokio::test]
async fn a_mongodb_outage_is_unavailable_and_recovers_without_restart() {
    let gate = Gate::start(host_port(&mongodb_url())).await;
    let proxied = format!("mongodb://{}/?directConnection=true", gate.addr);
    // A long TTL, so the cached post below cannot expire during the outage.
    let mut h = Harness::start_on_mongo_with("qs_outage", |c| {
        c.read_store.url = Some(proxied.clone());
        c.cache_ttl = Duration::from_millis(120_000);
    })
    .await;
    h.apply(&created(1, "ann", 1_000)).await;
    h.apply(&created(2, "ann", 2_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap().post_id, 1);

    gate.cut();
    let endpoint = h.running.endpoint();
    assert!(
        wait_until(Duration::from_secs(10), || health(
            endpoint.clone(),
            ServingStatus::NotServing
        ))
        .await,
        "health did not turn NOT_SERVING"
    );
    // Post 2 was never read, so it is not cached and needs the store.
    let mut request = tonic::Request::new(GetPostRequest {
        post_id: 2,
        ..GetPostRequest::default()
    });
    request.set_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let status = h.client.clone().get_post(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Post 1 is cached: nothing can change it while the relay cannot write
    // either, and notifications still flow, so it is still answered.
    assert_eq!(h.get(1, 0, false).await.unwrap().version, 1);

    gate.restore();
    assert!(
        wait_until(Duration::from_secs(15), || health(
            endpoint.clone(),
            ServingStatus::Serving
        ))
        .await,
        "health did not recover"
    );
    assert_eq!(h.get(1, 0, false).await.unwrap().post_id, 1);
    assert_eq!(h.get(2, 0, false).await.unwrap().post_id, 2);
    h.stop().await;
}

#[tokio::test]
async fn a_missing_sqlite_read_model_is_unavailable_within_the_deadline() {
    // A file in a directory that does not exist, opened without creating it.
    let url = format!(
        "sqlite://{}?mode=rw",
        std::env::temp_dir()
            .join(unique("qs_missing"))
            .join("read.db")
            .display()
    );
    let running = spawn(Config::for_tests(&url, "unused", &redis_url(), &unique("notify")))
        .await
        .unwrap();
    let endpoint = running.endpoint();
    assert!(
        wait_until(Duration::from_secs(5), || health(
            endpoint.clone(),
            ServingStatus::NotServing
        ))
        .await,
        "health reports NOT_SERVING"
    );
    let mut client = PostQueryClient::connect(running.endpoint()).await.unwrap();
    for request in [
        GetPostRequest {
            post_id: 1,
            ..GetPostRequest::default()
        },
        GetPostRequest {
            post_id: 1,
            min_version: 1,
            ..GetPostRequest::default()
        },
    ] {
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_millis(1500));
        let started = Instant::now();
        let status = client.get_post(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
    running.stop().await.unwrap();
}

async fn subscribers(redis: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(redis)
        .await
        .unwrap();
    reply.1
}

#[tokio::test]
async fn notifications_resume_after_a_redis_blip() {
    let gate = Gate::start(host_port(&redis_url())).await;
    let proxied = format!("redis://{}", gate.addr);
    let mut h = Harness::start_with("qs_blip", |c| c.redis_url = proxied.clone()).await;
    let mut watch = h
        .client
        .clone()
        .watch_posts(WatchPostsRequest::default())
        .await
        .unwrap()
        .into_inner();
    h.apply(&created(1, "ann", 1_000)).await;
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.post.unwrap().version, 1);

    gate.cut();
    let redis = h.redis.clone();
    let channel = h.channel.clone();
    let count_is = |wanted: i64| {
        let redis = redis.clone();
        let channel = channel.clone();
        move || {
            let mut redis = redis.clone();
            let channel = channel.clone();
            async move { subscribers(&mut redis, &channel).await == wanted }
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), count_is(0)).await,
        "the subscription did not drop"
    );
    gate.restore();
    assert!(
        wait_until(Duration::from_secs(15), count_is(1)).await,
        "query-svc did not resubscribe"
    );

    // The open watch stream survived and streams changes again; waits work.
    h.apply(&updated(1, 2, "after the blip", 1_000)).await;
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.post.unwrap().version, 2);
    assert_eq!(h.get(1, 2, false).await.unwrap().title, "after the blip");
    h.stop().await;
}

#[tokio::test]
async fn get_post_is_cached_and_each_notification_brings_the_next_version() {
    // A long TTL: only notifications may refresh what is cached here.
    let mut h = Harness::start_with("qs_cache", |c| c.cache_ttl = Duration::from_millis(120_000)).await;
    h.apply(&created(1, "ann", 1_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap().version, 1);

    // A change nobody announces is not seen: the post is served from memory.
    h.write_silently(&updated(1, 2, "silent", 1_000)).await;
    for _ in 0..3 {
        assert_eq!(h.get(1, 0, false).await.unwrap().version, 1);
    }
    // Its notification evicts it; the next GetPost reads version 2.
    h.publish(1, 2).await;
    assert!(
        h.eventually_version(1, 2).await,
        "the notification did not evict version 1"
    );
    assert_eq!(h.get(1, 0, false).await.unwrap().title, "silent");

    // min_version above the cached version still waits for the change.
    let client = h.client.clone();
    let pending = tokio::spawn(async move {
        let mut request = tonic::Request::new(GetPostRequest {
            post_id: 1,
            min_version: 3,
            include_deleted: false,
        });
        request.set_timeout(Duration::from_secs(8));
        client.clone().get_post(request).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.apply(&updated(1, 3, "third", 1_000)).await;
    let post = pending.await.unwrap().unwrap().into_inner().post.unwrap();
    assert_eq!((post.version, post.title.as_str()), (3, "third"));
    assert_eq!(h.get(1, 2, false).await.unwrap().version, 3);

    // Deleted: the cached deleted state keeps NOT_FOUND and include_deleted as they were.
    h.apply(&deleted(1, 4, 1_000)).await;
    assert!(h.eventually_version(1, 4).await);
    assert_eq!(h.get(1, 0, false).await.unwrap_err().code(), Code::NotFound);
    assert!(h.get(1, 0, true).await.unwrap().deleted);

    // Absence is never cached: a post created after a NOT_FOUND is found.
    assert_eq!(h.get(2, 0, false).await.unwrap_err().code(), Code::NotFound);
    h.write_silently(&created(2, "bob", 2_000)).await;
    assert_eq!(h.get(2, 0, false).await.unwrap().version, 1);

    // A reset (after a rebuild) drops everything cached.
    h.write_silently(&updated(2, 2, "rebuilt", 2_000)).await;
    assert_eq!(h.get(2, 0, false).await.unwrap().version, 1);
    h.publish_reset().await;
    assert!(h.eventually_version(2, 2).await, "the reset did not clear the cache");
    h.stop().await;
}

#[tokio::test]
async fn cached_posts_expire_after_the_ttl() {
    let mut h = Harness::start_with("qs_cache_ttl", |c| c.cache_ttl = Duration::from_millis(300)).await;
    h.apply(&created(1, "ann", 1_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap().version, 1);
    let changed = Instant::now();
    h.write_silently(&updated(1, 2, "unannounced", 1_000)).await;
    assert!(
        h.eventually_version(1, 2).await,
        "the unannounced change was never seen"
    );
    assert!(changed.elapsed() < Duration::from_secs(2), "{:?}", changed.elapsed());
    h.stop().await;
}

#[tokio::test]
async fn with_the_cache_off_every_get_post_reads_the_store() {
    let mut h = Harness::start_with("qs_cache_off", |c| c.cache_posts = 0).await;
    h.apply(&created(1, "ann", 1_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap().version, 1);
    h.write_silently(&updated(1, 2, "unannounced", 1_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap().version, 2);
    h.write_silently(&deleted(1, 3, 1_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(h.get(1, 3, true).await.unwrap().version, 3);
    h.stop().await;
}

#[tokio::test]
async fn the_cache_is_dropped_while_the_subscription_is_down() {
    let gate = Gate::start(host_port(&redis_url())).await;
    let proxied = format!("redis://{}", gate.addr);
    let mut h = Harness::start_with("qs_cache_blip", |c| {
        c.redis_url = proxied.clone();
        c.cache_ttl = Duration::from_millis(120_000);
    })
    .await;
    h.apply(&created(1, "ann", 1_000)).await;
    assert_eq!(h.get(1, 0, false).await.unwrap().version, 1);
    gate.cut();
    let redis = h.redis.clone();
    let channel = h.channel.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut redis = redis.clone();
            let channel = channel.clone();
            async move { subscribers(&mut redis, &channel).await == 0 }
        })
        .await,
        "the subscription did not drop"
    );
    // The relay's notification is lost (nobody subscribed), yet GetPost
    // reads the store while the subscription is down.
    h.write_silently(&updated(1, 2, "while down", 1_000)).await;
    assert!(
        h.eventually_version(1, 2).await,
        "served a cached post without a subscription"
    );
    gate.restore();
    h.stop().await;
}
