//! `event-relay rebuild`: replays the whole event store into a fresh staging
//! store and swaps it in, so readers never see a half-built model.
//!
//! The live relay keeps applying to the old model meanwhile. Events it
//! applies after our read are caught up twice: once more into the staging
//! store just before the swap, and once into the swapped-in one right after;
//! applying an event twice is harmless.
//!
//! Those catch-up writes publish no per-post notification, and the swap
//! itself replaces every post at once, so once the swap has been attempted
//! the rebuild publishes a reset notification on the notify channel (after
//! the last catch-up): query-svc empties its post cache on it.

use futures::StreamExt;
use postmesh_common::auth::TokenFile;
use postmesh_events::notify::Notification;
use postmesh_proto::v1::{event_store_client::EventStoreClient, PostEvent, ReadAllRequest};
use postmesh_read_model::{ReadModelStore, ReadStore};
use redis::AsyncCommands;

use crate::config::Config;

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events read from the event store.
    pub events: u64,
    /// Highest position seen.
    pub position: i64,
}

/// An EventStore client with the configured token.
pub type Client =
    EventStoreClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenFile>>;

async fn copy(client: &mut Client, store: &ReadStore, from: i64, done: &mut Rebuilt) -> anyhow::Result<()> {
    let mut stream = client
        .read_all(ReadAllRequest {
            from_position: from,
            max_count: 0,
        })
        .await?
        .into_inner();
    let mut batch = Vec::with_capacity(REBUILD_BATCH);
    while let Some(item) = stream.next().await {
        let Some(event) = item?.event else { continue };
        batch.push(event);
        if batch.len() >= REBUILD_BATCH {
            apply(store, &mut batch, done).await?;
        }
    }
    apply(store, &mut batch, done).await
}

/// Events applied to the fresh read model at once.
const REBUILD_BATCH: usize = 256;

async fn apply(store: &ReadStore, batch: &mut Vec<PostEvent>, done: &mut Rebuilt) -> anyhow::Result<()> {
    store.apply_batch(batch).await?;
    done.events += batch.len() as u64;
    done.position = batch.iter().map(|e| e.position).fold(done.position, i64::max);
    batch.clear();
    Ok(())
}

/// Tells query-svc instances that the read model was replaced.
async fn publish_reset(config: &Config) -> anyhow::Result<()> {
    let client = redis::Client::open(config.streams.redis_url.as_str())?;
    let publish = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        let receivers: i64 = connection
            .publish(&config.notify_channel, Notification::Reset.encode())
            .await?;
        redis::RedisResult::Ok(receivers)
    };
    let receivers = tokio::time::timeout(config.redis_check.timeout(), publish)
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within {:?}", config.redis_check.timeout()))??;
    tracing::info!(receivers, channel = %config.notify_channel, "published the reset notification");
    Ok(())
}

/// command-svc's endpoint with TLS/mTLS as configured (COMMAND_TLS_*).
pub fn event_store_endpoint(config: &Config) -> anyhow::Result<tonic::transport::Endpoint> {
    postmesh_common::tls::install_default_provider();
    Ok(config.command_client.tls().endpoint(&config.command_endpoint)?)
}

/// An EventStore client on `channel` sending the bearer token as configured
/// (COMMAND_TOKEN_FILE).
pub fn event_store_client(config: &Config, channel: tonic::transport::Channel) -> Client {
    let token = TokenFile(config.command_client.command_token_file.clone());
    EventStoreClient::with_interceptor(channel, token).max_decoding_message_size(16 * 1024 * 1024)
}

/// Rebuilds `config`'s read model from the event store at `config.command_endpoint`.
pub async fn run(config: &Config) -> anyhow::Result<Rebuilt> {
    let live = ReadStore::connect(&config.mongodb_url, &config.mongodb_database).await?;
    rebuild_into(config, &live).await
}

/// Rebuilds `live` (used by tests with their own collection names).
pub async fn rebuild_into(config: &Config, live: &ReadStore) -> anyhow::Result<Rebuilt> {
    let suffix = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let fresh = live.staging(&format!("rebuild_{suffix}"));
    fresh.ensure_schema().await?;
    let channel = event_store_endpoint(config)?.connect().await?;
    let mut client = event_store_client(config, channel);
    let mut done = Rebuilt::default();
    let mut swapping = false;
    let result = async {
        copy(&mut client, &fresh, 0, &mut done).await?;
        tracing::info!(
            events = done.events,
            position = done.position,
            "fresh read model built; swapping in"
        );
        let before_swap = done.position;
        copy(&mut client, &fresh, before_swap, &mut done).await?;
        swapping = true;
        live.swap_in(&fresh).await?;
        copy(&mut client, live, before_swap, &mut done).await?;
        live.ensure_schema().await?;
        anyhow::Ok(())
    }
    .await;
    if swapping {
        // Even after a failed or partial swap, readers' caches are suspect.
        if let Err(error) = publish_reset(config).await {
            tracing::warn!(
                %error,
                "cannot publish the reset notification; query-svc may serve cached posts \
                 from before the rebuild until they expire (QUERY_CACHE_TTL_MS)"
            );
        }
    }
    if let Err(error) = result {
        fresh.discard().await;
        return Err(error);
    }
    println!(
        "rebuilt the read model from {} events (up to position {})",
        done.events, done.position
    );
    Ok(done)
}
