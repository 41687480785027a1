//! What the relay's catch-up costs on a complete read model (#14): the calls
//! one `CatchUp::check` makes when nothing is missing (event-relay/src/
//! catchup.rs), timed over the seeded model.
//!
//! A check on a complete model is `GetHead`, `checkpoint()`, `try_lease`,
//! `count_positions(checkpoint, target)` over the positions one interval
//! brought, and `advance_checkpoint(checkpoint, target)`. The count's cost
//! grows with the positions in its range, so the model is first given one
//! interval's worth of them: `WINDOW` more versions of the seeded posts at
//! positions far above the log's (so the live relay's own checks never
//! reach them), with the checkpoint just below them. Each pass then makes
//! the check's store calls on that range and, untimed, moves the checkpoint
//! back for the next pass; the checkpoint the model had is restored at the
//! end. `GetHead` is timed against the mesh's command-svc.

use std::time::{Duration, Instant};

use postmesh_proto::v1::{event_store_client::EventStoreClient, EventType, GetHeadRequest, Post, PostEvent};
use postmesh_read_model::{ReadModelStore, ReadStore};
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::{
    cpu::CpuMeter,
    progress,
    stats::{round, Samples},
};

/// The relay's default catch-up interval (RELAY_CATCHUP_INTERVAL_MS).
const INTERVAL: Duration = Duration::from_secs(5);
/// The command rate assumed for one interval's positions.
const EVENTS_PER_S: u64 = 5_000;
/// Positions one default interval brings at that rate: the count's range.
const WINDOW: i64 = (INTERVAL.as_secs() * EVENTS_PER_S) as i64;
/// Where the bench's positions start: far above any log a bench writes.
const BASE: i64 = 1_000_000_000_000;
/// A lease of the bench's own (the live relay holds `catch-up`).
const LEASE: &str = "catch-up-bench";
/// The relay's lease lasts three intervals.
const TTL: Duration = Duration::from_secs(15);

/// `passes` checks on `store` (which holds `posts` seeded posts from
/// `first_id`), `command` the mesh's command-svc for `GetHead`. Prints the
/// figures and returns them.
pub async fn complete_model(
    store: &ReadStore,
    command: Option<Channel>,
    first_id: i64,
    posts: usize,
    passes: usize,
    cpu: &CpuMeter,
) -> anyhow::Result<Value> {
    let assumption = format!(
        "a check over {WINDOW} positions: one default interval ({} s) at {EVENTS_PER_S} events/s",
        INTERVAL.as_secs()
    );
    progress(&format!("  {assumption}"));
    let posts = posts.max(1) as i64;
    // One interval's positions, as versions 2, 3, ... of the seeded posts.
    let events: Vec<PostEvent> = (0..WINDOW)
        .map(|i| {
            let post_id = first_id + i % posts;
            let version = 2 + i / posts;
            let at = postmesh_read_model::millis_to_timestamp(chrono::Utc::now().timestamp_millis());
            PostEvent {
                position: BASE + 1 + i,
                post_id,
                version,
                event_type: EventType::PostUpdated as i32,
                post: Some(Post {
                    post_id,
                    version,
                    title: format!("seeded post {post_id} for the catch-up"),
                    content: format!("version {version}"),
                    author_name: "seed-catch-up".into(),
                    created_at: Some(at),
                    updated_at: Some(at),
                    deleted: false,
                }),
                occurred_at: Some(at),
                ..PostEvent::default()
            }
        })
        .collect();
    for batch in events.chunks(256) {
        store.apply_batch(batch).await?;
    }
    // The checkpoint just below them (the live one restored at the end).
    let mut live = store.checkpoint().await?;
    for _ in 0..10 {
        if store.advance_checkpoint(live, BASE).await? {
            break;
        }
        live = store.checkpoint().await?;
    }
    anyhow::ensure!(
        store.checkpoint().await? == BASE,
        "the live relay keeps moving the checkpoint"
    );

    let mut client = command.map(EventStoreClient::new);
    let mut head_error = None;
    let mut head = Samples::default();
    let mut check = Samples::default();
    let mut whole = Samples::default();
    let mut counted = 0;
    let started = Instant::now();
    let at = cpu.snapshot();
    for _ in 0..passes {
        let pass = Instant::now();
        if let Some(c) = client.as_mut() {
            match c.get_head(GetHeadRequest {}).await {
                Ok(_) => head.push(pass.elapsed()),
                Err(status) => {
                    head.errors += 1;
                    head_error = Some(status.message().to_owned());
                }
            }
        }
        let calls = Instant::now();
        let checkpoint = store.checkpoint().await?;
        let leased = store.try_lease(LEASE, "postmesh-bench", TTL).await?;
        counted = store.count_positions(checkpoint, checkpoint + WINDOW).await?;
        let moved = store.advance_checkpoint(checkpoint, checkpoint + WINDOW).await?;
        check.push(calls.elapsed());
        whole.push(pass.elapsed());
        anyhow::ensure!(leased && moved, "the bench's lease or checkpoint was taken");
        // Untimed: back below the range for the next pass.
        store.advance_checkpoint(checkpoint + WINDOW, checkpoint).await?;
    }
    let cores = cpu.cores_since(&at);
    head.elapsed = started.elapsed();
    check.elapsed = head.elapsed;
    whole.elapsed = head.elapsed;
    store.advance_checkpoint(BASE, live).await?;

    let interval_ms = INTERVAL.as_secs_f64() * 1000.0;
    // Percent of one core per interval, three decimals.
    let percent = |ms: f64| (ms / interval_ms * 100.0 * 1000.0).round() / 1000.0;
    let share = |s: &mut Samples| {
        json!({
            "p50_ms": round(s.quantile_ms(0.50)),
            "p99_ms": round(s.quantile_ms(0.99)),
            "percent_of_one_core_per_interval_p50": percent(s.quantile_ms(0.50)),
            "percent_of_one_core_per_interval_p99": percent(s.quantile_ms(0.99)),
        })
    };
    let store_calls = share(&mut check);
    progress(&format!(
        "  store calls (checkpoint, try_lease, count_positions over {counted} positions, advance_checkpoint): {store_calls}"
    ));
    let get_head = if client.is_none() {
        progress("  GetHead: no command-svc endpoint here, not timed");
        Value::Null
    } else if head.count() == 0 {
        let why = head_error.unwrap_or_default();
        progress(&format!("  GetHead: failed ({why}), not timed"));
        json!({ "error": why })
    } else {
        let figures = share(&mut head);
        progress(&format!("  GetHead: {figures}"));
        figures
    };
    let pass = share(&mut whole);
    progress(&format!(
        "  one check per {} s: {pass} (wall time, an upper bound on CPU; CPU over the passes {cores}, untimed checkpoint resets included)",
        INTERVAL.as_secs()
    ));
    Ok(json!({
        "assumption": assumption,
        "passes": passes,
        "positions_counted": counted,
        "store_calls": store_calls,
        "get_head": get_head,
        "check": pass,
        "cpu_cores_during_passes": cores,
    }))
}
