//! The operations console: a page under `/ops` on the relay's health port
//! (plain server-rendered HTML, a little JavaScript for live refresh and
//! the buttons; no build chain) showing what `event-relay status` and
//! `event-relay dlq list` print, and the projection's progress, with the
//! actions of `event-relay dlq` (replay one or all, purge one or all), run
//! through the same functions ([`crate::dlq`]).
//!
//! Routes: `GET /ops` (the page), `GET /ops/panel` (its live part, what the
//! page re-fetches every two seconds), `POST /ops/dlq/{replay,purge}?id=…`
//! (or `?all=true`). Token checks are the services' ([`Authenticator`]):
//! with tokens on, the actions need the write scope (without it the page is
//! read-only and the buttons are not shown), and looking needs the read
//! scope when reads need a token. The browser sends the token it was given
//! in the page's token field as `Authorization: Bearer`.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Router,
};
use http::{header, HeaderMap, StatusCode};
use postmesh_common::auth::{Access, AuthError, Authenticator};
use postmesh_events::dlq::DeadLetter;
use postmesh_read_model::{ReadModelStore, ReadStore};
use tonic::metadata::MetadataMap;

use crate::{
    config::{Config, Selection},
    consumer::connect,
    dlq,
    log::EventLog,
    status::{self, StreamStatus},
};

/// Where the console lives on the health port.
pub const PATH: &str = "/ops";

/// How long one figure may take before the page shows it as unavailable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

struct Console {
    config: Config,
    store: ReadStore,
    auth: Option<Arc<Authenticator>>,
    events: Option<EventLog>,
}

/// The console's routes, for [`postmesh_common::server::Server::http_routes`].
pub fn routes(config: Config, store: ReadStore, auth: Option<Arc<Authenticator>>) -> Router {
    // The log's head comes from command-svc (GetHead); connected lazily, so
    // the console works (showing "n/a") while command-svc is away.
    let events = EventLog::connect(&config)
        .map_err(|error| tracing::warn!(%error, "console: no event store client; the log head shows n/a"))
        .ok();
    let console = Arc::new(Console {
        config,
        store,
        auth,
        events,
    });
    Router::new()
        .route(PATH, get(page))
        .route(&format!("{PATH}/"), get(page))
        .route(&format!("{PATH}/panel"), get(panel))
        .route(&format!("{PATH}/dlq/replay"), post(replay))
        .route(&format!("{PATH}/dlq/purge"), post(purge))
        .with_state(console)
}

/// What the caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rights {
    Look,
    LookAndAct,
}

impl Console {
    fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), AuthError> {
        let Some(auth) = &self.auth else { return Ok(()) };
        auth.check(&MetadataMap::from_headers(headers.clone()), access)
            .map(|_| ())
    }

    fn rights(&self, headers: &HeaderMap) -> Result<Rights, AuthError> {
        self.check(headers, Access::Read)?;
        Ok(match self.check(headers, Access::Write) {
            Ok(()) => Rights::LookAndAct,
            Err(_) => Rights::Look,
        })
    }
}

fn refused(error: &AuthError) -> Response {
    let status = match error {
        AuthError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AuthError::MissingScope(_) => StatusCode::FORBIDDEN,
    };
    let mut response = (status, error.to_string()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    }
    response
}

async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Html<String> {
    // A browser's first GET carries no token: the panel then says what is
    // needed, and the script fetches it again with the token once given.
    let panel = match console.rights(&headers) {
        Ok(rights) => render_panel(&console, rights).await,
        Err(error) => notice(&error),
    };
    let tokens = if console.auth.is_some() { "on" } else { "off" };
    Html(
        PAGE.replace("{{group}}", &escape(&console.config.group))
            .replace("{{dlq}}", &escape(&console.config.streams.dlq_stream()))
            .replace("{{tokens}}", tokens)
            .replace("{{panel}}", &panel),
    )
}

async fn panel(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match console.rights(&headers) {
        Ok(rights) => Html(render_panel(&console, rights).await).into_response(),
        Err(error) => {
            let mut response = Html(notice(&error)).into_response();
            *response.status_mut() = refused(&error).status();
            response
        }
    }
}

async fn replay(State(console): State<Arc<Console>>, request: Request) -> Response {
    act(&console, request, "replayed", |streams, selection| async move {
        dlq::replay(&streams, &selection).await
    })
    .await
}

