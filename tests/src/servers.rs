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
    child: Option<Child>,
}

impl RedisProc {
    /// Starts it and waits until it answers PING.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL; nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits for PING.
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: scripts/install-deps.sh");
        self.child = Some(child);
        let url = self.url();
        let up = crate::wait_until(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
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
