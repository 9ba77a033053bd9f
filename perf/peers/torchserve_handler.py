"""TorchServe handler: the request body is JSON {"INPUT0": [[...]], ...};
runs the archive's model.onnx with onnxruntime and answers
{"OUTPUT0": [[...]], ...}. Archived by `python -m perf compare` with model.onnx as an
extra file."""

import json
import os

import numpy as np
import onnxruntime as ort


class OnnxHandler:
    def __init__(self):
        self.session = None

    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def handle(self, data, context):
        answers = []
        for row in data:
            body = row.get("body") or row.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            feeds = {name: np.asarray(body[name], dtype=np.float32) for name in self.input_names}
            results = self.session.run(self.output_names, feeds)
            answers.append({name: value.tolist() for name, value in zip(self.output_names, results)})
        return answers


_service = OnnxHandler()


def handle(data, context):
    if _service.session is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
