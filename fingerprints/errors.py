"""Domain errors: small classes, each with a stable code, mapped once to GraphQL and HTTP."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every expected failure; ``code`` is the GraphQL ``extensions.code``."""

    code = "BAD_USER_INPUT"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r})"


class ValidationError(DomainError):
    """The request is malformed or a value is out of range."""


class NotFound(DomainError):
    code = "NOT_FOUND"
    status = 404


class Conflict(DomainError):
    code = "CONFLICT"
    status = 409


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    status = 401


class Forbidden(DomainError):
    code = "FORBIDDEN"
    status = 403


class PayloadTooLarge(DomainError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class Rejected(ValidationError):
    """One item of a batch is invalid; ``reason`` is its per-item error code."""

    def __init__(self, reason: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason


class VectorError(Rejected):
    """A vector failed validation (dimension, NaN/Inf, non-numeric, empty, zero under cosine)."""

    def __init__(self, reason: str, message: str, *, field: str | None = "vector") -> None:
        super().__init__(reason, message, field=field)
