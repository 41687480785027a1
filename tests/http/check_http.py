#!/usr/bin/env python3
"""The HTTP/JSON API and gRPC-Web as a plain HTTP client of another language
sees them: Python's standard library only (urllib, http.client), no
generated code.

    python3 tests/http/check_http.py [--command URL] [--query URL]

Defaults: http://localhost:50051 and http://localhost:50052 (or the ports
PM_COMMAND_PORT and PM_QUERY_PORT name, as for scripts/up.sh). Needs a mesh
with the relay running (writes must show up on the read side).

Checks, each printed as one line:
- /openapi.json of each server, and every operation it lists answers on the
  live server (a route, not the gateway's "no route" 404 or a 405);
- every route works: create (Idempotency-Key retried), get (ETag), update
  (If-Match, and a stale one is 412), list, history, the event store reads,
  delete, the watch stream (NDJSON) seeing a change;
- bad input of every kind is a clear 4xx with a google.rpc.Status body
  (BadRequest field violations where a field is to blame), never a 5xx and
  never a hang (every request has a 10 s timeout): malformed JSON, wrong
  types, unknown fields and parameters, bad ids, a body over the limit, a
  wrong content type, a body on a GET, a bad If-Match, an unknown route, a
  wrong method;
- gRPC-Web: GetPost (unary) and WatchPosts (a server stream) with
  application/grpc-web+proto frames encoded by hand.

Exits 1 if anything deviated.
"""

import argparse
import http.client
import json
import os
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

TIMEOUT = 10
failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(name)
    return ok


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:300]!r}"


def call(base, method, path, body=None, headers=None, raw=None):
    """One request; a JSON body unless raw bytes are given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None and raw is None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def is_status_body(answer, code):
    """A google.rpc.Status JSON body with this gRPC code."""
    body = answer.json()
    return (
        isinstance(body, dict)
        and body.get("code") == code
        and isinstance(body.get("message"), str)
        and answer.headers.get("Content-Type", "").startswith("application/json")
    )


def violations(answer):
    body = answer.json() or {}
    out = []
    for detail in body.get("details", []):
        if detail.get("@type") == "type.googleapis.com/google.rpc.BadRequest":
            out += [v.get("field", "") for v in detail.get("fieldViolations", [])]
    return out


def wait_for(what, probe, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = probe()
        if answer is not None:
            return answer
        time.sleep(0.1)
    check(what, False, "timed out")
    return None


def openapi(command, query):
    """Each server's document lists its routes, and each answers live."""
    expected = {
        command: {("post", "/post"), ("patch", "/post/{postId}"), ("delete", "/post/{postId}"),
                  ("get", "/events"), ("get", "/events/head"), ("get", "/post/{postId}/events")},
        query: {("get", "/post/{postId}"), ("get", "/posts"), ("get", "/post/{postId}/history"),
                ("get", "/posts:watch")},
    }
    for base, wanted in expected.items():
        answer = call(base, "GET", "/openapi.json")
        doc = answer.json() or {}
        if not check(f"openapi.json at {base}", answer.status == 200 and doc.get("swagger") == "2.0", repr(answer)):
            continue
        listed = {(m, p) for p, ops in doc.get("paths", {}).items() for m in ops}
        check(f"openapi.json at {base} lists the routes", wanted <= listed, f"missing {wanted - listed}")
        for method, template in sorted(listed):
            path = template.replace("{postId}", "999999999").replace("{post_id}", "999999999")
            body = {} if method in ("post", "patch", "put") else None
            if template.endswith(":watch"):
                status = stream_status(base, path)
                check(f"live route {method.upper()} {template}", status == 200, f"HTTP {status}")
                continue
            answer = call(base, method.upper(), path, body=body)
            message = (answer.json() or {}).get("message", "")
            routed = answer.status != 405 and not (answer.status == 404 and message.startswith("no route"))
            check(f"live route {method.upper()} {template}", routed and answer.status < 500, repr(answer))


