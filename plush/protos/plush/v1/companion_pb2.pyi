from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCM_S16LE: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_OPUS: _ClassVar[AudioEncoding]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_BAD_REQUEST: _ClassVar[ErrorCode]
    ERROR_CODE_LLM_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_TTS_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_STT_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_PCM_S16LE: AudioEncoding
AUDIO_ENCODING_OPUS: AudioEncoding
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_BAD_REQUEST: ErrorCode
ERROR_CODE_LLM_UNAVAILABLE: ErrorCode
ERROR_CODE_TTS_FAILED: ErrorCode
ERROR_CODE_STT_FAILED: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode

class AudioChunk(_message.Message):
    __slots__ = ("data", "sample_rate", "channels", "encoding", "seq")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sample_rate: int
    channels: int
    encoding: AudioEncoding
    seq: int
    def __init__(self, data: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., seq: _Optional[int] = ...) -> None: ...

class TurnStart(_message.Message):
    __slots__ = ("conversation_id", "language", "want_audio", "output_sample_rate", "output_encoding")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    WANT_AUDIO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    language: str
    want_audio: bool
    output_sample_rate: int
    output_encoding: AudioEncoding
    def __init__(self, conversation_id: _Optional[str] = ..., language: _Optional[str] = ..., want_audio: _Optional[bool] = ..., output_sample_rate: _Optional[int] = ..., output_encoding: _Optional[_Union[AudioEncoding, str]] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "language", "final")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    final: bool
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ..., final: _Optional[bool] = ...) -> None: ...

class TurnEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class PlaybackStarted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Settled(_message.Message):
    __slots__ = ("text", "language")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class TurnRequest(_message.Message):
    __slots__ = ("start", "audio", "transcript", "end", "cancel", "playback_started", "settled")
    START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    PLAYBACK_STARTED_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    start: TurnStart
    audio: AudioChunk
    transcript: Transcript
    end: TurnEnd
    cancel: Cancel
    playback_started: PlaybackStarted
    settled: Settled
    def __init__(self, start: _Optional[_Union[TurnStart, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., end: _Optional[_Union[TurnEnd, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., playback_started: _Optional[_Union[PlaybackStarted, _Mapping]] = ..., settled: _Optional[_Union[Settled, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("text", "conversation_id", "want_audio", "output_sample_rate", "output_encoding")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    WANT_AUDIO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    text: str
    conversation_id: str
    want_audio: bool
    output_sample_rate: int
    output_encoding: AudioEncoding
    def __init__(self, text: _Optional[str] = ..., conversation_id: _Optional[str] = ..., want_audio: _Optional[bool] = ..., output_sample_rate: _Optional[int] = ..., output_encoding: _Optional[_Union[AudioEncoding, str]] = ...) -> None: ...

class ReplyText(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "duration_ms", "started_at_ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    duration_ms: float
    started_at_ms: float
    def __init__(self, stage: _Optional[str] = ..., duration_ms: _Optional[float] = ..., started_at_ms: _Optional[float] = ...) -> None: ...

class TurnDone(_message.Message):
    __slots__ = ("turn_id", "backend", "backend_reason", "interrupted")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REASON_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    backend: str
    backend_reason: str
    interrupted: bool
    def __init__(self, turn_id: _Optional[str] = ..., backend: _Optional[str] = ..., backend_reason: _Optional[str] = ..., interrupted: _Optional[bool] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class TurnEvent(_message.Message):
    __slots__ = ("turn_id", "transcript", "text_delta", "audio", "timing", "done", "error")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    transcript: Transcript
    text_delta: ReplyText
    audio: AudioChunk
    timing: StageTiming
    done: TurnDone
    error: Error
    def __init__(self, turn_id: _Optional[str] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., text_delta: _Optional[_Union[ReplyText, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., timing: _Optional[_Union[StageTiming, _Mapping]] = ..., done: _Optional[_Union[TurnDone, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class PhrasesRequest(_message.Message):
    __slots__ = ("output_sample_rate",)
    OUTPUT_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    output_sample_rate: int
    def __init__(self, output_sample_rate: _Optional[int] = ...) -> None: ...

class Phrase(_message.Message):
    __slots__ = ("name", "text", "audio")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    name: str
    text: str
    audio: AudioChunk
    def __init__(self, name: _Optional[str] = ..., text: _Optional[str] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ...) -> None: ...

class PhrasesReply(_message.Message):
    __slots__ = ("phrases", "persona", "brain", "voices")
    PHRASES_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    phrases: _containers.RepeatedCompositeFieldContainer[Phrase]
    persona: str
    brain: str
    voices: str
    def __init__(self, phrases: _Optional[_Iterable[_Union[Phrase, _Mapping]]] = ..., persona: _Optional[str] = ..., brain: _Optional[str] = ..., voices: _Optional[str] = ...) -> None: ...
