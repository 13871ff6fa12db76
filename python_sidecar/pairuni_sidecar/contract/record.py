"""Base of the generated config records: ``Cls.from_wire(d)`` validates ``d`` against the record's
generated schema (unknown, missing or mistyped fields → ``bad_request`` naming them) and builds it."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T", bound="Record")


class Record:
    @classmethod
    def from_wire(cls: type[T], d: Any, *, where: str | None = None) -> T:
        from . import validate_record

        validate_record(cls.__name__, d, where or cls.__name__)
        return cls(**d)

    def validate(self: T, where: str | None = None) -> T:
        """Check a record built in Python (tests, in-process callers) against the same schema."""
        from . import validate_record

        validate_record(type(self).__name__, self.to_wire(), where or type(self).__name__)
        return self

    def to_wire(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]
