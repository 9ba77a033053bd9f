"""tritonclient.grpc with ssl=True against a TLS gRPC port, in a process of
its own (tritonclient's generated modules and pyserver's v1 protos cannot
share one: see tests/v2/grpc_v2_checks.py).

    python tritonclient_tls_check.py localhost:PORT CA_FILE [CLIENT_CERT CLIENT_KEY]

Prints one JSON object: {"ready": bool, "sum": [...]} or {"error": "..."}.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main(target: str, ca: str, cert: str | None = None, key: str | None = None) -> dict:
    client = grpcclient.InferenceServerClient(
        target, ssl=True, root_certificates=ca, certificate_chain=cert, private_key=key)
    try:
        ready = client.is_server_ready(client_timeout=10)
        a = np.arange(16, dtype=np.float32)[None]
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "FP32"),
                  grpcclient.InferInput("INPUT1", [1, 16], "FP32")]
        for i in inputs:
            i.set_data_from_numpy(a)
        result = client.infer("simple", inputs, client_timeout=10)
        return {"ready": ready, "sum": result.as_numpy("OUTPUT0").ravel().tolist()}
    except InferenceServerException as exc:
        return {"error": f"{exc.status()}: {exc.message()}"}
    finally:
        client.close()


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
