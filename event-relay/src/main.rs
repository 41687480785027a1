//! The `event-relay` binary: `serve` (the default), `dlq`, `rebuild` or `status`; all else is the library.

use clap::Parser;
use event_relay::{
    config::{Cli, Command},
    dlq, rebuild,
    startup::Application,
    status,
};
use postmesh_common::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    // The one-shot commands log, but serve no metrics.
    let logs = || telemetry::init("event-relay", config.log_format);
    match command.unwrap_or(Command::Serve) {
        Command::Serve => {
            server::main(
                "event-relay",
                config.log_format,
                config.metrics_addr,
                |shutdown| async { Application::build(config).await?.run_until(shutdown).await },
            )
            .await
        }
        Command::Dlq { action } => {
            let _logs = logs();
            dlq::run_cli(&config, action).await
        }
        Command::Rebuild => {
            let _logs = logs();
            rebuild::run(&config).await.map(|_| ())
        }
        Command::Status => {
            let _logs = logs();
            status::run(&config).await
        }
    }
}
