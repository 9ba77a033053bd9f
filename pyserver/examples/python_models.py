"""Python models (``model.py`` sources) written as for Triton's Python
backend, for tests, examples and benchmarks."""

ADD_SUB = '''\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, in the config's types."""

    def initialize(self, args):
        self.model_config = model_config = json.loads(args["model_config"])
        self.output0_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(model_config, "OUTPUT0")["data_type"])
        self.output1_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(model_config, "OUTPUT1")["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out_0 = pb_utils.Tensor("OUTPUT0", (in_0 + in_1).astype(self.output0_dtype))
            out_1 = pb_utils.Tensor("OUTPUT1", (in_0 - in_1).astype(self.output1_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out_0, out_1]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info("add_sub finalize")
'''

# Fails on demand, by the value of INPUT0's first element:
#   < 0    execute raises TritonModelException
#   == 99  the request gets an error response (INVALID_ARG)
#   == 13  the process dies (as a crash in native code would)
#   else   OUTPUT0 = INPUT0 * 2
FLAKY = '''\
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.instance = args["model_instance_name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            first = float(x.reshape(-1)[0])
            if first < 0:
                raise pb_utils.TritonModelException("negative input is not allowed")
            if first == 13:
                os._exit(3)
            if first == 9:
                os.kill(os.getpid(), 9)
            if first == 99:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("99 is refused", pb_utils.TritonError.INVALID_ARG)))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x * 2)]))
        return responses
'''

# TYPE_STRING in and out: OUTPUT0 = each element reversed.
REVERSE_STRINGS = '''\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = np.array([v[::-1] for v in x.reshape(-1)], dtype=np.object_).reshape(x.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]))
        return responses
'''

BROKEN_INITIALIZE = '''\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot find my weights")

    def execute(self, requests):
        return []
'''

# A stateful model for the sequence batcher: OUTPUT = the running sum of
# INPUT over the sequence, kept by the model per CORRID (so it works with the
# direct and the oldest strategy alike). Controls START, END, READY (int32
# 0/1) and CORRID (uint64) come from the server; READY 0 rows are padding.
ACCUMULATOR = '''\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            def value(name):
                return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            x = value("INPUT").astype(np.int64).reshape(-1)
            start, end, ready = (int(value(n).reshape(-1)[0]) for n in ("START", "END", "READY"))
            corrid = int(value("CORRID").reshape(-1)[0])
            if ready and (request.correlation_id() != corrid or
                          bool(request.flags() & 1) != bool(start)):
                raise pb_utils.TritonModelException(
                    f"request {request.correlation_id()}/{request.flags()} "
                    f"disagrees with its controls {corrid}/{start}")
            if not ready:
                total = np.zeros_like(x)
            else:
                total = (0 if start else self.sums.get(corrid, 0)) + x
                if end:
                    self.sums.pop(corrid, None)
                else:
                    self.sums[corrid] = total
            out = pb_utils.Tensor("OUTPUT", np.asarray(total, np.int32).reshape(value("INPUT").shape))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''
