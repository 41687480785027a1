//! Locked doors: TLS and mTLS on the gRPC servers (with certificate rotation),
//! bearer tokens on writes (and optionally reads), connection limits, TLS to
//! Redis, and secrets kept out of the logs.
//!
//! Certificates are generated per test with rcgen (a CA, a server
//! certificate for localhost/127.0.0.1, a client certificate); tokens are
//! signed with jsonwebtoken (Ed25519 keys from rcgen, an RSA key from
//! `openssl genrsa`). The helpers live in `postmesh_tests::security`, shared
//! with `examples/tls_overhead.rs`, which measures what TLS, mTLS and a token
//! cost.

#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use postmesh_common::{
    auth::AuthArgs,
    tls::{ClientTls, CommandClientArgs, ServerTlsArgs},
};
use postmesh_proto::v1::{
    event_store_client::EventStoreClient, post_command_client::PostCommandClient, post_query_client::PostQueryClient,
    GetPostRequest, ReadAllRequest, WatchPostsRequest,
};
use postmesh_tests::{
    mysql_url, redis_url,
    security::{
        auth_args, command_svc, create, create_with, ed25519, now, plain_channel, rsa, server_tls, tls_channel, write,
        Pki, AUDIENCE, ISSUER,
    },
    servers::free_port,
    services::{health, ServiceProc},
    stream_len, unique, wait_until, Backend, ReadBackend, TestDatabase, TestReadStore,
};
use tokio::io::AsyncReadExt;
use tonic::{transport::Channel, Code, Request};
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

