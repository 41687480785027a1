//! The `command-svc` binary: `serve` (the default) or `migrate`; all else is the library.

use clap::Parser;
use command_svc::{
    config::{Cli, Command},
    startup,
};
use postmesh_common::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    match command.unwrap_or(Command::Serve) {
        Command::Serve => {
            server::main(
                "command-svc",
                config.log_format,
                config.metrics_addr,
                |shutdown| async { startup::Application::build(config).await?.run_until(shutdown).await },
            )
            .await
        }
        Command::Migrate => {
            let _telemetry = telemetry::init("command-svc", config.log_format);
            startup::migrate_only(&config).await
        }
    }
}
