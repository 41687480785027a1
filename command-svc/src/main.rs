use clap::Parser;
use command_svc::config::{Cli, Command};
use postmesh_common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = command_svc::startup::Application::build(cli.config).await?;
            app.run_until(shutdown::from_os_signals()).await
        }
        Command::Migrate => command_svc::startup::migrate_only(&cli.config).await,
    }
}
