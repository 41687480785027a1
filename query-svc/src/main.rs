use clap::Parser;
use postmesh_common::{shutdown, telemetry};
use query_svc::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = shutdown::from_os_signals();
    // Kept until exit: dropping it flushes buffered spans and metrics.
    let telemetry = telemetry::start(
        "query-svc",
        cli.config.log_format,
        cli.config.metrics_addr,
        shutdown.clone(),
    )
    .await;
    let app = query_svc::startup::Application::build(cli.config).await?;
    let result = app.run_until(shutdown).await;
    telemetry.shutdown();
    result
}