/// Every event in command-svc's store (reads open), through `channel`.
async fn events(channel: Channel, token: Option<&str>) -> Vec<postmesh_proto::v1::PostEvent> {
    use futures::StreamExt;
    let mut request = Request::new(ReadAllRequest {
        from_position: 0,
        max_count: 0,
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut stream = EventStoreClient::new(channel)
        .read_all(request)
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.extend(item.unwrap().event);
    }
    out
}

// ------------------------------------------------------------------ TLS ----

#[tokio::test]
async fn tls_serves_grpc_and_plaintext_clients_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("sec-ca");
    let svc = command_svc(server_tls(dir.path(), &pki, false), AuthArgs::default()).await;
    let port = svc.running.addr.port();

    let channel = tls_channel(port, &pki.ca_pem, None).await.expect("TLS handshake");
    let id = create_with(channel.clone(), None).await.expect("CreatePost over TLS");
    assert!(id > 0);

    // A plaintext client cannot talk to a TLS port.
    let plain = match plain_channel(port).await {
        Ok(channel) => create_with(channel, None).await.err(),
        Err(_) => Some(tonic::Status::unavailable("refused at connect")),
    };
    assert!(plain.is_some(), "plaintext must not work against a TLS server");

    // A client that trusts another CA refuses the server.
    let stranger = Pki::new("other-ca");
    let other = match tls_channel(port, &stranger.ca_pem, None).await {
        Ok(channel) => create_with(channel, None).await.err(),
        Err(_) => Some(tonic::Status::unavailable("handshake failed")),
    };
    assert!(
        other.is_some(),
        "a client must not accept a certificate of an unknown CA"
    );
    assert_eq!(events(channel, None).await.len(), 1);
    svc.running.stop().await.unwrap();
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_of_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("sec-mtls-ca");
    let svc = command_svc(server_tls(dir.path(), &pki, true), AuthArgs::default()).await;
    let port = svc.running.addr.port();

    // No client certificate: the handshake (or, with TLS 1.3, the first call) fails.
    let anonymous = match tls_channel(port, &pki.ca_pem, None).await {
        Ok(channel) => create_with(channel, None).await.err(),
        Err(_) => Some(tonic::Status::unavailable("handshake failed")),
    };
    let anonymous = anonymous.expect("a client without a certificate must be refused");
    assert_ne!(anonymous.code(), Code::Ok);

    // A certificate from another CA is refused too.
    let stranger = Pki::new("stranger-ca");
    let refused = match tls_channel(port, &pki.ca_pem, Some((&stranger.client_cert, &stranger.client_key))).await {
        Ok(channel) => create_with(channel, None).await.err(),
        Err(_) => Some(tonic::Status::unavailable("handshake failed")),
    };
    assert!(
        refused.is_some(),
        "a client certificate of an unknown CA must be refused"
    );

    // The right certificate works, and nothing was appended before it.
    let channel = tls_channel(port, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("mTLS handshake");
    assert_eq!(
        events(channel.clone(), None).await.len(),
        0,
        "refused clients appended nothing"
    );
    create_with(channel.clone(), None).await.expect("CreatePost over mTLS");
    assert_eq!(events(channel, None).await.len(), 1);

    // Health stays reachable over mTLS, with no token or anything else.
    let channel = tls_channel(port, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    svc.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = Pki::new("rotation-old-ca");
    let new = Pki::new("rotation-new-ca");
    let args = server_tls(dir.path(), &old, false);
    let (cert_file, key_file) = (args.tls_cert_file.clone().unwrap(), args.tls_key_file.clone().unwrap());
    let svc = command_svc(args, AuthArgs::default()).await;
    let port = svc.running.addr.port();

    let works = |ca: String| async move {
        match tls_channel(port, &ca, None).await {
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok(),
            Err(_) => false,
        }
    };
    assert!(works(old.ca_pem.clone()).await);
    assert!(
        !works(new.ca_pem.clone()).await,
        "the new CA is not trusted before the rotation"
    );

    // Rotate the way a Secret update does: the files change under the process
    // (key first, so for a moment key and certificate do not match).
    std::fs::write(&key_file, &new.server_key).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        works(old.ca_pem.clone()).await,
        "a half-rotated pair keeps the old certificate"
    );
    std::fs::write(&cert_file, &new.server_cert).unwrap();

    let rotated = wait_until(Duration::from_secs(5), || works(new.ca_pem.clone())).await;
    assert!(
        rotated,
        "the new certificate must be served within seconds, without a restart"
    );
    assert!(
        !works(old.ca_pem.clone()).await,
        "new connections no longer get the old certificate"
    );
    svc.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_tls_handshake_neither_blocks_others_nor_lives_forever() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("stall-ca");
    let mut tls = server_tls(dir.path(), &pki, false);
    tls.tls_handshake_timeout = Duration::from_secs(1);
    let svc = command_svc(tls, AuthArgs::default()).await;
    let port = svc.running.addr.port();

    // Ten clients connect and never say hello.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        stalled.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // A real client is served at once meanwhile.
    let started = Instant::now();
    let channel = tls_channel(port, &pki.ca_pem, None).await.unwrap();
    create_with(channel, None).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // And the stalled ones are dropped after the handshake timeout.
    for mut socket in stalled {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a stalled handshake must be closed, got {read:?}"
        );
    }
    svc.running.stop().await.unwrap();
}

// --------------------------------------------------------------- tokens ----

