//! One shutdown signal per process, fed by SIGTERM/SIGINT or by a test.

use tokio::sync::watch;

/// Cloneable handle that resolves once shutdown has been requested.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending half: whoever owns it decides when the process stops.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Creates a linked trigger and signal.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Requests shutdown; every `Shutdown::wait` returns.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A new signal linked to this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Waits until shutdown is requested (or the trigger is dropped).
    pub async fn wait(&mut self) {
        // An Err means the trigger is gone, which is a shutdown too.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    /// True once shutdown has been requested; cheap, for checks between batches.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                    _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C will stop the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A signal fired by SIGTERM or SIGINT, for `main` functions.
pub fn from_os_signals() -> Shutdown {
    let (trigger, signal) = channel();
    tokio::spawn(async move {
        os_signal().await;
        trigger.trigger();
    });
    signal
}
