//! Bearer-token (JWT) checks, and the one server interceptor
//! ([`AuthInterceptor`]) every service puts in front of its API.
//!
//! Off by default. With a verification key configured (`AUTH_JWT_KEY_FILE`:
//! RSA or Ed25519 public keys in PEM, or a JWKS file), a call that needs
//! authentication must carry `authorization: Bearer <JWT>` signed with RS256
//! or EdDSA by one of those keys, issued by `AUTH_ISSUER` for
//! `AUTH_AUDIENCE`, not expired (nor not yet valid), with a `sub`. The scope
//! it needs (`scope`, space-separated, or `scp`) depends on the call: writes
//! need `AUTH_WRITE_SCOPE`; reads need `AUTH_READ_SCOPE` only when
//! `AUTH_REQUIRE_FOR_READS` is on. Health and reflection are never checked.
//!
//! The key file is watched like the TLS files, so keys rotate without a
//! restart (list the old and the new key together during the overlap).
//! Neither tokens nor keys ever appear in logs or error messages.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use jsonwebtoken::{
    jwk::{AlgorithmParameters, JwkSet},
    Algorithm, DecodingKey, Validation,
};
use serde::Deserialize;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::{
    config::{defaults, secs},
    reload::{LoadError, Reloading},
};

/// The write scope unless configured otherwise.
pub const DEFAULT_WRITE_SCOPE: &str = "posts:write";
/// The read scope unless configured otherwise.
pub const DEFAULT_READ_SCOPE: &str = "posts:read";
/// Longest `sub` kept as an event's actor (the column holds 255 characters).
const MAX_SUBJECT_CHARS: usize = 255;

/// Token settings, read identically by every service.
#[derive(Args, Clone, Debug)]
pub struct AuthArgs {
    /// Public key(s) that verify bearer tokens: PEM (RSA and/or Ed25519
    /// `PUBLIC KEY` blocks) or a JWKS JSON file. Setting it turns token
    /// checks on for writes; needs AUTH_ISSUER and AUTH_AUDIENCE.
    #[arg(long, env = "AUTH_JWT_KEY_FILE")]
    pub auth_jwt_key_file: Option<PathBuf>,
    /// The `iss` every token must carry.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// The `aud` every token must carry (comma-separated: any of them).
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Scope a token needs for writes (CreatePost, UpdatePost, DeletePost).
    #[arg(long, env = "AUTH_WRITE_SCOPE", default_value = DEFAULT_WRITE_SCOPE)]
    pub auth_write_scope: String,
    /// Scope a token needs for reads, when reads require a token.
    #[arg(long, env = "AUTH_READ_SCOPE", default_value = DEFAULT_READ_SCOPE)]
    pub auth_read_scope: String,
    /// Require a token for reads too (PostQuery, EventStore); off: reads are open.
    #[arg(long, env = "AUTH_REQUIRE_FOR_READS", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_require_for_reads: bool,
    /// Clock skew tolerated on `exp` and `nbf` (seconds).
    #[arg(long = "auth-leeway-secs", env = "AUTH_LEEWAY_SECS", default_value = "30", value_parser = secs)]
    pub auth_leeway: Duration,
    /// How often the key file is checked for changes (seconds).
    #[arg(long = "auth-reload-secs", env = "AUTH_RELOAD_SECS", default_value = "10", value_parser = secs)]
    pub auth_reload: Duration,
}

impl Default for AuthArgs {
    fn default() -> Self {
        defaults()
    }
}

/// What a call does, which decides the scope it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Changes posts.
    Write,
    /// Only reads.
    Read,
}

/// Who made a call, from a verified token (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`, trimmed to 255 characters without control characters.
    pub subject: String,
    /// The token's scopes.
    pub scopes: Vec<String>,
}

/// Why a call was refused. Messages name the problem, never the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or not a valid, current token from our issuer for our audience.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token without the scope this call needs.
    #[error("the token lacks the scope {0:?} this call needs")]
    MissingScope(String),
}

/// Why the auth settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Something required is missing or contradictory.
    #[error("{0}")]
    Invalid(String),
    /// The key file cannot be used.
    #[error("AUTH_JWT_KEY_FILE {path}: {reason}")]
    Keys {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One verification key.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys of the key file.
struct KeySet(Vec<Key>);

fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else { break };
        let label = after[..label_end].to_owned();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = after.find(&end_marker) else { break };
        let block_end = start + "-----BEGIN ".len() + end + end_marker.len();
        blocks.push((label, rest[start..block_end].to_owned()));
        rest = &rest[block_end..];
    }
    blocks
}

