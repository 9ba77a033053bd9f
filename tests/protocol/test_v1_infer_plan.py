"""v1 requests through the server API's plans, and v1 responses, without
sockets or runtimes: NV-InferRequest text -> template -> InferenceRequest
-> plan (pyserver.api.plan), and InferenceResponse -> InferResponseHeader."""

import numpy as np
import pytest
from google.protobuf import text_format

from pyserver.api import plan as api_plan
from pyserver.api.request import LATEST
from pyserver.errors import Code, ServerError
from pyserver.protocol import v1_infer
from pyserver.protos import api_pb2
from pyserver.protos import model_config_pb2 as mc
from pyserver.repository import config as cfg
from pyserver.repository.manager import ModelVersion

CONFIG = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "A" data_type: TYPE_FP32 dims: [ 2, 3 ] },
        { name: "S" data_type: TYPE_STRING dims: [ 2 ] },
        { name: "V" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "P" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "H" data_type: TYPE_FP16 dims: [ 4 ] } ]
"""


def version(text: str = CONFIG) -> ModelVersion:
    config = cfg.normalize(text_format.Parse(text, mc.ModelConfig()))
    return ModelVersion("m", 3, config, labels={"P": ["a", "b", "c"]})


def header(batch_size: int = 2, extra: str = "") -> str:
    return (f'batch_size: {batch_size} input {{ name: "A" }} input {{ name: "S" batch_byte_size: 20 }} '
            f'input {{ name: "V" dims: [ 5 ] }} output {{ name: "P" }} {extra}')


def request_of(text: str, body=b"", request_id: int = 0):
    template, _ = v1_infer.TemplateCache().from_text(text)
    return template.request("m", LATEST, request_id, body)


def plan_for(v: ModelVersion, text: str) -> api_plan.InferPlan:
    """The server API's plan of a v1 header text (a fresh template cache
    each time: plans are cached on the model version)."""
    return api_plan.plan_for(v, request_of(text))


def code_of(call) -> Code:
    with pytest.raises(ServerError) as info:
        call()
    return info.value.code


def test_plan_is_cached_per_header_text():
    v = version()
    assert plan_for(v, header()) is plan_for(v, header())


def test_requests_differing_only_in_id_share_a_plan():
    v = version()
    first, id_first = v1_infer.split_request_id(header(extra="id: 1 flags: 0"))
    second, id_second = v1_infer.split_request_id(header(extra="id: 2 flags: 0"))
    assert (id_first, id_second) == (1, 2)
    assert plan_for(v, first) is plan_for(v, second)


def test_id_inside_a_quoted_name_is_not_taken_for_the_request_id():
    text = 'batch_size: 1 input { name: "x id: 5" }'
    assert v1_infer.split_request_id(text) == (text, 0)


def test_plan_computes_shapes_with_batch_dimension():
    plan = plan_for(version(), header(batch_size=2))
    shapes = {i.name: i.shape for i in plan.inputs}
    assert shapes == {"A": (2, 2, 3), "S": (2, 2), "V": (2, 5)}
    assert [i.byte_size for i in plan.inputs] == [48, 20, 40]


def test_variable_dims_require_request_dims():
    text = 'batch_size: 1 input { name: "A" } input { name: "S" batch_byte_size: 8 } input { name: "V" }'
    assert code_of(lambda: plan_for(version(), text)) == Code.INVALID_ARG


def test_request_dims_must_match_config():
    text = header().replace('input { name: "A" }', 'input { name: "A" dims: [ 3, 2 ] }')
    assert code_of(lambda: plan_for(version(), text)) == Code.INVALID_ARG


def test_batch_size_above_max_is_refused():
    assert code_of(lambda: plan_for(version(), header(batch_size=5))) == Code.INVALID_ARG


def test_batch_size_zero_is_refused():
    assert code_of(lambda: plan_for(version(), header(batch_size=0))) == Code.INVALID_ARG


def test_wrong_batch_byte_size_is_refused():
    text = header().replace('input { name: "A" }', 'input { name: "A" batch_byte_size: 7 }')
    assert code_of(lambda: plan_for(version(), text)) == Code.INVALID_ARG


def test_string_input_needs_batch_byte_size():
    text = header().replace(" batch_byte_size: 20", "")
    assert code_of(lambda: plan_for(version(), text)) == Code.INVALID_ARG


def test_classification_of_fp16_is_refused():
    text = header(extra='output { name: "H" cls { count: 1 } }')
    assert code_of(lambda: plan_for(version(), text)) == Code.INVALID_ARG


def test_malformed_header_is_invalid_arg():
    assert code_of(lambda: plan_for(version(), "batch_size: {")) == Code.INVALID_ARG


def test_body_is_sliced_into_inputs_in_header_order():
    a = np.arange(6, dtype=np.float32)
    strings = b"".join(len(s).to_bytes(4, "little") + s for s in (b"hi", b"there"))
    text = header(batch_size=1).replace("batch_byte_size: 20", f"batch_byte_size: {len(strings)}")
    plan = plan_for(version(), text)
    v = np.arange(5, dtype=np.int32)
    payload = plan.payload(request_of(text, a.tobytes() + strings + v.tobytes()))
    np.testing.assert_array_equal(payload.inputs["A"], a.reshape(1, 2, 3))
    assert payload.inputs["S"].tolist() == [[b"hi", b"there"]]
    np.testing.assert_array_equal(payload.inputs["V"], v.reshape(1, 5))


def test_short_and_long_bodies_are_refused():
    text = header(batch_size=1).replace("20", "8")
    plan = plan_for(version(), text)
    good = np.zeros(6, np.float32).tobytes() + b"\0" * 8 + np.zeros(5, np.int32).tobytes()
    assert code_of(lambda: plan.payload(request_of(text, good[:-1]))) == Code.INVALID_ARG
    assert code_of(lambda: plan.payload(request_of(text, good + b"x"))) == Code.INVALID_ARG


def test_response_header_carries_dims_sizes_and_id():
    plan_text, request_id = v1_infer.split_request_id(header(batch_size=2, extra="id: 300"))
    request = request_of(plan_text, request_id=request_id)
    plan = api_plan.plan_for(version(), request)
    response = plan.response(request, {"P": np.ones((2, 4), np.float32)})
    result = v1_infer.encode_response(response, request_id)
    parsed = api_pb2.InferResponseHeader()
    parsed.ParseFromString(result.binary)
    assert parsed.id == 300 and parsed.model_version == 3 and parsed.batch_size == 2
    assert list(parsed.output[0].raw.dims) == [4] and parsed.output[0].raw.batch_byte_size == 32
    assert parsed.output[0].data_type == mc.TYPE_FP32
    # the text forms leave out data_type (1.12), which older text parsers reject
    parsed.output[0].ClearField("data_type")
    assert text_format.Parse(result.one_line, api_pb2.InferResponseHeader()) == parsed
    assert text_format.Parse(result.text, api_pb2.InferResponseHeader()) == parsed


def test_output_of_wrong_dtype_is_internal_error():
    request = request_of(header())
    plan = api_plan.plan_for(version(), request)
    call = lambda: plan.response(request, {"P": np.ones((2, 4), np.float64)})
    assert code_of(call) == Code.INTERNAL


def test_classification_returns_top_k_with_labels_per_batch_element():
    request = request_of(header(extra='output { name: "P" cls { count: 2 } }').replace(
        'output { name: "P" } ', ""))
    plan = api_plan.plan_for(version(), request)
    scores = np.array([[0.1, 0.7, 0.2, 0.0], [0.5, 0.1, 0.1, 0.3]], np.float32)
    result = v1_infer.encode_response(plan.response(request, {"P": scores}))
    parsed = api_pb2.InferResponseHeader()
    parsed.ParseFromString(result.binary)
    batches = parsed.output[0].batch_classes
    assert [(c.idx, c.label) for c in batches[0].cls] == [(1, "b"), (2, "c")]
    assert [(c.idx, c.label) for c in batches[1].cls] == [(0, "a"), (3, "")]
    assert batches[0].cls[0].value == pytest.approx(0.7)
    assert result.raw == [b""]


def test_nv_status_text_parses_back():
    from pyserver.protos import request_status_pb2 as rs
    text = v1_infer.status_text(Code.NOT_FOUND, 'model "x" \n missing', "inference:0", 12)
    status = text_format.Parse(text, rs.RequestStatus())
    assert status.code == rs.NOT_FOUND and status.msg == 'model "x" \n missing'
    assert status.request_id == 12 and "\n" not in text


def test_a_sequences_headers_share_one_template():
    cache = v1_infer.TemplateCache()
    first, _ = cache.from_text(header(extra="correlation_id: 7 flags: 1"))
    second, _ = cache.from_text(header(extra="correlation_id: 8 flags: 1"))
    assert (first.correlation_id, second.correlation_id) == (7, 8)
    assert first.signature == second.signature
    request = second.request("m", LATEST, 0, b"")
    assert (request.sequence_id, request.sequence_start, request.sequence_end) == (8, True, False)


def test_correlation_id_given_twice_is_malformed():
    assert code_of(lambda: v1_infer.TemplateCache().from_text(
        header(extra="correlation_id: 3 correlation_id: 4"))) == Code.INVALID_ARG


def test_correlation_id_beyond_uint64_is_invalid():
    assert code_of(lambda: v1_infer.TemplateCache().from_text(
        header(extra=f"correlation_id: {2**64}"))) == Code.INVALID_ARG


def test_grpc_header_correlation_id_is_kept_out_of_the_key():
    cache = v1_infer.TemplateCache()
    one = api_pb2.InferRequestHeader(batch_size=1, correlation_id=11, flags=3)
    two = api_pb2.InferRequestHeader(batch_size=1, correlation_id=12, flags=3)
    first, second = cache.from_header(one), cache.from_header(two)
    assert (first.correlation_id, second.correlation_id) == (11, 12)
    assert first.signature == second.signature
