"""Fuzzing the front ends: generated malformed requests over HTTP (v1 and
v2, request lines, headers, chunked framing, declared sizes, NV-InferRequest
text, v2 JSON and binary headers) and gRPC (v1 and v2 protobuf messages),
each checked against what a robust server must do.

    python -m pyserver_perf.fuzz --cases 20000            # starts servers (both parsers)
    python -m pyserver_perf.fuzz --cases 5000 --http 127.0.0.1:8000 --grpc 127.0.0.1:8001

A started server runs over the example store with 1 s transport timeouts.
The checks, per case:

- transport: the connection ends (an answer and a close, or a clean close)
  within a deadline, and what came back is a sequence of well-formed HTTP/1.1
  responses; a gRPC call ends before its deadline. After each family a good
  request is still served.
- translation: no 5xx (except 503 with Retry-After, a limit) or gRPC
  UNKNOWN / INTERNAL / DATA_LOSS (or v1 status INTERNAL / UNKNOWN) for a
  client's mistake, and no Python type name, traceback or path in an answer.

Cases come from a seeded generator: the same seed and count give the same
cases. The test suite (tests/http/test_fuzz_http.py, tests/grpc/test_fuzz_grpc.py)
runs a bounded number; this command runs as many as asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

HTTP_FAMILIES = ("request_line", "headers", "chunked", "declared_sizes", "nv_infer_request",
                 "v2_json", "v2_binary")
GRPC_FAMILIES = ("grpc_v1", "grpc_v2")
TRANSPORT = "transport"      # hangs, malformed framing, a server that stops serving
TRANSLATION = "translation"  # 5xx / UNKNOWN for a client mistake, internals in an answer

CASE_DEADLINE_S = 8.0
V1_SERVICE = "/nvidia.inferenceserver.GRPCService/"
V2_SERVICE = "/inference.GRPCInferenceService/"

LEAK = re.compile(
    rb"Traceback \(most recent|File \"[^\"]*\.pyx?\"|<class '|/site-packages/|"
    rb"invalid literal for int\(\)|\b(ValueError|TypeError|KeyError|IndexError|AttributeError|"
    rb"OverflowError|RecursionError|MemoryError|ZeroDivisionError|AssertionError|"
    rb"UnicodeDecodeError|UnicodeEncodeError|DecodeError|RuntimeError|NameError|OSError|"
    rb"JSONDecodeError|struct\.error)\b")

# Bytes and tokens that break parsers more often than random bytes do.
TOKENS = (b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b";", b",", b"{", b"}", b"[",
          b"]", b'"', b"\\", b"%", b"%00", b"-1", b"0", b"4294967296", b"18446744073709551616",
          b"99999999999999999999999", b"1e309", b"NaN", b"-0", b"0x10", b"\xff\xfe",
          "\u00e9".encode(), b"\r\n\r\n", b"\r\n ", b"chunked", b"Content-Length: 5\r\n",
          b"Transfer-Encoding: chunked\r\n")
BIG_NUMBERS = (0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 32 + 16, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64,
               2 ** 64 + 1, 10 ** 30)


@dataclass
class Case:
    family: str
    payload: bytes
    method: str = ""          # gRPC: the full method name
    half_close: bool = True   # HTTP: shut our side after sending


@dataclass
class Finding:
    case: Case
    kind: str    # TRANSPORT or TRANSLATION
    detail: str

    def describe(self) -> str:
        what = self.case.method or ""
        return (f"[{self.case.family}/{self.kind}] {self.detail} {what} "
                f"payload={self.case.payload[:160]!r}")


@dataclass
class Report:
    cases: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def by_family(self, family: str, kind: str | None = None) -> list[Finding]:
        return [f for f in self.findings
                if f.case.family == family and (kind is None or f.kind == kind)]


# -- byte-level mutation --------------------------------------------------------------------

def mutate(rng: random.Random, data: bytes, edits: int | None = None) -> bytes:
    """``data`` with 1-4 random edits: a byte set, a token or random bytes
    inserted, a span deleted or repeated, or the tail cut."""
    out = bytearray(data)
    for _ in range(edits or rng.randint(1, 4)):
        pos = rng.randrange(len(out) + 1)
        op = rng.randrange(6)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and out:
            del out[pos:pos + rng.randint(1, 16)]
        elif op == 3 and out:
            span = bytes(out[pos:pos + rng.randint(1, 32)])
            out[pos:pos] = span * rng.randint(1, 16)
        elif op == 4:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 5 and len(out) > 1:
            del out[pos:]
    return bytes(out)


# -- HTTP requests ---------------------------------------------------------------------------

def http_request(method: str, target: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", version: str = "HTTP/1.1", length: bool = True) -> bytes:
    lines = [f"{method} {target} {version}", "Host: fuzz"]
    lines += [f"{k}: {v}" for k, v in (headers or [])]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


_ONES = np.arange(16, dtype=np.float32).tobytes()
V1_HEADER = "batch_size: 1 input { name: \"INPUT0\" } input { name: \"INPUT1\" } " \
            "output { name: \"OUTPUT0\" }"


def v1_infer(header_text: str = V1_HEADER, body: bytes = _ONES + _ONES) -> bytes:
    return http_request("POST", "/api/infer/simple?format=binary",
                        [("NV-InferRequest", header_text)], body)


def v2_json_doc() -> dict:
    return {"id": "fuzz", "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))}],
        "outputs": [{"name": "OUTPUT0"}]}


def v2_binary(header: bytes, raw: bytes, declared: str | None = None) -> bytes:
    return http_request("POST", "/v2/models/simple/infer",
                        [("Inference-Header-Content-Length",
                          declared if declared is not None else str(len(header))),
                         ("Content-Type", "application/octet-stream")], header + raw)


def v2_binary_doc(size: int = 64) -> dict:
    return {"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
         "parameters": {"binary_data_size": size}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32",
         "parameters": {"binary_data_size": size}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}


BASE_REQUESTS = (
    lambda: http_request("GET", "/api/health/live", length=False),
    lambda: http_request("GET", "/api/status/simple", length=False),
    lambda: v1_infer(),
    lambda: http_request("POST", "/v2/models/simple/infer", [("Content-Type", "application/json")],
                         json.dumps(v2_json_doc()).encode()),
    lambda: http_request("GET", "/v2/models/simple", length=False),
    lambda: v2_binary(json.dumps(v2_binary_doc()).encode(), _ONES + _ONES),
)


def _base(rng: random.Random) -> bytes:
    return rng.choice(BASE_REQUESTS)()


def gen_request_line(rng: random.Random) -> bytes:
    base = _base(rng)
    line, _, rest = base.partition(b"\r\n")
    choice = rng.randrange(6)
    if choice == 0:
        line = mutate(rng, line)
    elif choice == 1:
        method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE",
                             b"CONNECT", b"PATCH", b"G\x00T", b"get", b"PRI", b"X" * 200, b""])
        line = method + line[line.find(b" "):]
    elif choice == 2:
        target = rng.choice([b"/" + b"a" * rng.choice([10, 5000, 70000]), b"*", b"http://x/api",
                             b"/api/infer/simple/%ff%00", b"/v2/models/" + b"../" * 50,
                             b"/api/status/" + bytes(rng.randrange(33, 127) for _ in range(30)),
                             b"/v2/models/simple/versions/" + str(rng.choice(BIG_NUMBERS)).encode()
                             + b"/infer", b""])
        parts = line.split(b" ")
        line = b" ".join([parts[0], target] + parts[2:])
    elif choice == 3:
        version = rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b"HTTP/9.9", b"HTTP/1.1 x",
                              b"", b"http/1.1", b"HTTP/01.1"])
        line = line.rsplit(b" ", 1)[0] + (b" " + version if version else b"")
    elif choice == 4:
        base = base.replace(b"\r\n", b"\n")
        return base
    else:
        line = line.replace(b" ", rng.choice([b"  ", b"\t", b" \x00"]), 1)
    return line + b"\r\n" + rest


def gen_headers(rng: random.Random) -> bytes:
    base = _base(rng)
    head, _, body = base.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    extra = rng.choice([
        [b"Host: other"], [b"X-Folded: a", b" continued"], [b"NoColonHere"], [b"X-Nul: a\x00b"],
        [b"X-Big: " + b"a" * rng.choice([1000, 70000])],
        [b"X-Many-%d: v" % i for i in range(rng.choice([100, 3000]))],
        [b"Bad Name: v"], [b": empty-name"], [b"Connection: close"], [b"Connection: upgrade",
                                                                      b"Upgrade: h2c"],
        [b"Expect: 100-continue"], [b"Expect: 999-weird"], [b"X-Utf8: \xc3\xa9\xff"],
        [b"Transfer-Encoding: chunked"], [b"Content-Type: application/json; charset=\xff"],
    ])
    if rng.random() < 0.3 and len(lines) > 1:
        del lines[rng.randrange(1, len(lines))]  # e.g. Host or Content-Length gone
    at = rng.randrange(1, len(lines) + 1)
    lines[at:at] = extra
    if rng.random() < 0.3:
        i = rng.randrange(1, len(lines))
        lines[i] = mutate(rng, lines[i])
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def gen_chunked(rng: random.Random) -> bytes:
    body = json.dumps(v2_json_doc()).encode() if rng.random() < 0.5 else _ONES + _ONES
    if body[:1] == b"{":
        head = (b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: fuzz\r\n"
                b"Content-Type: application/json\r\n")
    else:
        head = (b"POST /api/infer/simple?format=binary HTTP/1.1\r\nHost: fuzz\r\n"
                b"NV-InferRequest: " + V1_HEADER.encode() + b"\r\n")
    te = rng.choice([b"chunked", b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity",
                     b"Chunked", b"chunked\x00", b" chunked"])
    head += b"Transfer-Encoding: " + te + b"\r\n"
    if rng.random() < 0.2:
        head += b"Content-Length: %d\r\n" % len(body)
    pieces = []
    pos = 0
    eol = rng.choice([b"\r\n", b"\r\n", b"\n", b"\r"])
    while pos < len(body):
        n = rng.randint(1, 64)
        size = b"%x" % n
        roll = rng.random()
        if roll < 0.1:
            size = rng.choice([b"FFFFFFFFFFFFFFFFFFFFFFFF", b"-5", b"0x10", b"zz", b"", b"+5",
                               b"%x" % (n + 7), b"1" * 40])
        elif roll < 0.2:
            size += rng.choice([b";ext=1", b"; ext", b";" + b"e" * 5000, b" "])
        pieces.append(size + eol + body[pos:pos + n] + rng.choice([eol, eol, eol, b"", b"X"]))
        pos += n
    ending = rng.choice([b"0" + eol + eol, b"0" + eol + b"Trailer: x" + eol + eol, b"",
                         b"0" + eol, b"00000" + eol + eol])
    data = head + b"\r\n" + b"".join(pieces) + ending
    return mutate(rng, data, 1) if rng.random() < 0.2 else data


def gen_declared_sizes(rng: random.Random) -> bytes:
    n = rng.choice(BIG_NUMBERS)
    roll = rng.randrange(6)
    if roll == 0:
        body = _ONES + _ONES
        length = rng.choice([str(n), "-5", "+128", "0128", "12 8", "128, 128", "1e3", "0x80",
                             str(len(body) - 10), str(len(body) + 10)])
        return (f"POST /api/infer/simple?format=binary HTTP/1.1\r\nHost: fuzz\r\n"
                f"NV-InferRequest: {V1_HEADER}\r\nContent-Length: {length}\r\n\r\n").encode() + body
    if roll == 1:
        return (b"POST /api/infer/simple HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 4\r\n"
                b"Content-Length: %d\r\n\r\nabcd" % rng.choice([4, 5, 100]))
    if roll == 2:
        dims = rng.choice([[n], [n, n], [4294967296], [2 ** 62, 4], [-1], [0], [16, -16]])
        header = (f"batch_size: 1 input {{ name: \"INPUT0\" dims: {dims} }} "
                  f"input {{ name: \"INPUT1\" }}").replace("[", "").replace("]", "")
        header = header.replace(", ", " dims: ")
        return v1_infer(header, b"\0" * 4)
    if roll == 3:
        header = (f"batch_size: {rng.choice([n, 1])} input {{ name: \"INPUT0\" batch_byte_size: "
                  f"{n} }} input {{ name: \"INPUT1\" }}")
        return v1_infer(header, b"\0" * 4)
    if roll == 4:
        doc = v2_json_doc()
        doc["inputs"][0]["shape"] = rng.choice([[n, n], [2 ** 32, 2 ** 32], [1, n], [-1, 16],
                                                [2 ** 63, 2], [1, 2 ** 64]])
        doc["inputs"][0]["data"] = [1.0]
        return http_request("POST", "/v2/models/simple/infer",
                            [("Content-Type", "application/json")], json.dumps(doc).encode())
    doc = v2_binary_doc(rng.choice([n, 64, -64]))
    header = json.dumps(doc).encode()
    declared = rng.choice([str(n), str(len(header) + 1000), "-1", "abc", str(len(header))])
    return v2_binary(header, b"\0" * 4, declared)


NV_TOKENS = ("batch_size: 4294967296", "batch_size: -1", "batch_size: \"x\"", "id: -1",
             "id: 18446744073709551616", "input { }", "input { name: \"INPUT0\" dims: -1 }",
             "output { name: \"OUTPUT0\" cls { count: -1 } }",
             "output { name: \"OUTPUT0\" cls { count: 4294967296 } }", "flags: 7", "{", "}",
             "\"", "\\", "input { name: \"\xe9\" }", "correlation_id: 18446744073709551615")


def gen_nv_infer_request(rng: random.Random) -> bytes:
    text = V1_HEADER
    if rng.random() < 0.5:
        text = " ".join([text] + [rng.choice(NV_TOKENS) for _ in range(rng.randint(1, 3))])
    data = text.encode("utf-8")
    if rng.random() < 0.6:
        data = mutate(rng, data)
    data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return (b"POST /api/infer/simple?format=binary HTTP/1.1\r\nHost: fuzz\r\nNV-InferRequest: "
            + data + b"\r\nContent-Length: 128\r\n\r\n" + _ONES + _ONES)


WRONG_TYPES = (None, True, 1, -1, 1.5, "x", "", [], {}, [[]], [{}], {"a": 1}, 2 ** 64, -2 ** 63,
               "1" * 1000)


def _json_paths(doc, prefix=()) -> list[tuple]:
    paths = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            paths += _json_paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:3]):
            paths += _json_paths(value, prefix + (i,))
    return paths


def _set_path(doc, path, value):
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def gen_v2_json(rng: random.Random) -> bytes:
    doc = v2_json_doc()
    roll = rng.randrange(6)
    if roll <= 1:
        path = rng.choice(_json_paths(doc)[1:])
        doc = _set_path(doc, path, rng.choice(WRONG_TYPES))
        body = json.dumps(doc).encode()
    elif roll == 2:
        depth = rng.choice([100, 2000, 10000])
        nest = rng.choice([("[", "]"), ('{"a":', "}")])
        body = json.dumps(doc).encode()[:-1] + b', "parameters": ' + \
            (nest[0] * depth + "1" + nest[1] * depth).encode() + b"}"
    elif roll == 3:
        doc["outputs"] = [{"name": "OUTPUT0", "parameters": {
            "classification": rng.choice([-1, 0, 2 ** 31, 2 ** 64, "3", 1.5, None])}}]
        doc["id"] = rng.choice(["x" * 100000, 5, None, "\u0000"])
        body = json.dumps(doc).encode()
    elif roll == 4:
        body = json.dumps(doc).encode()
        body = rng.choice([body.replace(b"16", b"1e309"), body.replace(b"16", b"NaN"),
                           body.replace(b'"FP32"', b'"FP64"'), body.replace(b"[", b"[[", 3),
                           body + b"{}", body[:rng.randrange(len(body))], b"\xff" + body,
                           body.replace(b'"id"', b'"inputs"')])
    else:
        body = mutate(rng, json.dumps(doc).encode())
    target = rng.choice(["/v2/models/simple/infer", "/v2/models/simple/versions/1/infer",
                         "/v2/models/simple_int32/infer", "/v2/models/classifier/infer"])
    return http_request("POST", target, [("Content-Type", "application/json")], body)


def gen_v2_binary(rng: random.Random) -> bytes:
    doc = v2_binary_doc()
    roll = rng.randrange(4)
    if roll == 0:
        path = rng.choice(_json_paths(doc)[1:])
        doc = _set_path(doc, path, rng.choice(WRONG_TYPES))
        header = json.dumps(doc).encode()
    elif roll == 1:
        header = mutate(rng, json.dumps(doc).encode())
    else:
        header = json.dumps(doc).encode()
    raw = rng.choice([_ONES + _ONES, _ONES, b"", _ONES * 4, b"\0" * 3])
    declared = None
    if roll >= 2:
        declared = rng.choice([str(len(header) + rng.randint(-20, 20)), "0", "-1", "x",
                               str(2 ** 64), str(len(header) + len(raw) + 1), " 5"])
    return v2_binary(header, raw, declared)


HTTP_GENERATORS: dict[str, Callable[[random.Random], bytes]] = {
    "request_line": gen_request_line, "headers": gen_headers, "chunked": gen_chunked,
    "declared_sizes": gen_declared_sizes, "nv_infer_request": gen_nv_infer_request,
    "v2_json": gen_v2_json, "v2_binary": gen_v2_binary}


# -- gRPC messages ---------------------------------------------------------------------------

def _grpc_bases():
    from pyserver.protos import grpc_service_pb2 as g1
    from pyserver.protos import v2_grpc_service_pb2 as g2
    infer = g1.InferRequest(model_name="simple", model_version=-1)
    infer.meta_data.batch_size = 1
    infer.meta_data.input.add(name="INPUT0")
    infer.meta_data.input.add(name="INPUT1")
    infer.meta_data.output.add(name="OUTPUT0")
    infer.raw_input.extend([_ONES, _ONES])
    v1 = {"Infer": infer, "Status": g1.StatusRequest(model_name="simple"),
          "Health": g1.HealthRequest(mode="ready")}
    model_infer = g2.ModelInferRequest(model_name="simple", id="fuzz")
    for name in ("INPUT0", "INPUT1"):
        tensor = model_infer.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        model_infer.raw_input_contents.append(_ONES)
        del tensor
    model_infer.outputs.add(name="OUTPUT0")
    v2 = {"ModelInfer": model_infer, "ModelMetadata": g2.ModelMetadataRequest(name="simple"),
          "ModelReady": g2.ModelReadyRequest(name="simple"),
          "ModelConfig": g2.ModelConfigRequest(name="simple"),
          "ModelStatistics": g2.ModelStatisticsRequest(name="simple"),
          "ServerMetadata": g2.ServerMetadataRequest(), "RepositoryIndex": g2.RepositoryIndexRequest()}
    return v1, v2


def _structured_v1(rng: random.Random, message):
    m = type(message)()
    m.CopyFrom(message)
    if m.DESCRIPTOR.name != "InferRequest":
        return m
    roll = rng.randrange(5)
    n = rng.choice([b for b in BIG_NUMBERS if 0 <= b < 2 ** 32])
    if roll == 0:
        m.meta_data.batch_size = n
    elif roll == 1:
        m.meta_data.input[0].dims.extend([rng.choice([n, 2 ** 31 - 1, 0]), 2 ** 31 - 1])
    elif roll == 2:
        m.model_version = rng.choice([-5, 2 ** 62, 0, 7])
    elif roll == 3:
        del m.raw_input[rng.randrange(len(m.raw_input))]
    else:
        m.meta_data.output[0].cls.count = n
    return m


def _structured_v2(rng: random.Random, message):
    m = type(message)()
    m.CopyFrom(message)
    name = m.DESCRIPTOR.name
    if name != "ModelInferRequest":
        if hasattr(m, "version"):
            m.version = rng.choice(["abc", "-1", "99999999999999999999", "1.5", " 1"])
        return m
    roll = rng.randrange(6)
    if roll == 0:
        del m.inputs[0].shape[:]
        m.inputs[0].shape.extend(rng.choice([[2 ** 62, 2 ** 62], [-1, 16], [2 ** 32, 2 ** 32],
                                             [1, 2 ** 63 - 1]]))
    elif roll == 1:
        m.inputs[0].datatype = rng.choice(["FP99", "", "BYTES", "fp32", "\u00e9"])
    elif roll == 2:
        m.model_version = rng.choice(["abc", "-1", "99999999999999999999", "1.5"])
    elif roll == 3:
        m.outputs[0].parameters["classification"].int64_param = rng.choice([-1, 2 ** 62, 0])
    elif roll == 4:
        del m.raw_input_contents[0]
    else:
        m.inputs[0].parameters["binary_data_size"].int64_param = rng.choice([-1, 2 ** 62])
    return m


def grpc_cases(rng: random.Random, family: str) -> Iterator[Case]:
    v1, v2 = _grpc_bases()
    bases, service, structured = ((v1, V1_SERVICE, _structured_v1) if family == "grpc_v1"
                                  else (v2, V2_SERVICE, _structured_v2))
    names = sorted(bases)
    while True:
        name = rng.choice(names)
        message = bases[name]
        roll = rng.random()
        if roll < 0.4:
            payload = structured(rng, message).SerializeToString()
        elif roll < 0.9:
            payload = mutate(rng, message.SerializeToString())
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        yield Case(family, payload, method=service + name)


def http_cases(rng: random.Random, family: str) -> Iterator[Case]:
    generator = HTTP_GENERATORS[family]
    while True:
        yield Case(family, generator(rng), half_close=rng.random() < 0.85)


# -- checking answers ------------------------------------------------------------------------

def parse_responses(data: bytes) -> tuple[list[tuple[int, dict, bytes]], str]:
    """The HTTP/1.1 responses in ``data`` and '' when it is a whole number of
    well-formed ones, else what is wrong."""
    responses = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return responses, f"truncated response head {data[pos:pos + 80]!r}"
        lines = data[pos:end].split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*", lines[0])
        if match is None:
            return responses, f"bad status line {lines[0][:80]!r}"
        status = int(match[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name.strip() != name or b"\n" in line:
                return responses, f"bad header line {line[:80]!r}"
            headers[name.lower().decode("latin-1")] = value.strip().decode("latin-1")
        pos = end + 4
        if 100 <= status < 200:
            continue
        if "content-length" not in headers or not headers["content-length"].isdigit():
            return responses, "response without a content-length"
        length = int(headers["content-length"])
        if len(data) - pos < length:
            return responses, "truncated response body"
        responses.append((status, headers, data[pos:pos + length]))
        pos += length
    return responses, ""


def check_http(case: Case, data: bytes, ended: str) -> list[Finding]:
    """``ended``: 'close', 'reset' or 'hang'."""
    findings = []
    if ended == "hang":
        findings.append(Finding(case, TRANSPORT, f"no close within {CASE_DEADLINE_S} s "
                                                 f"(received {data[:80]!r})"))
    responses, problem = parse_responses(data)
    if problem and ended != "reset":
        findings.append(Finding(case, TRANSPORT, f"malformed answer: {problem}"))
    for status, headers, body in responses:
        if status >= 500 and not (status == 503 and "retry-after" in headers):
            findings.append(Finding(case, TRANSLATION, f"{status} for a client mistake: "
                                                       f"{body[:200]!r}"))
        text = body + " ".join(headers.values()).encode("latin-1", "replace")
        leak = LEAK.search(text)
        if leak:
            findings.append(Finding(case, TRANSLATION, f"internals in the answer: "
                                                       f"{leak.group(0)!r} in {text[:200]!r}"))
    return findings


async def run_http_case(host: str, port: int, case: Case) -> tuple[bytes, str]:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    data = b""
    ended = "close"
    try:
        try:
            writer.write(case.payload)
            if case.half_close:
                writer.write_eof()
            await writer.drain()
        except (ConnectionError, OSError):
            ended = "reset"
        try:
            async with asyncio.timeout(CASE_DEADLINE_S):
                while True:
                    chunk = await reader.read(1 << 16)
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            ended = "hang"
        except (ConnectionError, OSError):
            ended = "reset"
    finally:
        writer.close()
    return data, ended


def check_grpc(case: Case, code_name: str, details: str, response: bytes | None) -> list[Finding]:
    findings = []
    if code_name == "DEADLINE_EXCEEDED":
        findings.append(Finding(case, TRANSPORT, "no answer before the deadline"))
    if code_name in ("UNKNOWN", "INTERNAL", "DATA_LOSS"):
        findings.append(Finding(case, TRANSLATION, f"{code_name} for a client mistake: "
                                                   f"{details[:200]!r}"))
    leak = LEAK.search(details.encode("utf-8", "replace"))
    if leak:
        findings.append(Finding(case, TRANSLATION, f"internals in the status: {details[:200]!r}"))
    if response is not None and case.method.startswith(V1_SERVICE):
        findings += _check_v1_status(case, response)
    return findings


def _check_v1_status(case: Case, response: bytes) -> list[Finding]:
    from pyserver.protos import grpc_service_pb2 as g1
    from pyserver.protos import request_status_pb2 as rs
    classes = {"Infer": g1.InferResponse, "Status": g1.StatusResponse,
               "Health": g1.HealthResponse}
    cls = classes.get(case.method.rsplit("/", 1)[1])
    if cls is None:
        return []
    try:
        status = cls.FromString(response).request_status
    except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
        return [Finding(case, TRANSPORT, f"undecodable v1 response ({exc})")]
    findings = []
    # v1's own answer to a Health mode other than live/ready is UNKNOWN
    # (reference/v1-protocol-facts.md): compatibility, not a fault.
    v1_health_fact = (case.method.endswith("/Health") and status.code == rs.UNKNOWN
                      and status.msg.startswith("unknown health mode"))
    if status.code in (rs.INTERNAL, rs.UNKNOWN) and not v1_health_fact:
        findings.append(Finding(case, TRANSLATION, f"v1 status {rs.RequestStatusCode.Name(status.code)}"
                                                   f" for a client mistake: {status.msg[:200]!r}"))
    if LEAK.search(status.msg.encode("utf-8", "replace")):
        findings.append(Finding(case, TRANSLATION, f"internals in the v1 status: {status.msg[:200]!r}"))
    return findings


async def run_grpc_case(channel, case: Case) -> tuple[str, str, bytes | None]:
    import grpc
    call = channel.unary_unary(case.method, request_serializer=None, response_deserializer=None)
    try:
        response = await call(case.payload, timeout=CASE_DEADLINE_S)
        return "OK", "", response
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or "", None


# -- liveness --------------------------------------------------------------------------------

async def http_serves(host: str, port: int) -> str:
    """'' when a good v1 infer is answered 200, else why not."""
    try:
        # Asks for the close rather than shutting its side: the server takes a FIN as
        # the client gone, and would cancel the request if it were still queued.
        case = Case("liveness", http_request("POST", "/api/infer/simple?format=binary",
                                             [("NV-InferRequest", V1_HEADER),
                                              ("Connection", "close")], _ONES + _ONES),
                    half_close=False)
        data, ended = await asyncio.wait_for(run_http_case(host, port, case), CASE_DEADLINE_S + 2)
    except (OSError, asyncio.TimeoutError) as exc:
        return f"good request failed: {exc}"
    responses, problem = parse_responses(data)
    if problem or not responses or responses[0][0] != 200:
        return f"good request not answered 200: {data[:200]!r}"
    return ""


async def grpc_serves(channel) -> str:
    v1, _ = _grpc_bases()
    code, details, _ = await run_grpc_case(channel, Case("liveness",
                                                         v1["Infer"].SerializeToString(),
                                                         method=V1_SERVICE + "Infer"))
    return "" if code == "OK" else f"good gRPC request failed: {code} {details}"


# -- running ---------------------------------------------------------------------------------

async def _bounded(items, worker, concurrency: int) -> None:
    queue = list(items)
    queue.reverse()

    async def loop():
        while queue:
            await worker(queue.pop())

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def fuzz_http(host: str, port: int, families: list[str], cases_per_family: int,
                    seed: int, concurrency: int = 16, report: Report | None = None) -> Report:
    """Runs ``cases_per_family`` cases of each HTTP family against host:port."""
    report = report or Report()
    for family in families:
        rng = random.Random(f"{seed}:{family}")
        generator = http_cases(rng, family)
        batch = [next(generator) for _ in range(cases_per_family)]

        async def one(case: Case) -> None:
            try:
                data, ended = await run_http_case(host, port, case)
            except OSError as exc:
                report.findings.append(Finding(case, TRANSPORT, f"cannot connect: {exc}"))
                return
            report.findings.extend(check_http(case, data, ended))

        await _bounded(batch, one, concurrency)
        report.cases[family] += len(batch)
        problem = await http_serves(host, port)
        if problem:
            report.findings.append(Finding(Case(family, b""), TRANSPORT,
                                           f"after the family: {problem}"))
    return report


async def fuzz_grpc(target: str, families: list[str], cases_per_family: int, seed: int,
                    concurrency: int = 16, report: Report | None = None) -> Report:
    """Runs ``cases_per_family`` cases of each gRPC family against ``target``."""
    import grpc
    report = report or Report()
    async with grpc.aio.insecure_channel(target) as channel:
        for family in families:
            rng = random.Random(f"{seed}:{family}")
            generator = grpc_cases(rng, family)
            batch = [next(generator) for _ in range(cases_per_family)]

            async def one(case: Case) -> None:
                code, details, response = await run_grpc_case(channel, case)
                report.findings.extend(check_grpc(case, code, details, response))

            await _bounded(batch, one, concurrency)
            report.cases[family] += len(batch)
            problem = await grpc_serves(channel)
            if problem:
                report.findings.append(Finding(Case(family, b""), TRANSPORT,
                                               f"after the family: {problem}"))
    return report


FUZZ_SERVER_FLAGS = ("--http-header-timeout-secs=1", "--http-body-timeout-secs=1",
                     "--http-keepalive-timeout-secs=1", "--http-max-input-size=1048576")


def _start_server(store, parser: str, workdir):
    """A pyserver process on free ports with the fuzz flags; (process, http, grpc)."""
    import socket
    import subprocess
    import urllib.request
    ports = []
    socks = [socket.socket() for _ in range(3)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    log = open(f"{workdir}/server-{parser}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "pyserver", f"--model-store={store}",
                             "--http-address=127.0.0.1", f"--http-port={ports[0]}",
                             "--grpc-address=127.0.0.1", f"--grpc-port={ports[1]}",
                             "--metrics-address=127.0.0.1", f"--metrics-port={ports[2]}",
                             f"--http-parser={parser}", *FUZZ_SERVER_FLAGS],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/api/health/live", timeout=1):
                return proc, ports[0], ports[1]
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyserver_perf.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=20000, help="cases in all, split over families")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--http", help="HOST:PORT of a running server (default: start servers)")
    p.add_argument("--grpc", help="HOST:PORT of a running server's gRPC listener")
    p.add_argument("--parsers", default="httptools,h11",
                   help="started servers: one per parser, HTTP families run against each")
    p.add_argument("--families", default=",".join(HTTP_FAMILIES + GRPC_FAMILIES))
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--show", type=int, default=20, help="findings printed per family and kind")
    args = p.parse_args(argv)
    families = args.families.split(",")
    http_families = [f for f in families if f in HTTP_FAMILIES]
    grpc_families = [f for f in families if f in GRPC_FAMILIES]
    targets = []
    started = []
    if args.http or args.grpc:
        host, _, port = (args.http or ":0").rpartition(":")
        targets.append(("given", host, int(port), args.grpc))
    else:
        import tempfile
        from pyserver.examples.store import build_example_store
        workdir = tempfile.mkdtemp(prefix="pyserver-fuzz-")
        store = build_example_store(f"{workdir}/store")
        for parser in args.parsers.split(","):
            proc, http_port, grpc_port = _start_server(store, parser, workdir)
            started.append(proc)
            targets.append((parser, "127.0.0.1", http_port, f"127.0.0.1:{grpc_port}"))
        print(f"servers' logs in {workdir}", flush=True)
    runs = len(http_families) * len(targets) + len(grpc_families)
    per_family = max(1, args.cases // max(1, runs))
    report = Report()
    start = time.monotonic()
    try:
        for i, (name, host, port, grpc_target) in enumerate(targets):
            if http_families and (args.http or not (args.http or args.grpc)):
                asyncio.run(fuzz_http(host, port, http_families, per_family, args.seed,
                                      args.concurrency, report))
            if grpc_families and grpc_target and i == 0:
                asyncio.run(fuzz_grpc(grpc_target, grpc_families, per_family, args.seed,
                                      args.concurrency, report))
    finally:
        codes = []
        for proc in started:
            proc.terminate()
            codes.append(proc.wait(60))
    elapsed = time.monotonic() - start
    total = sum(report.cases.values())
    print(f"{total} cases in {elapsed:.0f} s (seed {args.seed}, servers: "
          f"{', '.join(t[0] for t in targets)})")
    for family in http_families + grpc_families:
        for kind in (TRANSPORT, TRANSLATION):
            found = report.by_family(family, kind)
            print(f"  {family:18} {kind:12} {report.cases[family]:6} cases  "
                  f"{len(found):5} findings")
            for finding in found[:args.show]:
                print("      " + finding.describe())
    if any(code != 0 for code in codes if started):
        print(f"a started server exited with {codes}")
        return 1
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
