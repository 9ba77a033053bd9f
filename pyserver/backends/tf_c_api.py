"""TensorFlow's C library, as the native TensorFlow runtime needs it.

The pip wheels of ``tensorflow`` and ``tensorflow-cpu`` ship TensorFlow's C
API in ``libtensorflow_cc.so.2``. The core loads it at run time
(csrc/tensorflow_api.h) from the path found here, and runs sessions on the
instance threads without the GIL; Python only finds the library and writes
the session's ConfigProto.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pyserver.errors import Code, ServerError

LIBRARY_ENV = "PYSERVER_LIBTENSORFLOW"
_LIBRARY_NAMES = ("libtensorflow_cc.so.2", "libtensorflow.so.2")


def library_path() -> str:
    """Where TensorFlow's C library is: $PYSERVER_LIBTENSORFLOW, else inside
    the installed ``tensorflow`` package (found without importing it).
    Raises UNAVAILABLE when there is none."""
    # TensorFlow logs an INFO line per process unless told otherwise; it reads
    # this when the library loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return override
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(Code.UNAVAILABLE, "tensorflow is not installed "
                          "(pip install 'pyserver[tensorflow]')")
    for location in spec.submodule_search_locations:
        for name in _LIBRARY_NAMES:
            candidate = Path(location) / name
            if candidate.is_file():
                return str(candidate)
    raise ServerError(Code.UNAVAILABLE, "the installed tensorflow package has no "
                      f"{' or '.join(_LIBRARY_NAMES)}")


def session_config(intra_op_threads: int, inter_op_threads: int, device: str = "") -> bytes:
    """A serialized tensorflow.ConfigProto: per-session thread pools of the
    given sizes (sessions never share a pool, so instances run side by side)."""
    from pyserver.protos import tensorflow_session_pb2 as tfs

    config = tfs.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                             inter_op_parallelism_threads=inter_op_threads,
                             use_per_session_threads=True, allow_soft_placement=True)
    if device:
        config.gpu_options.allow_growth = True
    return config.SerializeToString()
