//! The dead-letter stream: list, replay and purge — the equivalents of the
//! seed's failed-job list, re-publish and remove.

use std::collections::HashMap;

use postmesh_events::{
    dlq::{self, DeadLetter},
    entry,
    topology::{Action, StreamArgs},
};
use redis::{aio::ConnectionManager, streams::StreamRangeReply, AsyncCommands};

use crate::{
    config::{Config, DlqAction, Selection},
    consumer::connect,
};

/// Every dead letter, oldest first.
pub async fn list(conn: &mut ConnectionManager, dlq_stream: &str) -> redis::RedisResult<Vec<DeadLetter>> {
    let reply: StreamRangeReply = conn.xrange_all(dlq_stream).await?;
    Ok(entry::from_ids(dlq_stream, reply.ids)
        .into_iter()
        .map(DeadLetter::from)
        .collect())
}

fn select(all: Vec<DeadLetter>, selection: &Selection) -> anyhow::Result<Vec<DeadLetter>> {
    if selection.all {
        return Ok(all);
    }
    let mut by_id: HashMap<String, DeadLetter> = all.into_iter().map(|d| (d.id.clone(), d)).collect();
    selection
        .ids
        .iter()
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| anyhow::anyhow!("no dead letter with id {id}"))
        })
        .collect()
}

/// Puts the selected dead letters back on the stream they came from, with the
/// relay's fields stripped (so attempts start again), and removes them from
/// the dead-letter stream. Returns how many were replayed.
pub async fn replay(streams: &StreamArgs, selection: &Selection) -> anyhow::Result<usize> {
    let mut main = connect(&streams.redis_url, std::time::Duration::ZERO).await?;
    let dlq = streams.dlq_stream();
    let chosen = select(list(&mut main, &dlq).await?, selection)?;
    let routes = streams.routes();
    let mut others: HashMap<String, ConnectionManager> = HashMap::new();
    for letter in &chosen {
        let target = if letter.source_stream.is_empty() {
            streams.route(Action::Create).stream
        } else {
            letter.source_stream.clone()
        };
        let url = routes
            .iter()
            .find(|r| r.stream == target)
            .map(|r| r.redis_url.clone())
            .unwrap_or_else(|| streams.redis_url.clone());
        let cmd = dlq::replay_xadd(&target, letter);
        if url == streams.redis_url {
            cmd.query_async::<String>(&mut main).await?;
        } else {
            if !others.contains_key(&url) {
                others.insert(url.clone(), connect(&url, std::time::Duration::ZERO).await?);
            }
            if let Some(conn) = others.get_mut(&url) {
                cmd.query_async::<String>(conn).await?;
            }
        }
        main.xdel::<_, _, i64>(&dlq, &[&letter.id]).await?;
    }
    Ok(chosen.len())
}

/// Deletes the selected dead letters; returns how many.
pub async fn purge(streams: &StreamArgs, selection: &Selection) -> anyhow::Result<usize> {
    let mut main = connect(&streams.redis_url, std::time::Duration::ZERO).await?;
    let dlq = streams.dlq_stream();
    let chosen = select(list(&mut main, &dlq).await?, selection)?;
    if !chosen.is_empty() {
        let ids: Vec<&str> = chosen.iter().map(|d| d.id.as_str()).collect();
        main.xdel::<_, _, i64>(&dlq, &ids).await?;
    }
    Ok(chosen.len())
}

/// `event-relay dlq ...`.
pub async fn run_cli(config: &Config, action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List => {
            let mut main = connect(&config.streams.redis_url, std::time::Duration::ZERO).await?;
            let letters = list(&mut main, &config.streams.dlq_stream()).await?;
            println!(
                "{:<18} {:>8} {:>7} {:<7} {:>8} {:<25} ERROR",
                "ID", "POST_ID", "VERSION", "ACTION", "ATTEMPTS", "FAILED_AT"
            );
            for d in &letters {
                println!(
                    "{:<18} {:>8} {:>7} {:<7} {:>8} {:<25} {}",
                    d.id, d.post_id, d.version, d.action, d.attempts, d.failed_at, d.error
                );
            }
            println!("{} dead letter(s) in {}", letters.len(), config.streams.dlq_stream());
        }
        DlqAction::Replay(selection) => {
            let n = replay(&config.streams, &selection).await?;
            println!("replayed {n} dead letter(s)");
        }
        DlqAction::Purge(selection) => {
            let n = purge(&config.streams, &selection).await?;
            println!("purged {n} dead letter(s)");
        }
    }
    Ok(())
}
