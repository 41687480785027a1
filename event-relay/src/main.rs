use clap::Parser;
use event_relay::config::{Cli, Command};
use postmesh_common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = event_relay::startup::Application::build(cli.config).await?;
            app.run_until(shutdown::from_os_signals()).await
        }
        Command::Dlq { action } => event_relay::dlq::run_cli(&cli.config, action).await,
        Command::Rebuild => event_relay::rebuild::run(&cli.config).await.map(|_| ()),
        Command::Status => event_relay::status::run(&cli.config).await,
    }
}
