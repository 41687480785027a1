//! One trace per command, checked in a real Jaeger (v1.76.0, in-memory
//! storage, OTLP receiver): the client's trace continues through command-svc,
//! the outbox publish, event-relay's consume and apply, and query-svc.

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use postmesh_proto::v1::{
    post_command_client::PostCommandClient, post_query_client::PostQueryClient, CreatePostRequest, GetPostRequest,
};
use postmesh_tests::{
    mesh::Names,
    redis_url,
    servers::{free_port, go_bin},
    services::ServiceProc,
    wait_until, Backend, TestDatabase,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Jaeger {
    child: Child,
    otlp: u16,
    query: u16,
    _dir: tempfile::TempDir,
}

impl Jaeger {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (otlp, query, query_grpc) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
        );
        let path = dir.path().join("jaeger.yaml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(go_bin("jaeger"))
            .arg(format!("--config={}", path.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("jaeger.log")).unwrap())
            .spawn()
            .expect("jaeger must be installed: scripts/install-deps.sh");
        let jaeger = Self {
            child,
            otlp,
            query,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", otlp)).await.is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", query)).await.is_ok()
        })
        .await;
        assert!(up, "jaeger did not start");
        jaeger
    }

    /// GET on the query API (HTTP/1.0, so the body is never chunked).
    async fn get(&self, path: &str) -> Option<Value> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.query)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Span {
    service: String,
    name: String,
    span_id: String,
    parent: Option<String>,
    tags: HashMap<String, Value>,
}

