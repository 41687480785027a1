//! The HTTP/JSON API of the real binaries, end to end: a plain Python client
//! (tests/http/check_http.py, standard library only) over every route, the
//! headers, bad input of every kind and gRPC-Web; curl for the habits of a
//! shell user (a large body with `Expect: 100-continue`, tokens); the
//! OpenAPI documents the servers serve against the routes the gateway
//! derives from the annotations; tokens and limits applied to HTTP exactly
//! as to gRPC.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    process::{Command, Output},
    time::Duration,
};

use postmesh_gateway::GatewayLayer;
use postmesh_tests::{
    procs::ProcMesh,
    redis_url,
    security::{ed25519, write, AUDIENCE, ISSUER},
    servers::free_port,
    services::ServiceProc,
    unique, Backend, TestDatabase,
};
use serde_json::Value;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `curl -s` with `args`; the body, then the status on the last line.
fn curl(args: &[&str]) -> (u16, String) {
    let Output { status, stdout, stderr } = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed");
    assert!(status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&stderr));
    let text = String::from_utf8(stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn a_python_client_and_curl_use_every_route_of_the_real_services() {
    let mesh = ProcMesh::start(&[]).await;
    let (command, query, _) = mesh.urls();

    let run = Command::new("python3")
        .arg(root().join("tests/http/check_http.py"))
        .args(["--command", &command, "--query", &query])
        .output()
        .expect("python3 must be installed");
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{report}{}\ncommand-svc:\n{}\nquery-svc:\n{}",
        String::from_utf8_lossy(&run.stderr),
        mesh.command.logs(),
        mesh.query.logs()
    );
    assert!(report.contains("gRPC-Web WatchPosts streams a change"), "{report}");

    // curl as the docs use it.
    let (status, body) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"title": "curl", "content": "c", "authorName": "sh"}"#,
        &format!("{command}/post"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["version"], "1");
    // A 5 MiB body: curl asks with Expect: 100-continue and gets the 413 at once.
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b'x'; 5 * 1024 * 1024]).unwrap();
    let (status, body) = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", big.path().display()),
        &format!("{command}/post"),
    ]);
    assert_eq!(status, 413, "{body}");
    assert!(json(&body)["message"].as_str().unwrap().contains("4194304"), "{body}");
    // The relay's port answers HTTP too (its console), and not 5xx elsewhere.
    let (status, body) = curl(&[&format!("{}/nope", mesh.relay.endpoint())]);
    assert_eq!(status, 404, "{body}");
}

/// `{post_id}` as OpenAPI writes it (`{postId}`).
fn camel_template(template: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    let mut in_var = false;
    for c in template.chars() {
        match c {
            '{' => in_var = true,
            '}' => in_var = false,
            '_' if in_var => {
                upper = true;
                continue;
            }
            _ => {}
        }
        if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn the_served_openapi_documents_list_exactly_the_live_routes() {
    let mesh = ProcMesh::start(&[]).await;
    let (command, query, _) = mesh.urls();
    for (base, services) in [
        (command, &["posts.v1.PostCommand", "posts.v1.EventStore"][..]),
        (query, &["posts.v1.PostQuery"][..]),
    ] {
        let mut builder = GatewayLayer::builder(&[postmesh_proto::FILE_DESCRIPTOR_SET]);
        for service in services {
            builder = builder.service(*service);
        }
        let routes: BTreeSet<(String, String)> = builder
            .build()
            .unwrap()
            .routes()
            .into_iter()
            .map(|r| (r.method.to_lowercase(), camel_template(&r.template)))
            .collect();
        let (status, body) = curl(&[&format!("{base}/openapi.json")]);
        assert_eq!(status, 200);
        let document = json(&body);
        let listed: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        assert_eq!(listed, routes, "{base}/openapi.json against the annotations");
        // Each one answers on the live server (check_http.py calls them all
        // too): never the gateway's "no route" 404, never 405.
        for (method, template) in &routes {
            if template.ends_with(":watch") || template == "/events" {
                continue; // streams: the Python client reads them
            }
            let path = template.replace("{postId}", "999999999");
            let (status, body) = curl(&["-X", &method.to_uppercase(), &format!("{base}{path}")]);
            assert!(
                status != 405 && !body.contains("no route") && status < 500,
                "{method} {path}: {status} {body}"
            );
        }
    }
}

#[tokio::test]
async fn tokens_and_limits_apply_to_http_as_to_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let signer = ed25519();
    let db = TestDatabase::create(Backend::Sqlite).await;
    let port = free_port();
    let mut command = ServiceProc::spawn(
        "command-svc",
        port,
        &[],
        &[
            ("COMMAND_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("COMMAND_DATABASE_URL", db.url.clone()),
            ("REDIS_URL", redis_url()),
            ("STREAM_NAME", unique("posts.events")),
            (
                "AUTH_JWT_KEY_FILE",
                write(dir.path(), "jwt.pub", &signer.public_pem).display().to_string(),
            ),
            ("AUTH_ISSUER", ISSUER.into()),
            ("AUTH_AUDIENCE", AUDIENCE.into()),
            ("MAX_MESSAGE_BYTES", "65536".into()),
        ],
    );
    command.wait_healthy(Duration::from_secs(60)).await;
    let url = format!("{}/post", command.endpoint());
    let post = r#"{"title": "t", "content": "c", "authorName": "a"}"#;
    let create = |token: Option<&str>| {
        let header = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-i", "-H", "Content-Type: application/json", "-d", post];
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        args.push(&url);
        curl(&args)
    };
    let (status, body) = create(None);
    assert_eq!(status, 401, "{body}");
    assert!(body.to_lowercase().contains("www-authenticate: bearer"), "{body}");
    let (status, body) = create(Some("not-a-jwt"));
    assert_eq!(status, 401, "{body}");
    let (status, body) = create(Some(&signer.good("reader", "posts:read")));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("posts:write"), "{body}");
    let (status, body) = create(Some(&signer.good("writer", "posts:write")));
    assert_eq!(status, 200, "{body}");
    // Reads stay open (AUTH_REQUIRE_FOR_READS is off), as over gRPC.
    let (status, body) = curl(&[&format!("{}/post/1/events", command.endpoint())]);
    assert_eq!(status, 200, "{body}");

    // MAX_MESSAGE_BYTES bounds HTTP bodies too: 70 kB is refused with 413,
    // whether the length is declared or the body is chunked.
    let big = format!(
        r#"{{"title": "t", "content": "{}", "authorName": "a"}}"#,
        "x".repeat(70_000)
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &big).unwrap();
    let data = format!("@{}", file.path().display());
    let token = format!("Authorization: Bearer {}", signer.good("writer", "posts:write"));
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut args = vec![
            "-H",
            "Content-Type: application/json",
            "-H",
            &token,
            "--data-binary",
            &data,
        ];
        args.extend(extra);
        args.push(&url);
        let (status, body) = curl(&args);
        assert_eq!(status, 413, "{extra:?}: {body}");
        assert_eq!(json(&body)["code"], 8, "{body}");
    }
}
