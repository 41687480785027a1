//! Change notifications: event-relay publishes a
//! [`Notification`] on a Redis pub/sub channel after each applied event (and
//! a reset after a rebuild swapped in a fresh read model); this module turns
//! them into invalidations of the [`PostCache`], wake-ups for GetPost's
//! min_version waits and WatchPosts streams.
//!
//! The cache is invalidated in the receive loop itself, before waiters are
//! woken and before the bounded dispatch queue, so no notification can be
//! dropped on its way to the cache; losing or regaining the subscription
//! suspends or resumes the cache (see [`crate::cache`]).
//!
//! One subscription per process. Each notification is broadcast to waiters
//! at once (they re-read `posts` themselves), and, when anyone watches, the
//! exact version document is read from `post_versions` once and handed to
//! every matching watcher's bounded queue. A watcher whose queue is full is
//! cut off with RESOURCE_EXHAUSTED instead of slowing the others or growing
//! memory.
//!
//! Delivery is best effort across Redis outages: pub/sub does not buffer for
//! a disconnected subscriber, so a change applied while the subscription is
//! down (it reconnects with backoff) is not streamed to watchers, and a
//! min_version wait falls back to one final read at its deadline. Watchers
//! see every change the subscription receives, per post in version order.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::StreamExt;
use postmesh_common::shutdown::Shutdown;
use postmesh_events::notify::{Change, Notification};
use postmesh_proto::v1::{Post, WatchPostsResponse};
use postmesh_read_model::{PostVersion, ReadModelStore, ReadStore};
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{cache::PostCache, error::Error};

/// Capacity of the waiters' broadcast: a waiter that lags simply re-reads.
const WAITER_CAPACITY: usize = 1024;
/// Notifications queued between the subscription and the document reads.
const DISPATCH_QUEUE: usize = 4096;
/// Posts whose last streamed version is remembered, to keep versions in order.
const LAST_SENT_CAP: usize = 100_000;
/// How often the idle subscription is PINGed to notice a dead connection.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Longest a PING or (re)subscribe may take before the connection is dropped.
const REDIS_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which changes a watcher wants. Both parts optional, combined with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only this post.
    pub post_id: Option<i64>,
    /// Only posts whose author (at the changed version) is exactly this.
    pub author_name: Option<String>,
}

impl WatchFilter {
    /// True when a change to `post` should reach this watcher.
    pub fn matches(&self, post: &Post) -> bool {
        self.post_id.is_none_or(|id| id == post.post_id)
            && self
                .author_name
                .as_deref()
                .is_none_or(|author| author == post.author_name)
    }
}

struct Watcher {
    filter: WatchFilter,
    tx: mpsc::Sender<Arc<WatchPostsResponse>>,
    lagged: CancellationToken,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
    /// Last version streamed per post: a late, older notification (possible
    /// when events are applied out of order) is never streamed after a newer one.
    last_sent: HashMap<i64, i64>,
}

/// The in-process fan-out point shared by the listener and the handlers.
pub struct Hub {
    waiters: broadcast::Sender<Change>,
    registry: Mutex<Registry>,
    slots: Arc<Semaphore>,
    max_watchers: usize,
    buffer: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("max_watchers", &self.max_watchers)
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub allowing `max_watchers` streams, each queueing up to `buffer` changes.
    pub fn new(buffer: usize, max_watchers: usize) -> Arc<Self> {
        let (waiters, _) = broadcast::channel(WAITER_CAPACITY);
        Arc::new(Self {
            waiters,
            registry: Mutex::new(Registry::default()),
            slots: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            buffer: buffer.max(1),
        })
    }

    /// Subscribes to every notification from now on, for a min_version wait.
    pub fn waiter(&self) -> broadcast::Receiver<Change> {
        self.waiters.subscribe()
    }

