"""Datatype names of the server API (v2's: ``FP32``, ``BYTES``, ...) and
their model-config and numpy counterparts."""

from __future__ import annotations

import numpy as np

from pyserver.protos import model_config_pb2 as mc
from pyserver.tensors import NUMPY_DTYPES

# model-config DataType <-> datatype name
NAMES: dict[int, str] = {t: mc.DataType.Name(t)[len("TYPE_"):] for t in NUMPY_DTYPES}
NAMES[mc.TYPE_STRING] = "BYTES"
CONFIG_TYPES: dict[str, int] = {name: t for t, name in NAMES.items()}

_BY_NUMPY: dict[np.dtype, str] = {dtype: NAMES[t] for t, dtype in NUMPY_DTYPES.items()
                                  if t != mc.TYPE_STRING}


def of_numpy(dtype: np.dtype) -> str:
    """The datatype name of a numpy dtype; object, bytes and str arrays are
    BYTES. Raises ValueError for a dtype the server has no type for."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    name = _BY_NUMPY.get(dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype)
    if name is None:
        raise ValueError(f"no server datatype for numpy dtype {dtype}")
    return name
