"""Request-body checks with Barbican's messages (barbican/common/validators.py)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .responses import ApiError

MAX_REQUEST_BYTES = 25000
MAX_SECRET_BYTES = 20000
PLAIN_TEXT = ["text/plain", "text/plain;charset=utf-8", "text/plain; charset=utf-8"]
BINARY = ["application/octet-stream", "application/pkcs8"]
SUPPORTED = PLAIN_TEXT + BINARY
SECRET_TYPES = ["symmetric", "passphrase", "private", "public", "certificate", "opaque"]


@dataclass(frozen=True)
class Prop:
    """A JSON-schema property: allowed types and bounds."""

    types: tuple[str, ...]
    max_len: int | None = None
    min_len: int | None = None
    enum: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None


_SECRET_SCHEMA = {
    "name": Prop(("string", "null"), max_len=255),
    "algorithm": Prop(("string",), max_len=255),
    "mode": Prop(("string",), max_len=255),
    "bit_length": Prop(("integer",), minimum=1, maximum=32767),
    "expiration": Prop(("string",), max_len=255),
    "payload": Prop(("string",)),
    "secret_type": Prop(("string",), max_len=80, enum=tuple(SECRET_TYPES)),
    "payload_content_type": Prop(("string", "null"), max_len=255),
    "payload_content_encoding": Prop(("string",), max_len=255, enum=("base64",)),
}
_CONSUMER_SCHEMA = {
    "service": Prop(("string",), max_len=255, min_len=1),
    "resource_type": Prop(("string",), max_len=255, min_len=1),
    "resource_id": Prop(("string",), min_len=1),
}
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "null": (type(None),), "integer": (int,), "object": (dict,),
}


def invalid(schema: str, reason: str, prop: str | None) -> ApiError:
    """Barbican's InvalidObject error."""
    return ApiError(400, f"Provided object does not match schema '{schema}': {reason}. "
                         f"Invalid property: '{prop}'")


def _is(value: Any, kinds: tuple[str, ...]) -> bool:
    if isinstance(value, bool):
        return False
    return any(isinstance(value, _TYPES[k]) for k in kinds)


