from google.api import annotations_pb2 as _annotations_pb2
from posts.v1 import post_pb2 as _post_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreatePostRequest(_message.Message):
    __slots__ = ("title", "content", "author_name", "idempotency_key")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_NAME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    title: str
    content: str
    author_name: str
    idempotency_key: str
    def __init__(self, title: _Optional[str] = ..., content: _Optional[str] = ..., author_name: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreatePostResponse(_message.Message):
    __slots__ = ("post_id", "version")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    version: int
    def __init__(self, post_id: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class UpdatePostRequest(_message.Message):
    __slots__ = ("post_id", "expected_version", "title", "content", "author_name", "idempotency_key")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_NAME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    expected_version: int
    title: str
    content: str
    author_name: str
    idempotency_key: str
    def __init__(self, post_id: _Optional[int] = ..., expected_version: _Optional[int] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., author_name: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class UpdatePostResponse(_message.Message):
    __slots__ = ("post_id", "version")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    version: int
    def __init__(self, post_id: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class DeletePostRequest(_message.Message):
    __slots__ = ("post_id", "expected_version", "idempotency_key")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    expected_version: int
    idempotency_key: str
    def __init__(self, post_id: _Optional[int] = ..., expected_version: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class DeletePostResponse(_message.Message):
    __slots__ = ("post_id", "version")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    version: int
    def __init__(self, post_id: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class ReadAllRequest(_message.Message):
    __slots__ = ("from_position", "max_count")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    max_count: int
    def __init__(self, from_position: _Optional[int] = ..., max_count: _Optional[int] = ...) -> None: ...

class ReadAllResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _post_pb2.PostEvent
    def __init__(self, event: _Optional[_Union[_post_pb2.PostEvent, _Mapping]] = ...) -> None: ...

class ReadPostRequest(_message.Message):
    __slots__ = ("post_id",)
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    def __init__(self, post_id: _Optional[int] = ...) -> None: ...

class ReadPostResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _post_pb2.PostEvent
    def __init__(self, event: _Optional[_Union[_post_pb2.PostEvent, _Mapping]] = ...) -> None: ...
