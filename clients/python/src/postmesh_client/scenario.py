"""The interop scenario (clients/README.md) against a live mesh, from Python.

Exits 1 at the first deviation from the contract, 0 when every check passed::

    pip install ./clients/python
    COMMAND_ADDR=localhost:50051 QUERY_ADDR=localhost:50052 postmesh-scenario

(or ``python -m postmesh_client.scenario``). It uses the package as any user
would: :class:`postmesh_client.Client` and the generated messages.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from types import TracebackType
from typing import Callable, Literal, NoReturn, Optional, Type

import grpc

from postmesh_client import Client, bad_request_fields, command_pb2, command_pb2_grpc, post_pb2, query_pb2, query_pb2_grpc

LANG = "python"
# Longer than any step should take; the deadline checks use their own short ones.
TIMEOUT = 10.0
# A request larger than the servers' default MAX_MESSAGE_BYTES (4 MiB).
TOO_LARGE = 5 * 1024 * 1024

class Deviation(Exception):
    """The mesh answered something the contract does not allow."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Deviation(message)


def expect_code(code: grpc.StatusCode, call: Callable[[], object]) -> grpc.RpcError:
    """Runs call(), which must fail with `code`; returns the RpcError."""
    try:
        call()
    except grpc.RpcError as error:
        expect(error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}")
        return error
    raise Deviation(f"expected {code.name}, but the call succeeded")


def timed(function: Callable[[], object]) -> tuple[Optional[grpc.RpcError], float]:
    """Runs function(); returns (its RpcError or None, seconds taken)."""
    started = time.monotonic()
    try:
        function()
    except grpc.RpcError as error:
        return error, time.monotonic() - started
    return None, time.monotonic() - started


