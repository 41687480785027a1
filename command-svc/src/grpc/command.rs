//! `posts.v1.PostCommand`.

use postmesh_proto::v1::{
    post_command_server::PostCommand, CreatePostRequest, CreatePostResponse, DeletePostRequest, DeletePostResponse,
    UpdatePostRequest, UpdatePostResponse,
};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    app::Commands,
    domain::{self, Command},
    error::Error,
    store::{Appended, EventMeta, Idempotency},
};

/// Serves CreatePost, UpdatePost and DeletePost.
#[derive(Clone, Debug)]
pub struct CommandService {
    commands: Commands,
    /// `append <backend>`, the transaction span's name, built once.
    append_name: String,
}

impl CommandService {
    /// A service running its commands through `commands`.
    pub fn new(commands: Commands) -> Self {
        let append_name = format!("append {}", commands.store().backend_name());
        Self { commands, append_name }
    }

    async fn run(
        &self,
        command: Result<Command, Error>,
        idempotency: Result<Option<Idempotency>, Error>,
        meta: EventMeta,
    ) -> Result<Appended, Error> {
        let command = command?;
        let idempotency = idempotency?;
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "db.transaction",
            otel.name = %self.append_name,
            otel.kind = "client",
            db.system = self.commands.store().backend_name(),
            db.operation.name = "append",
            db.collection.name = "post_events",
        );
        let result = self
            .commands
            .execute(&command, &meta, idempotency.as_ref())
            .instrument(span)
            .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // The caller's trace id, so the line can be found from a trace even
        // when this process exports no spans of its own.
        let trace_id = meta.traceparent.get(3..35);
        match &result {
            Ok(appended) => {
                tracing::info!(
                    domain = "posts",
                    action = command.action(),
                    post_id = appended.post_id.get(),
                    version = appended.version,
                    position = appended.position,
                    replayed = appended.position == 0,
                    actor = %meta.actor,
                    trace_id,
                    elapsed_ms,
                    "command applied"
                );
            }
            Err(error) => tracing::info!(
                domain = "posts",
                action = command.action(),
                post_id = command.post_id().map_or(0, |id| id.get()),
                code = ?error.code(),
                %error,
                trace_id,
                elapsed_ms,
                "command rejected"
            ),
        }
        result
    }
}

/// Fingerprints a request (without its key) so a reused key can be told apart
/// from a retry.
fn idempotency<M: Message + Clone>(
    rpc: &str,
    key: &str,
    request: &M,
    clear_key: impl FnOnce(&mut M),
) -> Result<Option<Idempotency>, Error> {
    let Some(key) = domain::validate_idempotency_key(key)? else {
        return Ok(None);
    };
    let mut bare = request.clone();
    clear_key(&mut bare);
    let mut hasher = Sha256::new();
    hasher.update(rpc.as_bytes());
    hasher.update([0]);
    hasher.update(bare.encode_to_vec());
    let request_hash = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(Idempotency {
        key: format!("{rpc}:{key}"),
        request_hash,
    }))
}

#[tonic::async_trait]
impl PostCommand for CommandService {
    async fn create_post(&self, request: Request<CreatePostRequest>) -> Result<Response<CreatePostResponse>, Status> {
        let meta = super::event_meta(request.metadata(), request.extensions());
        let req = request.into_inner();
        let idem = idempotency("CreatePost", &req.idempotency_key, &req, |r| r.idempotency_key.clear());
        let command = domain::validate_create(req.title, req.content, req.author_name);
        let appended = self.run(command, idem, meta).await?;
        Ok(Response::new(CreatePostResponse {
            post_id: appended.post_id.get(),
            version: appended.version,
        }))
    }

    async fn update_post(&self, request: Request<UpdatePostRequest>) -> Result<Response<UpdatePostResponse>, Status> {
        let meta = super::event_meta(request.metadata(), request.extensions());
        let req = request.into_inner();
        let idem = idempotency("UpdatePost", &req.idempotency_key, &req, |r| r.idempotency_key.clear());
        let command = domain::validate_update(
            req.post_id,
            req.expected_version,
            req.title,
            req.content,
            req.author_name,
        );
        let appended = self.run(command, idem, meta).await?;
        Ok(Response::new(UpdatePostResponse {
            post_id: appended.post_id.get(),
            version: appended.version,
        }))
    }

    async fn delete_post(&self, request: Request<DeletePostRequest>) -> Result<Response<DeletePostResponse>, Status> {
        let meta = super::event_meta(request.metadata(), request.extensions());
        let req = request.into_inner();
        let idem = idempotency("DeletePost", &req.idempotency_key, &req, |r| r.idempotency_key.clear());
        let command = domain::validate_delete(req.post_id, req.expected_version);
        let appended = self.run(command, idem, meta).await?;
        Ok(Response::new(DeletePostResponse {
            post_id: appended.post_id.get(),
            version: appended.version,
        }))
    }
}
