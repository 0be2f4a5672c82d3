"""The callback API's event envelope and data, validated with pydantic.

Validation turns every problem into one `EventError` naming the field (`data.chat.consumer_number`);
phone numbers are normalized to E.164 here, at the edge.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from crmconnector.matching.phone import InvalidPhoneNumber, normalize

MAX_ID_LENGTH = 200
MAX_INTEGER = 2**31 - 1  # what an INTEGER column holds on every database (PostgreSQL's is 32-bit)
_SHORT_CODE = re.compile(r"[0-9]{3,8}")


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The API's error document. `field` is always there (null when no one field is at fault), so a
    client reads the same three keys from every error."""
    return {"error": {"code": code, "message": message, "field": field}}


class EventError(ValueError):
    """A rejected event: HTTP status, the contract's error code, a message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def as_json(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.field)


def _identifier(value: Any) -> str:
    # Ids may be strings or integers (never booleans or floats, which would not round-trip).
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PydanticCustomError("invalid_id", "must be a string or an integer")
    text = str(value).strip()
    if not text or len(text) > MAX_ID_LENGTH:
        raise PydanticCustomError("invalid_id", f"must be 1 to {MAX_ID_LENGTH} characters")
    return text


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_timestamp", "must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise PydanticCustomError("invalid_timestamp", "is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise PydanticCustomError("invalid_timestamp", "is out of range in UTC") from None


Id = Annotated[str, BeforeValidator(_identifier)]
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
ShortText = Annotated[str, Field(max_length=255)]


def _phone(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_phone_number", "must be a phone number string")
    region = (info.context or {}).get("region", "US")
    try:
        return normalize(value, region)
    except InvalidPhoneNumber as exc:
        raise PydanticCustomError("invalid_phone_number", str(exc)) from None


def _business_phone(value: Any, info: ValidationInfo) -> str:
    """The business's number in E.164, or its short code as sent: businesses text from short codes
    (3 to 8 digits, no E.164 form) as much as from phone numbers."""
    if isinstance(value, str) and _SHORT_CODE.fullmatch(value.strip()):
        return value.strip()
    return _phone(value, info)


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """Platforms write an optional field they have no value for as null (a picture sent without
        text: `"text": null`): it reads as absent, so it takes its default. A required field stays null
        and is refused."""
        if not isinstance(data, dict) or None not in data.values():
            return data
        fields = cls.model_fields
        return {key: value for key, value in data.items()
                if value is not None or key not in fields or fields[key].is_required()}


class Queue(Strict):
    id: Id | None = None
    name: ShortText | None = None


def _queue(value: Any) -> Any:
    # Platforms that know queues only by name send `"queue": "Sales"`: that is the queue's name.
    if isinstance(value, str):
        return {"name": value} if value.strip() else None
    if value is not None and not isinstance(value, (dict, Queue)):
        raise PydanticCustomError("invalid_queue", "must be an object with the queue's id and name, or its name")
    return value


QueueRef = Annotated[Queue | None, BeforeValidator(_queue)]


class Person(Strict):
    id: Id | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    name: ShortText | None = None


class Media(Strict):
    url: Annotated[str, Field(min_length=1, max_length=4096)]
    content_type: Annotated[str, Field(max_length=255)] | None = None
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    filename: ShortText | None = None


class StartedChat(Strict):
    id: Id
    direction: Literal["inbound", "outbound"] = "inbound"
    consumer_number: str
    business_number: str | None = None
    queue: QueueRef = None
    lang: Annotated[str, Field(max_length=32)] | None = None
    created_at: Timestamp | None = None

    _consumer = field_validator("consumer_number")(_phone)

    @field_validator("business_number")
    @classmethod
    def _business(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value in (None, "") else _business_phone(value, info)


class ChatRef(Strict):
    id: Id


class ChatStarted(Strict):
    chat: StartedChat


class ChatAssigned(Strict):
    chat: ChatRef
    agent: Person
    assigned_at: Timestamp


class Message(Strict):
    id: Id
    sender: Literal["consumer", "agent", "system"]
    text: Annotated[str, Field(max_length=100_000)] = ""
    sent_at: Timestamp
    agent: Person | None = None
    media: list[Media] = Field(default_factory=list, max_length=50)


class ChatMessage(Strict):
    chat: ChatRef
    message: Message


class Transfer(Strict):
    status: Literal["began", "failed", "ended"]
    from_agent: Person | None = None
    to_agent: Person | None = None
    to_queue: QueueRef = None
    at: Timestamp


class ChatTransferred(Strict):
    chat: ChatRef
    transfer: Transfer


class EndedChat(Strict):
    id: Id
    ended_at: Timestamp
    disconnected_by: Literal["agent", "consumer", "system", "timeout"] | None = None
    disposition: ShortText | None = None


class ChatEnded(Strict):
    chat: EndedChat


class WaitTimeMessage(Strict):
    id: Id
    text: Annotated[str, Field(max_length=100_000)] = ""
    sent_at: Timestamp
    media: list[Media] = Field(default_factory=list, max_length=50)


class WaitTimeSMS(Strict):
    status: Literal["allowed", "denied", "no_response", "not_offered"]
    messages: list[WaitTimeMessage] = Field(default_factory=list, max_length=500)


class AbandonedCall(Strict):
    id: Id
    caller_number: str
    dialed_number: str | None = None
    queue: QueueRef = None
    lang: Annotated[str, Field(max_length=32)] | None = None
    started_at: Timestamp | None = None
    abandoned_at: Timestamp | None = None
    wait_seconds: Annotated[int, Field(ge=0, le=MAX_INTEGER)] | None = None
    wait_time_sms: WaitTimeSMS | None = None

    _caller = field_validator("caller_number")(_phone)

    @field_validator("dialed_number")
    @classmethod
    def _dialed(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value in (None, "") else _phone(value, info)


class CallAbandoned(Strict):
    call: AbandonedCall


DATA_MODELS: dict[str, type[BaseModel]] = {
    "chat.started": ChatStarted,
    "chat.assigned": ChatAssigned,
    "chat.message": ChatMessage,
    "chat.transferred": ChatTransferred,
    "chat.ended": ChatEnded,
    "call.abandoned": CallAbandoned,
}


class Envelope(Strict):
    id: Id
    type: Annotated[str, Field(min_length=1, max_length=64)]
    occurred_at: Timestamp | None = None
    data: dict[str, Any]


def _field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts)


def _error_from(exc: ValidationError, prefix: str = "") -> EventError:
    first = exc.errors(include_url=False)[0]
    field = _field_path(first["loc"], prefix)
    code = "invalid_phone_number" if first["type"] == "invalid_phone_number" else "invalid_payload"
    message = first["msg"]
    if first["type"] == "missing":
        message = "is required"
    elif first["type"] == "model_type":  # pydantic's message names the model class, which means nothing outside
        message = "must be a JSON object"
    return EventError(400, code, f"{field}: {message}" if field else message, field or None)


def parse_envelope(document: Any) -> Envelope:
    if not isinstance(document, dict):
        raise EventError(400, "invalid_payload", "the body must be a JSON object")
    try:
        return Envelope.model_validate(document)
    except ValidationError as exc:
        raise _error_from(exc) from None


def parse_data(event_type: str, data: dict[str, Any], region: str) -> BaseModel | None:
    """The validated data of a known event type; None for a type this connector does not handle."""
    model = DATA_MODELS.get(event_type)
    if model is None:
        return None
    try:
        return model.model_validate(data, context={"region": region})
    except ValidationError as exc:
        raise _error_from(exc, "data") from None
