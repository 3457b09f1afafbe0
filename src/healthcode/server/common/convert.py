"""Conversions between protobuf well-known types and Python values."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from healthcode.common.errors import invalid


def to_timestamp(value: dt.datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for a datetime (None stays None)."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def from_timestamp(ts: Timestamp, field: str, *, required: bool = False) -> dt.datetime | None:
    """A UTC datetime from a request Timestamp; unset -> None (or INVALID_ARGUMENT if required)."""
    if ts.seconds == 0 and ts.nanos == 0:
        if required:
            raise invalid(field, "is required")
        return None
    if not (0 <= ts.nanos < 1_000_000_000) or not (0 < ts.seconds < 253402300800):
        raise invalid(field, "is out of range")
    return dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=dt.UTC)
