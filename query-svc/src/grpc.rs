//! `posts.v1.PostQuery` over the read model. Only reads: nothing here
//! writes the read store.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use postmesh_common::shutdown::Shutdown;
use postmesh_events::notify::Change;
use postmesh_proto::{
    v1::{
        post_query_server::PostQuery, GetPostHistoryRequest, GetPostHistoryResponse, GetPostRequest, GetPostResponse,
        ListPostsRequest, ListPostsResponse, Post, WatchPostsRequest, WatchPostsResponse,
    },
    PostId,
};
use postmesh_read_model::{
    cursor::{self, Position},
    timestamp_to_millis, ListFilter, ReadModelStore, ReadStore, StoreError,
};
use prost::Message;
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use tonic::{metadata::MetadataMap, Request, Response, Status};
use tonic_types::FieldViolation;

use crate::{
    cache::PostCache,
    error::Error,
    notify::{Hub, WatchEvent, WatchFilter},
};

/// ListPosts page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: i32 = 20;
/// Largest ListPosts page size accepted.
pub const MAX_PAGE_SIZE: i32 = 100;
/// Longest filter text accepted (characters).
pub const MAX_FILTER_CHARS: usize = 1000;
/// A page stops early once its posts reach this many encoded bytes, so that a
/// page of large posts stays under the 4 MiB a default gRPC client decodes;
/// the next token continues right after the last post returned.
const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;
/// Longest a reply may stop before the client's deadline: this much of the
/// budget (at most) is left for the answer to travel back.
const MAX_REPLY_MARGIN: Duration = Duration::from_millis(200);
/// Longest slice of a min_version wait kept for the final re-read.
const FINAL_READ_RESERVE: Duration = Duration::from_millis(100);

/// Settings of the PostQuery handlers.
#[derive(Clone, Debug)]
pub struct QuerySettings {
    /// Cap on a min_version wait, whatever the client's deadline (MAX_WAIT_MS).
    pub max_wait: Duration,
    /// The server's request timeout, used when the client sends no deadline.
    pub request_timeout: Duration,
}

/// Serves PostQuery from a [`ReadStore`], woken by a [`Hub`]; GetPost is
/// answered from a [`PostCache`] when it holds the post.
#[derive(Clone, Debug)]
pub struct QueryService {
    store: ReadStore,
    hub: Arc<Hub>,
    cache: Arc<PostCache>,
    settings: QuerySettings,
    shutdown: Shutdown,
}

