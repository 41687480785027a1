//! `postmesh-bench`: drives a running postmesh over gRPC and prints one JSON
//! line of figures, each beside its ceiling measured on the same machine in
//! the same run, with the ratio and whether the target was met.
//!
//! It does not start anything: `scripts/bench.sh` builds release binaries,
//! starts the servers and the three services on fresh names, and runs this.
//! A benchmark never fails: the exit status is 0 whenever the figures were
//! measured, whatever they are.

mod catchup;
mod ceilings;
mod cpu;
mod drain;
mod phases;
mod readstore;
mod stats;
mod workload;

use std::{sync::Arc, time::Duration};

use clap::Parser;
use serde_json::{json, Value};
use stats::{against, round, Samples};
use workload::Mix;

/// Benchmark a running postmesh mesh.
#[derive(Parser, Debug)]
#[command(name = "postmesh-bench", version)]
struct Args {
    /// command-svc gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    command: String,
    /// query-svc gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    query: String,
    /// The Redis the mesh uses.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The stream command-svc publishes to and event-relay consumes.
    #[arg(long, default_value = "posts.events")]
    stream: String,
    /// The relay's consumer group.
    #[arg(long, default_value = "projector")]
    group: String,
    /// A database on the same MariaDB for the raw transaction ceiling (emptied of nothing: use a fresh one).
    #[arg(long)]
    raw_database_url: String,
    /// Another fresh database for command-svc's store without gRPC.
    #[arg(long)]
    direct_database_url: Option<String>,
    /// The MongoDB/FerretDB of the read model (the raw upsert ceiling uses a scratch database on it).
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    mongodb_url: String,
    /// Prefix of scratch names (stream, database) for the ceilings.
    #[arg(long, default_value = "bench_scratch")]
    scratch: String,
    /// The read model's MongoDB database (for the point-read diagnostics).
    #[arg(long, default_value = "posts")]
    read_model_database: String,
    /// The mesh's read store (READ_STORE_URL). A `sqlite://` one gets the
    /// SQLite figures of #18 (its raw ceiling straight through sea-orm);
    /// unset or `mongodb://`: the MongoDB ones, at --mongodb-url.
    #[arg(long)]
    read_store_url: Option<String>,
    /// Posts seeded straight into the read model before the ListPosts
    /// phases over many posts (0 skips them).
    #[arg(long, default_value_t = 100_000)]
    list_posts: usize,
    /// Target: drain events per second on SQLite.
    #[arg(long, default_value_t = 20_000.0)]
    target_drain_per_s: f64,
    /// Target: ListPosts throughput / GetPost's.
    #[arg(long, default_value_t = 0.3)]
    target_list_vs_get: f64,
    /// Drop the read model's database when done (bench.sh's is this run's own).
    #[arg(long)]
    drop_read_model: bool,
    /// FerretDB's SQLite directory: when given, the `_id` lookups of the read
    /// model and of the raw ceiling get the SQLite index FerretDB 1.24 fails
    /// to use (see ceilings::ferretdb_id_index).
    #[arg(long)]
    ferretdb_sqlite_dir: Option<String>,
    /// Other processes whose CPU time each phase reports, as NAME=PID
    /// (repeatable; bench.sh passes mariadbd, redis-server and ferretdb).
    #[arg(long)]
    server_pid: Vec<String>,
    /// Commands per second of the low-rate projection-lag diagnostic.
    #[arg(long, default_value_t = 100.0)]
    low_rate: f64,
    /// command-svc's pid, for its peak RSS.
    #[arg(long)]
    command_pid: Option<u32>,
    /// query-svc's pid, for its peak RSS.
    #[arg(long)]
    query_pid: Option<u32>,
    /// event-relay's pid, for its peak RSS and to pause it while the backlog is built.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// A command-svc on the embedded SQLite event store (its commands phases
    /// run after MariaDB's); bench.sh starts one.
    #[arg(long)]
    sqlite_command: Option<String>,
    /// A fresh SQLite file beside that command-svc's, for the raw ceiling of
    /// the group committer's batched statements.
    #[arg(long)]
    sqlite_raw_database_url: Option<String>,
    /// The JSON line of the cqrs-es + mysql-es peer (../shared/peers/cqrs-es),
    /// run by bench.sh on the same MariaDB just before this.
    #[arg(long)]
    peer_json: Option<String>,
    /// Target: SQLite commands per second at the bench's concurrency.
    #[arg(long, default_value_t = 10_000.0)]
    target_sqlite_per_s: f64,
    /// Target: SQLite commands / the raw batched statements on SQLite.
    #[arg(long, default_value_t = 0.7)]
    target_sqlite_raw: f64,
    /// Target: MariaDB commands / the cqrs-es peer.
    #[arg(long, default_value_t = 2.0)]
    target_peer: f64,
    /// Requests in flight in closed-loop phases.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of each timed phase (seconds).
    #[arg(long, default_value_t = 10.0)]
    phase_secs: f64,
    /// Command mix in percent.
    #[arg(long, default_value = "create=40,update=50,delete=10")]
    mix: Mix,
    /// Bytes of content per post.
    #[arg(long, default_value_t = 500)]
    content_bytes: usize,
    /// Events in the relay drain backlog.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// Entries for the raw XADD / XREADGROUP ceilings.
    #[arg(long, default_value_t = 100_000)]
    redis_entries: usize,
    /// Target: command throughput / raw one-transaction-per-command ceiling.
    #[arg(long, default_value_t = 1.0)]
    target_commands: f64,
    /// Target: projection lag p99 at half the maximum command rate (ms).
    #[arg(long, default_value_t = 50.0)]
    target_lag_p99_ms: f64,
    /// Target: relay drain / raw upsert ceiling.
    #[arg(long, default_value_t = 0.7)]
    target_relay: f64,
    /// Target: GetPost / bare echo rpc.
    #[arg(long, default_value_t = 0.5)]
    target_get: f64,
    /// Target: GetPost over HTTP/JSON / GetPost over gRPC.
    #[arg(long, default_value_t = 0.5)]
    target_get_http: f64,
    /// Target: peak RSS of each service (MiB).
    #[arg(long, default_value_t = 64.0)]
    target_rss_mib: f64,
}

