//! Where events travel: one stream on one Redis (the default), or one stream
//! per action, each optionally on its own Redis. command-svc publishes by these
//! routes and event-relay consumes all of them, so both read the same flags.

use clap::{Args, ValueEnum};
use postmesh_proto::v1::EventType;

/// How events are spread over Redis streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// Every event on one stream, `<stream>`.
    Single,
    /// One stream per action: `<stream>.create`, `<stream>.update`, `<stream>.delete`.
    PerAction,
}

/// The change an event records, as the topology routes it and logs and
/// dead-letter listings name it: the one mapping from [`EventType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// PostCreated.
    Create,
    /// PostUpdated.
    Update,
    /// PostDeleted.
    Delete,
}

impl Action {
    /// Every action, in the order of [`index`](Self::index).
    pub const ALL: [Self; 3] = [Self::Create, Self::Update, Self::Delete];

    /// The action an event of `event_type` records (none for `Unspecified`).
    pub fn of(event_type: EventType) -> Option<Self> {
        match event_type {
            EventType::Unspecified => None,
            EventType::PostCreated => Some(Self::Create),
            EventType::PostUpdated => Some(Self::Update),
            EventType::PostDeleted => Some(Self::Delete),
        }
    }

    /// Lower-case name used in stream names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    /// [`as_str`](Self::as_str), or "unknown" for no action: for logs and listings.
    pub fn label(action: Option<Self>) -> &'static str {
        action.map_or("unknown", Self::as_str)
    }

    /// The position of this action in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        match self {
            Self::Create => 0,
            Self::Update => 1,
            Self::Delete => 2,
        }
    }
}

/// Stream and Redis settings shared by the publisher and the relay.
#[derive(Args, Clone, Debug)]
pub struct StreamArgs {
    /// Redis URL for the stream(s); per-action URLs below override it.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// `single` (one stream) or `per-action` (one stream per create/update/delete).
    #[arg(long, env = "STREAM_TOPOLOGY", value_enum, default_value_t = Topology::Single)]
    pub topology: Topology,
    /// Name of the event stream, or the prefix of the per-action streams.
    #[arg(long, env = "STREAM_NAME", default_value = "posts.events")]
    pub stream: String,
    /// Redis URL for the create stream (per-action topology only).
    #[arg(long, env = "REDIS_URL_CREATE")]
    pub redis_url_create: Option<String>,
    /// Redis URL for the update stream (per-action topology only).
    #[arg(long, env = "REDIS_URL_UPDATE")]
    pub redis_url_update: Option<String>,
    /// Redis URL for the delete stream (per-action topology only).
    #[arg(long, env = "REDIS_URL_DELETE")]
    pub redis_url_delete: Option<String>,
}

/// One stream on one Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Redis URL (may hold a password; redact before logging).
    pub redis_url: String,
    /// Stream key.
    pub stream: String,
}

impl StreamArgs {
    /// Defaults with the given Redis URL and stream name, for tests and tools.
    pub fn new(redis_url: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            topology: Topology::Single,
            stream: stream.into(),
            redis_url_create: None,
            redis_url_update: None,
            redis_url_delete: None,
        }
    }

    /// The route an event of `action` is published on.
    pub fn route(&self, action: Action) -> Route {
        match self.topology {
            Topology::Single => Route {
                redis_url: self.redis_url.clone(),
                stream: self.stream.clone(),
            },
            Topology::PerAction => {
                let url = match action {
                    Action::Create => &self.redis_url_create,
                    Action::Update => &self.redis_url_update,
                    Action::Delete => &self.redis_url_delete,
                };
                Route {
                    redis_url: url.clone().unwrap_or_else(|| self.redis_url.clone()),
                    stream: format!("{}.{}", self.stream, action.as_str()),
                }
            }
        }
    }

    /// Every distinct route, the set event-relay consumes.
    pub fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = Vec::new();
        for action in Action::ALL {
            let route = self.route(action);
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
        routes
    }

    /// Every distinct Redis URL, for the start-up check.
    pub fn redis_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = vec![self.redis_url.clone()];
        for route in self.routes() {
            if !urls.contains(&route.redis_url) {
                urls.push(route.redis_url);
            }
        }
        urls
    }

    /// The dead-letter stream, on the main Redis URL.
    pub fn dlq_stream(&self) -> String {
        format!("{}.dlq", self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_type_maps_to_its_action() {
        assert_eq!(Action::of(EventType::PostCreated), Some(Action::Create));
        assert_eq!(Action::of(EventType::PostUpdated), Some(Action::Update));
        assert_eq!(Action::of(EventType::PostDeleted), Some(Action::Delete));
        assert_eq!(Action::of(EventType::Unspecified), None);
        assert_eq!(Action::label(None), "unknown");
        for (i, action) in Action::ALL.into_iter().enumerate() {
            assert_eq!(action.index(), i);
        }
    }

    #[test]
    fn single_topology_has_one_route() {
        let args = StreamArgs::new("redis://a", "s");
        assert_eq!(args.routes().len(), 1);
        assert_eq!(args.route(Action::Delete).stream, "s");
    }

    #[test]
    fn per_action_routes_use_their_own_urls() {
        let mut args = StreamArgs::new("redis://a", "s");
        args.topology = Topology::PerAction;
        args.redis_url_update = Some("redis://b".into());
        let routes = args.routes();
        assert_eq!(routes.len(), 3);
        assert_eq!(args.route(Action::Update).redis_url, "redis://b");
        assert_eq!(args.route(Action::Create).stream, "s.create");
        assert_eq!(
            args.redis_urls(),
            vec!["redis://a".to_string(), "redis://b".to_string()]
        );
    }
}
