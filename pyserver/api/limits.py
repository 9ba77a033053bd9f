"""Bounds every request is checked against before anything is allocated.

A client's declared sizes are only believed up to the bytes it actually
sent: shapes multiply in Python integers (no overflow), and a tensor is
built only after its declared size has been compared with its data.
"""

from __future__ import annotations

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
# Most dimensions of one tensor (numpy's own limit is 64).
MAX_DIMS = 32
# Largest tensor a shape may declare, in bytes (far beyond any body; keeps
# every product well inside numpy's and the core's 64-bit sizes).
MAX_TENSOR_BYTES = 2**48
# Deepest nesting of the lists of a tensor's JSON data (a JSON document as a
# whole is bounded by the parser's recursion limit: deeper is a client error).
MAX_LIST_DEPTH = 64


def is_int(value: object) -> bool:
    """An integer that is not a bool (JSON true is not a number here)."""
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))
