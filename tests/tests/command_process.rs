//! command-svc as a real process: start-up checks, SIGTERM, SIGKILL, logs.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use postmesh_proto::v1::{
    post_command_client::PostCommandClient, CreatePostRequest, DeletePostRequest, UpdatePostRequest,
};
use postmesh_tests::{
    mysql_url,
    proxy::TcpProxy,
    redis_url,
    servers::{free_port, RedisProc},
    services::ServiceProc,
    stream_len, unique, wait_until, Backend, TestDatabase,
};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

fn create(title: &str) -> CreatePostRequest {
    CreatePostRequest {
        title: title.into(),
        content: "body".into(),
        author_name: "grace".into(),
        idempotency_key: String::new(),
    }
}

fn command_svc(port: u16, database_url: &str, redis_url: &str, stream: &str) -> ServiceProc {
    ServiceProc::spawn(
        "command-svc",
        port,
        &[],
        &[
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("COMMAND_DATABASE_URL", database_url.to_owned()),
            ("REDIS_URL", redis_url.to_owned()),
            ("STREAM_NAME", stream.to_owned()),
            ("OUTBOX_POLL_MS", "100".to_owned()),
        ],
    )
}

fn mysql_host_port() -> String {
    mysql_url().rsplit('@').next().unwrap().trim_end_matches('/').to_owned()
}

#[tokio::test]
async fn a_redis_url_that_is_not_redis_fails_start_up_fast_and_names_the_url() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let not_redis = format!("redis://{}", mysql_host_port());
    let started = Instant::now();
    let mut svc = command_svc(free_port(), &db.url, &not_redis, "unused");
    let status = svc
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("start-up must fail within 5 s");
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        svc.logs().contains(&not_redis),
        "the error names the URL:\n{}",
        svc.logs()
    );
}

#[tokio::test]
async fn an_event_committed_but_not_published_before_sigkill_is_published_after_restart() {
    let mut redis = RedisProc::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stream = unique("posts.events");
    let port = free_port();
    let mut svc = command_svc(port, &db.url, &redis.url(), &stream);
    svc.wait_healthy(Duration::from_secs(20)).await;
    let mut client = PostCommandClient::connect(svc.endpoint()).await.unwrap();

    redis.stop(); // publishing cannot happen now: commits pile up in the outbox
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            client
                .create_post(create(&format!("p{i}")))
                .await
                .unwrap()
                .into_inner()
                .post_id,
        );
    }
    svc.kill();
    redis.restart().await;

    let mut svc = command_svc(port, &db.url, &redis.url(), &stream);
    svc.wait_healthy(Duration::from_secs(20)).await;
    let url = redis.url();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (u, s) = (url.clone(), stream.clone());
            async move { stream_len(&u, &s).await == 5 }
        })
        .await,
        "all five events are published after the restart"
    );
    let published: Vec<i64> = postmesh_tests::stream_entries(&url, &stream)
        .await
        .into_iter()
        .map(|(_, f)| String::from_utf8(f["post_id"].clone()).unwrap().parse().unwrap())
        .collect();
    assert_eq!(published, ids);
}

#[tokio::test]
async fn sigterm_flips_health_first_drains_in_flight_requests_and_exits_zero() {
    let proxy = TcpProxy::start(&mysql_host_port()).await;
    let db = TestDatabase::create(Backend::Mysql).await;
    let url = db.url.replace(&mysql_host_port(), &proxy.addr.to_string());
    let mut svc = command_svc(free_port(), &url, &redis_url(), &unique("posts.events"));
    svc.wait_healthy(Duration::from_secs(20)).await;
    let channel = tonic::transport::Channel::from_shared(svc.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    proxy.pause();
    let mut client = PostCommandClient::new(channel);
    let in_flight = tokio::spawn(async move { client.create_post(create("in flight")).await });
    assert!(
        wait_until(Duration::from_secs(10), || async { proxy.held() > 0 }).await,
        "request reached the database"
    );

    svc.terminate();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.status,
        ServingStatus::NotServing as i32,
        "health flips before the drain"
    );
    drop(watch);
    proxy.resume();
    let reply = in_flight.await.unwrap().expect("the in-flight request completes");
    assert!(reply.into_inner().post_id > 0);
    let status = svc
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after draining");
    assert!(status.success(), "exit status {status:?}\n{}", svc.logs());
}

#[tokio::test]
async fn each_command_logs_one_structured_line() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut svc = command_svc(free_port(), &db.url, &redis_url(), &unique("posts.events"));
    svc.wait_healthy(Duration::from_secs(20)).await;
    let mut client = PostCommandClient::connect(svc.endpoint()).await.unwrap();
    let id = client.create_post(create("logged")).await.unwrap().into_inner().post_id;
    client
        .update_post(UpdatePostRequest {
            post_id: id,
            title: Some("t2".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .delete_post(DeletePostRequest {
            post_id: id,
            ..Default::default()
        })
        .await
        .unwrap();
    svc.terminate();
    assert!(svc.wait_exit(Duration::from_secs(15)).await.expect("exits").success());
    let lines: Vec<serde_json::Value> = svc
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|v: &serde_json::Value| v["message"] == "command applied")
        .collect();
    let seen: Vec<(String, i64, i64)> = lines
        .iter()
        .map(|v| {
            assert_eq!(v["domain"], "posts");
            (
                v["action"].as_str().unwrap().to_owned(),
                v["post_id"].as_i64().unwrap(),
                v["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("create".into(), id, 1),
            ("update".into(), id, 2),
            ("delete".into(), id, 3)
        ]
    );
}
