//! Private server processes for tests that stop and restart a dependency.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A free TCP port on 127.0.0.1 (released before it is returned, so there is
/// a small race, acceptable for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Go-installed tool: $GOPATH/bin first, else whatever PATH finds.
pub fn go_bin(name: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let gopath = std::env::var("GOPATH").unwrap_or_else(|_| format!("{home}/go"));
    let candidate = PathBuf::from(gopath).join("bin").join(name);
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from(name)
    }
}

/// A redis-server of this test's own, on a fixed port across restarts.
pub struct RedisProc {
    /// Its port.
    pub port: u16,
    /// With [`start_durable`](Self::start_durable): where its append-only file lives.
    aof_dir: Option<tempfile::TempDir>,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts one without persistence and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts one with an append-only file fsynced on every write, so a
    /// SIGKILL loses nothing Redis acknowledged, as with a production Redis
    /// configured for durability. (A Redis without persistence loses every
    /// stream entry not yet projected when it dies; `event-relay rebuild` is
    /// the repair for that.)
    pub async fn start_durable() -> Self {
        Self::start_with(Some(tempfile::tempdir().unwrap())).await
    }

    async fn start_with(aof_dir: Option<tempfile::TempDir>) -> Self {
        let mut redis = Self {
            port: free_port(),
            aof_dir,
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (and append-only file) and waits for PING.
    pub async fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        match &self.aof_dir {
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path()),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: scripts/install-deps.sh");
        self.child = Some(child);
        let url = self.url();
        let up = crate::wait_until(Duration::from_secs(15), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                // LOADING while an append-only file is replayed; PONG once it serves.
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        })
        .await;
        assert!(up, "redis-server on port {} did not start", self.port);
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A FerretDB of this test's own (SQLite backend in a temp dir), restartable
/// on the same port with its data kept.
pub struct FerretProc {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl FerretProc {
    /// Starts it and waits until it accepts connections.
    pub async fn start() -> Self {
        let mut ferret = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        ferret.restart().await;
        ferret
    }

    /// `mongodb://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same data and port.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new(go_bin("ferretdb"))
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.path().display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg(format!("--debug-addr=127.0.0.1:{}", free_port()))
            .arg("--telemetry=disable")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ferretdb must be installed: scripts/install-deps.sh");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let up = crate::wait_until(Duration::from_secs(15), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
        assert!(up, "ferretdb on port {} did not start", self.port);
    }
}

impl Drop for FerretProc {
    fn drop(&mut self) {
        self.stop();
    }
}
