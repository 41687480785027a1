//! `posts.v1.EventStore`: the event log, streamed in pages so a full rebuild
//! never loads the whole store into memory, and the log's head (`GetHead`).

use std::pin::Pin;

use futures::Stream;
use postmesh_proto::v1::{
    event_store_server::EventStore as EventStoreApi, GetHeadRequest, GetHeadResponse, ReadAllRequest, ReadAllResponse,
    ReadPostRequest, ReadPostResponse,
};
use postmesh_proto::COMPLETE_THROUGH_METADATA;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{domain, error::Error, store::EventStore};

const PAGE: u64 = 500;

/// Serves ReadAll and ReadPost.
#[derive(Clone, Debug)]
pub struct EventStoreService {
    store: EventStore,
}

impl EventStoreService {
    /// A service reading from `store`.
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EventStoreApi for EventStoreService {
    type ReadAllStream = EventStream<ReadAllResponse>;
    type ReadPostStream = EventStream<ReadPostResponse>;

    async fn read_all(&self, request: Request<ReadAllRequest>) -> Result<Response<Self::ReadAllStream>, Status> {
        let req = request.into_inner();
        if req.from_position < 0 || req.max_count < 0 {
            let field = if req.from_position < 0 {
                "from_position"
            } else {
                "max_count"
            };
            return Err(Error::field(field, "must not be negative").into());
        }
        let store = self.store.clone();
        let mut remaining = if req.max_count == 0 {
            u64::MAX
        } else {
            req.max_count as u64
        };
        let mut after = req.from_position;
        // The head before the first page: everything through it is committed,
        // so a client that read this far from its cursor has all of it.
        let head = store.head().await?;
        // Fetch the first page before answering, so a dead database is an
        // error status rather than a stream that breaks at once.
        let mut page = store.read_all(after, PAGE.min(remaining)).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let full = page.len() as u64 == PAGE.min(remaining);
                for event in page {
                    after = event.position;
                    remaining -= 1;
                    if tx.send(Ok(ReadAllResponse { event: Some(event) })).await.is_err() {
                        return;
                    }
                }
                if !full || remaining == 0 {
                    return;
                }
                page = match store.read_all(after, PAGE.min(remaining)).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
            }
        });
        let mut response = Response::new(Box::pin(ReceiverStream::new(rx)) as Self::ReadAllStream);
        response.metadata_mut().insert(COMPLETE_THROUGH_METADATA, head.into());
        Ok(response)
    }

    async fn get_head(&self, _request: Request<GetHeadRequest>) -> Result<Response<GetHeadResponse>, Status> {
        let complete_through = self.store.head().await?;
        Ok(Response::new(GetHeadResponse { complete_through }))
    }

    async fn read_post(&self, request: Request<ReadPostRequest>) -> Result<Response<Self::ReadPostStream>, Status> {
        let post_id = domain::validate_post_id(request.into_inner().post_id)?;
        let store = self.store.clone();
        let mut page = store.read_post(post_id, 0, PAGE).await?;
        if page.is_empty() {
            return Err(Error::NotFound(post_id).into());
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let full = page.len() as u64 == PAGE;
                let mut after = 0;
                for event in page {
                    after = event.version;
                    if tx.send(Ok(ReadPostResponse { event: Some(event) })).await.is_err() {
                        return;
                    }
                }
                if !full {
                    return;
                }
                page = match store.read_post(post_id, after, PAGE).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
