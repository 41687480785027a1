use clap::Parser;
use command_svc::config::{Cli, Command};
use postmesh_common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = shutdown::from_os_signals();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let telemetry = telemetry::start(
                "command-svc",
                cli.config.log_format,
                cli.config.metrics_addr,
                shutdown.clone(),
            )
            .await;
            let app = command_svc::startup::Application::build(cli.config).await?;
            let result = app.run_until(shutdown).await;
            telemetry.shutdown();
            result
        }
        Command::Migrate => {
            let _telemetry = telemetry::init("command-svc", cli.config.log_format);
            command_svc::startup::migrate_only(&cli.config).await
        }
    }
}