fn spans(trace: &Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| Span {
                    service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    name: s["operationName"].as_str().unwrap_or_default().to_owned(),
                    span_id: s["spanID"].as_str().unwrap_or_default().to_owned(),
                    parent: s["references"]
                        .as_array()
                        .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
                        .and_then(|r| r["spanID"].as_str())
                        .map(str::to_owned),
                    tags: s["tags"]
                        .as_array()
                        .map(|tags| {
                            tags.iter()
                                .map(|t| (t["key"].as_str().unwrap_or_default().to_owned(), t["value"].clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn otel_env(jaeger: &Jaeger, service: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", jaeger.otlp),
        ),
        ("OTEL_SERVICE_NAME", service.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_command_through_all_three_services() {
    let jaeger = Jaeger::start().await;
    let names = Names::fresh();
    let db = TestDatabase::create(Backend::Sqlite).await;

    let command_port = free_port();
    let mut env = vec![
        ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{command_port}")),
        ("COMMAND_DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis_url()),
        ("STREAM_NAME", names.stream.clone()),
    ];
    let command_metrics = free_port();
    env.push(("METRICS_ADDR", format!("127.0.0.1:{command_metrics}")));
    env.extend(otel_env(&jaeger, "command-svc"));
    let mut command = ServiceProc::spawn("command-svc", command_port, &[], &env);

    let relay_port = free_port();
    let mut env = vec![
        ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{relay_port}")),
        ("REDIS_URL", redis_url()),
        ("STREAM_NAME", names.stream.clone()),
        ("READ_STORE_URL", names.read_store.url.clone()),
        ("READ_STORE_DATABASE", names.database.clone()),
        ("NOTIFY_CHANNEL", names.channel.clone()),
    ];
    let relay_metrics = free_port();
    env.push(("METRICS_ADDR", format!("127.0.0.1:{relay_metrics}")));
    env.extend(otel_env(&jaeger, "event-relay"));
    let mut relay = ServiceProc::spawn("event-relay", relay_port, &[], &env);

    let query_port = free_port();
    let mut env = vec![
        ("QUERY_LISTEN_ADDR", format!("127.0.0.1:{query_port}")),
        ("REDIS_URL", redis_url()),
        ("READ_STORE_URL", names.read_store.url.clone()),
        ("READ_STORE_DATABASE", names.database.clone()),
        ("NOTIFY_CHANNEL", names.channel.clone()),
    ];
    let query_metrics = free_port();
    env.push(("METRICS_ADDR", format!("127.0.0.1:{query_metrics}")));
    env.extend(otel_env(&jaeger, "query-svc"));
    let mut query = ServiceProc::spawn("query-svc", query_port, &[], &env);
    for service in [&mut command, &mut relay, &mut query] {
        service.wait_healthy(Duration::from_secs(30)).await;
    }

    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let mut create = tonic::Request::new(CreatePostRequest {
        title: "traced".into(),
        content: "one trace".into(),
        author_name: "otel".into(),
        idempotency_key: String::new(),
    });
    create
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let created = PostCommandClient::connect(command.endpoint())
        .await
        .unwrap()
        .create_post(create)
        .await
        .unwrap()
        .into_inner();
    let mut get = tonic::Request::new(GetPostRequest {
        post_id: created.post_id,
        min_version: created.version,
        include_deleted: false,
    });
    get.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    get.set_timeout(Duration::from_secs(10));
    let post = PostQueryClient::connect(query.endpoint())
        .await
        .unwrap()
        .get_post(get)
        .await
        .unwrap()
        .into_inner()
        .post
        .unwrap();
    assert_eq!(post.version, 1);

    let path = format!("/api/traces/{trace_id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = match jaeger.get(&path).await {
            Some(body) => body["data"].get(0).map(spans).unwrap_or_default(),
            None => Vec::new(),
        };
        let complete = ["command-svc", "event-relay", "query-svc"]
            .iter()
            .all(|s| found.iter().any(|span| span.service == *s))
            && found.iter().any(|s| s.name.starts_with("update"));
        if complete {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one trace must hold all three services; got {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let by_id: HashMap<&str, &Span> = found.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let rpc = |method: &str| {
        found
            .iter()
            .find(|s| s.tags.get("rpc.method").and_then(Value::as_str) == Some(method))
            .unwrap_or_else(|| panic!("no {method} span in {found:#?}"))
    };
    let create_span = rpc("CreatePost");
    assert_eq!(create_span.service, "command-svc");
    assert_eq!(
        create_span.parent.as_deref(),
        Some(client_span),
        "the client's span is the parent"
    );
    assert_eq!(create_span.tags["rpc.system"], "grpc");
    assert_eq!(create_span.tags["rpc.service"], "posts.v1.PostCommand");
    assert_eq!(create_span.tags["rpc.grpc.status_code"], 0);

    let get_span = rpc("GetPost");
    assert_eq!(get_span.service, "query-svc");
    assert_eq!(get_span.parent.as_deref(), Some(client_span));
    assert_eq!(get_span.tags["rpc.service"], "posts.v1.PostQuery");

    let child_of = |span: &Span, parent: &Span| span.parent.as_deref() == Some(parent.span_id.as_str());
    let db = found
        .iter()
        .find(|s| s.tags.contains_key("db.system") && s.service == "command-svc" && s.name.starts_with("append"))
        .expect("SQL transaction span");
    assert_eq!(db.tags["db.system"], "sqlite");
    assert!(child_of(db, create_span));
    let publish = found
        .iter()
        .find(|s| s.name.starts_with("publish"))
        .expect("publish span");
    assert!(
        child_of(publish, create_span),
        "publish continues the command: {found:#?}"
    );
    assert_eq!(publish.tags["messaging.system"], "redis");
    let process = found
        .iter()
        .find(|s| s.name.starts_with("process"))
        .expect("relay consume span");
    assert_eq!(process.service, "event-relay");
    assert!(child_of(process, publish), "the relay continues the publish");
    let apply = found
        .iter()
        .find(|s| s.name.starts_with("update"))
        .expect("read-model write span");
    // The read model of `Names::fresh()`: the default store, SQLite.
    assert_eq!(apply.tags["db.system"], "sqlite");
    assert!(child_of(apply, process));
    assert!(by_id.contains_key(publish.parent.as_deref().unwrap()));

    // The same work shows up in each service's Prometheus endpoint.
    let command_text = scrape(command_metrics).await;
    assert!(command_text.contains("rpc_server_calls"), "{command_text}");
    assert!(command_text.contains("rpc_method=\"CreatePost\""), "{command_text}");
    assert!(command_text.contains("rpc_server_duration"), "{command_text}");
    assert!(command_text.contains("outbox_backlog"), "{command_text}");
    let relay_text = scrape(relay_metrics).await;
    for name in [
        "relay_events_applied",
        "relay_projection_lag",
        "relay_consumer_lag",
        "relay_dlq_size",
    ] {
        assert!(relay_text.contains(name), "{name} missing:\n{relay_text}");
    }
    let query_text = scrape(query_metrics).await;
    assert!(query_text.contains("rpc_method=\"GetPost\""), "{query_text}");
}

/// The body of `GET /metrics`.
async fn scrape(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // As Prometheus scrapes: HTTP/1.1 (to HTTP/1.0 the server answers 1.0).
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
