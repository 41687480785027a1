//! The gRPC server platform every postmesh service runs on:
//!
//! - [`Server::bind`]: the service port and, when `HEALTH_PROBE_ADDR` is set,
//!   the plaintext probe port (bound once the service's dependencies
//!   answered, so a client never reaches a port nobody serves yet);
//! - [`Server::serve`]: the service's routes behind the shared layers and
//!   accept loop (`layers`, `serve`), with `grpc.health.v1` and reflection
//!   (v1 and v1alpha, advertising only what this server implements), and on
//!   the same port whatever is not gRPC: HTTP/JSON of the services'
//!   `google.api.http` routes and gRPC-Web ([`Server::http_json`]), plain
//!   HTTP pages ([`Server::http_routes`]), else a JSON 404; until
//!   shutdown: health flips to NOT_SERVING, the listener closes, and
//!   in-flight requests drain within the grace period;
//! - [`main`]: what a binary's `serve` does around that (telemetry, signals);
//! - [`Running`]: a service serving in the background of this process.

use std::{future::Future, io, net::SocketAddr};

use postmesh_gateway::GatewayLayer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
    ServingStatus,
};

use crate::{
    layers,
    limits::ServerLimits,
    serve,
    shutdown::{self, Shutdown, ShutdownTrigger},
    telemetry::{self, LogFormat},
    tls::ServerTls,
};

/// A port that cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}{setting}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    /// Which setting named the address, for the probe port.
    setting: &'static str,
    source: io::Error,
}

/// Why serving stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP routes could not be built from the descriptors' annotations.
    #[error("HTTP routes: {0}")]
    Http(#[from] postmesh_gateway::RuleError),
    /// The server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A service's gRPC server, bound but not serving yet.
pub struct Server {
    listener: TcpListener,
    probe: Option<TcpListener>,
    tls: Option<ServerTls>,
    limits: ServerLimits,
    health: HealthReporter,
    /// The health names this server reports, besides the overall "".
    services: &'static [&'static str],
    /// The descriptor set describing `services`, for reflection.
    descriptors: Option<&'static [u8]>,
    /// The OpenAPI document of the HTTP/JSON routes, when they are served.
    openapi: Option<&'static str>,
    /// Plain HTTP routes served beside them.
    pages: Option<axum::Router>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and the probe port, if any.
    /// `services` are the health names reported (all NOT_SERVING until
    /// [`report`](Self::report) says otherwise; the overall "" starts SERVING).
    pub async fn bind(
        addr: SocketAddr,
        probe: Option<SocketAddr>,
        tls: Option<ServerTls>,
        limits: ServerLimits,
        services: &'static [&'static str],
    ) -> Result<Self, BindError> {
        let bind = |addr, setting| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, setting, source })
        };
        let listener = bind(addr, "").await?;
        let probe = match probe {
            Some(addr) => Some(bind(addr, " (HEALTH_PROBE_ADDR)").await?),
            None => None,
        };
        Ok(Self {
            listener,
            probe,
            tls,
            limits,
            health: HealthReporter::new(),
            services,
            descriptors: None,
            openapi: None,
            pages: None,
        })
    }

    /// Reflection also describes `services` from this encoded descriptor set.
    pub fn describe(mut self, descriptors: &'static [u8]) -> Self {
        self.descriptors = Some(descriptors);
        self
    }

    /// Also serves `services` as HTTP/JSON (their `google.api.http` routes,
    /// from the descriptor set given to [`describe`](Self::describe)) and
    /// gRPC-Web, on the same port, with `openapi` at `/openapi.json`. The
    /// body limit and timeout are the gRPC ones (MAX_MESSAGE_BYTES,
    /// REQUEST_TIMEOUT_SECS).
    pub fn http_json(mut self, openapi: &'static str) -> Self {
        self.openapi = Some(openapi);
        self
    }

    /// Also serves these plain HTTP routes on the same port (event-relay's
    /// operations console).
    pub fn http_routes(mut self, routes: axum::Router) -> Self {
        self.pages = Some(match self.pages.take() {
            Some(pages) => pages.merge(routes),
            None => routes,
        });
        self
    }

    /// What answers the requests that are not gRPC.
    fn gateway(&mut self) -> Result<GatewayLayer, postmesh_gateway::RuleError> {
        let mut builder = match (self.openapi, self.descriptors) {
            (Some(openapi), Some(descriptors)) => {
                let mut builder = GatewayLayer::builder(&[descriptors]).openapi(openapi).grpc_web(true);
                for service in self.services {
                    builder = builder.service(*service);
                }
                builder
            }
            _ => GatewayLayer::builder(&[]),
        };
        if let Some(pages) = self.pages.take() {
            builder = builder.routes(pages);
        }
        builder
            .max_body_bytes(self.limits.max_message_bytes)
            .request_timeout(self.limits.request_timeout())
            .build()
    }

    /// The bound service address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's TLS, None when plaintext.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// The handle that sets the health statuses.
    pub fn health(&self) -> Health {
        Health {
            reporter: self.health.clone(),
            services: self.services,
        }
    }

    /// Serves `routes` until `shutdown`, then `settle`s (work that must end
    /// before health reports the last time), flips health to NOT_SERVING,
    /// closes the listener and drains in-flight requests for at most the
    /// grace period.
    pub async fn serve(
        mut self,
        routes: Routes,
        shutdown: Shutdown,
        settle: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let gateway = self.gateway()?;
        let health_service = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        if let Some(probe) = self.probe {
            let routes = Routes::new(health_service.clone());
            tokio::spawn(serve::serve_probe(probe, routes, shutdown.clone()));
        }
        let (reflection, reflection_alpha) = reflection(self.descriptors, self.services)?;
        let health = Health {
            reporter: self.health,
            services: self.services,
        };
        let stop = {
            let mut fired = shutdown.clone();
            async move {
                fired.wait().await;
                settle.await;
                health.report(ServingStatus::NotServing).await;
                tracing::info!("health is NOT_SERVING; draining in-flight requests");
            }
        };
        let routes = routes
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha);
        let server = layers::server(&self.limits, gateway)
            .add_routes(routes)
            .serve_with_incoming_shutdown(serve::incoming(self.listener, &self.limits, self.tls), stop);
        Ok(bounded_drain(server, shutdown, self.limits.shutdown_grace).await?)
    }
}

