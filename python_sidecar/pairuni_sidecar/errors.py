"""Typed errors that travel back to the TS controller as `err` messages.

The code set is closed: protocols/constants.json, generated for both languages.
"""

from __future__ import annotations

from .contract.generated import ERROR_CODES  # the closed set, from protocols/constants.json


class SidecarError(Exception):
    """An error with a wire code. Handlers raise it (or a subclass) for expected failures."""

    code = "internal"
    retryable = False

    def __init__(
        self, message: str, *, code: str | None = None, retryable: bool | None = None, detail: dict | None = None
    ):
        super().__init__(message)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}")
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.detail = detail or {}

    def to_wire(self) -> dict:
        # The exception's class travels too, so the controller can tell a CheckpointNotFound from a NotFound.
        return {
            "code": self.code,
            "msg": str(self),
            "retryable": bool(self.retryable),
            "detail": {"type": type(self).__name__, **self.detail},
        }


class BadRequest(SidecarError):
    code = "bad_request"


class UnsupportedVersion(SidecarError):
    code = "unsupported_version"


class UnknownOp(SidecarError):
    code = "unknown_op"


class Cancelled(SidecarError):
    code = "cancelled"


class DeadlineExceeded(SidecarError):
    code = "deadline"


class TooLarge(SidecarError):
    code = "too_large"


class NotFound(SidecarError):
    code = "not_found"


class OpFailed(SidecarError):
    code = "op_failed"


class NonFiniteError(OpFailed):
    """NaN/inf where a finite number is required: advantages, rewards or gradients (nothing was applied),
    or a model's next-token distribution while decoding (the adapter names the model directory)."""
