//! command-svc against real SQLite, MariaDB and Redis.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use command_svc::config::Config;
use futures::{future::join_all, StreamExt};
use postmesh_proto::v1::{
    event_store_client::EventStoreClient, post_command_client::PostCommandClient, CreatePostRequest, DeletePostRequest,
    EventType, GetHeadRequest, PostEvent, ReadAllRequest, ReadPostRequest, UpdatePostRequest,
};
use postmesh_tests::{
    proxy::TcpProxy, redis_url, servers::RedisProc, stream_entries, stream_len, unique, wait_until, Backend,
    TestDatabase,
};
use prost::Message;
use tonic::{transport::Channel, Code};
use tonic_types::StatusExt;

struct Fixture {
    _db: TestDatabase,
    redis_url: String,
    stream: String,
    running: command_svc::startup::Running,
    commands: PostCommandClient<Channel>,
    events: EventStoreClient<Channel>,
}

impl Fixture {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDatabase::create(backend).await;
        let stream = unique("posts.events");
        let mut config = Config::for_tests(db.url.clone(), &redis_url(), &stream);
        tweak(&mut config);
        let redis_url = config.streams.redis_url.clone();
        let running = command_svc::startup::spawn(config).await.expect("command-svc starts");
        let channel = Channel::from_shared(running.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            _db: db,
            redis_url,
            stream,
            running,
            commands: PostCommandClient::new(channel.clone()).max_encoding_message_size(64 * 1024 * 1024),
            events: EventStoreClient::new(channel),
        }
    }

    async fn create(&self, title: &str) -> (i64, i64) {
        let reply = self
            .commands
            .clone()
            .create_post(create(title))
            .await
            .expect("create")
            .into_inner();
        (reply.post_id, reply.version)
    }

    async fn read_post(&self, post_id: i64) -> Vec<PostEvent> {
        let mut stream = self
            .events
            .clone()
            .read_post(ReadPostRequest { post_id })
            .await
            .expect("read_post")
            .into_inner();
        let mut events = Vec::new();
        while let Some(item) = stream.next().await {
            events.push(item.expect("event").event.expect("event set"));
        }
        events
    }

    async fn read_all(&self) -> Vec<PostEvent> {
        let mut stream = self
            .events
            .clone()
            .read_all(ReadAllRequest::default())
            .await
            .expect("read_all")
            .into_inner();
        let mut events = Vec::new();
        while let Some(item) = stream.next().await {
            events.push(item.expect("event").event.expect("event set"));
        }
        events
    }
}

fn create(title: &str) -> CreatePostRequest {
    CreatePostRequest {
        title: title.into(),
        content: format!("content of {title}"),
        author_name: "ada".into(),
        idempotency_key: String::new(),
    }
}

fn update(post_id: i64, expected_version: i64, title: Option<&str>) -> UpdatePostRequest {
    UpdatePostRequest {
        post_id,
        expected_version,
        title: title.map(str::to_owned),
        ..Default::default()
    }
}

fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// Runs each scenario once on SQLite and once on MariaDB.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(postmesh_tests::Backend::Sqlite).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(postmesh_tests::Backend::Mysql).await })*
        }
    };
}

on_both_backends!(
    update_changes_only_the_fields_that_are_set,
    expected_version_mismatch_is_aborted_and_names_the_current_version,
    concurrent_creates_get_distinct_ids,
    concurrent_updates_without_expected_version_get_every_version_once,
    concurrent_updates_with_one_expected_version_let_exactly_one_win,
    idempotency_key_replays_the_first_answer_and_refuses_other_requests,
    bad_input_names_every_bad_field,
    unknown_and_deleted_posts_are_refused,
    every_change_is_one_event_and_one_stream_entry,
    the_head_is_the_last_position_and_read_all_reports_it,
    commands_queued_into_one_batch_each_get_their_own_answer,
    a_command_the_database_refuses_fails_alone_and_its_batch_goes_through,
);

