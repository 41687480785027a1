//! The operations console (/ops on event-relay's health port) in a real
//! browser (headless Chromium through chromedriver) against the real
//! binaries with tokens on: a poison entry's dead letter shows up, the page
//! is read-only without a token, a write token brings the buttons, replay
//! (confirmed in the browser's dialog) takes the dead letter off the list,
//! and purge all empties it. Screenshots of each step go to
//! target/test-artifacts/console/. The token checks of the actions are also
//! checked without a browser, with curl.

#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, process::Command, time::Duration};

use postmesh_tests::{
    add_poison_entry,
    procs::ProcMesh,
    redis_url,
    security::{ed25519, write, AUDIENCE, ISSUER},
    stream_len, wait_until,
    webdriver::Browser,
};

const WAIT: Duration = Duration::from_secs(15);

fn artefacts() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    root.join("target/test-artifacts/console")
}

/// `curl` answer: status and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_a_dead_letter_and_replays_it_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let signer = ed25519();
    let key = write(dir.path(), "jwt.pub", &signer.public_pem);
    let auth = [
        ("AUTH_JWT_KEY_FILE", key.display().to_string()),
        ("AUTH_ISSUER", ISSUER.to_owned()),
        ("AUTH_AUDIENCE", AUDIENCE.to_owned()),
    ];
    let mesh = ProcMesh::start(&auth).await;
    let (command, _, relay) = mesh.urls();
    let writer = signer.good("operator", "posts:write");
    let reader = signer.good("viewer", "posts:read");

    // One good post through the mesh, then a poison entry behind it.
    let bearer = format!("Authorization: Bearer {writer}");
    let (status, body) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-H",
        &bearer,
        "-d",
        r#"{"title": "fine", "content": "c", "authorName": "ops"}"#,
        &format!("{command}/post"),
    ]);
    assert_eq!(status, 200, "{body}");
    add_poison_entry(&redis_url(), &mesh.stream).await;
    let dlq = format!("{}.dlq", mesh.stream);
    assert!(wait_until(WAIT, || async { stream_len(&redis_url(), &dlq).await == 1 }).await);

    // The actions need the write scope, whatever the page shows.
    let replay_all = format!("{relay}/ops/dlq/replay?all=true");
    assert_eq!(curl(&["-X", "POST", &replay_all]).0, 401);
    let as_reader = format!("Authorization: Bearer {reader}");
    assert_eq!(curl(&["-X", "POST", "-H", &as_reader, &replay_all]).0, 403);
    assert_eq!(stream_len(&redis_url(), &dlq).await, 1);

    let browser = Browser::start().await;
    let shots = artefacts();
    browser.goto(&format!("{relay}/ops")).await;
    if browser.wait_for("tr.dead-letter", WAIT).await.is_none() {
        let page = browser
            .execute("return document.documentElement.outerHTML", serde_json::json!([]))
            .await;
        panic!("the dead letter is not listed:\n{page}\nrelay:\n{}", mesh.relay.logs());
    }
    let id = browser
        .execute(
            "return document.querySelector('tr.dead-letter').dataset.dlqId",
            serde_json::json!([]),
        )
        .await;
    let id = id.as_str().unwrap().to_owned();
    let listed = browser.text(&format!("tr[data-dlq-id='{id}']")).await;
    assert!(
        listed.contains("42") && listed.contains("not a valid posts.v1.PostEvent"),
        "{listed}"
    );
    // No token: read-only, no buttons.
    assert!(browser.wait_for("#mode[data-mode='read-only']", WAIT).await.is_some());
    assert!(browser.find_all("button[data-action]").await.is_empty());
    assert!(browser.text("#streams").await.contains(&mesh.stream));
    browser.screenshot(&shots.join("1-read-only.png")).await;

    // A write token brings the buttons.
    browser.type_into("#token", &writer).await;
    browser.click("#refresh", WAIT).await;
    let replay = format!("button[data-action='replay'][data-id='{id}']");
    assert!(browser.wait_for(&replay, WAIT).await.is_some(), "replay button");
    browser.screenshot(&shots.join("2-dead-letter.png")).await;

    // Replay it, confirming in the dialog: it leaves the list.
    browser.click(&replay, WAIT).await;
    let question = browser.dialog_text(WAIT).await.expect("a confirmation dialog");
    assert!(question.contains(&id), "{question}");
    browser.accept_dialog().await;
    assert!(
        browser.wait_gone(&format!("tr[data-dlq-id='{id}']"), WAIT).await,
        "the replayed dead letter left the list"
    );
    assert!(
        browser.text("#message").await.contains("replayed 1"),
        "{}",
        browser.text("#message").await
    );
    browser.screenshot(&shots.join("3-replayed.png")).await;

    // Still poison: the relay dead-letters it again, under a new id; purge
    // all (confirmed) empties the list.
    let again = browser.wait_for("tr.dead-letter", WAIT).await;
    assert!(again.is_some(), "the replayed poison came back");
    browser
        .click("button[data-action='purge'][data-all='true']", WAIT)
        .await;
    let question = browser.dialog_text(WAIT).await.expect("a confirmation dialog");
    assert!(question.contains("ALL"), "{question}");
    browser.accept_dialog().await;
    assert!(
        browser.wait_for("#dlq-empty", WAIT).await.is_some(),
        "the list is empty"
    );
    browser.screenshot(&shots.join("4-purged.png")).await;
    assert_eq!(stream_len(&redis_url(), &dlq).await, 0);
    // The projection's progress is shown (a number once the read model keeps a checkpoint).
    assert!(!browser.text("#checkpoint").await.is_empty());
    assert!(
        !browser.text("#head").await.starts_with("n/a"),
        "{}",
        browser.text("#head").await
    );
}