    /// Registers a watcher for changes matching `filter` from now on, or
    /// refuses when MAX_WATCHERS streams are open.
    pub fn watch(self: &Arc<Self>, filter: WatchFilter) -> Result<Watch, Error> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyWatchers(self.max_watchers))?;
        let (tx, rx) = mpsc::channel(self.buffer);
        let lagged = CancellationToken::new();
        let mut registry = self.lock();
        registry.next_id += 1;
        let id = registry.next_id;
        registry.watchers.insert(
            id,
            Watcher {
                filter,
                tx,
                lagged: lagged.clone(),
            },
        );
        Ok(Watch {
            id,
            rx,
            lagged,
            buffer: self.buffer,
            hub: Arc::clone(self),
            _slot: slot,
        })
    }

    /// Number of open watchers.
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Wakes every min_version waiter.
    pub fn notify_waiters(&self, change: Change) {
        // Err only means nobody waits right now.
        let _ = self.waiters.send(change);
    }

    /// True when a change to `post_id` at `version` would be streamed to
    /// someone: there are watchers and no newer version was streamed yet.
    fn wants(&self, change: &Change) -> bool {
        let registry = self.lock();
        !registry.watchers.is_empty()
            && registry
                .last_sent
                .get(&change.post_id)
                .is_none_or(|last| *last < change.version)
    }

    /// Hands one change to every matching watcher; full queues are cut off.
    pub fn fan_out(&self, change: PostVersion) {
        let mut registry = self.lock();
        let post_id = change.post.post_id;
        let version = change.post.version;
        if registry.last_sent.get(&post_id).is_some_and(|last| *last >= version) {
            return;
        }
        if registry.last_sent.len() >= LAST_SENT_CAP {
            // Forgetting only weakens the ordering guard for very old posts.
            registry.last_sent.clear();
        }
        registry.last_sent.insert(post_id, version);
        // One shared copy for every queue: memory per queued change is a
        // pointer, however many watchers hold it.
        let response = Arc::new(WatchPostsResponse {
            event_type: change.event_type as i32,
            post: Some(change.post),
        });
        let Some(post) = response.post.as_ref() else {
            return;
        };
        registry.watchers.retain(|id, watcher| {
            if !watcher.filter.matches(post) {
                return true;
            }
            match watcher.tx.try_send(Arc::clone(&response)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(watcher = id, post_id, version, "watcher cannot keep up; ending it");
                    watcher.lagged.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Ends every watcher as lagging: used when this process itself fell
    /// behind the notifications, so no stream silently skips a change.
    pub fn cut_off_all(&self) {
        let mut registry = self.lock();
        for watcher in registry.watchers.values() {
            watcher.lagged.cancel();
        }
        registry.watchers.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters here, so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What [`Watch::next`] yields.
#[derive(Debug)]
pub enum WatchEvent {
    /// A change to stream (shared with the other watchers that get it).
    Change(Arc<WatchPostsResponse>),
    /// The watcher fell behind and was cut off.
    Lagged,
}

/// One open WatchPosts subscription; dropping it unregisters it.
pub struct Watch {
    id: u64,
    rx: mpsc::Receiver<Arc<WatchPostsResponse>>,
    lagged: CancellationToken,
    buffer: usize,
    hub: Arc<Hub>,
    _slot: OwnedSemaphorePermit,
}

impl Watch {
    /// The next change, or `Lagged` once cut off (queued changes are then
    /// dropped: the stream is over anyway). `None` when the hub is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        tokio::select! {
            biased;
            () = self.lagged.cancelled() => Some(WatchEvent::Lagged),
            change = self.rx.recv() => match change {
                Some(change) => Some(WatchEvent::Change(change)),
                None if self.lagged.is_cancelled() => Some(WatchEvent::Lagged),
                None => None,
            },
        }
    }

    /// The queue size this watcher was given.
    pub fn buffer(&self) -> usize {
        self.buffer
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.lock().watchers.remove(&self.id);
    }
}

/// The live subscription: subscribe at start-up (so nothing published after
/// start-up is missed), then hand it to [`Listener::run`].
pub struct Listener {
    client: redis::Client,
    channel: String,
    connection: Option<(PubSubSink, PubSubStream)>,
}

impl Listener {
    /// Connects and subscribes to `channel`, failing when Redis does not
    /// confirm within `timeout`.
    pub async fn subscribe(client: redis::Client, channel: &str, timeout: Duration) -> anyhow::Result<Self> {
        let connection = tokio::time::timeout(timeout, open(&client, channel))
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not confirm SUBSCRIBE {channel} within {timeout:?}"))??;
        Ok(Self {
            client,
            channel: channel.to_owned(),
            connection: Some(connection),
        })
    }

    /// Receives notifications until `shutdown`, resubscribing with backoff
    /// whenever the connection drops, and feeds them to `cache` and `hub`;
    /// version documents for watchers are read from `store`. The cache is
    /// resumed while subscribed and suspended otherwise.
    pub async fn run(mut self, hub: Arc<Hub>, cache: Arc<PostCache>, store: ReadStore, mut shutdown: Shutdown) {
        let (queue, pending) = mpsc::channel(DISPATCH_QUEUE);
        let dispatcher = tokio::spawn(dispatch(pending, hub.clone(), store));
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_triggered() {
            let (mut sink, mut stream) = match self.connection.take() {
                Some(connection) => connection,
                None => {
                    let reconnect = tokio::time::timeout(REDIS_OP_TIMEOUT, open(&self.client, &self.channel));
                    let reconnected = tokio::select! {
                        () = shutdown.wait() => break,
                        reconnected = reconnect => reconnected,
                    };
                    match reconnected {
                        Ok(Ok(connection)) => {
                            tracing::info!(channel = %self.channel, "resubscribed to notifications");
                            backoff = Duration::from_millis(100);
                            connection
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%error, ?backoff, "cannot resubscribe to notifications; retrying");
                            pause(&mut shutdown, &mut backoff).await;
                            continue;
                        }
                        Err(_) => {
                            tracing::warn!(?backoff, "resubscribing to notifications timed out; retrying");
                            pause(&mut shutdown, &mut backoff).await;
                            continue;
                        }
                    }
                }
            };
            // Subscribed: every change from now on reaches the cache.
            cache.resume();
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            keepalive.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    message = stream.next() => {
                        let Some(message) = message else {
                            tracing::warn!("notification subscription lost; changes applied meanwhile are not streamed");
                            break;
                        };
                        let change = match Notification::parse(message.get_payload_bytes()) {
                            Some(Notification::Applied(change)) => change,
                            Some(Notification::Reset) => {
                                tracing::info!("read model replaced (rebuild); post cache cleared");
                                cache.clear("read model reset");
                                continue;
                            }
                            None => {
                                // It might have announced a change we cannot read.
                                tracing::debug!("ignoring a malformed notification; post cache cleared");
                                cache.clear("malformed notification");
                                continue;
                            }
                        };
                        // Before anything else: a waiter woken below re-reads
                        // the store, and its fill must already meet the marker.
                        cache.invalidate(change.post_id, change.version);
                        hub.notify_waiters(change);
                        if queue.try_send(change).is_err() {
                            tracing::warn!("notifications arrive faster than they can be read; ending all watchers");
                            hub.cut_off_all();
                        }
                    }
                    _ = keepalive.tick() => {
                        // In subscribed mode Redis answers PING with ["pong", ""], not
                        // PONG, so any reply at all proves the connection alive.
                        let ping = tokio::time::timeout(REDIS_OP_TIMEOUT, sink.ping::<redis::Value>()).await;
                        if !matches!(ping, Ok(Ok(_))) {
                            tracing::warn!("notification connection does not answer PING; reconnecting");
                            break;
                        }
                    }
                }
            }
            // Changes published from now until the next subscription are lost.
            cache.suspend();
        }
        drop(queue);
        let _ = dispatcher.await;
    }
}

