//! The gateway in front of a real tonic server (HTTP/1.1 and HTTP/2 on one
//! port), with small in-memory implementations of the posts.v1 services:
//! routing by the annotations, the JSON mapping both ways, headers, the
//! status mapping, streams as NDJSON, gRPC-Web frames, and bad input of
//! every kind answered with a 4xx, never a 5xx or a hang. The real
//! services behind the gateway are tested end to end in tests/tests/http.rs.

#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use http_body_util::{BodyExt, Full};
use postmesh_gateway::GatewayLayer;
use postmesh_proto::v1::{
    event_store_server::{EventStore, EventStoreServer},
    post_command_server::{PostCommand, PostCommandServer},
    post_query_server::{PostQuery, PostQueryServer},
    *,
};
use prost::Message;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Posts in memory, behaving like command-svc and query-svc where the
/// gateway can tell (validation with field violations, versions, NOT_FOUND).
#[derive(Default, Clone)]
struct Memory {
    posts: Arc<Mutex<HashMap<i64, Post>>>,
    last_metadata: Arc<Mutex<Option<tonic::metadata::MetadataMap>>>,
}

impl Memory {
    fn check_id(post_id: i64) -> Result<(), Status> {
        if post_id <= 0 {
            return Err(Status::with_error_details(
                tonic::Code::InvalidArgument,
                "invalid request: post_id: must be > 0",
                ErrorDetails::with_bad_request_violation("post_id", "must be > 0"),
            ));
        }
        Ok(())
    }

    fn post(&self, post_id: i64) -> Result<Post, Status> {
        Self::check_id(post_id)?;
        let posts = self.posts.lock().unwrap();
        posts
            .get(&post_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("post {post_id} does not exist")))
    }

    fn change(&self, post_id: i64, expected: i64, change: impl FnOnce(&mut Post)) -> Result<Post, Status> {
        let mut post = self.post(post_id)?;
        if expected != 0 && expected != post.version {
            return Err(Status::aborted(format!(
                "post {post_id} is at version {}, not the expected version {expected}",
                post.version
            )));
        }
        change(&mut post);
        post.version += 1;
        self.posts.lock().unwrap().insert(post_id, post.clone());
        Ok(post)
    }
}

#[tonic::async_trait]
impl PostCommand for Memory {
    async fn create_post(&self, request: Request<CreatePostRequest>) -> Result<Response<CreatePostResponse>, Status> {
        *self.last_metadata.lock().unwrap() = Some(request.metadata().clone());
        let req = request.into_inner();
        if req.title.trim().is_empty() {
            return Err(Status::with_error_details(
                tonic::Code::InvalidArgument,
                "invalid request: title: must not be empty",
                ErrorDetails::with_bad_request_violation("title", "must not be empty"),
            ));
        }
        let mut posts = self.posts.lock().unwrap();
        let post_id = posts.len() as i64 + 1;
        posts.insert(
            post_id,
            Post {
                post_id,
                version: 1,
                title: req.title,
                content: req.content,
                author_name: req.author_name,
                ..Post::default()
            },
        );
        Ok(Response::new(CreatePostResponse { post_id, version: 1 }))
    }

    async fn update_post(&self, request: Request<UpdatePostRequest>) -> Result<Response<UpdatePostResponse>, Status> {
        let req = request.into_inner();
        let post = self.change(req.post_id, req.expected_version, |post| {
            if let Some(title) = req.title {
                post.title = title;
            }
        })?;
        Ok(Response::new(UpdatePostResponse {
            post_id: post.post_id,
            version: post.version,
        }))
    }

    async fn delete_post(&self, request: Request<DeletePostRequest>) -> Result<Response<DeletePostResponse>, Status> {
        let req = request.into_inner();
        let post = self.change(req.post_id, req.expected_version, |post| post.deleted = true)?;
        Ok(Response::new(DeletePostResponse {
            post_id: post.post_id,
            version: post.version,
        }))
    }
}

#[tonic::async_trait]
impl EventStore for Memory {
    type ReadAllStream = BoxStream<ReadAllResponse>;
    type ReadPostStream = BoxStream<ReadPostResponse>;

