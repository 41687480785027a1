//! TLS for every gRPC server and for the clients inside the mesh, with rustls
//! and the `ring` provider.
//!
//! Servers: a certificate chain and key on disk turn TLS on; a client CA
//! bundle on top requires client certificates signed by it (mTLS). The files
//! are watched ([`crate::reload`]), so a rotated Secret is picked up without a
//! restart: each new connection gets the configuration in force when it
//! arrives. Plaintext stays the default when no certificate is configured.
//!
//! Clients: [`ClientTls`] turns a `http://` or `https://` endpoint into a
//! tonic [`Endpoint`] that verifies the server against a CA bundle and, for
//! mTLS, presents a client certificate.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{
    config::{defaults, secs},
    reload::{LoadError, Reloading},
};

/// Makes `ring` the process-wide rustls provider, for libraries that build
/// their rustls configuration from the default (the Redis client's `rediss://`).
/// Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Server-side TLS settings, read identically by all three services.
#[derive(Args, Clone, Debug)]
pub struct ServerTlsArgs {
    /// PEM certificate chain the gRPC server presents; with TLS_KEY_FILE this
    /// turns TLS on (off by default: plaintext).
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA bundle: when set, every client must present a certificate
    /// signed by one of these CAs (mTLS); others are refused in the handshake.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// How often the certificate, key and client CA files are checked for
    /// changes (seconds).
    #[arg(long = "tls-reload-secs", env = "TLS_RELOAD_SECS", default_value = "10", value_parser = secs)]
    pub tls_reload: Duration,
    /// Longest a TLS handshake may take before the connection is dropped (seconds).
    #[arg(
        long = "tls-handshake-timeout-secs",
        env = "TLS_HANDSHAKE_TIMEOUT_SECS",
        default_value = "10",
        value_parser = secs
    )]
    pub tls_handshake_timeout: Duration,
    /// A second, plaintext listener serving only grpc.health.v1, for probes
    /// that cannot speak TLS (the kubelet's gRPC probe). Off by default.
    #[arg(long, env = "HEALTH_PROBE_ADDR")]
    pub health_probe_addr: Option<SocketAddr>,
}

impl Default for ServerTlsArgs {
    fn default() -> Self {
        defaults()
    }
}

/// What is wrong with a certificate, key or CA file. Names files, never their content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is not the PEM it should be.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What was expected.
        what: String,
    },
    /// rustls refused the combination (for example a key that does not
    /// belong to the certificate).
    #[error("{context}: {source}")]
    Rustls {
        /// Which files.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client CA bundle cannot verify client certificates.
    #[error("{path}: {source}")]
    ClientCa {
        /// The file.
        path: String,
        /// Why not.
        source: rustls::server::VerifierBuilderError,
    },
    /// Reading a file failed.
    #[error("TLS file unusable: {0}")]
    Load(String),
}

fn certificates(path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate list ({error})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn root_store(path: &str, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            context: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

fn private_key(path: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The parser's error can quote what it saw; a key file's content must
    // never reach a log, so only the file is named.
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "holds no PEM private key".into(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS configuration of a server, rebuilt whenever its files change.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Reloading<ServerConfig>,
    handshake_timeout: Duration,
    mutual: bool,
}

impl ServerTls {
    /// None when no certificate is configured (plaintext). Fails when the
    /// files cannot be read or do not make a valid configuration. Must be
    /// called inside a Tokio runtime.
    pub fn from_args(args: &ServerTlsArgs) -> Result<Option<Self>, TlsError> {
        let (cert, key) = match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) if args.tls_client_ca_file.is_none() => return Ok(None),
            _ => {
                return Err(TlsError::Load(
                    "TLS_CERT_FILE and TLS_KEY_FILE go together, and TLS_CLIENT_CA_FILE needs both".into(),
                ))
            }
        };
        let mut paths = vec![cert.clone(), key.clone()];
        paths.extend(args.tls_client_ca_file.clone());
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let interval = args.tls_reload.max(Duration::from_millis(10));
        let config = Reloading::watch("TLS certificate", paths, interval, move |files| {
            server_config(&names, files)
        })
        .map_err(|error| match error {
            LoadError::Read { path, source } => TlsError::Load(format!("cannot read {path}: {source}")),
            LoadError::Build(error) => error,
        })?;
        Ok(Some(Self {
            config,
            handshake_timeout: args.tls_handshake_timeout.max(Duration::from_millis(10)),
            mutual: args.tls_client_ca_file.is_some(),
        }))
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.get())
    }

    /// Longest a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// True when client certificates are required.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }
}