async fn open(client: &redis::Client, channel: &str) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.split())
}

async fn pause(shutdown: &mut Shutdown, backoff: &mut Duration) {
    tokio::select! {
        () = shutdown.wait() => {}
        () = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}

/// Reads each wanted version document once, in arrival order, and fans it out.
async fn dispatch(mut pending: mpsc::Receiver<Change>, hub: Arc<Hub>, store: ReadStore) {
    while let Some(change) = pending.recv().await {
        if !hub.wants(&change) {
            continue;
        }
        match store.version(change.post_id, change.version).await {
            Ok(Some(version)) => hub.fan_out(version),
            Ok(None) => tracing::debug!(
                post_id = change.post_id,
                version = change.version,
                "notified version is not in the read model (rebuilt meanwhile?)"
            ),
            Err(error) => tracing::warn!(
                %error,
                post_id = change.post_id,
                version = change.version,
                "cannot read a notified version; watchers miss it"
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use postmesh_proto::v1::EventType;

    use super::*;

    fn change(post_id: i64, version: i64, author: &str) -> PostVersion {
        PostVersion {
            post: Post {
                post_id,
                version,
                author_name: author.into(),
                ..Post::default()
            },
            event_type: EventType::PostUpdated,
            position: 0,
        }
    }

    #[test]
    fn filters_combine_with_and() {
        let post = change(1, 1, "ann").post;
        assert!(WatchFilter::default().matches(&post));
        let both = WatchFilter {
            post_id: Some(1),
            author_name: Some("ann".into()),
        };
        assert!(both.matches(&post));
        let wrong_author = WatchFilter {
            author_name: Some("bob".into()),
            ..both.clone()
        };
        assert!(!wrong_author.matches(&post));
        let wrong_post = WatchFilter {
            post_id: Some(2),
            ..both
        };
        assert!(!wrong_post.matches(&post));
    }

    #[tokio::test]
    async fn a_full_queue_ends_only_that_watcher() {
        let hub = Hub::new(2, 10);
        let mut slow = hub.watch(WatchFilter::default()).unwrap();
        let mut fast = hub.watch(WatchFilter::default()).unwrap();
        for version in 1..=5 {
            hub.fan_out(change(1, version, "ann"));
            match fast.next().await.unwrap() {
                WatchEvent::Change(c) => assert_eq!(c.post.as_ref().unwrap().version, version),
                WatchEvent::Lagged => panic!("fast watcher cut off"),
            }
        }
        assert!(matches!(slow.next().await, Some(WatchEvent::Lagged)));
        assert_eq!(hub.watcher_count(), 1);
    }

    #[tokio::test]
    async fn older_versions_are_never_streamed_after_newer_ones() {
        let hub = Hub::new(8, 10);
        let mut watch = hub.watch(WatchFilter::default()).unwrap();
        hub.fan_out(change(1, 3, "ann"));
        hub.fan_out(change(1, 2, "ann"));
        hub.fan_out(change(1, 4, "ann"));
        let mut seen = Vec::new();
        for _ in 0..2 {
            if let Some(WatchEvent::Change(c)) = watch.next().await {
                seen.push(c.post.as_ref().unwrap().version);
            }
        }
        assert_eq!(seen, vec![3, 4]);
    }

    #[test]
    fn the_watcher_cap_is_enforced_and_released() {
        let hub = Hub::new(1, 1);
        let first = hub.watch(WatchFilter::default()).unwrap();
        assert!(matches!(
            hub.watch(WatchFilter::default()),
            Err(Error::TooManyWatchers(1))
        ));
        drop(first);
        assert_eq!(hub.watcher_count(), 0);
        assert!(hub.watch(WatchFilter::default()).is_ok());
    }
}
