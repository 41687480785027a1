use clap::Parser;
use postmesh_common::{shutdown, telemetry};
use query_svc::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.config.log_format);
    let app = query_svc::startup::Application::build(cli.config).await?;
    app.run_until(shutdown::from_os_signals()).await
}