/// Builds a server configuration from (certificate chain, key[, client CA]) PEM bytes.
fn server_config(names: &[String], files: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&names[0], &files[0])?;
    let key = private_key(&names[1], &files[1])?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "protocol versions".into(),
            source,
        })?;
    let builder = match (names.get(2), files.get(2)) {
        (Some(name), Some(pem)) => {
            let roots = root_store(name, pem)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|source| TlsError::ClientCa {
                    path: name.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            context: format!("{} with {}", names[0], names[1]),
            source,
        })?;
    // gRPC is HTTP/2 only; clients such as grpc-go insist on ALPN "h2".
    // HTTP/1.1 too, for HTTP/JSON clients that speak only that (urllib).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Client-side TLS for one upstream: the CA that signed its certificate, and
/// for mTLS this client's own certificate and key. Empty: plaintext.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// PEM CA bundle the server's certificate must chain to; with none, an
    /// `https://` endpoint is verified against the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require mTLS.
    pub cert_file: Option<PathBuf>,
    /// PEM key of that certificate.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server's certificate for, when it differs from the
    /// endpoint's host.
    pub server_name: Option<String>,
}

/// Why a client endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Certificate without key or the other way round.
    #[error("a client certificate needs its key and the other way round")]
    HalfIdentity,
    /// The endpoint is not a valid URI, or tonic refused the TLS settings.
    #[error("endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ClientTlsError> {
    std::fs::read(path).map_err(|source| ClientTlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl ClientTls {
    /// True when any TLS setting is present (the endpoint then uses https).
    pub fn enabled(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some() || self.server_name.is_some()
    }

    /// The tonic TLS configuration, or None for plaintext.
    pub fn config(&self) -> Result<Option<ClientTlsConfig>, ClientTlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new();
        match &self.ca_file {
            Some(ca) => config = config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config = config.with_native_roots(),
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => return Err(ClientTlsError::HalfIdentity),
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }

    /// An endpoint for `uri`: with TLS configured, `http://` becomes
    /// `https://` and the server is verified; otherwise it is left as given
    /// (an `https://` URI then uses the system's roots).
    pub fn endpoint(&self, uri: &str) -> Result<Endpoint, ClientTlsError> {
        let wrap = |source| ClientTlsError::Endpoint {
            endpoint: uri.to_owned(),
            source,
        };
        let mut config = self.config()?;
        let uri = match (&config, uri.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => uri.to_owned(),
        };
        if config.is_none() && uri.starts_with("https://") {
            config = Some(ClientTlsConfig::new().with_native_roots());
        }
        let endpoint = Endpoint::from_shared(uri).map_err(wrap)?;
        match config {
            Some(config) => endpoint.tls_config(config).map_err(wrap),
            None => Ok(endpoint),
        }
    }
}

/// How event-relay (and tools) reach command-svc: TLS, mTLS and a bearer token.
#[derive(Args, Clone, Debug, Default)]
pub struct CommandClientArgs {
    /// CA bundle that signed command-svc's certificate; setting it makes the
    /// client use TLS.
    #[arg(long, env = "COMMAND_TLS_CA_FILE")]
    pub command_tls_ca_file: Option<PathBuf>,
    /// Client certificate presented to command-svc (mTLS).
    #[arg(long, env = "COMMAND_TLS_CERT_FILE", requires = "command_tls_key_file")]
    pub command_tls_cert_file: Option<PathBuf>,
    /// Key of that client certificate.
    #[arg(long, env = "COMMAND_TLS_KEY_FILE", requires = "command_tls_cert_file")]
    pub command_tls_key_file: Option<PathBuf>,
    /// Name command-svc's certificate is checked against, when not the endpoint's host.
    #[arg(long, env = "COMMAND_TLS_SERVER_NAME")]
    pub command_tls_server_name: Option<String>,
    /// File holding a bearer token (JWT) sent to command-svc; re-read on
    /// every connection, so a rotated token is used without a restart.
    #[arg(long, env = "COMMAND_TOKEN_FILE")]
    pub command_token_file: Option<PathBuf>,
}

impl CommandClientArgs {
    /// The TLS half of these settings.
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca_file: self.command_tls_ca_file.clone(),
            cert_file: self.command_tls_cert_file.clone(),
            key_file: self.command_tls_key_file.clone(),
            server_name: self.command_tls_server_name.clone(),
        }
    }
}