def _check(data: Any, schema: dict[str, Prop], name: str, required: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise invalid(name, f"{data!r} is not of type 'object'", None)
    for key, prop in schema.items():
        if key not in data:
            continue
        value = data[key]
        if not _is(value, prop.types):
            raise invalid(name, f"{value!r} is not of type {', '.join(map(repr, prop.types))}", key)
        if prop.enum is not None and value not in prop.enum:
            raise invalid(name, f"{value!r} is not one of {list(prop.enum)!r}", key)
        if isinstance(value, str) and prop.min_len is not None and len(value) < prop.min_len:
            raise invalid(name, f"{value!r} should be non-empty", key)
        if isinstance(value, str) and prop.max_len is not None and len(value) > prop.max_len:
            raise invalid(name, f"{value!r} is too long", key)
        if isinstance(value, int) and prop.minimum is not None and value < prop.minimum:
            raise invalid(name, f"{value!r} is less than the minimum of {prop.minimum}", key)
        if isinstance(value, int) and prop.maximum is not None and value > prop.maximum:
            raise invalid(name, f"{value!r} is greater than the maximum of {prop.maximum}", key)
    for key in required:
        if key not in data:
            raise invalid(name, f"{key!r} is a required property", None)


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def load_body(raw: bytes) -> Any:
    """Parse a JSON body the way barbican.api.load_body does (strings stripped)."""
    try:
        return _strip(json.loads(raw[:MAX_REQUEST_BYTES]))
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python allows
        raise ApiError(400, "Malformed JSON") from None


def normalize_content_type(mime: str) -> str:
    """Barbican's mime_types.normalize_content_type."""
    parts = [p.strip() for p in mime.split(";")]
    base = parts[0].lower()
    if len(parts) > 1:
        if "=" not in parts[1].lower():
            return mime
        if parts[1].lower().split("=")[1].strip() != "utf-8":
            return mime
    internal = {"text/plain": "text/plain", "text/plain;charset=utf-8": "text/plain",
                "text/plain; charset=utf-8": "text/plain"}
    internal.update({b: b for b in BINARY})
    return internal.get(base, mime)


def _expiration(data: dict[str, Any], name: str) -> str | None:
    raw = data.get("expiration")
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise invalid(name, "Invalid date for 'expiration'", "expiration") from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    if when <= datetime.now(UTC).replace(tzinfo=None):
        raise invalid(name, "'expiration' is before current time", "expiration")
    return when.isoformat()


def validate_secret(data: Any, parent: str | None = None) -> dict[str, Any]:
    """Check a new-secret body; return it with name, expiration and payload normalized.

    The decoded payload bytes, if any, are under ``"payload_bytes"``.
    """
    name = "Secret" if parent is None else f"Secret' within '{parent}"
    _check(data, _SECRET_SCHEMA, name)
    data["name"] = data["name"].strip() if isinstance(data.get("name"), str) else None
    data["expiration"] = _expiration(data, name)
    ctype = data.get("payload_content_type")
    if "payload" in data:
        if ctype is None:
            raise invalid(name, "If 'payload' is supplied, 'payload_content_type' must also be "
                                "supplied.", "payload_content_type")
        norm = normalize_content_type(ctype)
        if norm not in SUPPORTED:
            raise invalid(name, f"payload_content_type is not one of {SUPPORTED}",
                          "payload_content_type")
        encodings = ["base64", "binary"] if norm in BINARY else None
        encoding = data.get("payload_content_encoding")
        if (encoding not in encodings) if encodings else (encoding is not None):
            raise invalid(name, f"payload_content_encoding is not one of {encodings}",
                          "payload_content_encoding")
        payload: str = data["payload"]
        if len(payload.encode()) > MAX_SECRET_BYTES:
            raise ApiError(413, "Provided information too large to process")
        if not payload:
            raise invalid(name, "If 'payload' specified, must be non empty", "payload")
        try:
            raw = base64.b64decode(payload) if encoding else payload.encode()
        except (binascii.Error, ValueError):
            raise invalid(name, "Invalid payload for payload_content_encoding",
                          "payload") from None
        data["payload_bytes"], data["payload_content_type"] = raw, norm
    elif "payload_content_type" in data:
        if parent is None:
            raise invalid(name, "payload must be provided when payload_content_type is "
                                "specified", "payload")
        if ctype and normalize_content_type(ctype) not in SUPPORTED:
            raise invalid(name, f"payload_content_type is not one of {SUPPORTED}",
                          "payload_content_type")
    checked: dict[str, Any] = data
    return checked


def validate_order(data: Any) -> dict[str, Any]:
    """Check a new-order body (TypeOrderValidator); only ``key`` orders are served."""
    if not isinstance(data, dict):
        raise invalid("Order", f"{data!r} is not of type 'object'", None)
    for key in ("meta", "type"):
        if key not in data:
            raise invalid("Order", f"{key!r} is a required property", key)
    if not isinstance(data["meta"], dict):
        raise invalid("Order", f"{data['meta']!r} is not of type 'object'", "meta")
    if not isinstance(data["type"], str):
        raise invalid("Order", f"{data['type']!r} is not of type 'string'", "type")
    if data["type"] not in ("key", "asymmetric"):
        raise invalid("Order", f"{data['type']!r} is not one of ['key', 'asymmetric']", "type")
    kind = "key" if data["type"] == "key" else "asymmetric key"
    meta = validate_secret(data["meta"], parent="Order")
    if meta.get("payload") is not None:
        raise invalid("Order", f"'payload' not allowed for {data['type']} type order", "meta")
    for field in ("algorithm", "bit_length"):
        if not meta.get(field):
            raise invalid("Order", f"'{field}' is required field for {kind} type order", "meta")
    if int(meta["bit_length"]) % 8 != 0:
        raise ApiError(400, "Provided field value is not supported")
    if data["type"] != "key":
        raise ApiError(400, "The mock serves only 'key' orders.")
    order: dict[str, Any] = data
    return order


def validate_consumer(data: Any) -> tuple[str, str, str]:
    """Check a consumer body; return (service, resource_type, resource_id)."""
    _check(data, _CONSUMER_SCHEMA, "Secret Consumer",
           required=("service", "resource_type", "resource_id"))
    return data["service"], data["resource_type"], data["resource_id"]
