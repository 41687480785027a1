//! A steady command load for fault tests, and the checks that the event store
//! agrees with what the load was told.
//!
//! Each worker owns its posts and sends one command at a time (create, update
//! or delete, with the exact `expected_version` it knows), every command with
//! its own idempotency key. A command that fails with a transient code
//! (UNAVAILABLE, a transport error, a deadline) is retried with the same key
//! until it is answered, so a command whose first attempt committed but whose
//! answer was lost is not applied twice. Every failed attempt is recorded
//! with its code, so a scenario can say which codes it allows.
//!
//! At the end, [`Ledger::check_events`] compares the acknowledged answers
//! with the event store event by event, and [`check_event_store`] looks into
//! the database itself: no outbox row left, every head row at its last
//! event's version, every idempotency key pointing at an event.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use postmesh_proto::v1::{
    post_command_client::PostCommandClient, CreatePostRequest, DeletePostRequest, EventType, PostEvent,
    UpdatePostRequest,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::{sync::watch, task::JoinHandle};
use tonic::{transport::Channel, Code};

/// How hard and how patiently the load pushes.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent workers.
    pub workers: usize,
    /// Each worker sends at most one command per interval.
    pub interval: Duration,
    /// Client deadline of one attempt.
    pub attempt_timeout: Duration,
    /// A command not answered within this (retries included) fails the test.
    pub give_up_after: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            workers: 3,
            interval: Duration::from_millis(40),
            attempt_timeout: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
        }
    }
}

/// Which command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// CreatePost.
    Create,
    /// UpdatePost (title and content).
    Update,
    /// DeletePost.
    Delete,
}

/// One acknowledged command and the answer it got.
#[derive(Clone, Debug)]
pub struct Acked {
    /// Its idempotency key.
    pub key: String,
    /// Which command.
    pub kind: Kind,
    /// The post it created or changed.
    pub post_id: i64,
    /// The version the answer reported.
    pub version: i64,
    /// The title the post has at that version.
    pub title: String,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
}

/// One failed attempt.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Its status code.
    pub code: Code,
    /// Its message.
    pub message: String,
    /// When it failed.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    acked: AtomicU64,
    failures: Mutex<Vec<Failure>>,
    fatal: Mutex<Vec<String>>,
}

/// A running load.
pub struct Load {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<Vec<Acked>>>,
    shared: Arc<Shared>,
    run: String,
}

/// Everything the load was told, once it stopped.
#[derive(Debug)]
pub struct Ledger {
    /// The acknowledged commands.
    pub acked: Vec<Acked>,
    /// Every failed attempt.
    pub failures: Vec<Failure>,
    /// Answers that must never happen (a logic error or a command given up on).
    pub fatal: Vec<String>,
}

/// True for the codes a client retries: the command may or may not have
/// been applied, and the same idempotency key makes retrying safe.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::ResourceExhausted
    )
}

