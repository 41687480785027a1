//! The phases that drive the mesh itself over gRPC.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use postmesh_proto::v1::{
    post_command_client::PostCommandClient, post_query_client::PostQueryClient, CreatePostRequest, DeletePostRequest,
    GetPostRequest, ListPostsRequest, UpdatePostRequest, WatchPostsRequest,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tonic::transport::Channel;

use crate::{
    ceilings::closed_loop,
    stats::Samples,
    workload::{content, title, Mix, Op, Owned},
};

/// One HTTP/2 connection to `endpoint`, as a long-lived client keeps.
pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// Sends `op` for `owned`; the answer's (post_id, version).
async fn send(
    client: &mut PostCommandClient<Channel>,
    op: Op,
    owned: &Owned,
    worker: usize,
    seq: u64,
    content_bytes: usize,
) -> Result<(i64, i64), tonic::Status> {
    let reply = match op {
        Op::Create => {
            let r = client
                .create_post(CreatePostRequest {
                    title: title(worker, seq),
                    content: content(content_bytes, seq),
                    author_name: format!("bench-{}", worker % 8),
                    idempotency_key: String::new(),
                })
                .await?
                .into_inner();
            (r.post_id, r.version)
        }
        Op::Update(i) => {
            let r = client
                .update_post(UpdatePostRequest {
                    post_id: owned.posts[i].0,
                    expected_version: owned.posts[i].1,
                    title: Some(title(worker, seq)),
                    content: Some(content(content_bytes, seq)),
                    author_name: None,
                    idempotency_key: String::new(),
                })
                .await?
                .into_inner();
            (r.post_id, r.version)
        }
        Op::Delete(i) => {
            let r = client
                .delete_post(DeletePostRequest {
                    post_id: owned.posts[i].0,
                    expected_version: owned.posts[i].1,
                    idempotency_key: String::new(),
                })
                .await?
                .into_inner();
            (r.post_id, r.version)
        }
    };
    Ok(reply)
}

/// Closed-loop commands at `concurrency` for `duration`; also returns the
/// ids of the posts created and still live (for the read phases).
pub async fn commands(
    channel: Channel,
    concurrency: usize,
    duration: Duration,
    mix: Mix,
    content_bytes: usize,
) -> (Samples, Vec<i64>) {
    let live = Arc::new(Mutex::new(Vec::new()));
    let samples = closed_loop(concurrency, duration, |n, deadline| {
        let mut client = PostCommandClient::new(channel.clone());
        let live = live.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(7 + n as u64);
            let mut owned = Owned::default();
            let mut samples = Samples::default();
            let mut seq = 0;
            while Instant::now() < deadline {
                seq += 1;
                let op = owned.next(mix, &mut rng);
                let start = Instant::now();
                match send(&mut client, op, &owned, n, seq, content_bytes).await {
                    Ok((post_id, version)) => {
                        samples.push(start.elapsed());
                        owned.done(op, post_id, version);
                    }
                    Err(_) => samples.errors += 1,
                }
            }
            live.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(owned.posts.iter().map(|p| p.0));
            samples
        }
    })
    .await;
    let ids = std::mem::take(&mut *live.lock().unwrap_or_else(|e| e.into_inner()));
    (samples, ids)
}

