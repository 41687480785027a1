//! The health status follows the read store: NOT_SERVING while it cannot
//! be reached, SERVING again as soon as it answers, without a restart.
//! (Redis only carries wake-ups; losing it degrades waits and watches but
//! reads still work, so it does not flip health.)

use std::time::Duration;

use postmesh_common::{server::Health, shutdown::Shutdown};
use tonic_health::ServingStatus;

use postmesh_read_model::{ReadModelStore, ReadStore};

/// Pings `store` every `interval` and reports the result to `health`, until
/// `shutdown`. Returns promptly on shutdown and
/// never reports after it, so the final NOT_SERVING cannot be overwritten.
pub async fn follow_store(store: ReadStore, health: Health, interval: Duration, mut shutdown: Shutdown) {
    let mut last: Option<bool> = None;
    loop {
        let result = tokio::select! {
            () = shutdown.wait() => return,
            result = store.ping() => result,
        };
        if shutdown.is_triggered() {
            return;
        }
        let serving = match &result {
            Ok(()) => true,
            Err(error) => {
                if last != Some(false) {
                    tracing::warn!(%error, "read model unreachable; health is NOT_SERVING");
                }
                false
            }
        };
        if last != Some(serving) {
            if serving {
                tracing::info!("read model reachable; health is SERVING");
            }
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.report(status).await;
            last = Some(serving);
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
