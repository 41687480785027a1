//! One HTTP call: read the body (bounded in size and time), build the
//! request message, call the rpc through the very gRPC service stack the
//! server runs (auth interceptor, load shedding, deadlines, handlers), and
//! answer with its result as JSON, or as newline-delimited JSON for a
//! server stream.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};
use tokio::time::Instant;
use tonic::{body::Body, metadata::MetadataMap, Code, Status};
use tower::util::BoxCloneSyncService;

use crate::{
    codec::DynamicCodec,
    json,
    request::{self, headers},
    rules::{Binding, FieldPath},
    status::{error_response, field_violation},
};

/// The gRPC service stack the gateway calls, type-erased.
/// (Its error is a `Status`, not a boxed error: a boxed error's lifetime
/// trips rustc's check that the handler's future is `Send`.)
pub type GrpcStack = BoxCloneSyncService<Request<Body>, Response<Body>, Status>;

/// The extensions of the request as the server received it (connection
/// info, TLS peer certificates), before the router added its own.
#[derive(Clone, Debug)]
pub struct Received(pub http::Extensions);

/// What every HTTP call of one server shares.
pub struct Shared {
    /// Descriptors, for JSON and error details.
    pub pool: DescriptorPool,
    /// The gRPC stack calls go to.
    pub grpc: GrpcStack,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How long a unary call may take, body upload included.
    pub request_timeout: Duration,
}

/// Request headers passed to the rpc as metadata: the token, the trace
/// context, and grpc-gateway's `Grpc-Metadata-<name>` convention for any
/// other metadata.
const FORWARDED: &[&str] = &["authorization", "traceparent", "tracestate", "x-request-id"];
const METADATA_PREFIX: &str = "grpc-metadata-";

/// Response metadata never copied to HTTP headers (framing and transport).
fn is_reserved(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "content-length" | "transfer-encoding" | "connection" | "te" | "trailer" | "date"
        )
}

/// Time left for the server to answer before tonic's own server timeout
/// (which would answer in gRPC's framing) fires: the gateway's deadline
/// comes first so the client gets a JSON 504.
fn margin(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(250))
}

/// Serves one routed HTTP request for `binding`.
pub async fn call(
    shared: Arc<Shared>,
    binding: Arc<Binding>,
    params: Vec<(String, String)>,
    request: Request<axum::body::Body>,
) -> Response<Body> {
    let deadline = Instant::now() + shared.request_timeout.saturating_sub(margin(shared.request_timeout));
    let (parts, body) = request.into_parts();
    let fail = |status: &Status, if_match: bool| error_response(&shared.pool, status, if_match);

    let bytes = match read_body(&parts.headers, body, shared.max_body_bytes, deadline, &binding).await {
        Ok(bytes) => bytes,
        Err((code, status)) => {
            let mut response = fail(&status, false);
            *response.status_mut() = code;
            return response;
        }
    };
    let built = match request::build(&binding, &params, parts.uri.query(), &parts.headers, &bytes) {
        Ok(built) => built,
        Err(status) => return fail(&status, false),
    };
    let if_match = built.if_match;

    let mut metadata = HeaderMap::new();
    for (name, value) in &parts.headers {
        if FORWARDED.contains(&name.as_str()) {
            metadata.append(name.clone(), value.clone());
        } else if let Some(rest) = name.as_str().strip_prefix(METADATA_PREFIX) {
            if let Ok(name) = HeaderName::from_bytes(rest.as_bytes()) {
                metadata.append(name, value.clone());
            }
        }
    }
    let extensions = parts
        .extensions
        .get::<Received>()
        .map(|received| received.0.clone())
        .unwrap_or_default();
    let mut rpc = tonic::Request::from_parts(MetadataMap::from_headers(metadata), extensions, built.message);
    if !binding.is_streaming() {
        // Streams (WatchPosts, ReadAll) run as long as the client reads, as over gRPC.
        rpc.set_timeout(deadline.saturating_duration_since(Instant::now()));
    }

    // The response was produced by this server: any size it sent is fine.
    let mut grpc = tonic::client::Grpc::new(shared.grpc.clone()).max_decoding_message_size(usize::MAX);
    if let Err(error) = grpc.ready().await {
        return fail(&Status::unavailable(format!("service not ready: {error}")), false);
    }
    let codec = DynamicCodec::new(binding.method.output());
    let path = binding.grpc_path.clone();
    if binding.is_streaming() {
        match grpc.server_streaming(rpc, path, codec).await {
            Ok(response) => {
                let (metadata, stream, _) = response.into_parts();
                stream_response(&shared, &metadata, stream)
            }
            Err(status) => fail(&status, if_match),
        }
    } else {
        match grpc.unary(rpc, path, codec).await {
            Ok(response) => {
                let (metadata, message, _) = response.into_parts();
                unary_response(&shared, &binding, &metadata, &message)
            }
            Err(status) => fail(&status, if_match),
        }
    }
}