impl Load {
    /// Starts `options.workers` workers sending commands to `endpoint`
    /// (`http://host:port`); the channel reconnects by itself when the server
    /// comes back.
    pub fn start(endpoint: &str, options: LoadOptions) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(options.attempt_timeout)
            .connect_lazy();
        let run = crate::unique("load");
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        let workers = (0..options.workers)
            .map(|n| {
                let worker = Worker {
                    client: PostCommandClient::new(channel.clone()),
                    name: format!("{run}-w{n}"),
                    rng: StdRng::seed_from_u64(rand::random()),
                    options: options.clone(),
                    shared: shared.clone(),
                    posts: Vec::new(),
                    acked: Vec::new(),
                };
                tokio::spawn(worker.run(stop_rx.clone()))
            })
            .collect();
        Self {
            stop,
            workers,
            shared,
            run,
        }
    }

    /// The prefix of every title and key of this load.
    pub fn run_name(&self) -> &str {
        &self.run
    }

    /// Commands acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::SeqCst)
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> Vec<Failure> {
        self.shared.failures.lock().unwrap().clone()
    }

    /// Waits until `more` further commands are acknowledged; false on timeout.
    pub async fn wait_more_acked(&self, more: u64, timeout: Duration) -> bool {
        let target = self.acked() + more;
        crate::wait_until(timeout, || async { self.acked() >= target }).await
    }

    /// Waits until at least `count` failed attempts with `code` were seen since `since`.
    pub async fn wait_failures(&self, code: Code, count: usize, since: Instant, timeout: Duration) -> bool {
        crate::wait_until(timeout, || async {
            self.failures()
                .iter()
                .filter(|f| f.code == code && f.at >= since)
                .count()
                >= count
        })
        .await
    }

    /// Stops sending: each worker finishes (and retries until answered) the
    /// command it has in hand, then the ledger is returned.
    pub async fn stop(self) -> Ledger {
        self.stop.send_replace(true);
        let mut acked = Vec::new();
        for worker in self.workers {
            acked.extend(worker.await.unwrap());
        }
        let failures = self.shared.failures.lock().unwrap().clone();
        let fatal = self.shared.fatal.lock().unwrap().clone();
        Ledger { acked, failures, fatal }
    }
}

struct Worker {
    client: PostCommandClient<Channel>,
    name: String,
    rng: StdRng,
    options: LoadOptions,
    shared: Arc<Shared>,
    /// (post_id, version) of this worker's live posts.
    posts: Vec<(i64, i64)>,
    acked: Vec<Acked>,
}

