"""A pure-Python client for the v1 inference API (HTTP :8000, gRPC :8001).

    from pyserver.client import InferenceServerClient
    with InferenceServerClient("localhost:8000", protocol="http") as client:
        result = client.infer("simple", {"INPUT0": a, "INPUT1": b})
        result.raw["OUTPUT0"]

Every failure, connection errors included, raises
:class:`InferenceServerException` (``code``, ``code_name``, ``message``).
Asyncio variants are in :mod:`pyserver.client.aio`.

Model configs are fetched once per model (batching and output types come
from them) and refreshed by ``get_status()``. Inference on an unknown model
therefore fails with the server's status error (INVALID_ARG, "no status
available for unknown model ..."). The asyncio HTTP transport reads
Content-Length bodies only (what v1 servers send).
"""

from pyserver.client._infer import NUMPY_DTYPES, Class, InferResult
from pyserver.client.client import InferenceServerClient
from pyserver.client.errors import InferenceServerException

__all__ = ["NUMPY_DTYPES", "Class", "InferResult", "InferenceServerClient",
           "InferenceServerException"]