    /// Two events, then a failure: how a stream that breaks mid-way looks.
    async fn read_all(&self, _request: Request<ReadAllRequest>) -> Result<Response<Self::ReadAllStream>, Status> {
        let events = (1..=2).map(|position| {
            Ok(ReadAllResponse {
                event: Some(PostEvent {
                    position,
                    post_id: position,
                    version: 1,
                    event_type: EventType::PostCreated as i32,
                    ..PostEvent::default()
                }),
            })
        });
        let failure = std::iter::once(Err(Status::unavailable("event store unavailable: gone")));
        Ok(Response::new(Box::pin(futures::stream::iter(events.chain(failure)))))
    }

    async fn get_head(&self, _request: Request<GetHeadRequest>) -> Result<Response<GetHeadResponse>, Status> {
        Ok(Response::new(GetHeadResponse { complete_through: 2 }))
    }

    async fn read_post(&self, request: Request<ReadPostRequest>) -> Result<Response<Self::ReadPostStream>, Status> {
        let post = self.post(request.into_inner().post_id)?;
        let event = ReadPostResponse {
            event: Some(PostEvent {
                post_id: post.post_id,
                version: post.version,
                post: Some(post),
                ..PostEvent::default()
            }),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(event)]))))
    }
}

#[tonic::async_trait]
impl PostQuery for Memory {
    type WatchPostsStream = BoxStream<WatchPostsResponse>;

    async fn get_post(&self, request: Request<GetPostRequest>) -> Result<Response<GetPostResponse>, Status> {
        let post = self.post(request.into_inner().post_id)?;
        Ok(Response::new(GetPostResponse { post: Some(post) }))
    }

    async fn list_posts(&self, request: Request<ListPostsRequest>) -> Result<Response<ListPostsResponse>, Status> {
        let req = request.into_inner();
        let mut posts: Vec<Post> = self.posts.lock().unwrap().values().cloned().collect();
        posts.retain(|p| req.author_name.is_empty() || p.author_name == req.author_name);
        posts.sort_by_key(|p| -p.post_id);
        posts.truncate(if req.page_size > 0 { req.page_size as usize } else { 20 });
        Ok(Response::new(ListPostsResponse {
            posts,
            next_page_token: req.page_token,
        }))
    }

    async fn get_post_history(
        &self,
        request: Request<GetPostHistoryRequest>,
    ) -> Result<Response<GetPostHistoryResponse>, Status> {
        let post = self.post(request.into_inner().post_id)?;
        Ok(Response::new(GetPostHistoryResponse { versions: vec![post] }))
    }

    /// Every post there is, then the stream stays open (like a live watch).
    async fn watch_posts(
        &self,
        request: Request<WatchPostsRequest>,
    ) -> Result<Response<Self::WatchPostsStream>, Status> {
        let only = request.into_inner().post_id;
        let mut posts: Vec<Post> = self.posts.lock().unwrap().values().cloned().collect();
        posts.retain(|p| only.is_none_or(|id| id == p.post_id));
        posts.sort_by_key(|p| p.post_id);
        let items = posts.into_iter().map(|post| {
            Ok(WatchPostsResponse {
                post: Some(post),
                event_type: EventType::PostUpdated as i32,
            })
        });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(items),
            futures::stream::pending(),
        ))))
    }
}

struct Server {
    addr: SocketAddr,
    memory: Memory,
}

