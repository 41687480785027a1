//! The `query-svc` binary: serves PostQuery; all else is the library.

use clap::Parser;
use postmesh_common::server;
use query_svc::{config::Cli, startup::Application};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { config } = Cli::parse();
    server::main("query-svc", config.log_format, config.metrics_addr, |shutdown| async {
        Application::build(config).await?.run_until(shutdown).await
    })
    .await
}
