//! HTTP/JSON and gRPC-Web on the same port as gRPC, answered by the same
//! handlers.
//!
//! [`GatewayLayer`] wraps a server's gRPC service stack (everything inside
//! the connection tracker: auth interceptors, load shedding, deadlines,
//! handlers) and tells requests apart by content type:
//! - `application/grpc...`: gRPC, passed straight through;
//! - `application/grpc-web...`: gRPC-Web (tonic-web), translated and passed
//!   through, so a browser can call unary and server-streaming rpcs;
//! - anything else: HTTP/JSON, routed by the `google.api.http` annotations
//!   of the served methods (read from the descriptor set at start-up), and
//!   transcoded into a gRPC call *into the same stack*. Validation,
//!   idempotency, versions, tokens and limits are therefore the gRPC ones by
//!   construction; only the JSON mapping is the gateway's.
//!
//! What this crate owns: the route table ([`rules`]), the request mapping
//! (path, query, body, `Idempotency-Key` and `If-Match` headers:
//! [`request`]), the status mapping and `google.rpc.Status` bodies
//! ([`status`]), the proto3 JSON options ([`json`]), and `/openapi.json`.
//! docs/http.md describes the HTTP API it yields.

pub mod codec;
pub mod json;
pub mod request;
pub mod rules;
pub mod status;
pub mod transcode;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{rejection::RawPathParamsRejection, RawPathParams, State},
    routing::{MethodFilter, MethodRouter},
    Router,
};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use prost_reflect::DescriptorPool;
use tonic::{body::Body, Code};
use tower::{util::BoxCloneSyncService, Layer, Service, ServiceExt};

use rules::Binding;
pub use rules::{RouteInfo, RuleError};
use transcode::{gateway_error, Received, Shared};

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings of a [`GatewayLayer`]; see [`GatewayLayer::builder`].
#[derive(Debug)]
pub struct Builder {
    descriptor_sets: Vec<&'static [u8]>,
    services: Vec<String>,
    openapi: Option<&'static str>,
    max_body_bytes: usize,
    request_timeout: Duration,
    grpc_web: bool,
    extra: Option<Router>,
}

impl Builder {
    /// Serve the HTTP rules of this service (full name, `posts.v1.PostQuery`).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.services.push(name.into());
        self
    }

    /// Serve this OpenAPI document at [`OPENAPI_PATH`].
    pub fn openapi(mut self, document: &'static str) -> Self {
        self.openapi = Some(document);
        self
    }

    /// Largest request body accepted (bytes); larger ones get 413.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// How long a unary HTTP call may take, body upload included; the
    /// server's own request timeout (the gateway answers 504 slightly before
    /// it, in JSON).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Also accept gRPC-Web (off by default).
    pub fn grpc_web(mut self, on: bool) -> Self {
        self.grpc_web = on;
        self
    }

    /// Also serve these plain HTTP routes (their own handlers, not rpcs:
    /// event-relay's operations console), beside the transcoded ones. Their
    /// paths must not clash with the annotations'.
    pub fn routes(mut self, routes: Router) -> Self {
        self.extra = Some(match self.extra.take() {
            Some(extra) => extra.merge(routes),
            None => routes,
        });
        self
    }

    /// Reads the HTTP rules and builds the router; fails on a rule this
    /// gateway cannot serve.
    pub fn build(self) -> Result<GatewayLayer, RuleError> {
        // The error details servers put in grpc-status-details-bin, so error
        // bodies can show them whatever the caller's descriptor set holds.
        let mut sets = self.descriptor_sets.clone();
        sets.push(tonic_types::pb::FILE_DESCRIPTOR_SET);
        let pool = rules::pool(&sets)?;
        let bindings: Vec<Arc<Binding>> = rules::bindings(&pool, &self.services)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let router = router(&bindings, self.openapi)?;
        Ok(GatewayLayer {
            prepared: Arc::new(Prepared {
                pool,
                bindings,
                router,
                max_body_bytes: self.max_body_bytes,
                request_timeout: self.request_timeout,
                grpc_web: self.grpc_web,
                extra: self.extra,
            }),
        })
    }
}

struct Prepared {
    pool: DescriptorPool,
    bindings: Vec<Arc<Binding>>,
    router: Router<Arc<Shared>>,
    max_body_bytes: usize,
    request_timeout: Duration,
    grpc_web: bool,
    extra: Option<Router>,
}

/// Wraps a gRPC service stack with HTTP/JSON transcoding and gRPC-Web.
#[derive(Clone)]
pub struct GatewayLayer {
    prepared: Arc<Prepared>,
}

impl std::fmt::Debug for GatewayLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayLayer")
            .field("routes", &self.routes().len())
            .field("grpc_web", &self.prepared.grpc_web)
            .finish()
    }
}

impl GatewayLayer {
    /// A builder reading the HTTP rules from these encoded descriptor sets.
    /// Defaults: 4 MiB bodies, 10 s timeout, no gRPC-Web, no OpenAPI.
    pub fn builder(descriptor_sets: &[&'static [u8]]) -> Builder {
        Builder {
            descriptor_sets: descriptor_sets.to_vec(),
            services: Vec::new(),
            openapi: None,
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            grpc_web: false,
            extra: None,
        }
    }

    /// Every HTTP route served, in declaration order (without `/openapi.json`).
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.prepared
            .bindings
            .iter()
            .map(|b| RouteInfo {
                method: b.http_method.to_string(),
                template: b.template.clone(),
                rpc: b.method.full_name().to_owned(),
            })
            .collect()
    }
}