enum Planned {
    Create(CreatePostRequest),
    Update(usize, UpdatePostRequest),
    Delete(usize, DeletePostRequest),
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Vec<Acked> {
        let mut ticker = tokio::time::interval(self.options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return self.acked;
            }
            seq += 1;
            let key = format!("{}-{seq}", self.name);
            let title = format!("{} #{seq}", self.name);
            let roll: f64 = self.rng.random();
            let planned = if self.posts.len() < 3 || roll < 0.4 {
                Planned::Create(CreatePostRequest {
                    title: title.clone(),
                    content: format!("content of {title}"),
                    author_name: self.name.clone(),
                    idempotency_key: key.clone(),
                })
            } else {
                let index = self.rng.random_range(0..self.posts.len());
                let (post_id, version) = self.posts[index];
                if roll < 0.9 {
                    Planned::Update(
                        index,
                        UpdatePostRequest {
                            post_id,
                            expected_version: version,
                            title: Some(title.clone()),
                            content: Some(format!("content of {title}")),
                            author_name: None,
                            idempotency_key: key.clone(),
                        },
                    )
                } else {
                    Planned::Delete(
                        index,
                        DeletePostRequest {
                            post_id,
                            expected_version: version,
                            idempotency_key: key.clone(),
                        },
                    )
                }
            };
            self.send(planned, key, title).await;
        }
    }

    async fn send(&mut self, planned: Planned, key: String, title: String) {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(50);
        loop {
            attempts += 1;
            let mut client = self.client.clone();
            let answer = match &planned {
                Planned::Create(req) => client.create_post(req.clone()).await.map(|r| {
                    let r = r.into_inner();
                    (r.post_id, r.version)
                }),
                Planned::Update(_, req) => client.update_post(req.clone()).await.map(|r| {
                    let r = r.into_inner();
                    (r.post_id, r.version)
                }),
                Planned::Delete(_, req) => client.delete_post(req.clone()).await.map(|r| {
                    let r = r.into_inner();
                    (r.post_id, r.version)
                }),
            };
            match answer {
                Ok((post_id, version)) => {
                    let (kind, title) = match &planned {
                        Planned::Create(_) => {
                            self.posts.push((post_id, version));
                            (Kind::Create, title)
                        }
                        Planned::Update(index, _) => {
                            self.posts[*index].1 = version;
                            (Kind::Update, title)
                        }
                        Planned::Delete(index, _) => {
                            let (_, _) = self.posts.swap_remove(*index);
                            (Kind::Delete, String::new())
                        }
                    };
                    self.acked.push(Acked {
                        key,
                        kind,
                        post_id,
                        version,
                        title,
                        attempts,
                    });
                    self.shared.acked.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Err(status) if is_transient(status.code()) && started.elapsed() < self.options.give_up_after => {
                    self.shared.failures.lock().unwrap().push(Failure {
                        code: status.code(),
                        message: status.message().to_owned(),
                        at: Instant::now(),
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(status) => {
                    self.shared.failures.lock().unwrap().push(Failure {
                        code: status.code(),
                        message: status.message().to_owned(),
                        at: Instant::now(),
                    });
                    self.shared.fatal.lock().unwrap().push(format!(
                        "{key} after {attempts} attempt(s): {:?} {}",
                        status.code(),
                        status.message()
                    ));
                    // The post's state is unknown now: stop touching it.
                    match planned {
                        Planned::Update(index, _) | Planned::Delete(index, _) => {
                            self.posts.swap_remove(index);
                        }
                        Planned::Create(_) => {}
                    }
                    return;
                }
            }
        }
    }
}

impl Ledger {
    /// Codes of the failed attempts, with how often each came.
    pub fn failure_codes(&self) -> BTreeMap<String, usize> {
        let mut codes = BTreeMap::new();
        for failure in &self.failures {
            *codes.entry(format!("{:?}", failure.code)).or_insert(0) += 1;
        }
        codes
    }

    /// Commands that needed more than one attempt.
    pub fn retried(&self) -> usize {
        self.acked.iter().filter(|a| a.attempts > 1).count()
    }

    /// Differences between the acknowledged answers and `events` (the whole
    /// event store, which only this load wrote to): every answer has its
    /// event, every event has its answer, each post's versions run 1, 2, 3...
    /// with no gap, and a post's title is the one its last command set.
    pub fn check_events(&self, events: &[PostEvent]) -> Vec<String> {
        let mut problems: Vec<String> = self.fatal.iter().map(|f| format!("fatal answer: {f}")).collect();
        let by_version: HashMap<(i64, i64), &PostEvent> = events.iter().map(|e| ((e.post_id, e.version), e)).collect();
        if by_version.len() != events.len() {
            problems.push(format!(
                "{} events share a (post_id, version)",
                events.len() - by_version.len()
            ));
        }
        let mut answered: HashMap<(i64, i64), &Acked> = HashMap::new();
        for acked in &self.acked {
            if let Some(other) = answered.insert((acked.post_id, acked.version), acked) {
                problems.push(format!(
                    "{} and {} were both answered with post {} version {}",
                    other.key, acked.key, acked.post_id, acked.version
                ));
            }
            match by_version.get(&(acked.post_id, acked.version)) {
                None => problems.push(format!(
                    "{} was acknowledged (post {} v{}) but has no event",
                    acked.key, acked.post_id, acked.version
                )),
                Some(event) => {
                    let post = event.post.as_ref().expect("event carries the post");
                    let want_type = match acked.kind {
                        Kind::Create => EventType::PostCreated,
                        Kind::Update => EventType::PostUpdated,
                        Kind::Delete => EventType::PostDeleted,
                    };
                    if event.event_type() != want_type {
                        problems.push(format!("{}: event type {:?}", acked.key, event.event_type()));
                    }
                    if acked.kind != Kind::Delete && post.title != acked.title {
                        problems.push(format!(
                            "{}: event title {:?} != {:?}",
                            acked.key, post.title, acked.title
                        ));
                    }
                    if acked.kind == Kind::Delete && !post.deleted {
                        problems.push(format!("{}: delete event not flagged deleted", acked.key));
                    }
                }
            }
        }
        for event in events {
            if !answered.contains_key(&(event.post_id, event.version)) {
                problems.push(format!(
                    "event at position {} (post {} v{}) answers no acknowledged command",
                    event.position, event.post_id, event.version
                ));
            }
        }
        let mut versions: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for event in events {
            versions.entry(event.post_id).or_default().push(event.version);
        }
        for (post_id, mut list) in versions {
            list.sort_unstable();
            if list.iter().enumerate().any(|(i, v)| *v != i as i64 + 1) {
                problems.push(format!("post {post_id} has versions {list:?}"));
            }
        }
        problems
    }

    /// Panics with every problem [`check_events`](Self::check_events) finds.
    pub fn assert_matches(&self, events: &[PostEvent]) {
        let problems = self.check_events(events);
        assert!(
            problems.is_empty(),
            "event store and acknowledged answers disagree ({} problems): {:#?}",
            problems.len(),
            problems.iter().take(20).collect::<Vec<_>>()
        );
    }
}

/// Unpublished events in the outbox of the event store at `database_url`.
pub async fn outbox_len(database_url: &str) -> Option<i64> {
    let db = connect(database_url).await?;
    let n = scalar(&db, "SELECT COUNT(*) FROM outbox").await;
    db.close().await.ok();
    n
}

/// Waits until the outbox at `database_url` is empty; false on timeout.
pub async fn wait_outbox_empty(database_url: &str, timeout: Duration) -> bool {
    crate::wait_until(timeout, || async { outbox_len(database_url).await == Some(0) }).await
}

async fn connect(database_url: &str) -> Option<sea_orm::DatabaseConnection> {
    let mut options = sea_orm::ConnectOptions::new(database_url.to_owned());
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(2))
        .sqlx_logging(false);
    sea_orm::Database::connect(options).await.ok()
}

async fn scalar(db: &sea_orm::DatabaseConnection, sql: &str) -> Option<i64> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .ok()??;
    row.try_get_by_index::<i64>(0).ok()
}

/// Looks inside the event store for half-applied commands; returns the problems.
/// `keys` is how many idempotency keys the load used successfully.
pub async fn check_event_store(database_url: &str, keys: usize) -> Vec<String> {
    let Some(db) = connect(database_url).await else {
        return vec![format!("cannot open {database_url}")];
    };
    let checks = [
        ("outbox rows left unpublished", "SELECT COUNT(*) FROM outbox"),
        (
            "head rows not at their last event's version",
            "SELECT COUNT(*) FROM post_streams s WHERE s.version <> \
             (SELECT COALESCE(MAX(e.version), 0) FROM post_events e WHERE e.post_id = s.post_id)",
        ),
        (
            "events of posts without a head row",
            "SELECT COUNT(*) FROM post_events e WHERE NOT EXISTS \
             (SELECT 1 FROM post_streams s WHERE s.post_id = e.post_id)",
        ),
        (
            "idempotency keys pointing at no event",
            "SELECT COUNT(*) FROM idempotency_keys k WHERE NOT EXISTS \
             (SELECT 1 FROM post_events e WHERE e.post_id = k.post_id AND e.version = k.version)",
        ),
        (
            "head rows whose deleted flag differs from their last event",
            "SELECT COUNT(*) FROM post_streams s JOIN post_events e \
             ON e.post_id = s.post_id AND e.version = s.version WHERE e.deleted <> s.deleted OR e.title <> s.title",
        ),
    ];
    let mut problems = Vec::new();
    for (what, sql) in checks {
        match scalar(&db, sql).await {
            Some(0) => {}
            Some(n) => problems.push(format!("{n} {what}")),
            None => problems.push(format!("query failed: {sql}")),
        }
    }
    let events = scalar(&db, "SELECT COUNT(*) FROM post_events").await.unwrap_or(-1);
    let stored_keys = scalar(&db, "SELECT COUNT(*) FROM idempotency_keys").await.unwrap_or(-1);
    if stored_keys != keys as i64 || events != keys as i64 {
        problems.push(format!(
            "{keys} commands acknowledged, {stored_keys} idempotency keys and {events} events stored"
        ));
    }
    db.close().await.ok();
    problems
}
