//! The tower stack in front of every gRPC server: a per-request timeout, a
//! global concurrency limit, and load shedding once that limit is reached, so
//! overload is answered at once with `RESOURCE_EXHAUSTED` instead of queueing
//! without bound.

use tonic::transport::Server;
use tower::{
    layer::util::{Identity, Stack},
    limit::GlobalConcurrencyLimitLayer,
    load_shed::{error::Overloaded, LoadShedLayer},
    util::MapResultLayer,
    BoxError, ServiceBuilder,
};

use crate::{
    config::nonzero,
    limits::ServerLimits,
    limits_status::{DeadlineBody, LimitsStatusLayer},
    rpc::RpcTraceLayer,
    serve::ConnTrackLayer,
};

/// The connection tracker (outermost), RPC spans and metrics, and load shedding.
pub type ServerLayers = Stack<ShedLayers, Stack<RpcTraceLayer, Stack<ConnTrackLayer, Identity>>>;

/// A tonic server builder with the timeout, HTTP/2 limits, the connection
/// tracker (for idle timeouts), the RPC span and metrics layer (so refused
/// calls are counted too) and load shedding applied. Serve it with
/// [`crate::serve::incoming`], which enforces the connection limits.
pub fn server(limits: &ServerLimits) -> Server<Stack<LimitsStatusLayer, ServerLayers>> {
    let mut server = Server::builder()
        .timeout(limits.request_timeout())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes.max(1024))
        .http2_keepalive_interval(nonzero(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(nonzero(limits.http2_keepalive_timeout));
    if let Some(age) = nonzero(limits.max_connection_age) {
        server = server
            .max_connection_age(age)
            .max_connection_age_grace(limits.request_timeout());
    }
    server
        .layer(ConnTrackLayer)
        .layer(RpcTraceLayer::default())
        .layer(shed(limits.max_concurrent_requests))
        // Innermost: the client's deadline ends streams too, and an oversized
        // request is RESOURCE_EXHAUSTED, as with grpc-go/java; see limits_status.
        .layer(LimitsStatusLayer)
}

/// Past the concurrency limit, a request is answered at once with
/// `RESOURCE_EXHAUSTED` instead of waiting: tower's load shedding in front
/// of its global concurrency limit (one semaphore for all connections), and
/// the refusal turned into that answer here, inside the RPC layer, so it is
/// traced and counted with its status.
pub type ShedLayers =
    ServiceBuilder<Stack<GlobalConcurrencyLimitLayer, Stack<LoadShedLayer, Stack<MapResultLayer<Refusal>, Identity>>>>;

/// The response of the layers inside the shedding.
type Answer = http::Response<DeadlineBody<tonic::body::Body>>;

/// What the shedding layers do with an answer or a refusal.
type Refusal = fn(Result<Answer, BoxError>) -> Result<Answer, BoxError>;

fn shed(limit: usize) -> ShedLayers {
    ServiceBuilder::new()
        .map_result(refuse_overload as Refusal)
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(limit.max(1)))
}

/// Load shedding's refusal as a gRPC answer; anything else as it was.
fn refuse_overload(result: Result<Answer, BoxError>) -> Result<Answer, BoxError> {
    match result {
        Err(error) if error.is::<Overloaded>() => {
            Ok(tonic::Status::resource_exhausted("server is at its concurrency limit; retry with backoff").into_http())
        }
        other => other,
    }
}
