"""Create a post, then read your own write: the smallest program on postmesh-client.

    pip install ./clients/python
    python clients/examples/python/hello.py        # COMMAND_ADDR / QUERY_ADDR to move it

CI copies this file out of the repository, runs it with the installed package
and type-checks it with `mypy --strict` (scripts/interop.sh).
"""

import os

from postmesh_client import Client, command_pb2, query_pb2


def main() -> None:
    command_addr = os.environ.get("COMMAND_ADDR", "localhost:50051")
    query_addr = os.environ.get("QUERY_ADDR", "localhost:50052")
    with Client(command_addr, query_addr) as client:
        created = client.commands.CreatePost(
            command_pb2.CreatePostRequest(title="Hello", content="from Python", author_name="hello-python"),
            timeout=10,
        )
        # min_version: wait until the read model has the write (read your write).
        post = client.queries.GetPost(
            query_pb2.GetPostRequest(post_id=created.post_id, min_version=created.version), timeout=10
        ).post
        print(f"post {post.post_id} at version {post.version}: {post.title!r} by {post.author_name}")


if __name__ == "__main__":
    main()