impl QueryService {
    /// A service reading `store` through `cache`; open watch streams end
    /// when `shutdown` fires.
    pub fn new(
        store: ReadStore,
        hub: Arc<Hub>,
        cache: Arc<PostCache>,
        settings: QuerySettings,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            store,
            hub,
            cache,
            settings,
            shutdown,
        }
    }

    /// Reads a post from the store and offers it to the cache. The ticket is
    /// taken before the read, so a change notified while the read is in
    /// flight keeps its (possibly older) result out of the cache.
    async fn read_post(&self, deadline: &Deadline, post_id: i64) -> Result<Option<Post>, Error> {
        let ticket = self.cache.ticket();
        let post = deadline.run(self.store.get(post_id)).await?;
        if let Some(post) = &post {
            self.cache.fill(ticket, post);
        }
        Ok(post)
    }

    async fn get_post(&self, deadline: Deadline, req: GetPostRequest) -> Result<Post, Error> {
        let mut violations = Vec::new();
        check_post_id(&mut violations, "post_id", req.post_id);
        if req.min_version < 0 {
            violations.push(FieldViolation::new("min_version", "must not be negative"));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let visible = |post: Option<Post>| match post {
            None => Err(Error::NotFound(req.post_id)),
            Some(post) if post.deleted && !req.include_deleted => Err(Error::Deleted(req.post_id)),
            Some(post) => Ok(post),
        };
        // The cache holds the post at a version every change notified so
        // far has reached (see crate::cache), so it also answers min_version.
        if let Some(post) = self.cache.get(req.post_id, req.min_version) {
            return visible(Some(post));
        }
        if req.min_version == 0 {
            return visible(self.read_post(&deadline, req.post_id).await?);
        }
        // Subscribe before reading, so a notification landing between the
        // read and the wait is not missed.
        let mut wakeups = self.hub.waiter();
        let now = Instant::now();
        // Leave a slice of the budget for the final read below.
        let reserve = (deadline.at.saturating_duration_since(now) / 10).min(FINAL_READ_RESERVE);
        let wait_until = (deadline.at - reserve).min(now + self.settings.max_wait);
        let mut current = 0;
        loop {
            let post = self.read_post(&deadline, req.post_id).await?;
            current = post.as_ref().map_or(current, |p| p.version);
            if current >= req.min_version {
                return visible(post);
            }
            if !wait_for(&mut wakeups, req.post_id, req.min_version, wait_until).await {
                break;
            }
        }
        // One last look, in case a notification was lost in a Redis blip; if
        // even that cannot finish in time, the last version seen is reported.
        if let Ok(post) = self.read_post(&deadline, req.post_id).await {
            current = post.as_ref().map_or(current, |p| p.version);
            if current >= req.min_version {
                return visible(post);
            }
        }
        Err(Error::NotCaughtUp {
            post_id: req.post_id,
            wanted: req.min_version,
            current,
        })
    }

    async fn list_posts(&self, deadline: Deadline, req: ListPostsRequest) -> Result<ListPostsResponse, Error> {
        let mut violations = Vec::new();
        for (field, value) in [
            ("author_name", &req.author_name),
            ("title", &req.title),
            ("content", &req.content),
        ] {
            check_filter_text(&mut violations, field, value);
        }
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if (1..=MAX_PAGE_SIZE).contains(&size) => size,
            size => {
                violations.push(FieldViolation::new(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), got {size}"),
                ));
                DEFAULT_PAGE_SIZE
            }
        };
        let filter = ListFilter {
            author_name: req.author_name,
            title: req.title,
            content: req.content,
            include_deleted: req.include_deleted,
        };
        let fingerprint = filter.fingerprint();
        let after = if req.page_token.is_empty() {
            None
        } else {
            match cursor::decode(&req.page_token, fingerprint) {
                Ok(position) => Some(position),
                Err(error) => {
                    violations.push(FieldViolation::new("page_token", error.to_string()));
                    None
                }
            }
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        // One extra row tells whether another page exists.
        let limit = i64::from(page_size) + 1;
        let mut found = deadline.run(self.store.list(&filter, after.as_ref(), limit)).await?;
        let mut more = found.len() > page_size as usize;
        found.truncate(page_size as usize);
        let mut bytes = 0;
        let mut keep = 0;
        for post in &found {
            bytes += post.encoded_len();
            if keep > 0 && bytes > MAX_PAGE_BYTES {
                break;
            }
            keep += 1;
        }
        if keep < found.len() {
            found.truncate(keep);
            more = true;
        }
        let next_page_token = match found.last() {
            Some(last) if more => cursor::encode(
                Position {
                    created_at_ms: last.created_at.as_ref().map_or(0, timestamp_to_millis),
                    post_id: last.post_id,
                },
                fingerprint,
            ),
            _ => String::new(),
        };
        Ok(ListPostsResponse {
            posts: found,
            next_page_token,
        })
    }

    async fn history(&self, deadline: Deadline, req: GetPostHistoryRequest) -> Result<Vec<Post>, Error> {
        let mut violations = Vec::new();
        check_post_id(&mut violations, "post_id", req.post_id);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let versions = deadline.run(self.store.history(req.post_id)).await?;
        if versions.is_empty() {
            return Err(Error::NoHistory(req.post_id));
        }
        Ok(versions.into_iter().map(|v| v.post).collect())
    }

    fn watch(&self, req: WatchPostsRequest) -> Result<WatchStream, Error> {
        let mut violations = Vec::new();
        if let Some(post_id) = req.post_id {
            check_post_id(&mut violations, "post_id", post_id);
        }
        if let Some(author) = &req.author_name {
            if author.is_empty() {
                violations.push(FieldViolation::new("author_name", "must not be empty when set"));
            }
            check_filter_text(&mut violations, "author_name", author);
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let mut watch = self.hub.watch(WatchFilter {
            post_id: req.post_id,
            author_name: req.author_name,
        })?;
        let mut shutdown = self.shutdown.clone();
        let stream = async_stream::stream! {
            loop {
                tokio::select! {
                    biased;
                    // Shutdown ends the stream with OK, so the drain completes.
                    () = shutdown.wait() => break,
                    event = watch.next() => match event {
                        Some(WatchEvent::Change(change)) => {
                            // The one copy per stream is made just before encoding.
                            yield Ok(Arc::unwrap_or_clone(change));
                        }
                        Some(WatchEvent::Lagged) => {
                            yield Err(Status::from(Error::WatcherLagged(watch.buffer())));
                            break;
                        }
                        None => break,
                    },
                }
            }
        };
        Ok(Box::pin(stream))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchPostsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PostQuery for QueryService {
    type WatchPostsStream = WatchStream;

    async fn get_post(&self, request: Request<GetPostRequest>) -> Result<Response<GetPostResponse>, Status> {
        let deadline = Deadline::of(request.metadata(), self.settings.request_timeout);
        let post = QueryService::get_post(self, deadline, request.into_inner()).await?;
        Ok(Response::new(GetPostResponse { post: Some(post) }))
    }

    async fn list_posts(&self, request: Request<ListPostsRequest>) -> Result<Response<ListPostsResponse>, Status> {
        let deadline = Deadline::of(request.metadata(), self.settings.request_timeout);
        Ok(Response::new(
            QueryService::list_posts(self, deadline, request.into_inner()).await?,
        ))
    }

    async fn get_post_history(
        &self,
        request: Request<GetPostHistoryRequest>,
    ) -> Result<Response<GetPostHistoryResponse>, Status> {
        let deadline = Deadline::of(request.metadata(), self.settings.request_timeout);
        let versions = self.history(deadline, request.into_inner()).await?;
        Ok(Response::new(GetPostHistoryResponse { versions }))
    }

    async fn watch_posts(
        &self,
        request: Request<WatchPostsRequest>,
    ) -> Result<Response<Self::WatchPostsStream>, Status> {
        Ok(Response::new(self.watch(request.into_inner())?))
    }
}

fn check_post_id(violations: &mut Vec<FieldViolation>, field: &str, post_id: i64) {
    if let Err(violation) = PostId::from_field(field, post_id) {
        violations.push(violation);
    }
}

fn check_filter_text(violations: &mut Vec<FieldViolation>, field: &str, value: &str) {
    let chars = value.chars().count();
    if chars > MAX_FILTER_CHARS {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {MAX_FILTER_CHARS} characters, got {chars}"),
        ));
    }
}

