//! Prints what TLS, mTLS and a bearer token cost: per new connection (connect
//! plus one health check, averaged over 50) and per CreatePost on an open
//! connection (averaged over 200), against four in-process command-svc
//! servers on SQLite: plaintext, TLS, mTLS, and plaintext with an EdDSA token
//! check. A measurement, not a test: it never fails on its figures.
//!
//! Needs the shared Redis (`scripts/servers.sh up`, then `. scripts/env.sh`):
//!
//! ```sh
//! cargo run -p postmesh-tests --example tls_overhead            # debug build, as in docs/security.md
//! cargo run --release -p postmesh-tests --example tls_overhead  # release build
//! ```

use std::time::Instant;

use postmesh_common::{auth::AuthArgs, tls::ServerTlsArgs};
use postmesh_tests::security::{
    auth_args, command_svc, create_with, ed25519, plain_channel, server_tls, tls_channel, Pki,
};
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// A channel of `kind` (plain, tls, mtls or token) to `port`.
async fn connect(kind: &str, port: u16, pki: &Pki) -> Result<Channel, tonic::transport::Error> {
    match kind {
        "plain" | "token" => plain_channel(port).await,
        "tls" => tls_channel(port, &pki.ca_pem, None).await,
        _ => tls_channel(port, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key))).await,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new("overhead-ca");
    let plain = command_svc(ServerTlsArgs::default(), AuthArgs::default()).await;
    let tls_dir = dir.path().join("tls");
    std::fs::create_dir(&tls_dir)?;
    let tls = command_svc(server_tls(&tls_dir, &pki, false), AuthArgs::default()).await;
    let mtls_dir = dir.path().join("mtls");
    std::fs::create_dir(&mtls_dir)?;
    let mtls = command_svc(server_tls(&mtls_dir, &pki, true), AuthArgs::default()).await;
    let signer = ed25519();
    let auth = command_svc(ServerTlsArgs::default(), auth_args(dir.path(), &signer.public_pem)).await;
    let token = signer.good("bench", "posts:write");

    for (kind, port) in [
        ("plain", plain.running.addr.port()),
        ("tls", tls.running.addr.port()),
        ("mtls", mtls.running.addr.port()),
        ("token", auth.running.addr.port()),
    ] {
        let n = 50;
        let started = Instant::now();
        for _ in 0..n {
            let channel = connect(kind, port, &pki).await?;
            HealthClient::new(channel)
                .check(HealthCheckRequest { service: String::new() })
                .await?;
        }
        let per_connection = started.elapsed() / n;
        let channel = connect(kind, port, &pki).await?;
        let token = (kind == "token").then_some(token.as_str());
        let calls = 200;
        let started = Instant::now();
        for _ in 0..calls {
            create_with(channel.clone(), token).await?;
        }
        let per_call = started.elapsed() / calls;
        println!("{kind:>6}: new connection + health check {per_connection:?}; CreatePost on an open connection {per_call:?}");
    }

    for svc in [plain, tls, mtls, auth] {
        svc.running.stop().await?;
    }
    Ok(())
}
