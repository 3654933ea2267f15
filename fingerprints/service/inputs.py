"""Checks of loosely typed input (decoded JSON or GraphQL inputs), each naming the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fingerprints.errors import ValidationError

MAX_ID_LENGTH = 255


def check_keys(payload: Mapping[str, Any], allowed: Iterable[str], *, where: str = "") -> None:
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        field = f"{where}{unknown[0]}"
        raise ValidationError(f"unknown field {field!r}", field=field)


def as_object(value: object, *, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field} must be an object", field=field)
    return value


def as_list(value: object, *, field: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValidationError(f"{field} must be a list", field=field)
    return list(value)


def as_str(value: object, *, field: str, optional: bool = False, max_length: int = 10_000) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be a non-empty string", field=field)
    if len(value) > max_length:
        raise ValidationError(f"{field} is longer than {max_length} characters", field=field)
    return value


def as_id(value: object, *, field: str) -> str:
    return str(as_str(value, field=field, max_length=MAX_ID_LENGTH))


def as_int(value: object, *, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer (got {value!r})", field=field)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        raise ValidationError(f"{field} must be in {bounds} (got {value})", field=field)
    return value


def as_bool(value: object, *, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be true or false", field=field)
    return value