fn parse_keys(bytes: &[u8]) -> Result<KeySet, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not text (PEM or JWKS expected)".to_owned())?;
    let mut keys = Vec::new();
    if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("is not a JWKS document ({e})"))?;
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                // Symmetric and EC keys are not accepted: only RS256 and EdDSA.
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("holds an unusable JWK ({e})"))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
    } else {
        for (label, block) in pem_blocks(text) {
            match label.as_str() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                    let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(block.as_bytes()) {
                        (Algorithm::RS256, key)
                    } else if let Ok(key) = DecodingKey::from_ed_pem(block.as_bytes()) {
                        (Algorithm::EdDSA, key)
                    } else {
                        return Err("holds a public key that is neither RSA nor Ed25519".into());
                    };
                    keys.push(Key {
                        kid: None,
                        algorithm,
                        key,
                    });
                }
                label if label.contains("PRIVATE") => {
                    return Err("holds a private key; give the verifier only the public key".into());
                }
                _ => {}
            }
        }
    }
    if keys.is_empty() {
        return Err("holds no RSA or Ed25519 public key".into());
    }
    Ok(KeySet(keys))
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<serde_json::Value>,
}

/// Checks bearer tokens against the configured keys, issuer and audience.
#[derive(Clone)]
pub struct Authenticator {
    keys: Reloading<KeySet>,
    issuer: String,
    audiences: Vec<String>,
    write_scope: String,
    read_scope: String,
    require_for_reads: bool,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("require_for_reads", &self.require_for_reads)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// None when no key file is configured (no token checks). Must be called
    /// inside a Tokio runtime.
    pub fn from_args(args: &AuthArgs) -> Result<Option<Self>, AuthConfigError> {
        let Some(path) = &args.auth_jwt_key_file else {
            if args.auth_require_for_reads {
                return Err(AuthConfigError::Invalid(
                    "AUTH_REQUIRE_FOR_READS needs AUTH_JWT_KEY_FILE".into(),
                ));
            }
            return Ok(None);
        };
        let nonempty = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let issuer = nonempty(&args.auth_issuer)
            .ok_or_else(|| AuthConfigError::Invalid("AUTH_JWT_KEY_FILE needs AUTH_ISSUER".into()))?;
        let audiences: Vec<String> = nonempty(&args.auth_audience)
            .ok_or_else(|| AuthConfigError::Invalid("AUTH_JWT_KEY_FILE needs AUTH_AUDIENCE".into()))?
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        let shown = path.display().to_string();
        let keys = Reloading::watch(
            "token verification keys",
            vec![path.clone()],
            args.auth_reload.max(Duration::from_millis(10)),
            |files| parse_keys(&files[0]),
        )
        .map_err(|error| match error {
            LoadError::Read { source, .. } => AuthConfigError::Keys {
                path: shown.clone(),
                reason: source.to_string(),
            },
            LoadError::Build(reason) => AuthConfigError::Keys {
                path: shown.clone(),
                reason,
            },
        })?;
        Ok(Some(Self {
            keys,
            issuer,
            audiences,
            write_scope: args.auth_write_scope.trim().to_owned(),
            read_scope: args.auth_read_scope.trim().to_owned(),
            require_for_reads: args.auth_require_for_reads,
            leeway: args.auth_leeway.as_secs(),
        }))
    }

    /// True when reads need a token.
    pub fn requires_token_for_reads(&self) -> bool {
        self.require_for_reads
    }

    /// Checks the call's token for `access`. `Ok(None)`: no token needed
    /// (an open read); `Ok(Some)`: who called.
    pub fn check(&self, metadata: &MetadataMap, access: Access) -> Result<Option<Principal>, AuthError> {
        let scope = match access {
            Access::Write => &self.write_scope,
            Access::Read if self.require_for_reads => &self.read_scope,
            Access::Read => return Ok(None),
        };
        let token = bearer(metadata)?;
        let principal = self.verify(token)?;
        if !scope.is_empty() && !principal.scopes.iter().any(|s| s == scope) {
            return Err(AuthError::MissingScope(scope.clone()));
        }
        Ok(Some(principal))
    }

