//! event-relay against real Redis and FerretDB, with command-svc as the source.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use event_relay::projector::{ApplyError, Projector};
use postmesh_proto::v1::{DeletePostRequest, PostEvent, UpdatePostRequest};
use postmesh_read_model::{Applied, ReadModelStore, ReadStore};
use postmesh_tests::{
    add_poison_entry,
    compare::assert_converges,
    mesh::{relay_config, Names, WriteSide},
    redis, redis_url,
    servers::{free_port, FerretProc},
    services::{health, ServiceProc},
    stream_len, wait_until,
};
use tonic_health::pb::health_check_response::ServingStatus;

const SETTLE: Duration = Duration::from_secs(30);

/// Fails every apply of one post while armed: a batch holding it is refused
/// whole (the relay then applies that batch entry by entry), and each try of
/// the post's event on its own counts as an attempt.
#[derive(Clone)]
struct FailingFor {
    inner: ReadStore,
    post_id: i64,
    armed: Arc<AtomicBool>,
    attempts: Arc<AtomicU32>,
}

impl Projector for FailingFor {
    fn db_system(&self) -> &'static str {
        self.inner.db_system()
    }

    async fn project(&self, events: &[PostEvent]) -> Result<Vec<Applied>, ApplyError> {
        if self.armed.load(Ordering::SeqCst) && events.iter().any(|e| e.post_id == self.post_id) {
            if events.len() == 1 {
                self.attempts.fetch_add(1, Ordering::SeqCst);
            }
            return Err(ApplyError::Rejected("injected writer failure".into()));
        }
        self.inner.project(events).await
    }

    async fn ping_store(&self) -> Result<(), ApplyError> {
        self.inner.ping_store().await
    }
}