/// How a client (the bench, tools) reaches query-svc: TLS, mTLS and a bearer token.
#[derive(Args, Clone, Debug, Default)]
pub struct QueryClientArgs {
    /// CA bundle that signed query-svc's certificate; setting it makes the
    /// client use TLS.
    #[arg(long, env = "QUERY_TLS_CA_FILE")]
    pub query_tls_ca_file: Option<PathBuf>,
    /// Client certificate presented to query-svc (mTLS).
    #[arg(long, env = "QUERY_TLS_CERT_FILE", requires = "query_tls_key_file")]
    pub query_tls_cert_file: Option<PathBuf>,
    /// Key of that client certificate.
    #[arg(long, env = "QUERY_TLS_KEY_FILE", requires = "query_tls_cert_file")]
    pub query_tls_key_file: Option<PathBuf>,
    /// Name query-svc's certificate is checked against, when not the endpoint's host.
    #[arg(long, env = "QUERY_TLS_SERVER_NAME")]
    pub query_tls_server_name: Option<String>,
    /// File holding a bearer token (JWT) sent to query-svc.
    #[arg(long, env = "QUERY_TOKEN_FILE")]
    pub query_token_file: Option<PathBuf>,
}

impl QueryClientArgs {
    /// The TLS half of these settings.
    pub fn tls(&self) -> ClientTls {
        ClientTls {
            ca_file: self.query_tls_ca_file.clone(),
            cert_file: self.query_tls_cert_file.clone(),
            key_file: self.query_tls_key_file.clone(),
            server_name: self.query_tls_server_name.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[tokio::test]
    async fn no_certificate_means_plaintext() {
        assert!(ServerTls::from_args(&ServerTlsArgs::default()).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_key_of_another_certificate_is_refused_and_its_content_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let (cert_file, key_file) = files(dir.path(), "a", &cert, &other_key);
        let args = ServerTlsArgs {
            tls_cert_file: Some(cert_file),
            tls_key_file: Some(key_file.clone()),
            tls_reload: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(1),
            ..ServerTlsArgs::default()
        };
        let error = ServerTls::from_args(&args).unwrap_err().to_string();
        assert!(error.contains("a.key"), "{error}");
        let secret_line = other_key.lines().nth(1).unwrap();
        assert!(!error.contains(secret_line), "{error}");
    }

    #[tokio::test]
    async fn garbage_instead_of_a_key_names_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed();
        let (cert_file, key_file) = files(dir.path(), "b", &cert, "hunter2-not-a-key");
        let args = ServerTlsArgs {
            tls_cert_file: Some(cert_file),
            tls_key_file: Some(key_file),
            tls_reload: Duration::from_secs(1),
            tls_handshake_timeout: Duration::from_secs(1),
            ..ServerTlsArgs::default()
        };
        let error = ServerTls::from_args(&args).unwrap_err().to_string();
        assert!(error.contains("b.key") && !error.contains("hunter2"), "{error}");
    }

    #[test]
    fn client_endpoints_switch_to_https_when_tls_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert).unwrap();
        let tls = ClientTls {
            ca_file: Some(ca),
            ..ClientTls::default()
        };
        let endpoint = tls.endpoint("http://127.0.0.1:1").unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("https"));
        let plain = ClientTls::default().endpoint("http://127.0.0.1:1").unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let half = ClientTls {
            cert_file: Some(dir.path().join("x")),
            ..ClientTls::default()
        };
        assert!(half.endpoint("http://127.0.0.1:1").is_err());
    }
}
