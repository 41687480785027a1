//! Locked doors for tests and measurements: a private PKI generated with
//! rcgen (a CA, a server certificate for localhost/127.0.0.1, a client
//! certificate), TLS and plaintext channels, an in-process command-svc with
//! given TLS and token settings, and JWT signers (Ed25519 keys from rcgen, an
//! RSA key from `openssl genrsa`).
//!
//! Used by `tests/tests/security.rs` and `examples/tls_overhead.rs`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use postmesh_common::{auth::AuthArgs, tls::ServerTlsArgs};
use postmesh_proto::v1::{post_command_client::PostCommandClient, CreatePostRequest};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tonic::{
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Request,
};

use crate::{redis_url, unique, Backend, TestDatabase};

// ------------------------------------------------------------------ PKI ----

/// A CA and what it signed, as PEM strings (write them to files with [`write`]).
pub struct Pki {
    /// The CA certificate: what clients trust, and the client CA for mTLS.
    pub ca_pem: String,
    /// Server certificate for `localhost`, `127.0.0.1` and `command-svc`.
    pub server_cert: String,
    /// The server certificate's private key.
    pub server_key: String,
    /// Client certificate (`event-relay`, client-auth usage).
    pub client_cert: String,
    /// The client certificate's private key.
    pub client_key: String,
}

/// A fresh self-signed CA named `name`, able to sign certificates.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate signed by `ca` for `names` (the first is also the common
/// name) with the extended key `usage`, as (certificate PEM, key PEM).
pub fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// A new CA named `name` with a server and a client certificate.
    pub fn new(name: &str) -> Self {
        let ca = ca(name);
        let (server_cert, server_key) = leaf(
            &ca,
            &["localhost", "127.0.0.1", "command-svc"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(&ca, &["event-relay"], ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca_pem: ca.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

/// Writes `content` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Server TLS settings from `pki`'s files in `dir`; `mutual` adds the client CA.
pub fn server_tls(dir: &Path, pki: &Pki, mutual: bool) -> ServerTlsArgs {
    ServerTlsArgs {
        tls_cert_file: Some(write(dir, "server.crt", &pki.server_cert)),
        tls_key_file: Some(write(dir, "server.key", &pki.server_key)),
        tls_client_ca_file: mutual.then(|| write(dir, "client-ca.crt", &pki.ca_pem)),
        tls_reload: Duration::from_millis(100),
        tls_handshake_timeout: Duration::from_secs(2),
        health_probe_addr: None,
    }
}

// ------------------------------------------------------------- channels ----

/// A TLS channel to `127.0.0.1:port` trusting `ca_pem` (server name
/// `localhost`), presenting `identity` (certificate PEM, key PEM) if given.
pub async fn tls_channel(
    port: u16,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A plaintext channel to `127.0.0.1:port`.
pub async fn plain_channel(port: u16) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

// ----------------------------------------------------------- command-svc ----

/// A CreatePost request with `title` and fixed content and author.
pub fn create(title: &str) -> CreatePostRequest {
    CreatePostRequest {
        title: title.into(),
        content: "locked doors".into(),
        author_name: "sec".into(),
        idempotency_key: String::new(),
    }
}

/// CreatePost over `channel`, with an optional bearer token; the new post's id.
pub async fn create_with(channel: Channel, token: Option<&str>) -> Result<i64, tonic::Status> {
    let mut request = Request::new(create("post"));
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    PostCommandClient::new(channel)
        .create_post(request)
        .await
        .map(|r| r.into_inner().post_id)
}

/// An in-process command-svc on its own SQLite database and stream.
pub struct CommandSvc {
    /// The running server (its address, and `stop`).
    pub running: command_svc::startup::Running,
    /// The Redis stream it publishes to.
    pub stream: String,
    _db: TestDatabase,
}

/// Starts command-svc on port 0 with the given TLS and token settings
/// (needs the shared Redis: `scripts/servers.sh up`).
pub async fn command_svc(tls: ServerTlsArgs, auth: AuthArgs) -> CommandSvc {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stream = unique("sec.events");
    let mut config = command_svc::config::Config::for_tests(db.url.clone(), &redis_url(), &stream);
    config.tls = tls;
    config.auth = auth;
    let running = command_svc::startup::spawn(config).await.expect("command-svc starts");
    CommandSvc {
        running,
        stream,
        _db: db,
    }
}

// --------------------------------------------------------------- tokens ----

/// The `iss` the servers are configured to accept (see [`auth_args`]).
pub const ISSUER: &str = "https://issuer.test";
/// The `aud` the servers are configured to accept (see [`auth_args`]).
pub const AUDIENCE: &str = "postmesh";

/// Seconds since the Unix epoch, for `iat`/`exp`/`nbf` claims.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A signing key and the PEM public key that verifies it.
pub struct Signer {
    /// The JWT algorithm the key signs with.
    pub algorithm: Algorithm,
    /// The private key.
    pub key: EncodingKey,
    /// The public key, as the servers read it from `AUTH_JWT_KEY_FILE`.
    pub public_pem: String,
}

/// A fresh Ed25519 (EdDSA) signer.
pub fn ed25519() -> Signer {
    let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        algorithm: Algorithm::EdDSA,
        key: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
    }
}

/// A fresh RSA 2048 (RS256) signer; its key files are written to `dir`
/// (needs `openssl` on the PATH).
pub fn rsa(dir: &Path) -> Signer {
    let private = dir.join("rsa.key");
    let public = dir.join("rsa.pub");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&private)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed")
        .success();
    assert!(ok, "openssl genrsa failed");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl rsa -pubout failed");
    Signer {
        algorithm: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap(),
        public_pem: std::fs::read_to_string(&public).unwrap(),
    }
}

impl Signer {
    /// A token with exactly `claims`, signed with this key.
    pub fn token(&self, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key).unwrap()
    }

    /// A valid token for `sub` with `scope`.
    pub fn good(&self, sub: &str, scope: &str) -> String {
        self.token(serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope,
            "iat": now(), "exp": now() + 300,
        }))
    }
}

/// Token settings that accept tokens signed for `public_pem` (written to
/// `dir/jwt.pub`) from [`ISSUER`] for [`AUDIENCE`], with no leeway.
pub fn auth_args(dir: &Path, public_pem: &str) -> AuthArgs {
    AuthArgs {
        auth_jwt_key_file: Some(write(dir, "jwt.pub", public_pem)),
        auth_issuer: Some(ISSUER.into()),
        auth_audience: Some(AUDIENCE.into()),
        auth_leeway: Duration::ZERO,
        auth_reload: Duration::from_millis(100),
        ..AuthArgs::default()
    }
}