async fn dlq_len(names: &Names) -> usize {
    stream_len(&redis_url(), &format!("{}.dlq", names.stream)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_updates_and_deletes_reach_the_read_model_with_full_history() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    let mut client = write.client.clone();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(write.create(&format!("post {i}")).await);
    }
    for id in &ids[..5] {
        client
            .update_post(UpdatePostRequest {
                post_id: *id,
                title: Some("edited".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for id in &ids[..2] {
        client
            .delete_post(DeletePostRequest {
                post_id: *id,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let events = assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert_eq!(events.len(), 17);
    let history = relay.store.history(ids[0]).await.unwrap();
    let versions: Vec<i64> = history.iter().map(|v| v.post.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert!(history[2].post.deleted);
    assert_eq!(dlq_len(&names).await, 0);
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_dead_lettered_after_three_attempts_and_replay_applies_it() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    let victim = write.create("victim").await;
    let armed = Arc::new(AtomicBool::new(true));
    let attempts = Arc::new(AtomicU32::new(0));
    let relay = {
        let (armed, attempts) = (armed.clone(), attempts.clone());
        event_relay::startup::spawn_with(relay_config(&names), move |inner| FailingFor {
            inner,
            post_id: victim,
            armed,
            attempts,
        })
        .await
        .unwrap()
    };
    for i in 0..5 {
        write.create(&format!("bystander {i}")).await;
    }
    assert!(
        wait_until(SETTLE, || async { dlq_len(&names).await == 1 }).await,
        "the failing event is dead-lettered"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "exactly max_attempts tries");
    let config = relay_config(&names);
    let letters = {
        let mut conn = event_relay::consumer::connect(&redis_url(), Duration::ZERO)
            .await
            .unwrap();
        event_relay::dlq::list(&mut conn, &config.streams.dlq_stream())
            .await
            .unwrap()
    };
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].post_id, victim.to_string());
    assert_eq!(letters[0].attempts, "3");
    assert!(letters[0].error.contains("injected writer failure"));
    // Everything else flowed past it.
    let bystanders = wait_until(SETTLE, || async { relay.store.all_posts().await.unwrap().len() == 5 }).await;
    assert!(bystanders);
    assert!(relay.store.get(victim).await.unwrap().is_none());

    armed.store(false, Ordering::SeqCst);
    let selection = event_relay::config::Selection {
        ids: vec![letters[0].id.clone()],
        all: false,
    };
    assert_eq!(event_relay::dlq::replay(&config.streams, &selection).await.unwrap(), 1);
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert_eq!(dlq_len(&names).await, 0);
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_is_dead_lettered_at_once_while_the_rest_flow() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    write.create("before").await;
    add_poison_entry(&redis_url(), &names.stream).await;
    let mut conn = redis(&redis_url()).await;
    let _: String = ::redis::cmd("XADD")
        .arg(&names.stream)
        .arg("*")
        .arg("note")
        .arg("no event field at all")
        .query_async(&mut conn)
        .await
        .unwrap();
    write.create("after").await;
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert!(wait_until(SETTLE, || async { dlq_len(&names).await == 2 }).await);
    assert_eq!(relay.stats.failed.load(Ordering::Relaxed), 0, "poison is not retried");
    relay.stop().await.unwrap();
}

/// The store refuses a decodable event (it carries another post's state): its batch
/// goes entry by entry, the others are applied, and the bad one is tried
/// max_attempts times and dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_store_rejects_is_dead_lettered_while_its_batch_is_applied() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    write.create("before").await;
    let bad = PostEvent {
        post_id: 4242,
        version: 1,
        event_type: postmesh_proto::v1::EventType::PostCreated as i32,
        post: Some(postmesh_proto::v1::Post {
            post_id: 999,
            version: 1,
            ..Default::default()
        }),
        ..PostEvent::default()
    };
    let mut conn = redis(&redis_url()).await;
    let _: String = ::redis::cmd("XADD")
        .arg(&names.stream)
        .arg("*")
        .arg("post_id")
        .arg("4242")
        .arg("event")
        .arg(prost::Message::encode_to_vec(&bad))
        .query_async(&mut conn)
        .await
        .unwrap();
    write.create("after").await;
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert!(wait_until(SETTLE, || async { dlq_len(&names).await == 1 }).await);
    assert_eq!(
        relay.stats.failed.load(Ordering::Relaxed),
        3,
        "max_attempts tries of the bad event"
    );
    assert!(relay.store.get(4242).await.unwrap().is_none());
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_reordered_entries_converge() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    let id = write.create("dup").await;
    for i in 0..4 {
        write
            .client
            .clone()
            .update_post(UpdatePostRequest {
                post_id: id,
                title: Some(format!("v{}", i + 2)),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(wait_until(SETTLE, || async { stream_len(&redis_url(), &names.stream).await == 5 }).await);
    // Re-add every entry in reverse order, twice: duplicates and reordering.
    let entries = postmesh_tests::stream_entries(&redis_url(), &names.stream).await;
    let mut conn = redis(&redis_url()).await;
    for _ in 0..2 {
        for (_, fields) in entries.iter().rev() {
            let mut cmd = ::redis::cmd("XADD");
            cmd.arg(&names.stream).arg("*");
            for (k, v) in fields {
                cmd.arg(k).arg(v.as_slice());
            }
            let _: String = cmd.query_async(&mut conn).await.unwrap();
        }
    }
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert!(wait_until(SETTLE, || async { relay.stats.consumed.load(Ordering::Relaxed) >= 15 }).await);
    assert_eq!(relay.store.get(id).await.unwrap().unwrap().title, "v5");
    assert_eq!(dlq_len(&names).await, 0);
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ferretdb_outage_of_20_seconds_loses_nothing_and_fills_no_dead_letters() {
    let mut ferret = FerretProc::start().await;
    let names = Names::with(postmesh_tests::TestReadStore::on_mongo(&ferret.url()));
    let write = WriteSide::start(&names, &redis_url()).await;
    let mut config = relay_config(&names);
    config.retry_max = Duration::from_millis(1000);
    let relay = event_relay::startup::spawn(config).await.unwrap();
    let health_endpoint = relay.service.endpoint();
    for i in 0..5 {
        write.create(&format!("early {i}")).await;
    }
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;

    ferret.stop();
    let writer = {
        let write_client = write.client.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let mut client = write_client.clone();
                client
                    .create_post(postmesh_proto::v1::CreatePostRequest {
                        title: format!("during {i}"),
                        content: "c".into(),
                        author_name: "a".into(),
                        idempotency_key: String::new(),
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await; // a steady trickle across the outage
            }
        })
    };
    let not_serving = wait_until(Duration::from_secs(15), || {
        let e = health_endpoint.clone();
        async move { health(&e, "").await == Some(ServingStatus::NotServing) }
    })
    .await;
    assert!(not_serving, "health reports NOT_SERVING during the outage");
    writer.await.unwrap(); // 20 s of writes while the read store is down
    ferret.restart().await;
    assert_converges(&write.endpoint(), &relay.store, Duration::from_secs(60)).await;
    assert_eq!(dlq_len(&names).await, 0, "an outage never fills the DLQ");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let e = health_endpoint.clone();
            async move { health(&e, "").await == Some(ServingStatus::Serving) }
        })
        .await
    );
    relay.stop().await.unwrap();
}

fn relay_proc(names: &Names, consumer: &str) -> ServiceProc {
    let port = free_port();
    ServiceProc::spawn(
        "event-relay",
        port,
        &[],
        &[
            ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{port}")),
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", names.stream.clone()),
            ("READ_STORE_URL", names.read_store.url.clone()),
            ("READ_STORE_DATABASE", names.database.clone()),
            ("NOTIFY_CHANNEL", names.channel.clone()),
            ("CONSUMER_NAME", consumer.to_owned()),
            ("RELAY_BATCH_SIZE", "50".to_owned()),
            ("RELAY_CLAIM_IDLE_MS", "1500".to_owned()),
            ("RELAY_BLOCK_MS", "200".to_owned()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_the_work_and_killing_one_mid_batch_loses_nothing() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    let mut a = relay_proc(&names, "relay-a");
    let mut b = relay_proc(&names, "relay-b");
    a.wait_healthy(Duration::from_secs(20)).await;
    b.wait_healthy(Duration::from_secs(20)).await;
    let store = names.read_store.connect().await;
    let load = {
        let client = write.client.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let mut client = client.clone();
                client
                    .create_post(postmesh_proto::v1::CreatePostRequest {
                        title: format!("load {i}"),
                        content: "c".into(),
                        author_name: "a".into(),
                        idempotency_key: String::new(),
                    })
                    .await
                    .unwrap();
            }
        })
    };
    // Kill A once it is visibly applying.
    let a_busy = wait_until(SETTLE, || async { a.logs().matches("events applied").count() >= 2 }).await;
    assert!(a_busy, "relay A takes part");
    a.kill();
    load.await.unwrap();
    assert_converges(&write.endpoint(), &store, Duration::from_secs(60)).await;
    assert!(b.logs().contains("events applied"), "relay B takes part");
    assert_eq!(dlq_len(&names).await, 0);
    b.terminate();
    let status = b.wait_exit(Duration::from_secs(15)).await.expect("B exits on SIGTERM");
    assert!(status.success(), "graceful shutdown exits 0:\n{}", b.logs());
}

#[tokio::test]
async fn a_relay_pointed_at_something_that_is_not_redis_fails_fast() {
    let names = Names::fresh();
    let mut proc = ServiceProc::spawn(
        "event-relay",
        free_port(),
        &[],
        &[
            ("REDIS_URL", format!("redis://127.0.0.1:{}", mongo_port())),
            ("STREAM_NAME", names.stream.clone()),
        ],
    );
    let status = proc.wait_exit(Duration::from_secs(5)).await.expect("fails within 5 s");
    assert!(!status.success());
    assert!(proc.logs().contains(&format!("redis://127.0.0.1:{}", mongo_port())));
}

fn mongo_port() -> String {
    postmesh_tests::mongodb_url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_replays_and_purges_dead_letters_and_reports_status() {
    let names = Names::fresh();
    let mut conn = redis(&redis_url()).await;
    let dlq = format!("{}.dlq", names.stream);
    for post in ["7", "8"] {
        let _: String = ::redis::cmd("XADD")
            .arg(&dlq)
            .arg("*")
            .arg("post_id")
            .arg(post)
            .arg("version")
            .arg("1")
            .arg("event_type")
            .arg("PostCreated")
            .arg("dlq_error")
            .arg("boom")
            .arg("dlq_attempts")
            .arg("3")
            .arg("dlq_source_stream")
            .arg(&names.stream)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(postmesh_tests::services::bin("event-relay"))
            .args(args)
            .env("REDIS_URL", redis_url())
            .env("STREAM_NAME", &names.stream)
            .env("LOG_FORMAT", "json")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = cli(&["dlq", "list"]);
    assert!(listed.contains("2 dead letter(s)"), "{listed}");
    assert!(listed.contains("boom") && listed.contains("create"), "{listed}");
    let first_id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(cli(&["dlq", "replay", "--id", &first_id]).contains("replayed 1"));
    assert_eq!(
        stream_len(&redis_url(), &names.stream).await,
        1,
        "replayed onto the main stream"
    );
    let replayed = &postmesh_tests::stream_entries(&redis_url(), &names.stream).await[0].1;
    assert!(!replayed.contains_key("dlq_attempts"), "attempts reset");
    assert!(cli(&["dlq", "purge", "--all"]).contains("purged 1"));
    assert_eq!(dlq_len(&names).await, 0);
    let status = cli(&["status"]);
    assert!(status.contains(&names.stream) && status.contains(&dlq), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replaces_a_damaged_read_model_with_one_equal_to_the_event_store() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    for i in 0..20 {
        write.create(&format!("r{i}")).await;
    }
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    relay.stop().await.unwrap();
    // Damage it: drop everything, as if the read model were lost.
    let store = names.read_store.connect().await;
    store.discard().await;
    let mut config = relay_config(&names);
    config.command_endpoint = write.endpoint();
    let rebuilt = event_relay::rebuild::run(&config).await.unwrap();
    assert_eq!(rebuilt.events, 20);
    assert_converges(&write.endpoint(), &store, Duration::from_secs(5)).await;
}

/// A rebuild changes every post at once, without per-post notifications: its
/// reset notification must make query-svc drop what it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_clears_query_svc_caches() {
    use postmesh_proto::v1::{post_query_client::PostQueryClient, GetPostRequest};

    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    let post_id = write.create("true title").await;
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    relay.stop().await.unwrap();
    // A TTL far beyond the test: only the reset can refresh the cache.
    let mut config =
        query_svc::config::Config::for_tests(&names.read_store.url, &names.database, &redis_url(), &names.channel);
    config.cache_ttl = Duration::from_secs(300);
    let query = query_svc::startup::spawn(config).await.unwrap();
    let mut client = PostQueryClient::connect(query.endpoint()).await.unwrap();
    let get = |min_version| GetPostRequest {
        post_id,
        min_version,
        include_deleted: false,
    };

    // Damage the read model the way a faulty writer would, announced like a
    // real change, so query-svc caches the damaged version.
    let store = names.read_store.connect().await;
    let mut bogus = store.get(post_id).await.unwrap().unwrap();
    bogus.version = 2;
    bogus.title = "damaged".into();
    let event = PostEvent {
        position: 0,
        post_id,
        version: 2,
        event_type: postmesh_proto::v1::EventType::PostUpdated as i32,
        post: Some(bogus.clone()),
        occurred_at: bogus.updated_at,
        ..PostEvent::default()
    };
    assert_eq!(store.apply(&event).await.unwrap(), Applied::Applied);
    let mut publisher = redis(&redis_url()).await;
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg(&names.channel)
        .arg(format!(r#"{{"post_id":{post_id},"version":2}}"#))
        .query_async(&mut publisher)
        .await
        .unwrap();
    let damaged = client.get_post(get(2)).await.unwrap().into_inner().post.unwrap();
    assert_eq!(damaged.title, "damaged");

    let mut config = relay_config(&names);
    config.command_endpoint = write.endpoint();
    event_relay::rebuild::run(&config).await.unwrap();
    assert_converges(&write.endpoint(), &store, Duration::from_secs(5)).await;
    let mut repaired = None;
    for _ in 0..100 {
        let post = client.get_post(get(0)).await.unwrap().into_inner().post.unwrap();
        if post.title == "true title" {
            repaired = Some(post);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let repaired = repaired.expect("query-svc kept serving the pre-rebuild post");
    assert_eq!(repaired.version, 1);
    query.stop().await.unwrap();
    store.discard().await;
}

/// Events Redis lost (the stream deleted before any relay read it) reach
/// the read model through the catch-up, which reads the event store; then
/// the checkpoint stands at the log's head, and on a complete model each
/// check only counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_redis_lost_reach_the_read_model_through_the_catch_up() {
    let names = Names::fresh();
    let write = WriteSide::start(&names, &redis_url()).await;
    for i in 0..12 {
        write.create(&format!("lost {i}")).await;
    }
    // Redis loses them all before a relay reads one.
    let mut conn = redis(&redis_url()).await;
    assert!(
        wait_until(SETTLE, || async { stream_len(&redis_url(), &names.stream).await == 12 }).await,
        "published"
    );
    redis::cmd("DEL")
        .arg(&names.stream)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let mut config = relay_config(&names);
    config.command_endpoint = write.endpoint();
    config.catch_up_interval = Duration::from_millis(300);
    let relay = event_relay::startup::spawn(config).await.unwrap();
    let events = assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert_eq!(events.len(), 12);
    assert!(relay.stats.caught_up.load(Ordering::Relaxed) >= 12);
    // And what comes after through Redis still flows, the checkpoint following.
    for i in 0..3 {
        write.create(&format!("after {i}")).await;
    }
    let events = assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    let head = events.last().unwrap().position;
    assert!(
        wait_until(SETTLE, || async { relay.store.checkpoint().await.unwrap() == head }).await,
        "the checkpoint reaches the head {head}"
    );
    assert_eq!(relay.store.count_positions(0, head).await.unwrap(), 15);
    assert_eq!(relay.progress.lag(), 0);
    relay.stop().await.unwrap();
}

/// A read-model document that collides on the unique `post_id` index (a
/// stray document holding the next post's id under another `_id`): the
/// relay dead-letters the event with the reason, never acknowledges it
/// unapplied; with the stray removed, a replay applies it and the read model
/// equals the event store again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_post_id_collision_is_dead_lettered_with_the_reason() {
    use postmesh_tests::ReadBackend;
    let names = Names::on(ReadBackend::Mongo);
    let write = WriteSide::start(&names, &redis_url()).await;
    let relay = event_relay::startup::spawn(relay_config(&names)).await.unwrap();
    let first = write.create("first").await;
    assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    let client = mongodb::Client::with_uri_str(postmesh_tests::mongodb_url())
        .await
        .unwrap();
    let posts = client
        .database(&names.database)
        .collection::<mongodb::bson::Document>("posts");
    posts
        .insert_one(mongodb::bson::doc! { "_id": "stray", "post_id": first + 1, "version": 1_i64 })
        .await
        .unwrap();
    let victim = write.create("victim").await;
    assert_eq!(victim, first + 1);
    assert!(
        wait_until(SETTLE, || async { dlq_len(&names).await == 1 }).await,
        "the colliding event is dead-lettered"
    );
    let mut conn = event_relay::consumer::connect(&redis_url(), Duration::ZERO)
        .await
        .unwrap();
    let letters = event_relay::dlq::list(&mut conn, &format!("{}.dlq", names.stream))
        .await
        .unwrap();
    assert_eq!(letters[0].post_id, victim.to_string());
    assert!(
        letters[0].error.contains("conflict") && letters[0].error.contains("unique index"),
        "the reason: {}",
        letters[0].error
    );
    posts.delete_one(mongodb::bson::doc! { "_id": "stray" }).await.unwrap();
    let config = relay_config(&names);
    let selection = event_relay::config::Selection {
        ids: Vec::new(),
        all: true,
    };
    assert_eq!(event_relay::dlq::replay(&config.streams, &selection).await.unwrap(), 1);
    let events = assert_converges(&write.endpoint(), &relay.store, SETTLE).await;
    assert_eq!(events.len(), 2);
    relay.stop().await.unwrap();
}
