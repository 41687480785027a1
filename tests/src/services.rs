//! The postmesh binaries as real processes: started with a config in their
//! environment, waited on through gRPC health, stopped with SIGTERM or SIGKILL.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

/// Directory holding the built binaries (`cargo build --workspace --bins`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("POSTMESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/debug/deps/<test-exe> -> target/debug
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf()
}

/// Path of a workspace binary, with a clear failure when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running service binary.
pub struct ServiceProc {
    /// Binary name.
    pub name: String,
    /// gRPC port it serves on.
    pub port: u16,
    child: Option<Child>,
    /// File receiving its stderr (its logs).
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServiceProc {
    /// Starts `name` with `env` and `args`; does not wait for it.
    pub fn spawn(name: &str, port: u16, args: &[&str], env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let mut command = Command::new(bin(name));
        command
            .args(args)
            .env("LOG_FORMAT", "json")
            .env("METRICS_ADDR", "127.0.0.1:0")
            // event-relay's catch-up reads the event store at COMMAND_ENDPOINT,
            // by default 127.0.0.1:50051, which may be some other mesh's: a
            // test that wants the catch-up names its own command-svc, and the
            // rest point at nothing (the catch-up then only logs that it
            // cannot reach it).
            .env("COMMAND_ENDPOINT", "http://127.0.0.1:1")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        Self {
            name: name.to_owned(),
            port,
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until its health check answers SERVING; panics with its log otherwise.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let endpoint = self.endpoint();
        let ok = crate::wait_until(timeout, || {
            let endpoint = endpoint.clone();
            async move { health(&endpoint, "").await == Some(ServingStatus::Serving) }
        })
        .await;
        if !ok {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "{} did not become healthy (exit: {exited:?}); log:\n{}",
                self.name,
                self.logs()
            );
        }
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its JSON log lines whose message is `message`, parsed (lines that
    /// are not JSON, such as a panic's, are skipped).
    pub fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }

    /// SIGKILL: no cleanup at all.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends signal `name` (`STOP`, `CONT`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([format!("-{name}"), child.id().to_string()])
                .status();
        }
    }

    /// Waits for exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The health status of `service` at `endpoint`, or None when unreachable.
pub async fn health(endpoint: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}