#[tokio::test]
async fn writes_need_a_valid_token_with_the_write_scope_and_record_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    let signer = ed25519();
    let svc = command_svc(ServerTlsArgs::default(), auth_args(dir.path(), &signer.public_pem)).await;
    let channel = plain_channel(svc.running.addr.port()).await.unwrap();

    let base = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "posts:write",
            "iat": now(), "exp": now() + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let impostor = ed25519();
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &base(serde_json::json!({})),
        &EncodingKey::from_secret(signer.public_pem.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, Code)> = vec![
        ("missing", None, Code::Unauthenticated),
        ("garbage", Some("not-a-jwt".into()), Code::Unauthenticated),
        (
            "expired",
            Some(signer.token(base(serde_json::json!({"iat": now() - 600, "exp": now() - 60})))),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            Some(signer.token(base(serde_json::json!({"aud": "someone-else"})))),
            Code::Unauthenticated,
        ),
        (
            "wrong issuer",
            Some(signer.token(base(serde_json::json!({"iss": "https://evil.test"})))),
            Code::Unauthenticated,
        ),
        (
            "wrong signature",
            Some(impostor.token(base(serde_json::json!({})))),
            Code::Unauthenticated,
        ),
        ("HS256 with the public key as secret", Some(hmac), Code::Unauthenticated),
        (
            "not yet valid",
            Some(signer.token(base(serde_json::json!({"nbf": now() + 600})))),
            Code::Unauthenticated,
        ),
        (
            "no subject",
            Some(signer.token(serde_json::json!({
                "iss": ISSUER, "aud": AUDIENCE, "scope": "posts:write", "exp": now() + 300,
            }))),
            Code::Unauthenticated,
        ),
        (
            "read scope only",
            Some(signer.token(base(serde_json::json!({"scope": "posts:read"})))),
            Code::PermissionDenied,
        ),
        (
            "no scope",
            Some(signer.token(base(serde_json::json!({"scope": ""})))),
            Code::PermissionDenied,
        ),
    ];
    for (name, token, code) in &cases {
        let status = create_with(channel.clone(), token.as_deref())
            .await
            .expect_err(&format!("{name}: must be refused"));
        assert_eq!(status.code(), *code, "{name}: {status:?}");
        if let Some(token) = token {
            assert!(
                !status.message().contains(token.as_str()),
                "{name}: the token is echoed"
            );
        }
    }
    assert_eq!(
        events(channel.clone(), None).await.len(),
        0,
        "refused writes appended nothing"
    );
    assert_eq!(stream_len(&redis_url(), &svc.stream).await, 0, "and published nothing");

    // A good token writes, and its subject is the event's actor.
    let good = signer.good("alice@example.com", "openid posts:write");
    let id = create_with(channel.clone(), Some(&good))
        .await
        .expect("a valid token writes");
    // `scp` as an array works too.
    let scp = signer.token(base(
        serde_json::json!({"scope": null, "scp": ["posts:write"], "sub": "bob"}),
    ));
    create_with(channel.clone(), Some(&scp))
        .await
        .expect("scp array accepted");
    let stored = events(channel.clone(), None).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].post_id, id);
    assert_eq!(stored[0].actor, "alice@example.com");
    assert_eq!(stored[1].actor, "bob");

    // Health and reflection stay open without a token.
    assert_eq!(
        health(&svc.running.endpoint(), "posts.v1.PostCommand").await,
        Some(ServingStatus::Serving)
    );
    svc.running.stop().await.unwrap();
}

#[tokio::test]
async fn rs256_tokens_verify_and_keys_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa(dir.path());
    let ed = ed25519();
    let args = auth_args(dir.path(), &rsa.public_pem);
    let key_file = args.auth_jwt_key_file.clone().unwrap();
    let svc = command_svc(ServerTlsArgs::default(), args).await;
    let channel = plain_channel(svc.running.addr.port()).await.unwrap();

    create_with(channel.clone(), Some(&rsa.good("rsa-user", "posts:write")))
        .await
        .expect("RS256 accepted");
    let status = create_with(channel.clone(), Some(&ed.good("ed-user", "posts:write")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "an unknown key is refused");

    // Publish both keys (an overlap during rotation): both verify.
    std::fs::write(&key_file, format!("{}\n{}", rsa.public_pem, ed.public_pem)).unwrap();
    let both = wait_until(Duration::from_secs(5), || {
        let channel = channel.clone();
        let token = ed.good("ed-user", "posts:write");
        async move { create_with(channel, Some(&token)).await.is_ok() }
    })
    .await;
    assert!(both, "the added Ed25519 key must be picked up");
    create_with(channel.clone(), Some(&rsa.good("rsa-user", "posts:write")))
        .await
        .expect("the RSA key still verifies");
    let actors: Vec<String> = events(channel, None).await.into_iter().map(|e| e.actor).collect();
    assert_eq!(actors, vec!["rsa-user", "ed-user", "rsa-user"]);
    svc.running.stop().await.unwrap();
}