def scenario(
    commands: command_pb2_grpc.PostCommandStub, queries: query_pb2_grpc.PostQueryStub, check: Checker
) -> None:
    author = f"interop-{LANG}-{secrets.token_hex(4)}"

    def create(title: str) -> command_pb2.CreatePostResponse:
        request = command_pb2.CreatePostRequest(title=title, content=f"body of {title}", author_name=author)
        return commands.CreatePost(request, timeout=TIMEOUT)

    def get(post_id: int, min_version: int = 0, include_deleted: bool = False, timeout: float = TIMEOUT) -> post_pb2.Post:
        request = query_pb2.GetPostRequest(post_id=post_id, min_version=min_version, include_deleted=include_deleted)
        return queries.GetPost(request, timeout=timeout).post

    with check("create"):
        first = create("first")
        expect(first.post_id > 0, f"post_id {first.post_id} must be > 0")
        expect(first.version == 1, f"a new post has version 1, got {first.version}")
        post_id = first.post_id

    with check("watch subscribes"):
        # Once the read model has the post, the next change to it is the update below.
        get(post_id, min_version=1)
        watch = queries.WatchPosts(query_pb2.WatchPostsRequest(post_id=post_id), timeout=TIMEOUT)
        # The server subscribes before it sends the response headers.
        watch.initial_metadata()

    with check("update with expected_version"):
        updated = commands.UpdatePost(
            command_pb2.UpdatePostRequest(post_id=post_id, expected_version=1, title="first, edited"), timeout=TIMEOUT
        )
        expect(updated.version == 2, f"version after one update is 2, got {updated.version}")

    with check("stale update is ABORTED"):
        stale = command_pb2.UpdatePostRequest(post_id=post_id, expected_version=1, title="lost update")
        expect_code(grpc.StatusCode.ABORTED, lambda: commands.UpdatePost(stale, timeout=TIMEOUT))

    with check("GetPost min_version sees the update"):
        post = get(post_id, min_version=2)
        expect(post.version == 2, f"expected version 2, got {post.version}")
        expect(post.title == "first, edited", f"expected the new title, got {post.title!r}")
        expect(post.author_name == author, f"author {post.author_name!r}")
        expect(post.created_at.seconds > 0 and post.updated_at.seconds > 0, "timestamps must be set")

    with check("WatchPosts receives the next change"):
        change = next(watch)
        # The creation's notification may still have been on its way when the watch began.
        if change.post.version == 1 and change.event_type == post_pb2.EVENT_TYPE_POST_CREATED:
            change = next(watch)
        expect(change.post.post_id == post_id, f"change of post {change.post.post_id}")
        expect(change.post.version == 2, f"expected version 2, got {change.post.version}")
        expect(change.event_type == post_pb2.EVENT_TYPE_POST_UPDATED, f"event type {change.event_type}")
        watch.cancel()

    with check("ListPosts pages with page_token"):
        second = create("second").post_id
        third = create("third").post_id
        for pid in (second, third):
            get(pid, min_version=1)
        seen: list[int] = []
        token, pages = "", 0
        while True:
            page = queries.ListPosts(
                query_pb2.ListPostsRequest(author_name=author, page_size=2, page_token=token), timeout=TIMEOUT
            )
            pages += 1
            expect(len(page.posts) <= 2, f"page of {len(page.posts)} posts, page_size was 2")
            seen += [p.post_id for p in page.posts]
            token = page.next_page_token
            if not token:
                break
            expect(pages < 5, "more pages than 3 posts can fill")
        expect(seen == [third, second, post_id], f"expected {[third, second, post_id]} newest first, got {seen}")
        expect(pages >= 2, f"3 posts with page_size 2 need 2 pages, got {pages}")

    with check("bad input is INVALID_ARGUMENT naming the field"):
        bad = command_pb2.CreatePostRequest(title="", content="body", author_name=author)
        error = expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: commands.CreatePost(bad, timeout=TIMEOUT))
        fields = bad_request_fields(error)
        expect(fields == ["title"], f"expected a BadRequest violation for 'title', got {fields}")

    with check("deadline bounds a min_version wait"):
        failure, took = timed(lambda: get(post_id, min_version=1_000_000, timeout=0.3))
        expect(failure is not None, "GetPost for a version that never comes succeeded")
        assert failure is not None
        # The server answers UNAVAILABLE just before the deadline, naming the versions;
        # if that reply loses the race, the client's own DEADLINE_EXCEEDED wins.
        expect(
            failure.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE),
            f"expected DEADLINE_EXCEEDED or UNAVAILABLE, got {failure.code().name}: {failure.details()}",
        )
        expect(0.15 <= took <= 0.8, f"a 300 ms deadline ended the call after {took * 1000:.0f} ms")

    with check("deadline cancels a quiet WatchPosts"):

        def drain() -> None:
            for _ in queries.WatchPosts(query_pb2.WatchPostsRequest(post_id=post_id), timeout=0.3):
                pass

        failure, took = timed(drain)
        expect(failure is not None, "a watch with a 300 ms deadline ended without an error")
        assert failure is not None
        code = failure.code()
        expect(code == grpc.StatusCode.DEADLINE_EXCEEDED, f"expected DEADLINE_EXCEEDED, got {code.name}")
        expect(0.25 <= took <= 1.0, f"a 300 ms deadline ended the watch after {took * 1000:.0f} ms")

    with check("message over the limit is RESOURCE_EXHAUSTED"):
        huge = command_pb2.CreatePostRequest(title="huge", content="x" * TOO_LARGE, author_name=author)
        expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: commands.CreatePost(huge, timeout=TIMEOUT))

    with check("delete"):
        deleted = commands.DeletePost(command_pb2.DeletePostRequest(post_id=post_id, expected_version=2), timeout=TIMEOUT)
        expect(deleted.version == 3, f"version after the delete is 3, got {deleted.version}")

    with check("GetPost after delete is NOT_FOUND"):
        # min_version 3 waits for the read model to apply the delete.
        expect_code(grpc.StatusCode.NOT_FOUND, lambda: get(post_id, min_version=3))
        post = get(post_id, include_deleted=True)
        expect(post.deleted and post.version == 3, f"include_deleted shows {post.version}, deleted={post.deleted}")


class Checker:
    """Runs each step as `with check(name):`, printing one line; exits 1 at the first deviation."""

    def __init__(self) -> None:
        self.passed = 0

    def __call__(self, name: str) -> _Check:
        return _Check(self, name)


class _Check:
    def __init__(self, checker: Checker, name: str) -> None:
        self.checker, self.name = checker, name
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> Literal[False]:
        took = (time.monotonic() - self.started) * 1000
        if error is None:
            self.checker.passed += 1
            print(f"ok    {self.name} ({took:.0f} ms)", flush=True)
            return False
        if isinstance(error, grpc.RpcError):
            reason = f"unexpected {error.code().name}: {error.details()}"
        else:
            reason = str(error)
        print(f"FAIL  {self.name}: {reason}", flush=True)
        fail(f"{LANG} client: {self.checker.passed} checks passed, then a deviation")


def fail(message: str) -> NoReturn:
    print(message, flush=True)
    sys.exit(1)


def main() -> None:
    command_addr = os.environ.get("COMMAND_ADDR", "localhost:50051")
    query_addr = os.environ.get("QUERY_ADDR", "localhost:50052")
    print(f"{LANG} client: command-svc {command_addr}, query-svc {query_addr}", flush=True)
    checker = Checker()
    with Client(command_addr, query_addr) as client:
        scenario(client.commands, client.queries, checker)
    print(f"{LANG} client: all {checker.passed} checks passed", flush=True)


if __name__ == "__main__":
    main()
