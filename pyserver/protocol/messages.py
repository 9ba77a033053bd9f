"""Protobuf messages from the wire, for every gRPC translation."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from pyserver.errors import invalid_arg


def parse(message_type, data: bytes):
    """``data`` as a ``message_type``; ServerError(INVALID_ARG) when it is
    not a valid serialization of one (the message names the type, never
    the parser's exception)."""
    try:
        return message_type.FromString(data)
    except (DecodeError, RuntimeError, ValueError, TypeError):
        raise invalid_arg(f"malformed {message_type.DESCRIPTOR.name}: the message does not "
                          f"parse") from None