#[tokio::test]
async fn reads_can_be_closed_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let signer = ed25519();
    let mut auth = auth_args(dir.path(), &signer.public_pem);
    auth.auth_require_for_reads = true;
    let read_model = TestReadStore::new(ReadBackend::Sqlite);
    let mut config =
        query_svc::config::Config::for_tests(&read_model.url, &read_model.database, &redis_url(), &unique("sec.ch"));
    config.auth = auth;
    let running = query_svc::startup::spawn(config).await.expect("query-svc starts");
    let channel = plain_channel(running.addr.port()).await.unwrap();

    let get = |token: Option<String>| {
        let channel = channel.clone();
        async move {
            let mut request = Request::new(GetPostRequest {
                post_id: 1,
                min_version: 0,
                include_deleted: false,
            });
            if let Some(token) = token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            PostQueryClient::new(channel)
                .get_post(request)
                .await
                .unwrap_err()
                .code()
        }
    };
    assert_eq!(get(None).await, Code::Unauthenticated);
    assert_eq!(
        get(Some(signer.good("w", "posts:write"))).await,
        Code::PermissionDenied,
        "the write scope alone does not open reads"
    );
    // With the read scope the call gets through to the read model.
    let through = get(Some(signer.good("r", "posts:read"))).await;
    assert!(
        matches!(through, Code::NotFound | Code::Unavailable),
        "past auth: {through:?}"
    );
    // WatchPosts is a read too.
    let watch = PostQueryClient::new(channel.clone())
        .watch_posts(WatchPostsRequest {
            post_id: None,
            author_name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::Unauthenticated);

    // Health (and reflection) need no token.
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await;
    assert!(status.is_ok(), "{status:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_rebuild_reaches_command_svc_over_mtls_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("rebuild-ca");
    let signer = ed25519();
    let mut auth = auth_args(dir.path(), &signer.public_pem);
    auth.auth_require_for_reads = true;
    let svc = command_svc(server_tls(dir.path(), &pki, true), auth).await;
    let port = svc.running.addr.port();
    let writer = signer.good("writer", "posts:write");
    let channel = tls_channel(port, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    for _ in 0..3 {
        create_with(channel.clone(), Some(&writer)).await.unwrap();
    }

    let names = postmesh_tests::mesh::Names::fresh();
    let mut config = postmesh_tests::mesh::relay_config(&names);
    config.command_endpoint = format!("http://127.0.0.1:{port}");
    config.command_client = CommandClientArgs {
        command_tls_ca_file: Some(write(dir.path(), "relay-ca.crt", &pki.ca_pem)),
        command_tls_cert_file: Some(write(dir.path(), "relay.crt", &pki.client_cert)),
        command_tls_key_file: Some(write(dir.path(), "relay.key", &pki.client_key)),
        command_tls_server_name: Some("localhost".into()),
        command_token_file: Some(write(
            dir.path(),
            "relay.token",
            &format!("{}\n", signer.good("event-relay", "posts:read")),
        )),
    };
    let store = names.read_store.connect().await;
    let rebuilt = event_relay::rebuild::rebuild_into(&config, &store)
        .await
        .expect("rebuild over mTLS");
    assert_eq!(rebuilt.events, 3);

    // Without the token file, EventStore refuses the rebuild.
    config.command_client.command_token_file = None;
    let error = event_relay::rebuild::rebuild_into(&config, &store).await.unwrap_err();
    let status = error.downcast_ref::<tonic::Status>().map(|s| s.code());
    assert_eq!(status, Some(Code::Unauthenticated), "{error:#}");

    // Without a client certificate, not even the connection gets through.
    let no_cert = ClientTls {
        ca_file: Some(dir.path().join("relay-ca.crt")),
        server_name: Some("localhost".into()),
        ..ClientTls::default()
    };
    let endpoint = no_cert.endpoint(&format!("http://127.0.0.1:{port}")).unwrap();
    let refused = match endpoint.connect().await {
        Ok(channel) => create_with(channel, Some(&writer)).await.is_err(),
        Err(_) => true,
    };
    assert!(refused);
    svc.running.stop().await.unwrap();
}

// --------------------------------------------------------------- limits ----

async fn closed_within(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the server's SETTINGS frame, pings
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_but_open_streams_keep_theirs() {
    let read_model = TestReadStore::new(ReadBackend::Sqlite);
    let mut config =
        query_svc::config::Config::for_tests(&read_model.url, &read_model.database, &redis_url(), &unique("sec.idle"));
    config.limits.connection_idle_timeout = Duration::from_millis(500);
    let running = query_svc::startup::spawn(config).await.unwrap();
    let port = running.addr.port();

    // A client that connects and never sends a request is cut off.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "an idle connection must be closed"
    );

    // A WatchPosts stream is a request in flight: its connection stays.
    let channel = plain_channel(port).await.unwrap();
    let mut client = PostQueryClient::new(channel);
    let mut watch = client
        .watch_posts(WatchPostsRequest {
            post_id: Some(1),
            author_name: None,
        })
        .await
        .unwrap()
        .into_inner();
    let waited = tokio::time::timeout(Duration::from_millis(1500), watch.message()).await;
    assert!(
        waited.is_err(),
        "the watch must stay open past the idle timeout, got {waited:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut config = command_svc::config::Config::for_tests(db.url.clone(), &redis_url(), &unique("sec.cap"));
    config.limits.max_connections = 2;
    config.limits.connection_idle_timeout = Duration::ZERO;
    let running = command_svc::startup::spawn(config).await.unwrap();
    let port = running.addr.port();

    let first = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "the third connection is closed"
    );
    assert!(
        !closed_within(&mut second, Duration::from_millis(300)).await,
        "the others stay"
    );

    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        health(&running.endpoint(), "").await,
        Some(ServingStatus::Serving),
        "a freed slot serves again"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_messages_and_headers_are_refused() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let mut config = command_svc::config::Config::for_tests(db.url.clone(), &redis_url(), &unique("sec.big"));
    config.limits.max_message_bytes = 1024;
    config.limits.max_header_list_bytes = 4096;
    let running = command_svc::startup::spawn(config).await.unwrap();
    let channel = plain_channel(running.addr.port()).await.unwrap();

    let mut big = create("big");
    big.content = "x".repeat(4096);
    let status = PostCommandClient::new(channel.clone())
        .create_post(big)
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );

    let mut request = Request::new(create("fat headers"));
    request
        .metadata_mut()
        .insert("x-padding", "p".repeat(8192).parse().unwrap());
    let status = PostCommandClient::new(channel.clone())
        .create_post(request)
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);

    let fresh = plain_channel(running.addr.port()).await.unwrap();
    assert!(events(fresh, None).await.is_empty(), "nothing was appended");
    running.stop().await.unwrap();
}