/// Projection lag: commands at `rate` per second (open loop, spread over
/// `concurrency` workers) while one WatchPosts stream (no filter) records
/// when each (post_id, version) becomes visible. Lag = visible - acknowledged.
#[allow(clippy::too_many_arguments)]
pub async fn projection_lag(
    command: Channel,
    query: Channel,
    rate: f64,
    concurrency: usize,
    duration: Duration,
    mix: Mix,
    content_bytes: usize,
    straggle: Duration,
) -> anyhow::Result<LagReport> {
    let seen: Arc<Mutex<HashMap<(i64, i64), Instant>>> = Arc::default();
    let mut watch = PostQueryClient::new(query)
        .watch_posts(WatchPostsRequest::default())
        .await?
        .into_inner();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(change)) = watch.message().await {
                if let Some(post) = change.post {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((post.post_id, post.version), Instant::now());
                }
            }
        })
    };
    let acked: Arc<Mutex<HashMap<(i64, i64), Instant>>> = Arc::default();
    let next_slot = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let samples = closed_loop(concurrency, duration, |n, deadline| {
        let mut client = PostCommandClient::new(command.clone());
        let acked = acked.clone();
        let next_slot = next_slot.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(99 + n as u64);
            let mut owned = Owned::default();
            let mut samples = Samples::default();
            let mut seq = 0;
            loop {
                let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                let at = started + interval.mul_f64(slot as f64);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                seq += 1;
                let op = owned.next(mix, &mut rng);
                let start = Instant::now();
                match send(&mut client, op, &owned, n, seq, content_bytes).await {
                    Ok((post_id, version)) => {
                        let now = Instant::now();
                        samples.push(now - start);
                        acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert((post_id, version), now);
                        owned.done(op, post_id, version);
                    }
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        }
    })
    .await;
    // Let the last changes arrive: until every acknowledged one was seen, at most `straggle`.
    let settle = Instant::now();
    while settle.elapsed() < straggle {
        let all_seen = {
            let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            acked.keys().all(|k| seen.contains_key(k))
        };
        if all_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let mut lag = Samples::default();
    let mut missed = 0;
    let mut before_ack = 0;
    for (key, acked_at) in &acked {
        match seen.get(key) {
            Some(seen_at) if seen_at >= acked_at => lag.push(*seen_at - *acked_at),
            Some(_) => {
                before_ack += 1;
                lag.push(Duration::ZERO);
            }
            None => missed += 1,
        }
    }
    lag.elapsed = samples.elapsed;
    Ok(LagReport {
        commands: samples,
        lag,
        missed,
        before_ack,
    })
}

/// What [`projection_lag`] measured.
pub struct LagReport {
    /// The commands sent.
    pub commands: Samples,
    /// Acknowledged-to-visible lag of each change seen.
    pub lag: Samples,
    /// Acknowledged changes never seen on the watch stream.
    pub missed: usize,
    /// Changes the watch delivered before the command's answer arrived.
    pub before_ack: usize,
}

/// GetPost of random live posts, closed loop.
pub async fn get_post(channel: Channel, ids: Arc<Vec<i64>>, concurrency: usize, duration: Duration) -> Samples {
    closed_loop(concurrency, duration, |n, deadline| {
        let mut client = PostQueryClient::new(channel.clone());
        let ids = ids.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(500 + n as u64);
            let mut samples = Samples::default();
            while Instant::now() < deadline && !ids.is_empty() {
                let post_id = ids[rng.random_range(0..ids.len())];
                let start = Instant::now();
                match client
                    .get_post(GetPostRequest {
                        post_id,
                        min_version: 0,
                        include_deleted: true,
                    })
                    .await
                {
                    Ok(_) => samples.push(start.elapsed()),
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        }
    })
    .await
}

/// ListPosts, first pages of 20, half of them filtered by author, closed loop.
pub async fn list_posts(channel: Channel, concurrency: usize, duration: Duration) -> Samples {
    closed_loop(concurrency, duration, |n, deadline| {
        let mut client = PostQueryClient::new(channel.clone());
        async move {
            let mut samples = Samples::default();
            let mut i = 0usize;
            while Instant::now() < deadline {
                i += 1;
                let author_name = if i.is_multiple_of(2) {
                    format!("bench-{}", (n + i) % 8)
                } else {
                    String::new()
                };
                let start = Instant::now();
                match client
                    .list_posts(ListPostsRequest {
                        author_name,
                        page_size: 20,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => samples.push(start.elapsed()),
                    Err(_) => samples.errors += 1,
                }
            }
            samples
        }
    })
    .await
}

/// GetPost over HTTP/JSON (`GET /post/{id}` on query-svc's port, the
/// gateway transcoding into the same gRPC stack): the same ids and
/// concurrency as [`get_post`], one HTTP/1.1 keep-alive connection per
/// worker, each answer parsed as JSON as a client would.
pub async fn get_post_http(endpoint: &str, ids: Arc<Vec<i64>>, concurrency: usize, duration: Duration) -> Samples {
    let authority = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    closed_loop(concurrency, duration, |n, deadline| {
        let ids = ids.clone();
        let authority = authority.clone();
        async move {
            let mut rng = StdRng::seed_from_u64(500 + n as u64);
            let mut samples = Samples::default();
            let mut sender = None;
            while Instant::now() < deadline && !ids.is_empty() {
                if sender.is_none() {
                    sender = http_connect(&authority).await;
                    if sender.is_none() {
                        samples.errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
                let Some(client) = sender.as_mut() else { continue };
                let post_id = ids[rng.random_range(0..ids.len())];
                let request = http::Request::get(format!("/post/{post_id}?include_deleted=true"))
                    .header(http::header::HOST, authority.as_str())
                    .body(http_body_util::Empty::<bytes::Bytes>::new());
                let Ok(request) = request else { continue };
                let start = Instant::now();
                let answer = async {
                    let response = client.send_request(request).await.ok()?;
                    let ok = response.status().is_success();
                    let body = http_body_util::BodyExt::collect(response.into_body()).await.ok()?;
                    let json: serde_json::Value = serde_json::from_slice(&body.to_bytes()).ok()?;
                    (ok && json.get("post").is_some()).then_some(())
                }
                .await;
                match answer {
                    Some(()) => samples.push(start.elapsed()),
                    None => {
                        samples.errors += 1;
                        sender = None;
                    }
                }
            }
            samples
        }
    })
    .await
}

type HttpSender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

async fn http_connect(authority: &str) -> Option<HttpSender> {
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}
