from google.api import annotations_pb2 as _annotations_pb2
from posts.v1 import post_pb2 as _post_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetPostRequest(_message.Message):
    __slots__ = ("post_id", "min_version", "include_deleted")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    min_version: int
    include_deleted: bool
    def __init__(self, post_id: _Optional[int] = ..., min_version: _Optional[int] = ..., include_deleted: _Optional[bool] = ...) -> None: ...

class GetPostResponse(_message.Message):
    __slots__ = ("post",)
    POST_FIELD_NUMBER: _ClassVar[int]
    post: _post_pb2.Post
    def __init__(self, post: _Optional[_Union[_post_pb2.Post, _Mapping]] = ...) -> None: ...

class ListPostsRequest(_message.Message):
    __slots__ = ("author_name", "title", "content", "include_deleted", "page_size", "page_token")
    AUTHOR_NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    author_name: str
    title: str
    content: str
    include_deleted: bool
    page_size: int
    page_token: str
    def __init__(self, author_name: _Optional[str] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., include_deleted: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPostsResponse(_message.Message):
    __slots__ = ("posts", "next_page_token")
    POSTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[_post_pb2.Post]
    next_page_token: str
    def __init__(self, posts: _Optional[_Iterable[_Union[_post_pb2.Post, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPostHistoryRequest(_message.Message):
    __slots__ = ("post_id",)
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    def __init__(self, post_id: _Optional[int] = ...) -> None: ...

class GetPostHistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_post_pb2.Post]
    def __init__(self, versions: _Optional[_Iterable[_Union[_post_pb2.Post, _Mapping]]] = ...) -> None: ...

class WatchPostsRequest(_message.Message):
    __slots__ = ("post_id", "author_name")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_NAME_FIELD_NUMBER: _ClassVar[int]
    post_id: int
    author_name: str
    def __init__(self, post_id: _Optional[int] = ..., author_name: _Optional[str] = ...) -> None: ...

class WatchPostsResponse(_message.Message):
    __slots__ = ("post", "event_type")
    POST_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    post: _post_pb2.Post
    event_type: _post_pb2.EventType
    def __init__(self, post: _Optional[_Union[_post_pb2.Post, _Mapping]] = ..., event_type: _Optional[_Union[_post_pb2.EventType, str]] = ...) -> None: ...