def stream_status(base, path):
    """The status of a streaming GET, without waiting for the stream to end."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def routes(command, query):
    """Every route, the conventional headers, and the NDJSON streams."""
    key = "http-check-" + uuid.uuid4().hex
    author = "http-check-" + uuid.uuid4().hex[:8]
    post = {"title": "from urllib", "content": "plain HTTP", "authorName": author}
    first = call(command, "POST", "/post", post, {"Idempotency-Key": key})
    if not check("POST /post", first.status == 200 and first.json().get("version") == "1", repr(first)):
        return None
    post_id = first.json()["postId"]
    check("POST /post has an ETag", first.headers.get("ETag") == '"1"', str(first.headers.get("ETag")))
    again = call(command, "POST", "/post", post, {"Idempotency-Key": key})
    check("POST /post retried with the same Idempotency-Key is the same post",
          again.status == 200 and again.json() == first.json(), repr(again))

    got = wait_for("GET /post/{id} once projected",
                   lambda: (lambda a: a if a.status == 200 else None)(call(query, "GET", f"/post/{post_id}")))
    if got is None:
        return None
    body = got.json()["post"]
    check("GET /post/{id}", body["title"] == "from urllib" and body["authorName"] == author, repr(got))
    check("GET /post/{id} has an ETag", got.headers.get("ETag") == '"1"', str(got.headers.get("ETag")))

    # Watch post_id, then change it: the stream shows the change.
    seen = []
    watcher = threading.Thread(target=watch_one, args=(query, f"/posts:watch?post_id={post_id}", seen), daemon=True)
    watcher.start()
    time.sleep(0.5)
    updated = call(command, "PATCH", f"/post/{post_id}", {"title": "changed"}, {"If-Match": '"1"'})
    check("PATCH /post/{id} with If-Match", updated.status == 200 and updated.json()["version"] == "2", repr(updated))
    check("PATCH /post/{id} has the new ETag", updated.headers.get("ETag") == '"2"', str(updated.headers.get("ETag")))
    stale = call(command, "PATCH", f"/post/{post_id}", {"title": "lost"}, {"If-Match": '"1"'})
    check("PATCH with a stale If-Match is 412", stale.status == 412 and is_status_body(stale, 10), repr(stale))
    watcher.join(TIMEOUT)
    change = seen[0] if seen else {}
    check("GET /posts:watch streams the change as NDJSON",
          change.get("result", {}).get("post", {}).get("title") == "changed"
          and change["result"].get("eventType") == "EVENT_TYPE_POST_UPDATED", repr(seen))

    listed = wait_for("GET /posts shows the update", lambda: (lambda a: a if a.status == 200 and any(
        p["title"] == "changed" for p in a.json().get("posts", [])) else None)(
        call(query, "GET", f"/posts?author_name={author}&page_size=5")))
    if listed is not None:
        check("GET /posts?author_name=...", [p["postId"] for p in listed.json()["posts"]] == [post_id], repr(listed))
    history = call(query, "GET", f"/post/{post_id}/history")
    check("GET /post/{id}/history", [v["version"] for v in history.json().get("versions", [])] == ["1", "2"],
          repr(history))

    events = call(command, "GET", f"/post/{post_id}/events")
    lines = [json.loads(line) for line in events.body.splitlines() if line.strip()]
    check("GET /post/{id}/events (NDJSON)", events.status == 200
          and [e["result"]["event"]["version"] for e in lines] == ["1", "2"]
          and events.headers.get("Content-Type", "").startswith("application/x-ndjson"), repr(events))
    position = int(lines[0]["result"]["event"]["position"]) if lines else 0
    log = call(command, "GET", f"/events?from_position={position - 1}&max_count=1")
    entries = [json.loads(line) for line in log.body.splitlines() if line.strip()]
    check("GET /events?from_position=...&max_count=1", log.status == 200 and len(entries) == 1
          and entries[0]["result"]["event"]["postId"] == post_id, repr(log))

    head = call(command, "GET", "/events/head")
    check("GET /events/head", head.status == 200 and int(head.json().get("completeThrough", "0")) >= position + 1,
          repr(head))

    deleted = call(command, "DELETE", f"/post/{post_id}", headers={"If-Match": '"2"'})
    check("DELETE /post/{id} with If-Match", deleted.status == 200 and deleted.json()["version"] == "3", repr(deleted))
    gone = wait_for("GET /post/{id} of a deleted post is 404", lambda: (lambda a: a if a.status == 404 else None)(
        call(query, "GET", f"/post/{post_id}")))
    if gone is not None:
        check("GET /post/{id} of a deleted post is NOT_FOUND", is_status_body(gone, 5), repr(gone))
        kept = call(query, "GET", f"/post/{post_id}?include_deleted=true")
        check("GET /post/{id}?include_deleted=true", kept.status == 200 and kept.json()["post"].get("deleted") is True,
              repr(kept))
    return post_id


def watch_one(query, path, seen):
    url = urllib.parse.urlsplit(query)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        line = response.readline()
        if line.strip():
            seen.append(json.loads(line))
    except (OSError, ValueError) as error:
        seen.append({"error": str(error)})
    finally:
        conn.close()


def bad_input(command, query):
    """Every kind of bad input: a 4xx with a google.rpc.Status body, at once."""
    big = 5 * 1024 * 1024
    cases = [
        # (name, base, method, path, raw body, headers, HTTP status, gRPC code, field blamed or None)
        ("malformed JSON", command, "POST", "/post", b'{"title": ', {}, 400, 3, None),
        ("JSON that is not an object", command, "POST", "/post", b"[1, 2]", {}, 400, 3, ""),
        ("a wrong type", command, "POST", "/post", b'{"title": 5}', {}, 400, 3, "title"),
        ("an unknown field", command, "POST", "/post", b'{"title": "t", "colour": "red"}', {}, 400, 3, ""),
        ("a 64-bit integer out of range", command, "PATCH", "/post/1", b'{"expectedVersion": "1e40"}', {}, 400, 3,
         "expectedVersion"),
        ("invalid UTF-8", command, "POST", "/post", b'{"title": "\xff\xfe"}', {}, 400, 3, None),
        ("a field the service refuses (empty title)", command, "POST", "/post",
         b'{"title": "", "content": "c", "authorName": "a"}', {}, 400, 3, "title"),
        ("a post id that is not a number", query, "GET", "/post/abc", None, {}, 400, 3, "post_id"),
        ("a post id of zero", query, "GET", "/post/0", None, {}, 400, 3, "post_id"),
        ("an unknown query parameter", query, "GET", "/posts?colour=red", None, {}, 400, 3, "colour"),
        ("a query parameter of the wrong type", query, "GET", "/posts?page_size=many", None, {}, 400, 3, "page_size"),
        ("a body on a GET", query, "GET", "/post/1", b"{}", {}, 400, 3, ""),
        ("a body that is not JSON", command, "POST", "/post", b"title=t", {"Content-Type": "text/plain"}, 415, 3, ""),
        ("a bad If-Match", command, "PATCH", "/post/1", b"{}", {"If-Match": "W/\"1\""}, 400, 3, "if-match"),
        ("an unknown route", command, "GET", "/nope", None, {}, 404, 5, None),
        ("a wrong method", command, "PUT", "/post/1", b"{}", {}, 405, 12, None),
    ]
    for name, base, method, path, raw, headers, status, code, field in cases:
        if raw is not None and "Content-Type" not in headers:
            headers = {**headers, "Content-Type": "application/json"}
        started = time.time()
        try:
            answer = call(base, method, path, raw=raw if raw is not None else None, headers=headers)
        except (OSError, http.client.HTTPException) as error:
            check(f"bad input: {name}", False, f"no answer: {error!r}")
            continue
        took = time.time() - started
        ok = answer.status == status and is_status_body(answer, code) and took < 5
        if field is not None:
            ok = ok and field in violations(answer)
        check(f"bad input: {name} -> {status}", ok, f"{answer!r} in {took:.1f}s")
    too_large(command, big)


def too_large(command, size):
    """A body over the limit (4 MiB by default) is 413 before it is sent,
    with `Expect: 100-continue` as curl sends for large bodies (a client
    that sends it all regardless may see the connection close first)."""
    url = urllib.parse.urlsplit(command)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/post")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.putheader("Expect", "100-continue")
        conn.endheaders()
        response = conn.getresponse()
        answer = Answer(response.status, response.headers, response.read())
        check("bad input: a body over the limit -> 413", answer.status == 413 and is_status_body(answer, 8), repr(answer))
    except (OSError, http.client.HTTPException) as error:
        check("bad input: a body over the limit -> 413", False, f"no answer: {error!r}")
    finally:
        conn.close()


def frame(message, flag=0):
    return struct.pack(">BI", flag, len(message)) + message


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def read_frames(response, stop):
    """(flag, payload) frames of a gRPC-Web body until stop(frames) is true or it ends."""
    frames = []
    while not stop(frames):
        head = response.read(5)
        if len(head) < 5:
            break
        flag, length = struct.unpack(">BI", head)
        frames.append((flag, response.read(length)))
    return frames


def grpc_web(query, post_id):
    """GetPost and WatchPosts with gRPC-Web frames, as a browser sends them."""
    url = urllib.parse.urlsplit(query)
    headers = {"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1", "Accept": "application/grpc-web+proto"}
    # GetPostRequest{post_id, include_deleted: true}: fields 1 (varint) and 3 (bool).
    request = frame(b"\x08" + varint(int(post_id)) + b"\x18\x01")
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    conn.request("POST", "/posts.v1.PostQuery/GetPost", body=request, headers=headers)
    response = conn.getresponse()
    frames = read_frames(response, lambda f: False)
    conn.close()
    trailers = b"".join(p for flag, p in frames if flag & 0x80).decode(errors="replace").lower()
    data = b"".join(p for flag, p in frames if not flag & 0x80)
    check("gRPC-Web GetPost", response.status == 200 and "grpc-status:0" in trailers.replace(" ", "")
          and b"changed" in data, f"HTTP {response.status} {frames!r}")

    # WatchPosts{} streams changes to any post: create one and see it.
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT)
    conn.request("POST", "/posts.v1.PostQuery/WatchPosts", body=frame(b""), headers=headers)
    response = conn.getresponse()
    title = "grpc-web " + uuid.uuid4().hex[:8]
    writer = threading.Timer(0.3, lambda: call(COMMAND, "POST", "/post",
                                               {"title": title, "content": "c", "authorName": "web"}))
    writer.start()
    frames = read_frames(response, lambda f: any(title.encode() in p for _, p in f))
    conn.close()
    check("gRPC-Web WatchPosts streams a change", response.status == 200
          and any(title.encode() in p for _, p in frames), f"HTTP {response.status} {frames!r}")


def default(port_var, port):
    return f"http://localhost:{os.environ.get(port_var, port)}"


COMMAND = ""


def main():
    global COMMAND
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--command", default=default("PM_COMMAND_PORT", "50051"))
    parser.add_argument("--query", default=default("PM_QUERY_PORT", "50052"))
    args = parser.parse_args()
    COMMAND = args.command
    openapi(args.command, args.query)
    post_id = routes(args.command, args.query)
    bad_input(args.command, args.query)
    if post_id is not None:
        grpc_web(args.query, post_id)
    print(f"{len(failures)} failed" if failures else "all HTTP checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
