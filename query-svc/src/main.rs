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
