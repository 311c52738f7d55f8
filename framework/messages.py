"""The JSON messages on the wire, and their strict parsing.

These travel through RabbitMQ:

* ``RunStage`` on the inner queue: "run stage S of process P at transition N";
* ``StartChild`` and ``ItemDone`` on the inner queue: a fan-out item that is a child process, and its end;
* ``ServiceCommand`` on a service's command queue: a request carrying a signed taskId;
* ``ServiceReplyMessage`` on the service queue: the answer, carrying the same taskId.

Parsing never trusts the sender: size is checked before decoding, and any wrong shape raises
``MessageError`` with a reason that goes into the parked message's headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from framework.errors import MessageError

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024


def encode(data: Any) -> bytes:
    return orjson.dumps(data)


def decode_object(body: bytes, max_bytes: int) -> dict[str, Any]:
    if len(body) > max_bytes:
        raise MessageError(f"message of {len(body)} bytes is over the {max_bytes}-byte limit")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError("message is not a JSON object")
    return data


def _field(data: dict[str, Any], name: str, kind: type, kind_name: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MessageError(f"message field {name!r} must be {kind_name}")
    return value


@dataclass(frozen=True, slots=True)
class RunStage:
    process_id: str
    case: str
    stage: str
    transition: int

    def to_json(self) -> bytes:
        return encode(
            {"process_id": self.process_id, "case": self.case, "stage": self.stage, "transition": self.transition}
        )

    @property
    def key(self) -> str:
        """A stable name for the message (the poison ledger counts its isolated runs under it)."""
        return f"run:{self.process_id}/{self.transition}/{self.stage}"

    @classmethod
    def parse(cls, body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> RunStage:
        return cls.from_data(decode_object(body, max_bytes))

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> RunStage:
        return cls(
            process_id=_field(data, "process_id", str, "a string"),
            case=_field(data, "case", str, "a string"),
            stage=_field(data, "stage", str, "a string"),
            transition=_field(data, "transition", int, "an integer"),
        )


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start item ``index`` of fan-out ``group`` of process ``process_id``: a child process of ``child_case``."""

    process_id: str
    case: str
    group: int
    index: int
    child_case: str
    input: Any

    @property
    def key(self) -> str:
        return f"item-start:{self.process_id}/{self.group}/{self.index}"

    def to_json(self) -> bytes:
        return encode({
            "type": "start_child", "process_id": self.process_id, "case": self.case, "group": self.group,
            "index": self.index, "child_case": self.child_case, "input": self.input,
        })

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> StartChild:
        return cls(
            process_id=_field(data, "process_id", str, "a string"), case=_field(data, "case", str, "a string"),
            group=_field(data, "group", int, "an integer"), index=_field(data, "index", int, "an integer"),
            child_case=_field(data, "child_case", str, "a string"), input=data.get("input"),
        )


@dataclass(frozen=True, slots=True)
class ItemDone:
    """Item ``index`` of fan-out ``group`` of process ``process_id`` (a child process) has finished."""

    process_id: str
    case: str
    group: int
    index: int
    ok: bool
    result: Any = None
    error: str | None = None
    child_id: str | None = None

    @property
    def key(self) -> str:
        return f"item-done:{self.process_id}/{self.group}/{self.index}"

    def to_json(self) -> bytes:
        return encode({
            "type": "item_done", "process_id": self.process_id, "case": self.case, "group": self.group,
            "index": self.index, "ok": self.ok, "result": self.result, "error": self.error, "child_id": self.child_id,
        })

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ItemDone:
        ok = _field(data, "ok", bool, "true or false")
        error = data.get("error")
        if not ok and not isinstance(error, str):
            raise MessageError("a failed item needs 'error' as a string")
        child_id = data.get("child_id")
        return cls(
            process_id=_field(data, "process_id", str, "a string"), case=_field(data, "case", str, "a string"),
            group=_field(data, "group", int, "an integer"), index=_field(data, "index", int, "an integer"),
            ok=ok, result=data.get("result"), error=error, child_id=child_id if isinstance(child_id, str) else None,
        )


InnerMessage = RunStage | StartChild | ItemDone


def parse_inner(body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> InnerMessage:
    """Any inner-queue message; a body without ``type`` is a ``RunStage``."""
    data = decode_object(body, max_bytes)
    match data.get("type"):
        case None:
            return RunStage.from_data(data)
        case "start_child":
            return StartChild.from_data(data)
        case "item_done":
            return ItemDone.from_data(data)
        case other:
            raise MessageError(f"unknown inner message type {other!r}")


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    task_id: str
    api: str
    payload: Any

    def to_json(self) -> bytes:
        return encode({"task_id": self.task_id, "api": self.api, "payload": self.payload})

    @classmethod
    def parse(cls, body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ServiceCommand:
        data = decode_object(body, max_bytes)
        return cls(
            task_id=_field(data, "task_id", str, "a string"),
            api=_field(data, "api", str, "a string"),
            payload=data.get("payload"),
        )


@dataclass(frozen=True, slots=True)
class ServiceReplyMessage:
    task_id: str
    ok: bool
    data: Any = None
    error: str | None = None
    retryable: bool = False  # an error the caller may retry by sending the same command again

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"task_id": self.task_id, "ok": self.ok}
        if self.ok:
            body["data"] = self.data
        else:
            body["error"] = self.error
            body["retryable"] = self.retryable
        return encode(body)

    @classmethod
    def parse(cls, body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ServiceReplyMessage:
        data = decode_object(body, max_bytes)
        ok = _field(data, "ok", bool, "true or false")
        error = data.get("error")
        if not ok and not isinstance(error, str):
            raise MessageError("an error reply needs 'error' as a string")
        return cls(
            task_id=_field(data, "task_id", str, "a string"), ok=ok, data=data.get("data"), error=error,
            retryable=data.get("retryable") is True,
        )
