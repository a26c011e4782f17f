from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateUpdate(_message.Message):
    __slots__ = ("changed_keys",)
    CHANGED_KEYS_FIELD_NUMBER: _ClassVar[int]
    changed_keys: _struct_pb2.Struct
    def __init__(self, changed_keys: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SubscribeStateUpdatesRequest(_message.Message):
    __slots__ = ("update_interval",)
    UPDATE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    update_interval: float
    def __init__(self, update_interval: _Optional[float] = ...) -> None: ...

class UpdateStateRequest(_message.Message):
    __slots__ = ("access_token", "update")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    update: StateUpdate
    def __init__(self, access_token: _Optional[str] = ..., update: _Optional[_Union[StateUpdate, _Mapping]] = ...) -> None: ...

class UpdateStateResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: bool = ...) -> None: ...

class UpdateLocksRequest(_message.Message):
    __slots__ = ("access_token", "lock_keys")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    lock_keys: _struct_pb2.Struct
    def __init__(self, access_token: _Optional[str] = ..., lock_keys: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateLocksResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: bool = ...) -> None: ...
