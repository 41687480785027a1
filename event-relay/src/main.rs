use clap::Parser;
use event_relay::config::{Cli, Command};
use postmesh_common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let shutdown = shutdown::from_os_signals();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let telemetry = telemetry::start(
                "event-relay",
                cli.config.log_format,
                cli.config.metrics_addr,
                shutdown.clone(),
            )
            .await;
            let app = event_relay::startup::Application::build(cli.config).await?;
            let result = app.run_until(shutdown).await;
            telemetry.shutdown();
            result
        }
        Command::Dlq { action } => {
            let _telemetry = telemetry::init("event-relay", cli.config.log_format);
            event_relay::dlq::run_cli(&cli.config, action).await
        }
        Command::Rebuild => {
            let _telemetry = telemetry::init("event-relay", cli.config.log_format);
            event_relay::rebuild::run(&cli.config).await.map(|_| ())
        }
        Command::Status => {
            let _telemetry = telemetry::init("event-relay", cli.config.log_format);
            event_relay::status::run(&cli.config).await
        }
    }
}
