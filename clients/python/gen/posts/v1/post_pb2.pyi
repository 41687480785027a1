import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_POST_CREATED: _ClassVar[EventType]
    EVENT_TYPE_POST_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_POST_DELETED: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_POST_CREATED: EventType
EVENT_TYPE_POST_UPDATED: EventType
EVENT_TYPE_POST_DELETED: EventType

class Post(_message.Message):
    __slots__ = ("post_id", "version", "title", "content", "author_name", "created_at", "updated_at", "deleted")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    version: int
    title: str
    content: str
    author_name: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    deleted: bool
    def __init__(self, post_id: _Optional[int] = ..., version: _Optional[int] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., author_name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class PostEvent(_message.Message):
    __slots__ = ("position", "post_id", "version", "event_type", "post", "occurred_at", "traceparent", "tracestate", "actor")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    POST_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    position: int
    post_id: int
    version: int
    event_type: EventType
    post: Post
    occurred_at: _timestamp_pb2.Timestamp
    traceparent: str
    tracestate: str
    actor: str
    def __init__(self, position: _Optional[int] = ..., post_id: _Optional[int] = ..., version: _Optional[int] = ..., event_type: _Optional[_Union[EventType, str]] = ..., post: _Optional[_Union[Post, _Mapping]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...