    /// Verifies a token's signature and claims; no scope check.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let unauthenticated = |why: &str| AuthError::Unauthenticated(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("malformed bearer token"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::EdDSA) {
            return Err(unauthenticated(
                "bearer token algorithm not accepted (RS256 or EdDSA only)",
            ));
        }
        let keys = self.keys.get();
        let candidates: Vec<&Key> = keys
            .0
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let mut outcome = Err(unauthenticated("bearer token signature invalid"));
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind as Kind;
                    let why = match error.kind() {
                        // Try the next key.
                        Kind::InvalidSignature | Kind::InvalidAlgorithm | Kind::InvalidKeyFormat | Kind::Crypto(_) => {
                            continue
                        }
                        Kind::ExpiredSignature => "bearer token expired",
                        Kind::ImmatureSignature => "bearer token not valid yet",
                        Kind::InvalidAudience => "bearer token audience not accepted",
                        Kind::InvalidIssuer => "bearer token issuer not accepted",
                        Kind::MissingRequiredClaim(_) => "bearer token lacks a required claim (exp, iss, aud, sub)",
                        _ => "malformed bearer token",
                    };
                    outcome = Err(unauthenticated(why));
                    break;
                }
            }
        }
        let claims = outcome?;
        let subject: String = claims
            .sub
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_SUBJECT_CHARS)
            .collect();
        if subject.trim().is_empty() {
            return Err(unauthenticated("bearer token has an empty subject"));
        }
        let mut scopes: Vec<String> = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        match claims.scp {
            Some(serde_json::Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(serde_json::Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(|v| v.as_str()).map(str::to_owned))
            }
            _ => {}
        }
        Ok(Principal { subject, scopes })
    }
}

/// The token of an `authorization: Bearer ...` header.
fn bearer(metadata: &MetadataMap) -> Result<&str, AuthError> {
    let missing = || AuthError::Unauthenticated("missing bearer token (authorization: Bearer <JWT>)".into());
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

/// The bearer-token check in front of a service's API: refused calls never
/// reach a handler. A no-op when tokens are not configured. A verified
/// caller's [`Principal`] goes into the request's extensions.
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    auth: Option<Arc<Authenticator>>,
    access: Access,
}

impl AuthInterceptor {
    /// Checks each call for `access` with `auth` (None: no checks).
    pub fn new(auth: Option<Arc<Authenticator>>, access: Access) -> Self {
        Self { auth, access }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(auth) = &self.auth else {
            return Ok(request);
        };
        match auth.check(request.metadata(), self.access) {
            Ok(Some(principal)) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Ok(None) => Ok(request),
            Err(error) => {
                let status = tonic::Status::from(error);
                tracing::info!(access = ?self.access, code = ?status.code(), reason = %status.message(), "call refused");
                Err(status)
            }
        }
    }
}

/// UNAUTHENTICATED or PERMISSION_DENIED, with the reason (never the token).
impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::Unauthenticated(_) => Self::unauthenticated(message),
            AuthError::MissingScope(_) => Self::permission_denied(message),
        }
    }
}

/// A client-side token source: a file re-read on every use, so a rotated
/// (for example Kubernetes-projected) token is picked up.
#[derive(Clone, Debug, Default)]
pub struct TokenFile(pub Option<PathBuf>);

impl TokenFile {
    /// The `authorization` value to send, or None without a token file.
    pub fn header(&self) -> Result<Option<MetadataValue<tonic::metadata::Ascii>>, std::io::Error> {
        let Some(path) = &self.0 else { return Ok(None) };
        let token = std::fs::read_to_string(path)?;
        let value = format!("Bearer {}", token.trim());
        // Never echo the token: the error says only that it is not a header value.
        let mut value: MetadataValue<tonic::metadata::Ascii> = value.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a token", path.display()),
            )
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Adds the token to every call (a tonic client interceptor).
impl tonic::service::Interceptor for TokenFile {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self
            .header()
            .map_err(|e| tonic::Status::unauthenticated(format!("cannot read the token file: {e}")))?
        {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_split_and_private_keys_refused() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\nmore\n-----BEGIN X-----\nB\n-----END X-----\n";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].0, "PUBLIC KEY");
        assert!(blocks[1].1.ends_with("-----END X-----"));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let error = parse_keys(private.as_bytes()).err().unwrap();
        assert!(error.contains("private key"), "{error}");
        assert!(!error.contains("AAAA"));
    }

    #[test]
    fn bearer_header_forms() {
        let mut metadata = MetadataMap::new();
        assert!(bearer(&metadata).is_err());
        metadata.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&metadata).is_err());
        metadata.insert("authorization", "bearer  abc.def.ghi ".parse().unwrap());
        assert_eq!(bearer(&metadata).unwrap(), "abc.def.ghi");
    }

    #[test]
    fn reads_without_a_key_cannot_be_closed() {
        let args = AuthArgs {
            auth_require_for_reads: true,
            ..AuthArgs::default()
        };
        assert!(Authenticator::from_args(&args).is_err());
        assert!(Authenticator::from_args(&AuthArgs::default()).unwrap().is_none());
    }
}
