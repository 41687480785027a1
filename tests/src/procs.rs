//! The whole mesh as real processes (command-svc, query-svc, event-relay)
//! on free ports, with an event store, stream, channel and read model of its
//! own: what the HTTP/JSON and console suites talk to with curl, Python and
//! a browser.

use std::time::Duration;

use crate::{
    redis_url, servers::free_port, services::ServiceProc, unique, Backend, ReadBackend, TestDatabase, TestReadStore,
};

/// Names and ports of one mesh.
pub struct ProcMesh {
    /// command-svc.
    pub command: ServiceProc,
    /// query-svc.
    pub query: ServiceProc,
    /// event-relay (its health port is `relay.port`).
    pub relay: ServiceProc,
    /// The Redis stream the events go to (the DLQ is `<stream>.dlq`).
    pub stream: String,
    /// The read model (the default store, SQLite).
    pub read_store: TestReadStore,
    _db: TestDatabase,
}

impl ProcMesh {
    /// Starts the three binaries (each with `extra` in its environment too)
    /// and waits until they are healthy.
    pub async fn start(extra: &[(&str, String)]) -> Self {
        let db = TestDatabase::create(Backend::Sqlite).await;
        let stream = unique("posts.events");
        let read_store = TestReadStore::new(ReadBackend::Sqlite);
        let channel = unique("posts.applied");
        let shared = vec![
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", stream.clone()),
            ("NOTIFY_CHANNEL", channel),
            ("READ_STORE_URL", read_store.url.clone()),
        ];
        let with = |own: Vec<(&'static str, String)>| -> Vec<(&str, String)> {
            let mut env = shared.clone();
            env.extend(own);
            env.extend(extra.iter().cloned());
            env
        };
        let (command_port, query_port, relay_port) = (free_port(), free_port(), free_port());
        let mut command = ServiceProc::spawn(
            "command-svc",
            command_port,
            &[],
            &with(vec![
                ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{command_port}")),
                ("COMMAND_DATABASE_URL", db.url.clone()),
            ]),
        );
        let mut query = ServiceProc::spawn(
            "query-svc",
            query_port,
            &[],
            &with(vec![("QUERY_LISTEN_ADDR", format!("127.0.0.1:{query_port}"))]),
        );
        let mut relay = ServiceProc::spawn(
            "event-relay",
            relay_port,
            &[],
            &with(vec![
                ("RELAY_HEALTH_ADDR", format!("127.0.0.1:{relay_port}")),
                ("COMMAND_ENDPOINT", format!("http://127.0.0.1:{command_port}")),
                // Poison entries reach the DLQ quickly.
                ("RELAY_RETRY_BASE_MS", "10".to_owned()),
                ("RELAY_RETRY_MAX_MS", "50".to_owned()),
            ]),
        );
        for service in [&mut command, &mut query, &mut relay] {
            service.wait_healthy(Duration::from_secs(60)).await;
        }
        Self {
            command,
            query,
            relay,
            stream,
            read_store,
            _db: db,
        }
    }

    /// `http://127.0.0.1:<port>` of command-svc, query-svc and the relay.
    pub fn urls(&self) -> (String, String, String) {
        (self.command.endpoint(), self.query.endpoint(), self.relay.endpoint())
    }
}