/// Sets the health statuses of one server.
#[derive(Clone, Debug)]
pub struct Health {
    reporter: HealthReporter,
    services: &'static [&'static str],
}

impl Health {
    /// Reports `status` for the server as a whole ("") and each of its services.
    pub async fn report(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// Reflection v1 and v1alpha over `descriptors` and health, advertising only
/// `services` (a descriptor set may describe other servers' services too),
/// health and reflection itself.
fn reflection(
    descriptors: Option<&'static [u8]>,
    services: &'static [&'static str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection");
        if let Some(descriptors) = descriptors {
            builder = builder.register_encoded_file_descriptor_set(descriptors);
            for service in services {
                builder = builder.with_service_name(*service);
            }
        }
        builder
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Runs `server` until it ends on its own, or until `grace` has passed since
/// `shutdown` fired, whichever is first: in-flight work drains, but never
/// holds the process forever.
pub async fn bounded_drain<F, E>(server: F, mut shutdown: Shutdown, grace: std::time::Duration) -> Result<(), E>
where
    F: Future<Output = Result<(), E>>,
{
    tokio::select! {
        result = server => result,
        _ = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; abandoning requests still in flight");
            Ok(())
        }
    }
}

/// A binary's `serve`: the C allocator tuned for SQLite
/// ([`postmesh_malloc::keep_freed_memory`]), logs, traces and metrics (on
/// `metrics_addr`) for `service`, SIGTERM/SIGINT as the shutdown signal,
/// then `serve` until it returns, and the telemetry flushed.
pub async fn main<F, Fut>(
    service: &'static str,
    log_format: LogFormat,
    metrics_addr: Option<SocketAddr>,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    postmesh_malloc::keep_freed_memory();
    let shutdown = shutdown::from_os_signals();
    let telemetry = telemetry::start(service, log_format, metrics_addr, shutdown.clone()).await;
    let result = serve(shutdown).await;
    telemetry.shutdown();
    result
}

/// A service serving in the background of this process (tests and tools).
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Fire to stop it.
    pub trigger: ShutdownTrigger,
    /// Resolves when it has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Runs `serve` (listening on `addr`) in the background until [`stop`](Self::stop).
    pub fn spawn<F, Fut>(addr: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (trigger, signal) = shutdown::channel();
        let handle = tokio::spawn(serve(signal));
        Self { addr, trigger, handle }
    }

    /// `http://addr`, for tonic clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.trigger.trigger();
        self.handle.await?
    }
}