/// Waits (at most 10 minutes) until the SQLite read model's search index
/// holds every post; returns how long that took.
async fn search_indexed(sqlite: &postmesh_read_model::SqliteStore) -> anyhow::Result<Duration> {
    let waited = std::time::Instant::now();
    while sqlite.unindexed().await? > 0 && waited.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(waited.elapsed())
}

fn progress(message: &str) {
    eprintln!("[bench] {} {message}", chrono::Utc::now().format("%H:%M:%S"));
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown")
        .to_owned();
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": model,
        "mem_gib": round(mem_kib / 1024.0 / 1024.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

/// VmHWM (peak resident set) of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = read(&format!("/proc/{pid}/status"));
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(round(kib / 1024.0))
}

/// CPU milliseconds `process` spent per command, from a phase's `cpu_cores`
/// (cores busy on average, by process) and its command rate.
fn cpu_ms_per_command(cores: &Value, process: &str, rate: f64) -> Option<f64> {
    let busy = cores.get(process)?.as_f64()?;
    (rate > 0.0).then(|| round(busy / rate * 1000.0 * 1000.0) / 1000.0)
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phase = Duration::from_secs_f64(args.phase_secs.max(0.5));
    let c = args.concurrency.max(1);
    let mut watched: Vec<(String, u32)> = args
        .server_pid
        .iter()
        .filter_map(|s| {
            s.split_once('=')
                .and_then(|(n, p)| Some((n.to_owned(), p.parse().ok()?)))
        })
        .collect();
    for (name, pid) in [
        ("command-svc", args.command_pid),
        ("query-svc", args.query_pid),
        ("event-relay", args.relay_pid),
    ] {
        if let Some(pid) = pid {
            watched.push((name.to_owned(), pid));
        }
    }
    let cpu = cpu::CpuMeter::new(watched);

    // Ceilings first, while the mesh is idle.
    progress("ceiling: bare tonic echo rpc");
    let (echo_addr, echo_guard) = ceilings::echo_server()?;
    let at = cpu.snapshot();
    let mut echo = ceilings::echo(echo_addr, c, phase).await?;
    let echo_cpu = cpu.cores_since(&at);
    drop(echo_guard);
    progress(&format!("  {}", echo.figures()));

    progress("ceiling: raw database transactions");
    let db = ceilings::prepare_database(&args.raw_database_url, 16).await?;
    let at = cpu.snapshot();
    let mut raw_db = ceilings::raw_database(db, c, phase, args.mix, args.content_bytes).await;
    let raw_db_cpu = cpu.cores_since(&at);
    progress(&format!("  {}", raw_db.figures()));
    let mut direct = match &args.direct_database_url {
        Some(url) => {
            progress("command-svc's store without gRPC (diagnostic)");
            Some(ceilings::store_direct(url, c, phase, args.mix, args.content_bytes).await)
        }
        None => None,
    };
    progress("ceiling: raw Redis XADD / XREADGROUP");
    let (xadd, xread) = ceilings::raw_redis(
        &args.redis_url,
        &format!("{}.stream", args.scratch),
        args.redis_entries,
        args.content_bytes,
    )
    .await?;
    let read_store_url = args.read_store_url.clone().unwrap_or_else(|| args.mongodb_url.clone());
    let sqlite = read_store_url.starts_with("sqlite:");
    let (mut upsert_seq, mut upsert_conc, raw_sqlite) = if sqlite {
        progress("ceiling: raw SQLite batches straight through sea-orm");
        let dir = std::env::temp_dir().join(format!("{}_sqlite", args.scratch));
        std::fs::create_dir_all(&dir)?;
        let events = ceilings::backlog(1, (args.backlog as i64 / 5).max(1), 5, args.content_bytes);
        let rate = readstore::raw_sqlite(&dir, &events).await?;
        let _ = std::fs::remove_dir_all(&dir);
        progress(&format!("  {rate:.0} events/s"));
        (Samples::default(), Samples::default(), Some(rate))
    } else {
        progress("ceiling: raw MongoDB upserts");
        let (mut seq, mut conc) = ceilings::raw_mongo(
            &args.mongodb_url,
            &format!("{}_mongo", args.scratch),
            c,
            phase,
            args.content_bytes,
            args.ferretdb_sqlite_dir.as_deref(),
        )
        .await?;
        progress(&format!("  one at a time {}", seq.figures()));
        progress(&format!("  {c} in flight {}", conc.figures()));
        (seq, conc, None)
    };

    // The mesh.
    let command = phases::channel(&args.command).await?;
    let query = phases::channel(&args.query).await?;
    let mut id_index = false;
    if let Some(dir) = &args.ferretdb_sqlite_dir {
        let tables = ceilings::ferretdb_id_index(dir, &args.read_model_database)?;
        progress(&format!("FerretDB workaround: `_id` path index on {tables:?}"));
        id_index = true;
    }
    progress("warm-up (2 s of commands)");
    let _ = phases::commands(command.clone(), c, Duration::from_secs(2), args.mix, args.content_bytes).await;
    drain::wait_idle(&args.redis_url, &args.stream, &args.group, Duration::from_secs(1800)).await?;

    progress("commands: closed loop at full speed");
    let at = cpu.snapshot();
    let (mut cmd, live_ids) = phases::commands(command.clone(), c, phase, args.mix, args.content_bytes).await;
    let cmd_cpu = cpu.cores_since(&at);
    let max_rate = cmd.rate();
    progress(&format!("  {}", cmd.figures()));

    // Diagnostic: the same load with the projection side (relay, FerretDB)
    // frozen, to see how much of the gap to the ceiling is the two cores
    // being shared with it.
    let mut paused_cmd = None;
    let mut paused_cpu = Value::Null;
    if let Some(pid) = args.relay_pid {
        progress("commands with the relay paused (diagnostic)");
        if drain::signal(pid, "-STOP") {
            let at = cpu.snapshot();
            let (samples, _) = phases::commands(command.clone(), c, phase, args.mix, args.content_bytes).await;
            paused_cpu = cpu.cores_since(&at);
            drain::signal(pid, "-CONT");
            progress(&format!("  {}", samples.clone().figures()));
            paused_cmd = Some(samples);
        }
    }
    progress("commands: one in flight (a lone command's latency)");
    let (mut lone, _) = phases::commands(command.clone(), 1, phase, args.mix, args.content_bytes).await;
    progress(&format!("  {}", lone.figures()));
    progress("ceiling: the group committer's batched statements on MariaDB, no gRPC (diagnostic)");
    let mut raw_batched_db = match &args.direct_database_url {
        Some(url) => Some(ceilings::raw_batched(url, c, phase, args.mix, args.content_bytes).await),
        None => None,
    };
    if let Some(samples) = raw_batched_db.as_mut() {
        progress(&format!("  {}", samples.figures()));
    }

    // The embedded default: command-svc on SQLite.
    let mut sqlite_events = None;
    if let Some(endpoint) = &args.sqlite_command {
        let channel = phases::channel(endpoint).await?;
        // The relay first applies what the MariaDB phases left on its
        // stream: the two cores are the SQLite phase's alone, as they were
        // for its ceiling.
        progress("waiting for the relay to catch up before the SQLite phase");
        drain::wait_idle(&args.redis_url, &args.stream, &args.group, Duration::from_secs(1800)).await?;
        progress("SQLite: commands, closed loop at full speed");
        let _ = phases::commands(channel.clone(), c, Duration::from_secs(1), args.mix, args.content_bytes).await;
        let at = cpu.snapshot();
        let (mut full, _) = phases::commands(channel.clone(), c, phase, args.mix, args.content_bytes).await;
        let full_cpu = cpu.cores_since(&at);
        progress(&format!("  {}", full.figures()));
        progress("SQLite: one in flight");
        let (mut one, _) = phases::commands(channel, 1, phase, args.mix, args.content_bytes).await;
        progress(&format!("  {}", one.figures()));
        let mut raw = match &args.sqlite_raw_database_url {
            Some(url) => {
                progress("SQLite ceiling: the same batched statements, no gRPC");
                let mut raw = ceilings::raw_batched(url, c, phase, args.mix, args.content_bytes).await;
                progress(&format!("  {}", raw.figures()));
                Some(raw)
            }
            None => None,
        };
        let raw_rate = raw.as_ref().map_or(0.0, Samples::rate);
        sqlite_events = Some(json!({
            "commands": merge(full.figures(), json!({
                "target_per_s": args.target_sqlite_per_s,
                "met": full.rate() >= args.target_sqlite_per_s,
                "vs_raw_batched": against(full.rate(), "the group committer's batched statements on SQLite, back to back", raw_rate, args.target_sqlite_raw),
                "cpu_cores": full_cpu,
                "cpu_ms_per_command": cpu_ms_per_command(&full_cpu, "command-svc-sqlite", full.rate()),
                "cpu_ms_per_command_all_processes": cpu_ms_per_command(&full_cpu, "total", full.rate()),
            })),
            "one_in_flight": one.figures(),
            "raw_batched": raw.as_mut().map(Samples::figures),
        }));
    }
    let peer: Option<Value> = args
        .peer_json
        .as_deref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.lines().rev().find_map(|line| serde_json::from_str(line).ok()));
    let peer_rate = peer
        .as_ref()
        .and_then(|p| p.get("commands_per_s"))
        .and_then(Value::as_f64);

    progress("waiting for the relay to catch up");
    let catch_up = drain::wait_idle(&args.redis_url, &args.stream, &args.group, Duration::from_secs(1800)).await?;
    progress(&format!("  caught up after {:.1} s", catch_up.as_secs_f64()));

    progress(&format!(
        "projection lag at half the maximum rate ({:.0}/s)",
        max_rate / 2.0
    ));
    let at = cpu.snapshot();
    let mut lag = phases::projection_lag(
        command.clone(),
        query.clone(),
        max_rate / 2.0,
        c,
        phase,
        args.mix,
        args.content_bytes,
        Duration::from_secs(300),
    )
    .await?;
    let lag_cpu = cpu.cores_since(&at);
    progress(&format!("  lag {} (missed {})", lag.lag.figures(), lag.missed));
    let lag_catch_up = drain::wait_idle(&args.redis_url, &args.stream, &args.group, Duration::from_secs(1800)).await?;

    // Diagnostic: the same measurement at a rate the relay sustains, for the
    // pipeline's own latency (outbox wake-up, XADD, XREADGROUP, apply, notify).
    progress(&format!("projection lag at {:.0}/s (diagnostic)", args.low_rate));
    let mut low_lag = phases::projection_lag(
        command.clone(),
        query.clone(),
        args.low_rate,
        c,
        phase,
        args.mix,
        args.content_bytes,
        Duration::from_secs(60),
    )
    .await?;
    progress(&format!("  lag {} (missed {})", low_lag.lag.figures(), low_lag.missed));
    drain::wait_idle(&args.redis_url, &args.stream, &args.group, Duration::from_secs(1800)).await?;

    progress("GetPost");
    let ids = Arc::new(live_ids);
    let at = cpu.snapshot();
    let mut get = phases::get_post(query.clone(), ids.clone(), c, phase).await;
    let get_cpu = cpu.cores_since(&at);
    progress(&format!("  {}", get.figures()));
    // The same reads over HTTP/JSON right after, on the same port: the
    // ratio is what the JSON mapping (and HTTP/1.1) costs.
    progress("GetPost over HTTP/JSON");
    let at = cpu.snapshot();
    let mut get_http = phases::get_post_http(&args.query, ids.clone(), c, phase).await;
    let get_http_cpu = cpu.cores_since(&at);
    progress(&format!("  {}", get_http.figures()));
    progress("ListPosts");
    let at = cpu.snapshot();
    let mut list = phases::list_posts(query.clone(), c, phase).await;
    let list_cpu = cpu.cores_since(&at);
    progress(&format!("  {}", list.figures()));

    progress(&format!("relay drain of {} events", args.backlog));
    let at = cpu.snapshot();
    let drained = drain::relay_drain(
        &args.redis_url,
        &args.stream,
        &args.group,
        args.relay_pid,
        args.backlog,
        args.content_bytes,
        Duration::from_secs(1800),
    )
    .await?;
    let drain_cpu = cpu.cores_since(&at);
    progress(&format!(
        "  drained {} events in {:.1} s",
        drained.events,
        drained.elapsed.as_secs_f64()
    ));
    // SQLite: the search index follows the model behind the relay's writes
    // (read-model/src/sqlite/indexer.rs); how long after the drain it has
    // every post, and the drain's rate counting that time too.
    let mut search_index_after = None;
    if sqlite {
        let store = postmesh_read_model::ReadStore::connect(&read_store_url, &args.read_model_database).await?;
        if let Some(sqlite) = store.as_sqlite() {
            let waited = search_indexed(sqlite).await?;
            search_index_after = Some(waited);
            progress(&format!(
                "  the search index had every post {:.1} s after the drain",
                waited.as_secs_f64()
            ));
        }
    }
    let (mut read_by_id, mut read_by_post_id, posts_after_drain) = if sqlite {
        (Samples::default(), Samples::default(), 0)
    } else {
        progress("read-model point reads by _id and by post_id (diagnostic)");
        let sample_ids: Vec<i64> = ids.iter().take(200).copied().collect();
        ceilings::point_reads(&args.mongodb_url, &args.read_model_database, &sample_ids, 200).await?
    };

    let mut many = Value::Null;
    let mut catchup_check = Value::Null;
    if args.list_posts > 0 {
        progress(&format!(
            "seeding {} posts straight into the read model",
            args.list_posts
        ));
        let store = postmesh_read_model::ReadStore::connect(&read_store_url, &args.read_model_database).await?;
        let first_id = readstore::seed_first_id();
        let seeded = readstore::seed(&store, first_id, args.list_posts, 200).await?;
        progress(&format!("  seeded in {:.1} s", seeded.as_secs_f64()));
        // Listed at rest, as the figures mean a model of 100,000 posts, not
        // one being indexed: the index's own catching up is the drain's figure.
        let mut index_seconds = None;
        if let Some(sqlite) = store.as_sqlite() {
            let waited = search_indexed(sqlite).await?;
            index_seconds = Some(round(waited.as_secs_f64()));
            progress(&format!(
                "  the search index had every post {:.1} s later",
                waited.as_secs_f64()
            ));
        }
        progress(&format!("ListPosts over {}+ posts", args.list_posts));
        let list_phase = (phase / 2).max(Duration::from_secs(1));
        let (phases, list_rate) = readstore::list_phases(query.clone(), c, list_phase).await;
        progress("catch-up checks on the complete model (200 passes)");
        // A store too slow for the phase (FerretDB's scans) is a figure, not a failed run.
        catchup_check =
            match catchup::complete_model(&store, Some(command.clone()), first_id, args.list_posts, 200, &cpu).await {
                Ok(figures) => figures,
                Err(error) => {
                    progress(&format!("  the catch-up checks failed: {error:#}"));
                    json!({ "error": format!("{error:#}") })
                }
            };
        many = merge(
            phases,
            json!({
                "posts": args.list_posts,
                "seed_seconds": round(seeded.as_secs_f64()),
                "search_index_seconds_after_seed": index_seconds,
                "vs_get_post": against(list_rate, "GetPost, same run", get.rate(), args.target_list_vs_get),
            }),
        );
    }

    let mut rss_json = serde_json::Map::new();
    let mut rss_met = true;
    for (name, pid) in [
        ("command-svc", args.command_pid),
        ("query-svc", args.query_pid),
        ("event-relay", args.relay_pid),
    ] {
        let mib = pid.and_then(peak_rss_mib);
        if let Some(mib) = mib {
            rss_met &= mib < args.target_rss_mib;
        }
        rss_json.insert(name.to_owned(), json!(mib));
    }

    let upsert_ceiling = upsert_seq.rate().max(upsert_conc.rate());
    let lag_p99 = lag.lag.quantile_ms(0.99);
    let figures = |s: &mut Samples| s.figures();
    let report = json!({
        "machine": machine(),
        "settings": {
            "concurrency": c,
            "phase_secs": args.phase_secs,
            "mix": args.mix.to_string(),
            "content_bytes": args.content_bytes,
            "backlog": args.backlog,
            "ferretdb_id_index_workaround": id_index,
        },
        "commands": merge(figures(&mut cmd), json!({
            "vs_raw_db": against(cmd.rate(), "raw MariaDB transaction (same statements, same mix)", raw_db.rate(), args.target_commands),
            "vs_raw_xadd": against(cmd.rate(), "raw Redis XADD, pipelines of 500", xadd, 1.0),
            "vs_peer_cqrs_es": peer_rate.map(|rate| against(cmd.rate(), "cqrs-es 0.5 + mysql-es, same MariaDB, in process", rate, args.target_peer)),
            "cpu_cores": cmd_cpu,
            "cpu_ms_per_command": cpu_ms_per_command(&cmd_cpu, "command-svc", cmd.rate()),
            "cpu_ms_per_command_all_processes": cpu_ms_per_command(&cmd_cpu, "total", cmd.rate()),
            "one_in_flight": lone.figures(),
        })),
        "sqlite_event_store": sqlite_events,
        "peer_cqrs_es": peer,
        "projection_lag": merge(figures(&mut lag.lag), json!({
            "command_rate_per_s": round(lag.commands.rate()),
            "target_rate_per_s": round(max_rate / 2.0),
            "command_p99_ms": round(lag.commands.quantile_ms(0.99)),
            "missed": lag.missed,
            "seen_before_ack": lag.before_ack,
            "relay_catch_up_before_s": round(catch_up.as_secs_f64()),
            "relay_catch_up_after_s": round(lag_catch_up.as_secs_f64()),
            "target_p99_ms": args.target_lag_p99_ms,
            "met": lag.lag.count() > 0 && lag_p99 < args.target_lag_p99_ms,
            "cpu_cores": lag_cpu,
        })),
        "relay_drain": {
            "events": drained.events,
            "seconds": round(drained.elapsed.as_secs_f64()),
            "per_s": round(drained.rate()),
            "relay_paused_while_filling": drained.relay_paused,
            "search_index_complete_after_s": search_index_after.map(|d| round(d.as_secs_f64())),
            "per_s_search_index_included": search_index_after
                .map(|d| round(drained.events as f64 / (drained.elapsed + d).as_secs_f64())),
            "read_store": if sqlite { "sqlite" } else { "mongodb (FerretDB here: the compatibility stand-in)" },
            "target_per_s": if sqlite { json!(args.target_drain_per_s) } else { Value::Null },
            "met_per_s": sqlite.then(|| drained.rate() >= args.target_drain_per_s),
            "vs_raw_sqlite": raw_sqlite.map(|raw| against(drained.rate(), "raw SQLite: the same batched inserts and upserts straight through sea-orm, 256 events a transaction", raw, args.target_relay)),
            "vs_raw_upsert": (!sqlite).then(|| against(drained.rate(), "raw MongoDB upsert by _id (best of 1 and N in flight)", upsert_ceiling, args.target_relay)),
            "vs_raw_upsert_one_in_flight": (!sqlite).then(|| against(drained.rate(), "raw MongoDB upsert by _id, one at a time", upsert_seq.rate(), args.target_relay)),
            "vs_raw_xreadgroup": against(drained.rate(), "raw Redis XREADGROUP+XACK, batches of 256", xread, 1.0),
            "cpu_cores": drain_cpu,
        },
        "get_post": merge(figures(&mut get), json!({
            "vs_echo": against(get.rate(), "bare tonic Health/Check", echo.rate(), args.target_get),
            "cpu_cores": get_cpu,
        })),
        "get_post_http": merge(figures(&mut get_http), json!({
            "vs_grpc": against(get_http.rate(), "gRPC GetPost, same run", get.rate(), args.target_get_http),
            "cpu_cores": get_http_cpu,
        })),
        "list_posts": merge(figures(&mut list), json!({
            "vs_echo": against(list.rate(), "bare tonic Health/Check", echo.rate(), args.target_get),
            "vs_get_post": against(list.rate(), "GetPost, same run", get.rate(), args.target_list_vs_get),
            "cpu_cores": list_cpu,
        })),
        "list_posts_many": many,
        "catch_up_check_complete_model": catchup_check,
        "peak_rss_mib": merge(Value::Object(rss_json), json!({
            "target_mib": args.target_rss_mib,
            "met": rss_met,
        })),
        "diagnostics": {
            "store_without_grpc": direct.as_mut().map(figures),
            "raw_batched_mariadb": raw_batched_db.as_mut().map(figures),
            "commands_with_relay_paused": paused_cmd.as_mut().map(figures),
            "commands_with_relay_paused_cpu_cores": paused_cpu,
            "projection_lag_at_low_rate": merge(figures(&mut low_lag.lag), json!({
                "command_rate_per_s": round(low_lag.commands.rate()),
                "missed": low_lag.missed,
            })),
            "read_model_posts_after_drain": posts_after_drain,
            "point_read_by_string_id": figures(&mut read_by_id),
            "point_read_by_post_id_filter": figures(&mut read_by_post_id),
        },
        "ceilings": {
            "raw_db_tx": merge(figures(&mut raw_db), json!({ "cpu_cores": raw_db_cpu })),
            "raw_redis_xadd_per_s": round(xadd),
            "raw_redis_xreadgroup_per_s": round(xread),
            "raw_upsert_one_in_flight": (!sqlite).then(|| figures(&mut upsert_seq)),
            "raw_upsert_concurrent": (!sqlite).then(|| figures(&mut upsert_conc)),
            "raw_sqlite_events_per_s": raw_sqlite.map(round),
            "echo_rpc": merge(figures(&mut echo), json!({ "cpu_cores": echo_cpu })),
        },
    });
    println!("{report}");
    if args.drop_read_model && !sqlite {
        if let Ok(client) = mongodb::Client::with_uri_str(&args.mongodb_url).await {
            let _ = client.database(&args.read_model_database).drop().await;
        }
    }
    Ok(())
}