async fn start() -> Server {
    let memory = Memory::default();
    let gateway = GatewayLayer::builder(&[postmesh_proto::FILE_DESCRIPTOR_SET])
        .service("posts.v1.PostCommand")
        .service("posts.v1.EventStore")
        .service("posts.v1.PostQuery")
        .openapi(r#"{"swagger": "2.0"}"#)
        .max_body_bytes(64 * 1024)
        .request_timeout(Duration::from_secs(2))
        .grpc_web(true)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(gateway)
        .add_service(PostCommandServer::new(memory.clone()))
        .add_service(EventStoreServer::new(memory.clone()))
        .add_service(PostQueryServer::new(memory.clone()));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    Server { addr, memory }
}

/// One HTTP/1.1 exchange on a fresh connection.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The status message, checking the body is a google.rpc.Status with the code.
    fn error(&self, http: u16, code: i64) -> String {
        let json = self.json();
        assert_eq!(self.status, http, "{json}");
        assert_eq!(json["code"], code, "{json}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        json["message"].as_str().unwrap().to_owned()
    }

    fn violation(&self) -> (String, String) {
        let json = self.json();
        let v = &json["details"][0]["fieldViolations"][0];
        assert_eq!(
            json["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest",
            "{json}"
        );
        (
            v["field"].as_str().unwrap().into(),
            v["description"].as_str().unwrap().into(),
        )
    }
}

async fn send(addr: SocketAddr, request: http::Request<Full<Bytes>>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("body not complete within 5 s")
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let mut builder = http::Request::builder().method(method).uri(path).header("host", "test");
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    send(addr, builder.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

async fn create(addr: SocketAddr, title: &str) -> i64 {
    let answer = call(
        addr,
        "POST",
        "/post",
        &json!({"title": title, "content": "c", "authorName": "ann"}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()["postId"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_routes_of_the_annotations_answer_in_proto3_json() {
    let server = start().await;
    let addr = server.addr;
    // Both field name forms on input; camelCase and int64-as-string on output.
    let answer = call(
        addr,
        "POST",
        "/post",
        r#"{"title": "t", "content": "c", "author_name": "ann"}"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"postId": "1", "version": "1"}));
    assert_eq!(answer.header("etag"), Some("\"1\""));

    let answer = call(addr, "GET", "/post/1", "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        json!({"post": {"postId": "1", "version": "1", "title": "t", "content": "c", "authorName": "ann"}})
    );
    assert_eq!(answer.header("etag"), Some("\"1\""));

    let answer = call(addr, "PATCH", "/post/1", r#"{"title": "t2"}"#).await;
    assert_eq!(answer.json(), json!({"postId": "1", "version": "2"}));
    assert_eq!(answer.header("etag"), Some("\"2\""));

    create(addr, "second").await;
    let answer = call(addr, "GET", "/posts?author_name=ann&pageSize=1&page_token=abc", "").await;
    assert_eq!(answer.status, 200);
    let json = answer.json();
    assert_eq!(json["posts"].as_array().unwrap().len(), 1);
    assert_eq!(json["posts"][0]["postId"], "2");
    assert_eq!(json["nextPageToken"], "abc");

    let answer = call(addr, "GET", "/post/1/history", "").await;
    assert_eq!(answer.json()["versions"][0]["version"], "2");

    let answer = call(addr, "DELETE", "/post/1?expected_version=2", "").await;
    assert_eq!(answer.json(), json!({"postId": "1", "version": "3"}));

    // HEAD answers like GET, without a body.
    let answer = call(addr, "HEAD", "/post/1", "").await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.is_empty());

    let answer = call(addr, "GET", "/events/head", "").await;
    assert_eq!(answer.json(), json!({"completeThrough": "2"}));

    let answer = call(addr, "GET", "/openapi.json", "").await;
    assert_eq!(answer.json(), json!({"swagger": "2.0"}));
}

#[tokio::test]
async fn headers_carry_idempotency_keys_versions_tokens_and_trace_context() {
    let server = start().await;
    let addr = server.addr;
    let body = r#"{"title": "t", "content": "c", "authorName": "a"}"#;
    let create = http::Request::post("/post")
        .header("host", "test")
        .header("content-type", "application/json; charset=utf-8")
        .header("idempotency-key", "key-1")
        .header("authorization", "Bearer abc")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .header("grpc-metadata-x-client", "curl")
        .header("cookie", "not-forwarded=1")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    assert_eq!(send(addr, create).await.status, 200);
    let seen = server.memory.last_metadata.lock().unwrap().clone().unwrap();
    assert_eq!(seen.get("authorization").unwrap(), "Bearer abc");
    assert!(seen.get("traceparent").is_some());
    assert_eq!(seen.get("x-client").unwrap(), "curl");
    assert!(seen.get("cookie").is_none());

    // If-Match sets expected_version; a stale one is 412, as HTTP has it;
    // the same mismatch from a body field is ABORTED's usual 409.
    let patch = |etag: &str, body: &'static str| {
        http::Request::patch("/post/1")
            .header("host", "test")
            .header("content-type", "application/json")
            .header("if-match", etag)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let answer = send(addr, patch("\"1\"", r#"{"title": "u"}"#)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.header("etag"), Some("\"2\""));
    let answer = send(addr, patch("\"1\"", r#"{"title": "v"}"#)).await;
    assert!(answer.error(412, 10).contains("not the expected version 1"));
    let answer = call(addr, "PATCH", "/post/1", r#"{"title": "v", "expectedVersion": "1"}"#).await;
    answer.error(409, 10);
    let answer = send(addr, patch("W/\"2\"", r#"{"title": "v"}"#)).await;
    answer.error(400, 3);
    assert_eq!(answer.violation().0, "if-match");
    let answer = send(addr, patch("\"2\"", r#"{"title": "v", "expectedVersion": "1"}"#)).await;
    answer.error(400, 3);
    assert!(answer.violation().1.contains("If-Match header says 2"));
}

#[tokio::test]
async fn errors_are_the_matching_http_status_with_a_google_rpc_status_body() {
    let server = start().await;
    let addr = server.addr;
    let answer = call(addr, "GET", "/post/0", "").await;
    answer.error(400, 3);
    assert_eq!(answer.violation(), ("post_id".into(), "must be > 0".into()));
    assert!(call(addr, "GET", "/post/42", "")
        .await
        .error(404, 5)
        .contains("post 42 does not exist"));
    let answer = call(addr, "POST", "/post", r#"{"title": " "}"#).await;
    answer.error(400, 3);
    assert_eq!(answer.violation().0, "title");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let server = start().await;
    let addr = server.addr;
    create(addr, "t").await;
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("POST", "/post", "{", 400, "invalid JSON body"),
        (
            "POST",
            "/post",
            r#"{"title": 5}"#,
            400,
            "title: invalid JSON body: invalid type",
        ),
        (
            "POST",
            "/post",
            r#"{"title": "t", "colour": "red"}"#,
            400,
            "unrecognized field name 'colour'",
        ),
        ("POST", "/post", r#"["title"]"#, 400, "invalid JSON body"),
        ("POST", "/post", r#""just a string""#, 400, "invalid JSON body"),
        ("POST", "/post", "{} trailing", 400, "trailing characters"),
        ("PATCH", "/post/1", r#"{"postId": "2"}"#, 400, "the path says 1"),
        ("GET", "/post/abc", "", 400, "post_id: expected a 64-bit integer"),
        ("GET", "/post/1.5", "", 400, "post_id: expected a 64-bit integer"),
        ("GET", "/post/%FF", "", 400, "bad path"),
        ("GET", "/post/1?colour=red", "", 400, "colour: no such field"),
        (
            "GET",
            "/post/1?include_deleted=perhaps",
            "",
            400,
            "expected true or false",
        ),
        (
            "GET",
            "/posts?page_size=big",
            "",
            400,
            "page_size: expected a 32-bit integer",
        ),
        (
            "GET",
            "/posts?page_size=99999999999",
            "",
            400,
            "page_size: expected a 32-bit integer",
        ),
        ("GET", "/post/1", "{}", 400, "takes no request body"),
        ("GET", "/nowhere", "", 404, "no route for GET /nowhere"),
        ("GET", "/post/1/", "", 404, "no route"),
        ("GET", "/post", "", 405, "GET is not allowed on /post; allowed: POST"),
        ("PUT", "/post/1", "{}", 405, "allowed: GET, HEAD, PATCH, DELETE"),
        ("POST", "/posts", "{}", 405, "allowed: GET, HEAD"),
    ];
    for (method, path, body, status, expected) in cases {
        let answer = call(addr, method, path, body).await;
        let json = answer.json();
        assert_eq!(answer.status, *status, "{method} {path} {body}: {json}");
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(expected), "{method} {path} {body}: {message}");
    }
    let answer = call(addr, "PUT", "/post/1", "").await;
    assert_eq!(answer.header("allow"), Some("GET, HEAD, PATCH, DELETE"));

    // Not JSON at all: 415, saying what to send.
    let form = http::Request::post("/post")
        .header("host", "test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from("title=t")))
        .unwrap();
    let answer = send(addr, form).await;
    assert!(answer.error(415, 3).contains("Content-Type: application/json"));

    // Over the body limit: 413, whether declared or streamed.
    let huge = format!(r#"{{"title": "{}"}}"#, "x".repeat(100 * 1024));
    assert!(call(addr, "POST", "/post", &huge)
        .await
        .error(413, 8)
        .contains("larger than the limit"));
    let chunks = futures::stream::iter(
        (0..20).map(|_| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b' '; 8 * 1024])))),
    );
    let chunked = http::Request::post("/post")
        .header("host", "test")
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(chunked).await.unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_at_the_deadline() {
    let server = start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /post HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer: {}", String::from_utf8_lossy(&answer));
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn server_streams_are_newline_delimited_json() {
    let server = start().await;
    let addr = server.addr;
    create(addr, "t").await;
    let answer = call(addr, "GET", "/events?from_position=0", "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = answer
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["result"]["event"]["position"], "1");
    assert_eq!(lines[0]["result"]["event"]["eventType"], "EVENT_TYPE_POST_CREATED");
    assert_eq!(
        lines[2],
        json!({"error": {"code": 14, "message": "event store unavailable: gone"}})
    );

    // A stream refused before it began is an ordinary HTTP error.
    call(addr, "GET", "/post/0/events", "").await.error(400, 3);
    let answer = call(addr, "GET", "/post/1/events", "").await;
    assert_eq!(answer.body.iter().filter(|b| **b == b'\n').count(), 1);

    // A live stream: lines arrive while the response is still open.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let watch = http::Request::get("/posts:watch?post_id=1")
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(watch).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let line: Value = serde_json::from_slice(frame.data_ref().unwrap()).unwrap();
    assert_eq!(line["result"]["post"]["postId"], "1");
    assert_eq!(line["result"]["eventType"], "EVENT_TYPE_POST_UPDATED");
}

/// One gRPC-Web frame: flag byte, 4-byte length, payload.
fn grpc_web_frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flag);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// Splits a gRPC-Web response body into messages and the trailer block.
fn grpc_web_frames(mut body: Bytes) -> (Vec<Bytes>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers = String::from_utf8(payload.to_vec()).unwrap();
        } else {
            messages.push(payload);
        }
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_over_http1_serves_unary_and_streaming_calls() {
    let server = start().await;
    let addr = server.addr;
    create(addr, "t").await;
    let web = |path: &str, message: Vec<u8>| {
        http::Request::post(path)
            .header("host", "test")
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(Full::new(grpc_web_frame(0, &message)))
            .unwrap()
    };
    let request = GetPostRequest {
        post_id: 1,
        ..Default::default()
    };
    let answer = send(addr, web("/posts.v1.PostQuery/GetPost", request.encode_to_vec())).await;
    assert_eq!(answer.status, 200);
    let (messages, trailers) = grpc_web_frames(answer.body);
    assert_eq!(
        GetPostResponse::decode(messages[0].clone())
            .unwrap()
            .post
            .unwrap()
            .title,
        "t"
    );
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    let request = GetPostRequest {
        post_id: 9,
        ..Default::default()
    };
    let answer = send(addr, web("/posts.v1.PostQuery/GetPost", request.encode_to_vec())).await;
    assert_eq!(answer.header("grpc-status"), Some("5"), "{:?}", answer.headers);

    // WatchPosts: the first message arrives as a frame of an open response.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = WatchPostsRequest {
        post_id: Some(1),
        author_name: None,
    };
    let response = sender
        .send_request(web("/posts.v1.PostQuery/WatchPosts", request.encode_to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc-web+proto");
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (messages, _) = grpc_web_frames(frame.into_data().unwrap());
    let change = WatchPostsResponse::decode(messages[0].clone()).unwrap();
    assert_eq!(change.post.unwrap().post_id, 1);
}

#[tokio::test]
async fn grpc_still_answers_on_the_same_port() {
    let server = start().await;
    create(server.addr, "t").await;
    let mut client = post_query_client::PostQueryClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let post = client
        .get_post(GetPostRequest {
            post_id: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .post
        .unwrap();
    assert_eq!(post.title, "t");
}

#[test]
fn the_route_table_lists_every_binding() {
    let gateway = GatewayLayer::builder(&[postmesh_proto::FILE_DESCRIPTOR_SET])
        .service("posts.v1.PostQuery")
        .build()
        .unwrap();
    let routes: Vec<String> = gateway.routes().iter().map(ToString::to_string).collect();
    assert_eq!(
        routes,
        [
            "GET /post/{post_id} -> posts.v1.PostQuery.GetPost",
            "GET /posts -> posts.v1.PostQuery.ListPosts",
            "GET /post/{post_id}/history -> posts.v1.PostQuery.GetPostHistory",
            "GET /posts:watch -> posts.v1.PostQuery.WatchPosts",
        ]
    );
}
