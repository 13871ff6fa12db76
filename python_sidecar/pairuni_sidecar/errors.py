"""Typed errors that travel back to the TS controller as `err` messages.

The code set is closed and mirrors protocols/wire-v1.md and src/errors.ts.
"""
from __future__ import annotations

ERROR_CODES = (
    "bad_request",          # malformed frame/header/payload or invalid op arguments
    "unsupported_version",  # wire major not supported
    "unknown_op",           # no handler registered under that op name
    "cancelled",            # the controller cancelled the request
    "deadline",             # the request's deadline passed
    "rank_lost",            # a rank died or stopped answering (raised on the TS side)
    "overloaded",           # queue full / credit window exhausted
    "too_large",            # message or payload over the negotiated limits
    "not_found",            # a handle, file or checkpoint that does not exist
    "op_failed",            # the handler raised; `detail.type` names the exception class
    "internal",             # a bug in the sidecar itself
)


class SidecarError(Exception):
    """An error with a wire code. Handlers raise it (or a subclass) for expected failures."""

    code = "internal"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None, detail: dict | None = None):
        super().__init__(message)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}")
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.detail = detail or {}

    def to_wire(self) -> dict:
        err = {"code": self.code, "msg": str(self), "retryable": bool(self.retryable)}
        if self.detail:
            err["detail"] = self.detail
        return err


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