async fn update_changes_only_the_fields_that_are_set(backend: Backend) {
    let f = Fixture::start(backend).await;
    let (id, version) = f.create("first").await;
    assert_eq!(version, 1);
    let reply = f
        .commands
        .clone()
        .update_post(UpdatePostRequest {
            post_id: id,
            expected_version: 0,
            content: Some("new body".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.post_id, reply.version), (id, 2));
    let events = f.read_post(id).await;
    let post = events[1].post.clone().unwrap();
    assert_eq!(
        (post.title.as_str(), post.content.as_str(), post.author_name.as_str()),
        ("first", "new body", "ada")
    );
    assert_eq!(events[1].event_type(), EventType::PostUpdated);
    assert_eq!(post.created_at, events[0].post.clone().unwrap().created_at);
    f.running.stop().await.unwrap();
}

async fn expected_version_mismatch_is_aborted_and_names_the_current_version(backend: Backend) {
    let f = Fixture::start(backend).await;
    let (id, _) = f.create("v").await;
    f.commands.clone().update_post(update(id, 1, Some("v2"))).await.unwrap();
    let status = f
        .commands
        .clone()
        .update_post(update(id, 1, Some("v3")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert!(status.message().contains("version 2"), "{}", status.message());
    let status = f
        .commands
        .clone()
        .delete_post(DeletePostRequest {
            post_id: id,
            expected_version: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(f.read_post(id).await.len(), 2, "a refused command appends nothing");
}

async fn concurrent_creates_get_distinct_ids(backend: Backend) {
    let f = Fixture::start(backend).await;
    let calls = (0..50).map(|i| {
        let mut client = f.commands.clone();
        async move {
            client
                .create_post(create(&format!("p{i}")))
                .await
                .unwrap()
                .into_inner()
                .post_id
        }
    });
    let mut ids = join_all(calls).await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert!(ids.iter().all(|id| *id > 0));
}

async fn concurrent_updates_without_expected_version_get_every_version_once(backend: Backend) {
    let f = Fixture::start(backend).await;
    let (id, _) = f.create("hot").await;
    let calls = (0..50).map(|i| {
        let mut client = f.commands.clone();
        async move {
            client
                .update_post(update(id, 0, Some(&format!("t{i}"))))
                .await
                .unwrap()
                .into_inner()
                .version
        }
    });
    let mut versions = join_all(calls).await;
    versions.sort_unstable();
    assert_eq!(versions, (2..=51).collect::<Vec<_>>());
    let stored: Vec<i64> = f.read_post(id).await.iter().map(|e| e.version).collect();
    assert_eq!(stored, (1..=51).collect::<Vec<_>>());
}

async fn concurrent_updates_with_one_expected_version_let_exactly_one_win(backend: Backend) {
    let f = Fixture::start(backend).await;
    let (id, version) = f.create("race").await;
    let calls = (0..50).map(|i| {
        let mut client = f.commands.clone();
        async move { client.update_post(update(id, version, Some(&format!("t{i}")))).await }
    });
    let results = join_all(calls).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let aborted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Aborted))
        .count();
    assert_eq!((wins, aborted), (1, 49));
    assert_eq!(f.read_post(id).await.len(), 2);
}

async fn idempotency_key_replays_the_first_answer_and_refuses_other_requests(backend: Backend) {
    let f = Fixture::start(backend).await;
    let mut request = create("once");
    request.idempotency_key = "key-1".into();
    let first = f
        .commands
        .clone()
        .create_post(request.clone())
        .await
        .unwrap()
        .into_inner();
    let calls = (0..10).map(|_| {
        let mut client = f.commands.clone();
        let request = request.clone();
        async move { client.create_post(request).await.unwrap().into_inner() }
    });
    for again in join_all(calls).await {
        assert_eq!(again, first);
    }
    assert_eq!(f.read_all().await.len(), 1, "retries append nothing");

    request.title = "different".into();
    let status = f.commands.clone().create_post(request).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let mut upd = update(first.post_id, 1, Some("changed"));
    upd.idempotency_key = "key-1".into(); // keys are scoped per rpc
    let a = f.commands.clone().update_post(upd.clone()).await.unwrap().into_inner();
    let b = f.commands.clone().update_post(upd).await.unwrap().into_inner();
    assert_eq!((a.version, b.version), (2, 2));
    assert_eq!(f.read_all().await.len(), 2);
}

async fn bad_input_names_every_bad_field(backend: Backend) {
    let f = Fixture::start(backend).await;
    let mut client = f.commands.clone();
    let cases: Vec<(CreatePostRequest, &str)> = vec![
        (
            CreatePostRequest {
                title: "".into(),
                ..create("x")
            },
            "title",
        ),
        (
            CreatePostRequest {
                title: " \t\n".into(),
                ..create("x")
            },
            "title",
        ),
        (
            CreatePostRequest {
                title: "t".repeat(201),
                ..create("x")
            },
            "title",
        ),
        (
            CreatePostRequest {
                content: "".into(),
                ..create("x")
            },
            "content",
        ),
        (
            CreatePostRequest {
                content: "   ".into(),
                ..create("x")
            },
            "content",
        ),
        (
            CreatePostRequest {
                content: "c".repeat(100_001),
                ..create("x")
            },
            "content",
        ),
        (
            CreatePostRequest {
                author_name: "".into(),
                ..create("x")
            },
            "author_name",
        ),
        (
            CreatePostRequest {
                author_name: "a".repeat(101),
                ..create("x")
            },
            "author_name",
        ),
        (
            CreatePostRequest {
                idempotency_key: "k".repeat(201),
                ..create("x")
            },
            "idempotency_key",
        ),
    ];
    for (request, field) in cases {
        let status = client.create_post(request).await.unwrap_err();
        assert_eq!(bad_fields(&status), vec![field.to_owned()]);
    }
    let status = client
        .create_post(CreatePostRequest {
            title: "".into(),
            content: "".into(),
            author_name: "".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["title", "content", "author_name"]);
    // Limits are inclusive.
    client
        .create_post(CreatePostRequest {
            title: "t".repeat(200),
            content: "c".repeat(100_000),
            author_name: "a".repeat(100),
            idempotency_key: String::new(),
        })
        .await
        .unwrap();
    for post_id in [0, -5] {
        let status = client.update_post(update(post_id, 0, Some("t"))).await.unwrap_err();
        assert_eq!(bad_fields(&status), ["post_id"]);
        let status = client
            .delete_post(DeletePostRequest {
                post_id,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["post_id"]);
    }
    let status = client.update_post(update(1, 0, Some(""))).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["title"]);
    let status = client.update_post(update(1, 0, None)).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["title"], "an update must set a field");
    // Over the 4 MiB message limit: refused before it reaches the handler.
    let status = client
        .create_post(CreatePostRequest {
            content: "c".repeat(5 * 1024 * 1024),
            ..create("big")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );
    assert_eq!(f.read_all().await.len(), 1, "only the valid post was stored");
}

async fn unknown_and_deleted_posts_are_refused(backend: Backend) {
    let f = Fixture::start(backend).await;
    let mut client = f.commands.clone();
    let status = client.update_post(update(999_999, 0, Some("t"))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .delete_post(DeletePostRequest {
            post_id: 999_999,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let (id, _) = f.create("doomed").await;
    let deleted = client
        .delete_post(DeletePostRequest {
            post_id: id,
            expected_version: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.version, 2);
    let status = client.update_post(update(id, 0, Some("t"))).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = client
        .delete_post(DeletePostRequest {
            post_id: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = f
        .events
        .clone()
        .read_post(ReadPostRequest { post_id: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

async fn every_change_is_one_event_and_one_stream_entry(backend: Backend) {
    let f = Fixture::start(backend).await;
    let mut client = f.commands.clone();
    let mut request = tonic::Request::new(create("traced"));
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let id = client.create_post(request).await.unwrap().into_inner().post_id;
    client.update_post(update(id, 1, Some("retitled"))).await.unwrap();
    client
        .delete_post(DeletePostRequest {
            post_id: id,
            expected_version: 2,
            ..Default::default()
        })
        .await
        .unwrap();

    let events = f.read_all().await;
    let kinds: Vec<_> = events.iter().map(|e| (e.version, e.event_type())).collect();
    assert_eq!(
        kinds,
        [
            (1, EventType::PostCreated),
            (2, EventType::PostUpdated),
            (3, EventType::PostDeleted)
        ]
    );
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(events[0].traceparent, traceparent);
    assert!(events[2].post.as_ref().unwrap().deleted);

    let (url, stream) = (f.redis_url.clone(), f.stream.clone());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (u, s) = (url.clone(), stream.clone());
            async move { stream_len(&u, &s).await == 3 }
        })
        .await
    );
    let entries = stream_entries(&f.redis_url, &f.stream).await;
    for ((_, fields), event) in entries.iter().zip(&events) {
        let decoded = PostEvent::decode(fields["event"].as_slice()).unwrap();
        assert_eq!(&decoded, event);
        assert_eq!(fields["post_id"], id.to_string().into_bytes());
        assert_eq!(fields["event_type"], event.event_type().event_name().as_bytes());
    }
    assert_eq!(entries[0].1["traceparent"], traceparent.as_bytes());

    let from_two: Vec<i64> = {
        let mut s = f
            .events
            .clone()
            .read_all(ReadAllRequest {
                from_position: events[0].position,
                max_count: 1,
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(e) = s.next().await {
            out.push(e.unwrap().event.unwrap().version);
        }
        out
    };
    assert_eq!(from_two, [2]);
}

/// A transaction of the test's own holding the position counter: the group
/// committer's next transaction waits on it, and the commands sent meanwhile
/// queue into the one batch that follows. Rolled back on release.
struct CounterHold(sea_orm::DatabaseTransaction);

impl CounterHold {
    async fn take(database_url: &str) -> Self {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let db = sea_orm::Database::connect(database_url).await.unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("UPDATE log_head SET position = position WHERE id = 1")
            .await
            .unwrap();
        Self(txn)
    }

    async fn release(self) {
        self.0.rollback().await.unwrap();
    }
}

/// Sends `request` on its own task (so it queues at once) and gives its answer back.
fn spawn_update(f: &Fixture, request: UpdatePostRequest) -> tokio::task::JoinHandle<Result<i64, Code>> {
    let mut client = f.commands.clone();
    tokio::spawn(async move {
        client
            .update_post(request)
            .await
            .map(|r| r.into_inner().version)
            .map_err(|s| s.code())
    })
}

fn spawn_create(f: &Fixture, request: CreatePostRequest) -> tokio::task::JoinHandle<Result<i64, tonic::Status>> {
    let mut client = f.commands.clone();
    tokio::spawn(async move { client.create_post(request).await.map(|r| r.into_inner().post_id) })
}

/// Long enough for a spawned command to reach the committer's queue.
const QUEUED: Duration = Duration::from_millis(300);

/// #17: while one transaction waits, conflicting updates of one post, a run
/// of updates of another and a repeated idempotency key queue into one batch.
/// Exactly one conflicting update wins its version, the run applies in
/// order, the repeated key is answered once with one post, and the same key
/// with another request is refused.
async fn commands_queued_into_one_batch_each_get_their_own_answer(backend: Backend) {
    let f = Fixture::start(backend).await;
    let (contended, _) = f.create("contended").await;
    let (chained, _) = f.create("chained").await;
    let hold = CounterHold::take(&f._db.url).await;
    // Two batches wait on the counter (MySQL runs two at once; on SQLite
    // the second queues with the rest), so the rest queue into one batch.
    let ahead = spawn_create(&f, create("ahead"));
    tokio::time::sleep(QUEUED).await;
    let ahead_too = spawn_create(&f, create("ahead too"));
    tokio::time::sleep(QUEUED).await;
    let conflicting: Vec<_> = (0..8)
        .map(|i| spawn_update(&f, update(contended, 1, Some(&format!("c{i}")))))
        .collect();
    let run: Vec<_> = (0..8)
        .map(|i| spawn_update(&f, update(chained, 0, Some(&format!("r{i}")))))
        .collect();
    let keyed = CreatePostRequest {
        idempotency_key: "once".into(),
        ..create("keyed")
    };
    let repeats: Vec<_> = (0..2).map(|_| spawn_create(&f, keyed.clone())).collect();
    tokio::time::sleep(QUEUED).await;
    let reused = spawn_create(
        &f,
        CreatePostRequest {
            title: "another request".into(),
            ..keyed.clone()
        },
    );
    tokio::time::sleep(QUEUED).await;
    hold.release().await;

    ahead.await.unwrap().unwrap();
    ahead_too.await.unwrap().unwrap();
    let mut conflicting_answers = Vec::new();
    for call in conflicting {
        conflicting_answers.push(call.await.unwrap());
    }
    let wins: Vec<_> = conflicting_answers.iter().filter_map(|a| a.ok()).collect();
    assert_eq!(wins, [2], "exactly one conflicting update wins version 2");
    assert!(conflicting_answers
        .iter()
        .all(|a| matches!(a, Ok(2) | Err(Code::Aborted))));
    let mut versions = Vec::new();
    for call in run {
        versions.push(call.await.unwrap().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=9).collect::<Vec<_>>(),
        "the run applies each update once, in order"
    );
    let mut ids = Vec::new();
    for call in repeats {
        ids.push(call.await.unwrap().unwrap());
    }
    assert_eq!(ids[0], ids[1], "a repeated key is answered with the first answer");
    assert_eq!(reused.await.unwrap().unwrap_err().code(), Code::AlreadyExists);

    let events = f.read_all().await;
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=14).collect::<Vec<_>>(),
        "2 + 2 ahead + 1 win + 8 + 1 keyed, dense"
    );
    let history: Vec<String> = f
        .read_post(chained)
        .await
        .iter()
        .map(|e| e.post.as_ref().unwrap().title.clone())
        .collect();
    assert_eq!(history.len(), 9);
    // One batch decides at one instant: the queued commands share its time.
    let batch = &events[events.len() - 10..];
    assert!(
        batch.iter().all(|e| e.occurred_at == batch[0].occurred_at),
        "the queued commands went in one batch"
    );
}

/// #17: a command the database itself refuses (here a trigger, standing for
/// any value a column or constraint rejects) fails alone; the commands
/// queued into its batch go through.
async fn a_command_the_database_refuses_fails_alone_and_its_batch_goes_through(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let f = Fixture::start(backend).await;
    let db = sea_orm::Database::connect(&f._db.url).await.unwrap();
    let trigger = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON post_events WHEN NEW.title = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
        }
        Backend::Mysql => {
            "CREATE TRIGGER poison BEFORE INSERT ON post_events FOR EACH ROW \
             IF NEW.title = 'poison' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison refused'; END IF"
        }
    };
    db.execute_unprepared(trigger).await.unwrap();
    let (post, _) = f.create("neighbour").await;
    let hold = CounterHold::take(&f._db.url).await;
    let ahead = spawn_create(&f, create("ahead"));
    tokio::time::sleep(QUEUED).await;
    let before: Vec<_> = (0..3)
        .map(|i| spawn_create(&f, create(&format!("before {i}"))))
        .collect();
    let poison = spawn_create(&f, create("poison"));
    let updated = spawn_update(&f, update(post, 1, Some("updated")));
    let after: Vec<_> = (0..3)
        .map(|i| spawn_create(&f, create(&format!("after {i}"))))
        .collect();
    tokio::time::sleep(QUEUED).await;
    hold.release().await;

    ahead.await.unwrap().unwrap();
    let refused = poison.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    assert!(refused.message().contains("poison refused"), "{refused:?}");
    assert_eq!(updated.await.unwrap(), Ok(2));
    for call in before.into_iter().chain(after) {
        call.await.unwrap().expect("a neighbour of the poison goes through");
    }
    let events = f.read_all().await;
    assert_eq!(events.len(), 1 + 1 + 3 + 1 + 3, "everything but the poison");
    assert!(events.iter().all(|e| e.post.as_ref().unwrap().title != "poison"));
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=9).collect::<Vec<_>>(), "the refused batch left no gap");
}

async fn the_head_is_the_last_position_and_read_all_reports_it(backend: Backend) {
    let f = Fixture::start(backend).await;
    let head = || async {
        f.events
            .clone()
            .get_head(GetHeadRequest {})
            .await
            .unwrap()
            .into_inner()
            .complete_through
    };
    let complete_through = |from_position| {
        let mut events = f.events.clone();
        async move {
            let response = events
                .read_all(ReadAllRequest {
                    from_position,
                    max_count: 0,
                })
                .await
                .unwrap();
            let header = response
                .metadata()
                .get(postmesh_proto::COMPLETE_THROUGH_METADATA)
                .expect("ReadAll sets the complete-through metadata")
                .to_str()
                .unwrap()
                .parse::<i64>()
                .unwrap();
            let mut stream = response.into_inner();
            let mut positions = Vec::new();
            while let Some(item) = stream.next().await {
                positions.push(item.unwrap().event.unwrap().position);
            }
            (header, positions)
        }
    };
    assert_eq!(head().await, 0, "an empty log");
    assert_eq!(complete_through(0).await, (0, vec![]));
    let (id, _) = f.create("first").await;
    f.commands
        .clone()
        .update_post(update(id, 1, Some("second")))
        .await
        .unwrap();
    f.create("third").await;
    let events = f.read_all().await;
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    // Dense: positions are 1..=n with no gap.
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(head().await, 3);
    assert_eq!(complete_through(1).await, (3, vec![2, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_action_topology_routes_each_action_to_its_own_stream_and_redis() {
    let second = RedisProc::start().await;
    let update_url = second.url();
    let f = Fixture::start_with(Backend::Sqlite, |config| {
        config.streams.topology = postmesh_events::topology::Topology::PerAction;
        config.streams.redis_url_update = Some(update_url.clone());
    })
    .await;
    let (id, _) = f.create("routed").await;
    f.commands.clone().update_post(update(id, 0, Some("x"))).await.unwrap();
    f.commands
        .clone()
        .delete_post(DeletePostRequest {
            post_id: id,
            ..Default::default()
        })
        .await
        .unwrap();
    let create_stream = format!("{}.create", f.stream);
    let update_stream = format!("{}.update", f.stream);
    let delete_stream = format!("{}.delete", f.stream);
    let main = f.redis_url.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (main, second, c, u, d) = (
                main.clone(),
                update_url.clone(),
                create_stream.clone(),
                update_stream.clone(),
                delete_stream.clone(),
            );
            async move {
                stream_len(&main, &c).await == 1
                    && stream_len(&second, &u).await == 1
                    && stream_len(&main, &d).await == 1
            }
        })
        .await
    );
    assert_eq!(
        stream_len(&main, &update_stream).await,
        0,
        "updates go only to their own Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_keep_succeeding_while_redis_is_down_and_the_outbox_drains_after() {
    let mut redis = RedisProc::start().await;
    let url = redis.url();
    let f = Fixture::start_with(Backend::Sqlite, |config| config.streams.redis_url = url.clone()).await;
    f.create("before").await;
    let stream = f.stream.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (u, s) = (url.clone(), stream.clone());
            async move { stream_len(&u, &s).await == 1 }
        })
        .await
    );

    redis.stop();
    for i in 0..20 {
        let started = Instant::now();
        f.create(&format!("during {i}")).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a Redis outage must not slow commands"
        );
    }
    redis.restart().await; // empty: the outage lost the old entry, the outbox did not
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (u, s) = (url.clone(), stream.clone());
            async move { stream_len(&u, &s).await == 20 }
        })
        .await,
        "every buffered event is published once Redis is back"
    );
}

/// C1: two replicas write through a slow link to MariaDB, so their
/// transactions overlap; a reader tailing ReadAll must see positions 1, 2,
/// 3, ... with none skipped: a position is never visible before a lower one
/// that commits later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_tailing_read_all_under_concurrent_mariadb_writers_never_skips_a_position() {
    let upstream = mysql_upstream();
    let proxy = TcpProxy::start(&upstream).await;
    let db = TestDatabase::create(Backend::Mysql).await;
    let via_proxy = db.url.replace(&upstream, &proxy.addr.to_string());
    let stream = unique("posts.events");
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let config = Config::for_tests(via_proxy.clone(), &redis_url(), &stream);
        replicas.push(command_svc::startup::spawn(config).await.unwrap());
    }
    proxy.set_delay(Duration::from_millis(1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..12 {
        let endpoint = replicas[writer % 2].endpoint();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut client = PostCommandClient::connect(endpoint).await.unwrap();
            let mut acked = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = client.create_post(create("tail")).await.unwrap().into_inner().post_id;
                client.update_post(update(id, 1, Some("tailed"))).await.unwrap();
                acked += 2;
            }
            acked
        }));
    }
    let mut events = EventStoreClient::connect(replicas[0].endpoint()).await.unwrap();
    let mut cursor = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut acked = None;
    loop {
        let mut page = events
            .read_all(ReadAllRequest {
                from_position: cursor,
                max_count: 0,
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(event) = page.next().await {
            let position = event.unwrap().event.unwrap().position;
            assert_eq!(position, cursor + 1, "ReadAll skipped from {cursor} to {position}");
            cursor = position;
        }
        if acked.is_none() && Instant::now() > deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut total = 0;
            for writer in writers.drain(..) {
                total += writer.await.unwrap();
            }
            acked = Some(total);
        }
        if let Some(acked) = acked {
            let head = events.get_head(GetHeadRequest {}).await.unwrap().into_inner();
            if cursor == head.complete_through {
                assert_eq!(cursor as u64, acked, "every acknowledged event, each once");
                break;
            }
        }
    }
    assert!(cursor > 50, "the writers got going ({cursor} events)");
}