fn router(bindings: &[Arc<Binding>], openapi: Option<&'static str>) -> Result<Router<Arc<Shared>>, RuleError> {
    let mut by_path: BTreeMap<&str, Vec<&Arc<Binding>>> = BTreeMap::new();
    for binding in bindings {
        by_path.entry(binding.router_path.as_str()).or_default().push(binding);
    }
    let mut router = Router::new();
    for (path, bindings) in by_path {
        let mut methods = MethodRouter::new();
        let mut allowed: Vec<String> = Vec::new();
        for binding in bindings {
            let filter = MethodFilter::try_from(binding.http_method.clone()).map_err(|_| RuleError::Invalid {
                method: binding.method.full_name().to_owned(),
                template: binding.template.clone(),
                reason: format!("HTTP method {} cannot be routed", binding.http_method),
            })?;
            allowed.push(binding.http_method.to_string());
            if binding.http_method == Method::GET {
                allowed.push(Method::HEAD.to_string());
            }
            let binding = binding.clone();
            methods = methods.on(
                filter,
                move |state: State<Arc<Shared>>,
                      params: Result<RawPathParams, RawPathParamsRejection>,
                      request: axum::extract::Request| serve(state, binding.clone(), params, request),
            );
        }
        // In the usual order (GET, HEAD, POST, PUT, PATCH, DELETE), whatever
        // order the rpcs are declared in.
        let rank = |m: &String| {
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .position(|x| x == m)
        };
        allowed.sort_by_key(|m| (rank(m).unwrap_or(usize::MAX), m.clone()));
        let allow = allowed.join(", ");
        methods = methods.fallback(
            move |State(shared): State<Arc<Shared>>, request: axum::extract::Request| async move {
                let message = format!(
                    "{} is not allowed on {}; allowed: {allow}",
                    request.method(),
                    request.uri().path()
                );
                let mut response = gateway_error(
                    &shared.pool,
                    StatusCode::METHOD_NOT_ALLOWED,
                    Code::Unimplemented,
                    message,
                );
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            },
        );
        router = router.route(path, methods);
    }
    if let Some(document) = openapi {
        router = router.route(
            OPENAPI_PATH,
            axum::routing::get(move || async move {
                let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(
                    document.as_bytes(),
                ))));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(json::CONTENT_TYPE));
                response
            }),
        );
    }
    Ok(router.fallback(
        |State(shared): State<Arc<Shared>>, request: axum::extract::Request| async move {
            let message = format!(
                "no route for {} {}; the routes are listed at {OPENAPI_PATH}",
                request.method(),
                request.uri().path()
            );
            gateway_error(&shared.pool, StatusCode::NOT_FOUND, Code::NotFound, message)
        },
    ))
}

/// The handler of every transcoded route.
async fn serve(
    State(shared): State<Arc<Shared>>,
    binding: Arc<Binding>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: axum::extract::Request,
) -> Response<Body> {
    let params: Vec<(String, String)> = match params {
        Ok(params) => params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        Err(rejection) => {
            let message = format!("bad path: {}", rejection.body_text());
            return gateway_error(&shared.pool, StatusCode::BAD_REQUEST, Code::InvalidArgument, message);
        }
    };
    transcode::call(shared, binding, params, request).await
}

impl<S, ResBody> Layer<S> for GatewayLayer
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Service = Gateway<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let prepared = &self.prepared;
        let grpc = BoxCloneSyncService::new(
            inner
                .clone()
                .map_response(|response: Response<ResBody>| response.map(Body::new))
                .map_err(|error: S::Error| tonic::Status::from_error(error.into())),
        );
        let shared = Arc::new(Shared {
            pool: prepared.pool.clone(),
            grpc,
            max_body_bytes: prepared.max_body_bytes,
            request_timeout: prepared.request_timeout,
        });
        Gateway {
            web: prepared
                .grpc_web
                .then(|| tonic_web::GrpcWebLayer::new().layer(inner.clone())),
            grpc: inner,
            http: match &prepared.extra {
                Some(extra) => prepared.router.clone().with_state(shared).merge(extra.clone()),
                None => prepared.router.clone().with_state(shared),
            },
        }
    }
}

/// Service produced by [`GatewayLayer`]: gRPC, gRPC-Web or HTTP/JSON by
/// content type.
#[derive(Clone)]
pub struct Gateway<S> {
    grpc: S,
    web: Option<tonic_web::GrpcWebService<S>>,
    http: Router,
}

impl<S> std::fmt::Debug for Gateway<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("grpc_web", &self.web.is_some())
            .finish()
    }
}

/// How a request is to be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Grpc,
    GrpcWeb,
    Http,
}

fn protocol(request: &Request<Body>) -> Protocol {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if content_type.starts_with(b"application/grpc-web") {
        Protocol::GrpcWeb
    } else if content_type.starts_with(b"application/grpc") {
        Protocol::Grpc
    } else {
        Protocol::Http
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> Service<Request<Body>> for Gateway<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call goes to a clone made ready with `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match (protocol(&request), &self.web) {
            (Protocol::Grpc, _) => {
                // A combinator, not an async block: rustc proves an async
                // block holding the inner future `Send` with the lifetimes
                // of the stack's types erased, which can fail for stacks
                // naming boxed errors.
                use futures::TryFutureExt;
                Box::pin(
                    self.grpc
                        .clone()
                        .oneshot(request)
                        .map_ok(|response| response.map(Body::new)),
                )
            }
            (Protocol::GrpcWeb, Some(web)) => Box::pin(web.clone().oneshot(request)),
            (Protocol::GrpcWeb, None) | (Protocol::Http, _) => {
                let received = Received(request.extensions().clone());
                request.extensions_mut().insert(received);
                let call = self.http.clone().oneshot(request);
                Box::pin(async move {
                    let response = match call.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok(response.map(Body::new))
                })
            }
        }
    }
}

/// For signatures that name the router's error type.
pub type Never = Infallible;
