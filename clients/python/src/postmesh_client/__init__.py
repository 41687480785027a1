"""Python client for postmesh's gRPC API (``posts.v1``).

The stubs and messages are generated from the protos (``postmesh_client.posts.v1``,
re-exported here); this module adds a :class:`Client` holding the two channels
and :func:`bad_request_fields`, which reads the field errors of an
``INVALID_ARGUMENT``::

    from postmesh_client import Client, command_pb2, query_pb2

    with Client("localhost:50051", "localhost:50052") as client:
        created = client.commands.CreatePost(
            command_pb2.CreatePostRequest(title="Hello", content="First post", author_name="ada"))
        # min_version: wait until the read model has the write (read your write).
        post = client.queries.GetPost(
            query_pb2.GetPostRequest(post_id=created.post_id, min_version=created.version)).post
"""

from __future__ import annotations

from types import TracebackType
from typing import Optional, Sequence, Tuple, Type, Union

import grpc
# googleapis-common-protos ships no type information (no py.typed, no stubs package).
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from postmesh_client.posts.v1 import command_pb2, command_pb2_grpc, post_pb2, query_pb2, query_pb2_grpc

__all__ = [
    "Client",
    "bad_request_fields",
    "command_pb2",
    "command_pb2_grpc",
    "post_pb2",
    "query_pb2",
    "query_pb2_grpc",
]

# grpc channel arguments, e.g. ("grpc.max_receive_message_length", 8 << 20).
ChannelOptions = Sequence[Tuple[str, Union[int, str]]]


class Client:
    """The stubs of one mesh: command-svc (writes, event log) and query-svc (reads).

    Plaintext unless ``credentials`` are given (the servers' TLS mode, see
    docs/security.md). Close it, or use it as a context manager.
    """

    commands: command_pb2_grpc.PostCommandStub
    events: command_pb2_grpc.EventStoreStub
    queries: query_pb2_grpc.PostQueryStub

    def __init__(
        self,
        command_addr: str = "localhost:50051",
        query_addr: str = "localhost:50052",
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Optional[ChannelOptions] = None,
    ) -> None:
        self._channels = [_channel(addr, credentials, options) for addr in (command_addr, query_addr)]
        command_channel, query_channel = self._channels
        self.commands = command_pb2_grpc.PostCommandStub(command_channel)
        self.events = command_pb2_grpc.EventStoreStub(command_channel)
        self.queries = query_pb2_grpc.PostQueryStub(query_channel)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


def _channel(addr: str, credentials: Optional[grpc.ChannelCredentials], options: Optional[ChannelOptions]) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(addr, options=options)
    return grpc.secure_channel(addr, credentials, options=options)


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """The fields named by the ``google.rpc.BadRequest`` of a failed call, in order.

    postmesh answers bad input with ``INVALID_ARGUMENT`` and one field violation
    per bad field in the ``grpc-status-details-bin`` trailer; empty when the
    error carries none.
    """
    if not isinstance(error, grpc.Call):
        return []
    status = rpc_status.from_call(error)
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields += [violation.field for violation in bad_request.field_violations]
    return fields