fn mysql_upstream() -> String {
    postmesh_tests::mysql_url()
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_unavailable_within_the_deadline_and_recovers() {
    let upstream = mysql_upstream();
    let proxy = TcpProxy::start(&upstream).await;
    let db = TestDatabase::create(Backend::Mysql).await;
    let via_proxy = db.url.replace(&upstream, &proxy.addr.to_string());
    let stream = unique("posts.events");
    let mut config = Config::for_tests(via_proxy, &redis_url(), &stream);
    config.database_timeout = Duration::from_secs(1);
    let running = command_svc::startup::spawn(config).await.unwrap();
    let mut client = PostCommandClient::connect(running.endpoint()).await.unwrap();
    client.create_post(create("up")).await.unwrap();

    proxy.cut().await;
    for _ in 0..3 {
        let mut request = tonic::Request::new(create("down"));
        request.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let status = client.create_post(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    proxy.restore();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let mut client = client.clone();
            async move { client.create_post(create("back")).await.is_ok() }
        })
        .await,
        "commands succeed again once the database is back"
    );
    drop(db);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_resource_exhausted_instead_of_queueing() {
    let upstream = mysql_upstream();
    let proxy = TcpProxy::start(&upstream).await;
    let db = TestDatabase::create(Backend::Mysql).await;
    let mut config = Config::for_tests(
        db.url.replace(&upstream, &proxy.addr.to_string()),
        &redis_url(),
        &unique("s"),
    );
    config.limits.max_concurrent_requests = 1;
    let running = command_svc::startup::spawn(config).await.unwrap();
    let client = PostCommandClient::connect(running.endpoint()).await.unwrap();

    proxy.pause();
    let stuck = {
        let mut client = client.clone();
        tokio::spawn(async move { client.create_post(create("slow")).await })
    };
    // The admitted request is now waiting on the (paused) database.
    assert!(wait_until(Duration::from_secs(10), || async { proxy.held() > 0 }).await);
    let mut probe = client.clone();
    for _ in 0..3 {
        let started = Instant::now();
        let status = probe.create_post(create("extra")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once, not queued"
        );
    }
    proxy.resume();
    stuck.await.unwrap().expect("the admitted request completes");
    probe.create_post(create("later")).await.expect("capacity is back");
    running.stop().await.unwrap();
}

/// Replicas (or a migration Job and a pod) starting at once on one fresh
/// MariaDB database: every one of them succeeds, and each migration is
/// applied exactly once (the named lock in `EventStore::migrate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_migrating_the_same_mysql_database_at_once_all_succeed() {
    use command_svc::store::{migration::Migrator, EventStore};
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;

    let db = TestDatabase::create(Backend::Mysql).await;
    let stores = join_all((0..4).map(|_| EventStore::connect(&db.url, 2, Duration::from_secs(10)))).await;
    let stores: Vec<EventStore> = stores.into_iter().map(|s| s.expect("connect")).collect();
    let results = join_all(stores.iter().map(|s| s.migrate())).await;
    for (i, result) in results.into_iter().enumerate() {
        result.unwrap_or_else(|e| panic!("replica {i} failed to migrate: {e}"));
    }

    let admin = sea_orm::Database::connect(&db.url).await.unwrap();
    let applied = admin
        .query_one(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SELECT COUNT(*), COUNT(DISTINCT version) FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .expect("one row");
    let (rows, distinct): (i64, i64) = (
        applied.try_get_by_index(0).unwrap(),
        applied.try_get_by_index(1).unwrap(),
    );
    assert_eq!(
        rows,
        Migrator::migrations().len() as i64,
        "each migration recorded once"
    );
    assert_eq!(rows, distinct);
}
