"""KServe 0.21 ModelServer serving ONNX files with onnxruntime over the v2 REST
protocol, on 127.0.0.1 only (KServe binds 0.0.0.0 in code: patched here), gRPC
off, no per-request access or latency logs.

    python kserve_server.py --http-port 18080 NAME=PATH.onnx [NAME=PATH.onnx ...]
"""

import argparse
import logging
import uuid

import numpy as np
import onnxruntime as ort
import uvicorn

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest import server as rest_server


class _LoopbackConfig(uvicorn.Config):
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        kwargs["access_log"] = False
        super().__init__(*args, **kwargs)


rest_server.uvicorn.Config = _LoopbackConfig


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        results = self.session.run(self.output_names, feeds)
        outputs = []
        for name, value in zip(self.output_names, results):
            out = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(np.ascontiguousarray(value), binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs,
                             response_id=payload.id or str(uuid.uuid4()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("models", nargs="+", help="NAME=PATH.onnx")
    args = p.parse_args()
    models = [OnnxModel(*spec.split("=", 1)) for spec in args.models]
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False,
                                enable_latency_logging=False, enable_docs_url=False)
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).disabled = True
    server.start(models)


if __name__ == "__main__":
    main()