async fn purge(State(console): State<Arc<Console>>, request: Request) -> Response {
    act(&console, request, "purged", |streams, selection| async move {
        dlq::purge(&streams, &selection).await
    })
    .await
}

/// Runs a `dlq` action for the selection in the query string (`id=…`,
/// repeatable, or `all=true`), for a caller with the write scope.
async fn act<F, Fut>(console: &Console, request: Request, done: &str, action: F) -> Response
where
    F: FnOnce(postmesh_events::topology::StreamArgs, Selection) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    if let Err(error) = console.check(request.headers(), Access::Write) {
        tracing::info!(reason = %error, "console action refused");
        return refused(&error);
    }
    let mut selection = Selection {
        ids: Vec::new(),
        all: false,
    };
    for (key, value) in url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "id" => selection.ids.push(value.into_owned()),
            "all" => selection.all = value == "true",
            _ => {}
        }
    }
    // Exactly one of the two: ids, or all.
    if selection.all != selection.ids.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "give either id=<dead letter id> (repeatable) or all=true",
        )
            .into_response();
    }
    match action(console.config.streams.clone(), selection).await {
        Ok(n) => {
            tracing::info!(count = n, action = done, "console: dead letters {done}");
            format!("{done} {n} dead letter(s)").into_response()
        }
        // `dlq` names an unknown id in its error: the caller's mistake or a race.
        Err(error) if error.to_string().starts_with("no dead letter") => {
            (StatusCode::NOT_FOUND, error.to_string()).into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {error:#}")).into_response(),
    }
}

fn notice(error: &AuthError) -> String {
    let need = match error {
        AuthError::Unauthenticated(_) => "This console needs a token: paste one above.",
        AuthError::MissingScope(_) => "This token may not look at the console.",
    };
    format!(
        r#"<p class="notice" id="auth-notice">{} ({})</p>"#,
        need,
        escape(&error.to_string())
    )
}

/// Everything the panel shows, each figure fetched with a timeout so one
/// unreachable server never holds the page.
async fn render_panel(console: &Console, rights: Rights) -> String {
    let config = &console.config;
    let streams = tokio::time::timeout(PROBE_TIMEOUT, status::collect(config)).await;
    let letters = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut conn = connect(&config.streams.redis_url, Duration::ZERO).await?;
        Ok::<_, anyhow::Error>(dlq::list(&mut conn, &config.streams.dlq_stream()).await?)
    })
    .await;
    let checkpoint = tokio::time::timeout(PROBE_TIMEOUT, console.store.checkpoint()).await;
    let head = match &console.events {
        Some(log) => tokio::time::timeout(PROBE_TIMEOUT, log.head())
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map_err(|e| format!("{e:#}"))),
        None => Err("no event store client".to_owned()),
    };

    let mut out = String::new();
    // Projection progress.
    let checkpoint = match checkpoint {
        Ok(Ok(position)) => Ok(position),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let behind = match (&checkpoint, &head) {
        (Ok(c), Ok(h)) => (h - c).max(0).to_string(),
        _ => "n/a".to_owned(),
    };
    let shown = |value: &Result<i64, String>| match value {
        Ok(v) => v.to_string(),
        Err(why) => format!(r#"n/a <span class="why">({})</span>"#, escape(why)),
    };
    let _ = write!(
        out,
        r#"<section id="progress"><h2>Projection</h2><table><tr><th>checkpoint</th><th>log head</th><th>behind</th></tr>
<tr><td id="checkpoint">{}</td><td id="head">{}</td><td id="behind">{behind}</td></tr></table></section>"#,
        shown(&checkpoint),
        shown(&head),
    );

    // Streams, groups, consumers.
    out.push_str(r#"<section id="streams"><h2>Streams</h2>"#);
    match streams {
        Ok(Ok((streams, _))) => streams_table(&mut out, &streams),
        Ok(Err(error)) => {
            let _ = write!(out, r#"<p class="error">Redis: {}</p>"#, escape(&format!("{error:#}")));
        }
        Err(_) => out.push_str(r#"<p class="error">Redis: timed out</p>"#),
    }
    out.push_str("</section>");

    // Dead letters.
    let _ = write!(
        out,
        r#"<section id="dlq"><h2>Dead letters <span class="stream">{}</span></h2>"#,
        escape(&console.config.streams.dlq_stream())
    );
    match letters {
        Ok(Ok(letters)) => dlq_table(&mut out, &letters, rights),
        Ok(Err(error)) => {
            let _ = write!(out, r#"<p class="error">Redis: {}</p>"#, escape(&format!("{error:#}")));
        }
        Err(_) => out.push_str(r#"<p class="error">Redis: timed out</p>"#),
    }
    out.push_str("</section>");
    let mode = match rights {
        Rights::LookAndAct => r#"<p id="mode" data-mode="write">actions enabled</p>"#,
        Rights::Look => {
            r#"<p id="mode" data-mode="read-only">read-only: replay and purge need a token with the write scope</p>"#
        }
    };
    out.push_str(mode);
    out
}

fn streams_table(out: &mut String, streams: &[StreamStatus]) {
    out.push_str(
        "<table><tr><th>stream</th><th>length</th><th>group</th><th>pending</th><th>lag</th>\
         <th>last delivered</th><th>consumer</th><th>its pending</th><th>idle</th></tr>",
    );
    for stream in streams {
        let rows: Vec<String> = if stream.groups.is_empty() {
            vec![r#"<td colspan="7">no consumer group yet</td>"#.to_owned()]
        } else {
            stream
                .groups
                .iter()
                .flat_map(|group| {
                    let lag = group.lag.map_or_else(|| "?".to_owned(), |l| l.to_string());
                    let head = format!(
                        "<td>{}</td><td>{}</td><td>{lag}</td><td>{}</td>",
                        escape(&group.name),
                        group.pending,
                        escape(&group.last_delivered)
                    );
                    if group.consumers.is_empty() {
                        return vec![format!(r#"{head}<td colspan="3">no consumers</td>"#)];
                    }
                    group
                        .consumers
                        .iter()
                        .map(|c| {
                            format!(
                                "{head}<td>{}</td><td>{}</td><td>{}</td>",
                                escape(&c.name),
                                c.pending,
                                idle(c.idle_ms)
                            )
                        })
                        .collect()
                })
                .collect()
        };
        for row in rows {
            let _ = write!(
                out,
                r#"<tr class="stream-row" data-stream="{0}"><td>{0}</td><td class="length">{1}</td>{row}</tr>"#,
                escape(&stream.stream),
                stream.length,
            );
        }
    }
    out.push_str("</table>");
}

fn idle(ms: u64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{} min", ms / 60_000),
    }
}

fn dlq_table(out: &mut String, letters: &[DeadLetter], rights: Rights) {
    let act = rights == Rights::LookAndAct;
    if letters.is_empty() {
        out.push_str(r#"<p id="dlq-empty">No dead letters.</p>"#);
        return;
    }
    let _ = write!(out, r#"<p id="dlq-count">{} dead letter(s)"#, letters.len());
    if act {
        out.push_str(
            r#" <button data-action="replay" data-all="true">Replay all</button> <button data-action="purge" data-all="true" class="danger">Purge all</button>"#,
        );
    }
    out.push_str("</p><table><tr><th>id</th><th>post</th><th>version</th><th>action</th><th>attempts</th><th>failed at</th><th>error</th>");
    if act {
        out.push_str("<th></th>");
    }
    out.push_str("</tr>");
    for letter in letters {
        let id = escape(&letter.id);
        let _ = write!(
            out,
            r#"<tr class="dead-letter" data-dlq-id="{id}"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="error">{}</td>"#,
            escape(&letter.post_id),
            escape(&letter.version),
            escape(&letter.action),
            escape(&letter.attempts),
            escape(&letter.failed_at),
            escape(&letter.error),
        );
        if act {
            let _ = write!(
                out,
                r#"<td><button data-action="replay" data-id="{id}">Replay</button> <button data-action="purge" data-id="{id}" class="danger">Purge</button></td>"#
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// Text for HTML (element content and quoted attribute values).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE: &str = include_str!("console.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_idle_times_read_well() {
        assert_eq!(escape(r#"<b a="1">&'"#), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
        assert_eq!(idle(250), "250 ms");
        assert_eq!(idle(2_500), "2.5 s");
        assert_eq!(idle(600_000), "10 min");
    }
}