// ----------------------------------------------------------- Redis TLS ----

struct TlsRedis {
    child: std::process::Child,
    plain_port: u16,
    tls_port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_redis(dir: &Path, pki: &Pki) -> TlsRedis {
    let (plain_port, tls_port) = (free_port(), free_port());
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &plain_port.to_string(), "--tls-port", &tls_port.to_string()])
        .arg("--tls-cert-file")
        .arg(write(dir, "redis.crt", &pki.server_cert))
        .arg("--tls-key-file")
        .arg(write(dir, "redis.key", &pki.server_key))
        .arg("--tls-ca-cert-file")
        .arg(write(dir, "redis-ca.crt", &pki.ca_pem))
        .args(["--tls-auth-clients", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let up = wait_until(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await.is_ok()
    })
    .await;
    assert!(up, "redis-server with TLS did not start");
    TlsRedis {
        child,
        plain_port,
        tls_port,
    }
}

#[tokio::test]
async fn rediss_urls_connect_with_tls_verified_against_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("redis-ca");
    let redis = tls_redis(dir.path(), &pki).await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stream = unique("sec.rediss");
    let port = free_port();
    let ca = write(dir.path(), "trust.crt", &pki.ca_pem);
    let env = |redis_url: String| {
        vec![
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("COMMAND_DATABASE_URL", db.url.clone()),
            ("REDIS_URL", redis_url),
            ("STREAM_NAME", stream.clone()),
            ("OUTBOX_POLL_MS", "100".to_owned()),
            // rustls-native-certs (used by the Redis client) reads the CA from here.
            ("SSL_CERT_FILE", ca.display().to_string()),
        ]
    };
    let mut svc = ServiceProc::spawn(
        "command-svc",
        port,
        &[],
        &env(format!("rediss://127.0.0.1:{}", redis.tls_port)),
    );
    svc.wait_healthy(Duration::from_secs(20)).await;
    let channel = plain_channel(port).await.unwrap();
    create_with(channel, None).await.unwrap();
    let plain = format!("redis://127.0.0.1:{}", redis.plain_port);
    let published = wait_until(Duration::from_secs(10), || {
        let plain = plain.clone();
        let stream = stream.clone();
        async move { stream_len(&plain, &stream).await == 1 }
    })
    .await;
    assert!(published, "the event went out over rediss://; log:\n{}", svc.logs());
    svc.kill();

    // Without trusting the CA, the TLS connection is refused at start-up.
    let mut env = env(format!("rediss://127.0.0.1:{}", redis.tls_port));
    env.retain(|(k, _)| *k != "SSL_CERT_FILE");
    env.push((
        "SSL_CERT_FILE",
        write(dir.path(), "empty.crt", "").display().to_string(),
    ));
    let mut untrusting = ServiceProc::spawn("command-svc", port, &[], &env);
    let status = untrusting.wait_exit(Duration::from_secs(15)).await;
    assert!(
        matches!(status, Some(s) if !s.success()),
        "must refuse an unverified Redis; log:\n{}",
        untrusting.logs()
    );
}