/// Waits for a notification that `post_id` reached `min_version`; true when
/// one came (or may have been missed, after lagging), false at `until`.
async fn wait_for(
    wakeups: &mut tokio::sync::broadcast::Receiver<Change>,
    post_id: i64,
    min_version: i64,
    until: Instant,
) -> bool {
    let timer = tokio::time::sleep_until(until);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer => return false,
            received = wakeups.recv() => match received {
                Ok(n) if n.post_id == post_id && n.version >= min_version => return true,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => {
                    (&mut timer).await;
                    return false;
                }
            },
        }
    }
}

/// When a request must be answered by: the client's `grpc-timeout` or the
/// server's request timeout, whichever is sooner, less a margin for the reply.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
}

impl Deadline {
    fn of(metadata: &MetadataMap, server_timeout: Duration) -> Self {
        let budget = grpc_timeout(metadata).map_or(server_timeout, |client| client.min(server_timeout));
        let margin = (budget / 10).min(MAX_REPLY_MARGIN);
        Self {
            at: Instant::now() + budget.saturating_sub(margin),
        }
    }

    /// Runs a store call, turning "no answer before the deadline" into UNAVAILABLE.
    async fn run<T>(&self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, Error> {
        match tokio::time::timeout_at(self.at, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Unavailable(
                "the read model did not answer before the request deadline".into(),
            )),
        }
    }
}

/// Parses the `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().unwrap());
        metadata
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout(&with_timeout("1500m")), Some(Duration::from_millis(1500)));
        assert_eq!(grpc_timeout(&with_timeout("2S")), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(&with_timeout("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(&with_timeout("99999u")),
            Some(Duration::from_micros(99_999))
        );
        assert_eq!(grpc_timeout(&with_timeout("12x")), None);
        assert_eq!(grpc_timeout(&with_timeout("123456789S")), None);
        assert_eq!(grpc_timeout(&with_timeout("m")), None);
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }

    #[tokio::test]
    async fn the_sooner_deadline_wins_less_a_margin() {
        let within = |wanted: u64, metadata: MetadataMap| {
            let start = Instant::now();
            let left = Deadline::of(&metadata, Duration::from_secs(10)).at - start;
            let wanted = Duration::from_millis(wanted);
            assert!(left >= wanted && left < wanted + Duration::from_millis(50), "{left:?}");
        };
        // 10% of a short client budget is kept for the reply...
        within(900, with_timeout("1000m"));
        // ...at most 200 ms of a long one, and the server's timeout caps both.
        within(9800, MetadataMap::new());
        within(9800, with_timeout("60S"));
    }
}