/// The request body, refused early when it is declared too large, cut off
/// when it turns out too large, and bounded by the call's deadline.
async fn read_body(
    request_headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    deadline: Instant,
    binding: &Binding,
) -> Result<Bytes, (StatusCode, Status)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Status::resource_exhausted(format!("the request body is larger than the limit of {limit} bytes")),
        )
    };
    let declared = request_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if declared != Some(0) && !matches!(binding.body, crate::rules::BodyRule::None) {
        check_content_type(request_headers)?;
    }
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await;
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err((
            StatusCode::BAD_REQUEST,
            Status::invalid_argument(format!("cannot read the request body: {error}")),
        )),
        Err(_elapsed) => Err((
            StatusCode::REQUEST_TIMEOUT,
            Status::deadline_exceeded("the request body did not arrive in time"),
        )),
    }
}

/// JSON bodies only: `application/json` (any parameters), a `+json` type,
/// or no content type at all.
fn check_content_type(request_headers: &HeaderMap) -> Result<(), (StatusCode, Status)> {
    let Some(value) = request_headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == json::CONTENT_TYPE || (essence.starts_with("application/") && essence.ends_with("+json")) {
        return Ok(());
    }
    Err((
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        field_violation(
            "",
            format!("the body must be JSON (Content-Type: application/json), not {essence:?}"),
        ),
    ))
}

fn response_headers(metadata: &MetadataMap, content_type: &'static str) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in metadata.clone().into_headers() {
        if let Some(name) = name.filter(|n| !is_reserved(n)) {
            out.append(name, value);
        }
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out
}

/// The ETag of a response: the post's version, strong, as `If-Match` takes it.
fn etag(message: &DynamicMessage) -> Option<HeaderValue> {
    headers::ETAG_FIELDS.iter().find_map(|dotted| {
        let path = FieldPath::resolve(&message.descriptor(), dotted)?;
        let mut current = message.clone();
        for field in &path.0[..path.0.len() - 1] {
            if !current.has_field(field) {
                return None;
            }
            current = current.get_field(field).as_message()?.clone();
        }
        match *current.get_field(path.leaf()) {
            Value::I64(version) if version > 0 => HeaderValue::from_str(&format!("\"{version}\"")).ok(),
            _ => None,
        }
    })
}

fn unary_response(
    shared: &Shared,
    binding: &Binding,
    metadata: &MetadataMap,
    message: &DynamicMessage,
) -> Response<Body> {
    let selected = match &binding.response_body {
        Some(field) => match message.get_field(field).into_owned() {
            Value::Message(inner) => inner,
            _ => message.clone(),
        },
        None => message.clone(),
    };
    let bytes = match json::to_bytes(&selected) {
        Ok(bytes) => bytes,
        Err(error) => {
            let status = Status::internal(format!("cannot write the response as JSON: {error}"));
            return error_response(&shared.pool, &status, false);
        }
    };
    let mut response = Response::new(Body::new(Full::new(bytes)));
    *response.headers_mut() = response_headers(metadata, json::CONTENT_TYPE);
    if let Some(tag) = etag(message) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// A server stream as newline-delimited JSON, grpc-gateway's framing: one
/// `{"result": <message>}` line per message, and a last
/// `{"error": <google.rpc.Status>}` line if the stream fails after it began
/// (the HTTP status, 200, is already sent by then).
fn stream_response(
    shared: &Arc<Shared>,
    metadata: &MetadataMap,
    stream: tonic::Streaming<DynamicMessage>,
) -> Response<Body> {
    let shared_for_lines = shared.clone();
    let lines = futures::stream::unfold(Some(stream), move |state| {
        let shared = shared_for_lines.clone();
        async move {
            let mut stream = state?;
            let mut line = Vec::new();
            match stream.message().await {
                Ok(Some(message)) => match json::to_bytes(&message) {
                    Ok(json) => {
                        json::write_line(&mut line, "result", &json);
                        Some((line, Some(stream)))
                    }
                    Err(error) => {
                        let status = Status::internal(format!("cannot write the message as JSON: {error}"));
                        json::write_line(&mut line, "error", &crate::status::status_json(&shared.pool, &status));
                        Some((line, None))
                    }
                },
                Ok(None) => None,
                Err(status) => {
                    json::write_line(&mut line, "error", &crate::status::status_json(&shared.pool, &status));
                    Some((line, None))
                }
            }
        }
    })
    .map(|line| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(line))));
    let mut response = Response::new(Body::new(StreamBody::new(lines)));
    *response.headers_mut() = response_headers(metadata, json::NDJSON_CONTENT_TYPE);
    response
}

/// Codes the gateway answers itself (no rpc was called), as a Status, so
/// they carry the same JSON body as every other error.
pub fn gateway_error(pool: &DescriptorPool, http: StatusCode, code: Code, message: String) -> Response<Body> {
    let mut response = error_response(pool, &Status::new(code, message), false);
    *response.status_mut() = http;
    response
}
