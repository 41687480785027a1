//! A mariadbd of a test's own: its own datadir and port, so a test can really
//! crash and restart the event store's server (SIGKILL, InnoDB crash
//! recovery on the next start) without touching the MariaDB other tests share.
//! Initialising the datadir takes about a second and a start a fraction of one.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::servers::free_port;

/// A private MariaDB server on 127.0.0.1, restartable on the same port with
/// its data kept. Authentication is off (`--skip-grant-tables`): it listens
/// on loopback only and lives as long as the test.
pub struct MariaDbProc {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn server_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"] {
        if std::path::Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("mariadbd")
}

fn install_db_binary() -> &'static str {
    if Command::new("mariadb-install-db").arg("--help").output().is_ok() {
        "mariadb-install-db"
    } else {
        "mysql_install_db"
    }
}

impl MariaDbProc {
    /// Initialises a datadir, starts the server and waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let datadir = dir.path().join("data");
        let output = Command::new(install_db_binary())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--user={}", whoami()))
            .output()
            .expect("mariadb-install-db must be installed: scripts/install-deps.sh");
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `mysql://root@127.0.0.1:port/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        use sea_orm::ConnectionTrait;
        let admin = sea_orm::Database::connect(format!("mysql://root@127.0.0.1:{}", self.port))
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .await
            .unwrap();
        admin.close().await.ok();
        self.url(name)
    }

    /// SIGKILL: a crash, no clean shutdown. Connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server freezes with its connections open, as a stalled
    /// host or a long GC-like pause looks to its clients.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Starts it (again) on the same port and datadir and waits until a
    /// query succeeds (InnoDB recovery included).
    pub async fn restart(&mut self) {
        self.kill();
        let base = self.dir.path();
        let mut command = Command::new(server_binary());
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", base.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", base.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", base.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", base.join("error.log").display()))
            .arg("--skip-grant-tables")
            .arg("--skip-name-resolve")
            .arg("--skip-log-bin")
            .arg("--character-set-server=utf8mb4")
            .arg("--max-connections=300")
            .arg("--innodb-buffer-pool-size=32M")
            .arg("--innodb-log-file-size=32M")
            .arg(format!("--user={}", whoami()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().expect("mariadbd must be installed"));
        let admin = format!("mysql://root@127.0.0.1:{}", self.port);
        let up = crate::wait_until(Duration::from_secs(30), || {
            let admin = admin.clone();
            async move {
                use sea_orm::ConnectionTrait;
                let mut options = sea_orm::ConnectOptions::new(admin);
                options
                    .connect_timeout(Duration::from_secs(1))
                    .max_connections(1)
                    .sqlx_logging(false);
                let Ok(db) = sea_orm::Database::connect(options).await else {
                    return false;
                };
                let ok = db.execute_unprepared("SELECT 1").await.is_ok();
                db.close().await.ok();
                ok
            }
        })
        .await;
        assert!(
            up,
            "private mariadbd on port {} did not start:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for MariaDbProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}