// ------------------------------------------------------------- secrets ----

/// A password no log line should ever hold.
fn secret() -> String {
    format!("S3cr3t{:08x}", rand::random::<u32>())
}

fn assert_hidden(proc: &ServiceProc, secrets: &[&str]) {
    let logs = proc.logs();
    assert!(!logs.is_empty(), "{} wrote no log", proc.name);
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "{} logged a secret ({secret}):\n{logs}",
            proc.name
        );
    }
}

#[tokio::test]
async fn secret_bearing_urls_never_show_in_the_logs() {
    let dead = free_port();
    let db = TestDatabase::create(Backend::Sqlite).await;
    let redis_password = secret();
    let mysql_password = secret();
    let mongo_password = secret();
    let base = |port: u16| {
        vec![
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("RUST_LOG", "debug".to_owned()),
            ("REDIS_CHECK_TIMEOUT_SECS", "1".to_owned()),
            ("COMMAND_DATABASE_TIMEOUT_SECS", "1".to_owned()),
        ]
    };

    // 1. command-svc, Redis with a password on a dead port: fails, says where, hides the password.
    let port = free_port();
    let mut env = base(port);
    env.push(("REDIS_URL", format!("redis://:{redis_password}@127.0.0.1:{dead}")));
    env.push(("COMMAND_DATABASE_URL", db.url.clone()));
    let mut svc = ServiceProc::spawn("command-svc", port, &[], &env);
    assert!(svc.wait_exit(Duration::from_secs(15)).await.is_some());
    assert_hidden(&svc, &[&redis_password]);
    assert!(svc.logs().contains(&format!("127.0.0.1:{dead}")), "{}", svc.logs());

    // 2. command-svc, MySQL with a wrong password (the server is up): access denied, password hidden.
    let mysql_host = mysql_url().rsplit('@').next().unwrap().trim_end_matches('/').to_owned();
    let port = free_port();
    let mut env = base(port);
    env.push(("REDIS_URL", redis_url()));
    env.push((
        "COMMAND_DATABASE_URL",
        format!("mysql://postmesh:{mysql_password}@{mysql_host}/postmesh_secret_test"),
    ));
    let mut svc = ServiceProc::spawn("command-svc", port, &[], &env);
    assert!(svc.wait_exit(Duration::from_secs(15)).await.is_some());
    assert_hidden(&svc, &[&mysql_password]);
    assert!(svc.logs().contains("***"), "the URL is shown redacted:\n{}", svc.logs());

    // 3. command-svc, MySQL with a password on a dead port.
    let port = free_port();
    let mut env = base(port);
    env.push(("REDIS_URL", redis_url()));
    env.push((
        "COMMAND_DATABASE_URL",
        format!("mysql://postmesh:{mysql_password}@127.0.0.1:{dead}/events"),
    ));
    let mut svc = ServiceProc::spawn("command-svc", port, &[], &env);
    assert!(svc.wait_exit(Duration::from_secs(15)).await.is_some());
    assert_hidden(&svc, &[&mysql_password]);

    // 4. query-svc and event-relay with MongoDB credentials on a dead port
    //    (READ_STORE_URL, and the deprecated MONGODB_URL): they start, keep
    //    retrying and logging, and never show the password.
    let port = free_port();
    let mongo = format!("mongodb://reader:{mongo_password}@127.0.0.1:{dead}/?authSource=admin");
    let mut query = ServiceProc::spawn(
        "query-svc",
        port,
        &[],
        &[
            ("QUERY_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("RUST_LOG", "debug".to_owned()),
            ("READ_STORE_URL", mongo.clone()),
            ("READ_STORE_TIMEOUT_MS", "300".to_owned()),
            ("HEALTH_CHECK_MS", "200".to_owned()),
            ("REDIS_URL", redis_url()),
            ("NOTIFY_CHANNEL", unique("sec.ch")),
        ],
    );
    let relay_port = free_port();
    let mut relay = ServiceProc::spawn(
        "event-relay",
        relay_port,
        &[],
        &[
            ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{relay_port}")),
            ("RUST_LOG", "debug".to_owned()),
            ("MONGODB_URL", mongo),
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", unique("sec.events")),
            ("RELAY_RETRY_MAX_MS", "200".to_owned()),
        ],
    );
    let logged = wait_until(Duration::from_secs(10), || {
        let (q, r) = (query.logs(), relay.logs());
        async move { q.contains("query-svc serving") && r.contains("read store not ready") }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    query.kill();
    relay.kill();
    assert!(logged, "query-svc:\n{}\nevent-relay:\n{}", query.logs(), relay.logs());
    assert_hidden(&query, &[&mongo_password]);
    assert_hidden(&relay, &[&mongo_password]);
}

#[tokio::test]
async fn tokens_and_keys_never_show_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("logs-ca");
    let signer = ed25519();
    let db = TestDatabase::create(Backend::Sqlite).await;
    let port = free_port();
    let expired = signer.token(serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "late", "scope": "posts:write", "exp": now() - 60,
    }));
    let good = signer.good("logger", "posts:write");
    let key_file = write(dir.path(), "server.key", &pki.server_key);
    let mut svc = ServiceProc::spawn(
        "command-svc",
        port,
        &[],
        &[
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("COMMAND_DATABASE_URL", db.url.clone()),
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", unique("sec.events")),
            ("RUST_LOG", "debug".to_owned()),
            (
                "TLS_CERT_FILE",
                write(dir.path(), "server.crt", &pki.server_cert).display().to_string(),
            ),
            ("TLS_KEY_FILE", key_file.display().to_string()),
            (
                "AUTH_JWT_KEY_FILE",
                write(dir.path(), "jwt.pub", &signer.public_pem).display().to_string(),
            ),
            ("AUTH_ISSUER", ISSUER.to_owned()),
            ("AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ],
    );
    let ready = wait_until(Duration::from_secs(20), || {
        let ca = pki.ca_pem.clone();
        async move {
            match tls_channel(port, &ca, None).await {
                Ok(channel) => HealthClient::new(channel)
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(ready, "{}", svc.logs());
    let channel = tls_channel(port, &pki.ca_pem, None).await.unwrap();
    assert_eq!(
        create_with(channel.clone(), Some(&expired)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    create_with(channel, Some(&good)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.kill();
    let logs = svc.logs();
    assert!(logs.contains("call refused"), "{logs}");
    assert!(logs.contains("logger"), "the actor is logged:\n{logs}");
    let key_line = pki.server_key.lines().nth(1).unwrap();
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_owned();
    assert_hidden(&svc, &[&signature(&expired), &signature(&good), key_line]);

    // A key file that is not a key: the start fails naming the file, not its content.
    std::fs::write(
        &key_file,
        "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let port = free_port();
    let mut broken = ServiceProc::spawn(
        "command-svc",
        port,
        &[],
        &[
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("COMMAND_DATABASE_URL", db.url.clone()),
            ("REDIS_URL", redis_url()),
            ("TLS_CERT_FILE", dir.path().join("server.crt").display().to_string()),
            ("TLS_KEY_FILE", key_file.display().to_string()),
        ],
    );
    assert!(broken.wait_exit(Duration::from_secs(15)).await.is_some());
    assert!(broken.logs().contains("server.key"), "{}", broken.logs());
    assert_hidden(&broken, &["TOPSECRETKEYMATERIAL"]);
}
