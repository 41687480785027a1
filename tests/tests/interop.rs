//! What clients in other languages expect of any gRPC server, checked against
//! the real binaries: a request over the message limit is RESOURCE_EXHAUSTED
//! (as grpc-go and grpc-java answer, not tonic's OUT_OF_RANGE), and a client
//! deadline ends the server's work on the call. The Python, Go and TypeScript
//! clients in clients/ check the same against a whole mesh (scripts/interop.sh).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use postmesh_proto::v1::{
    post_command_client::PostCommandClient, post_query_client::PostQueryClient, CreatePostRequest, GetPostRequest,
    ListPostsRequest, WatchPostsRequest,
};
use postmesh_tests::{
    redis_url, servers::free_port, services::ServiceProc, unique, wait_until, Backend, TestDatabase, TestReadStore,
};
use tonic::{Code, Request};

const MIB: usize = 1024 * 1024;

fn command_svc(port: u16, database_url: &str, extra: &[(&str, String)]) -> ServiceProc {
    let mut env = vec![
        ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("COMMAND_DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", redis_url()),
        ("STREAM_NAME", unique("posts.events")),
    ];
    env.extend(extra.iter().cloned());
    ServiceProc::spawn("command-svc", port, &[], &env)
}

fn query_svc(port: u16, extra: &[(&str, String)]) -> ServiceProc {
    let mut env = vec![
        ("QUERY_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("READ_STORE_URL", TestReadStore::sqlite_outliving_the_test()),
        ("REDIS_URL", redis_url()),
        ("NOTIFY_CHANNEL", unique("posts.applied")),
    ];
    env.extend(extra.iter().cloned());
    ServiceProc::spawn("query-svc", port, &[], &env)
}

fn create(content: String) -> CreatePostRequest {
    CreatePostRequest {
        title: "size".into(),
        content,
        author_name: "interop".into(),
        idempotency_key: String::new(),
    }
}

#[tokio::test]
async fn a_request_over_the_message_limit_is_resource_exhausted() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let port = free_port();
    // The default limit (MAX_MESSAGE_BYTES = 4 MiB)...
    let mut default = command_svc(port, &db.url, &[]);
    default.wait_healthy(Duration::from_secs(30)).await;
    let mut client = PostCommandClient::connect(default.endpoint()).await.unwrap();
    let status = client.create_post(create("x".repeat(5 * MIB))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("4194304"),
        "names the limit: {}",
        status.message()
    );
    // ...refuses nothing below it: this one is merely invalid (content over 100,000 bytes).
    let status = client.create_post(create("x".repeat(MIB))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    drop(default);

    // A configured limit is enforced the same way, on every server.
    let port = free_port();
    let limit = [("MAX_MESSAGE_BYTES", "65536".to_owned())];
    let mut small = command_svc(port, &db.url, &limit);
    small.wait_healthy(Duration::from_secs(30)).await;
    let mut client = PostCommandClient::connect(small.endpoint()).await.unwrap();
    let status = client.create_post(create("x".repeat(70_000))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let created = client
        .create_post(create("x".repeat(60_000)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.version, 1);

    let port = free_port();
    let mut query = query_svc(port, &limit);
    query.wait_healthy(Duration::from_secs(30)).await;
    let mut client = PostQueryClient::connect(query.endpoint()).await.unwrap();
    let status = client
        .list_posts(ListPostsRequest {
            title: "x".repeat(70_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn a_client_deadline_ends_the_servers_work_on_the_call() {
    let port = free_port();
    let mut query = query_svc(port, &[("MAX_WATCHERS", "1".to_owned())]);
    query.wait_healthy(Duration::from_secs(30)).await;
    let client = PostQueryClient::connect(query.endpoint()).await.unwrap();

    let watch = |timeout: Duration| {
        let mut client = client.clone();
        async move {
            let mut request = Request::new(WatchPostsRequest {
                post_id: Some(1),
                author_name: None,
            });
            request.set_timeout(timeout);
            client.watch_posts(request).await
        }
    };

    // The one watch this server allows; nothing ever changes post 1.
    let started = Instant::now();
    let mut stream = watch(Duration::from_millis(300)).await.unwrap().into_inner();
    // While it runs, a second watch is refused: the slot is really taken.
    let refused = watch(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // The client's deadline ends the call at 300 ms...
    let ended = stream.message().await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // ...and the server, told by the cancellation, drops its watcher: the slot frees up.
    let freed = wait_until(Duration::from_secs(3), || {
        let next = watch(Duration::from_millis(200));
        async move { next.await.is_ok() }
    })
    .await;
    assert!(freed, "the watcher of a call past its deadline was never released");

    // A min_version wait also ends with the client's deadline, long before
    // MAX_WAIT_MS (5 s): the server answers just before it, naming the versions.
    let mut request = Request::new(GetPostRequest {
        post_id: 1,
        min_version: 7,
        include_deleted: false,
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = client.clone().get_post(request).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(took < Duration::from_millis(600), "{took:?}");
}
