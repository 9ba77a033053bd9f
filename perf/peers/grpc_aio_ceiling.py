"""The ceiling of grpc.aio on this machine: a bare grpc.aio server speaking
just enough of the v2 GRPCInferenceService for perf_analyzer (live, ready,
metadata, config, statistics), whose ModelInfer and ModelStreamInfer answer
every request with the same response bytes, built once at start. No unary request
is parsed (a stream's are, for their id, which their answers must carry), no model runs: what it costs per call is grpc.aio's own price, the
floor under any server written on it (pyserver's gRPC front end included).

    python perf/peers/grpc_aio_ceiling.py --port 8001 --model add \\
        --input INPUT0:16 --input INPUT1:16 --output OUTPUT0:16 --output OUTPUT1:16 \\
        [--max-batch-size 8]

Tensors are FP32; dims exclude the batch dimension. Runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from pyserver.protos import v2_grpc_service_pb2 as pb
from pyserver.protos import v2_model_config_pb2 as mc

SERVICE = "inference.GRPCInferenceService"


def tensor_arg(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.partition(":")
    return name, [int(d) for d in dims.split(",") if d]


def cached_answers(args: argparse.Namespace) -> dict[str, bytes]:
    """Every answer this server gives, serialized once."""
    batch_dims = [-1] if args.max_batch_size > 0 else []
    metadata = pb.ModelMetadataResponse(name=args.model, versions=["1"], platform="onnxruntime_onnx")
    for name, dims in args.input:
        metadata.inputs.add(name=name, datatype="FP32", shape=batch_dims + dims)
    for name, dims in args.output:
        metadata.outputs.add(name=name, datatype="FP32", shape=batch_dims + dims)
    config = pb.ModelConfigResponse()
    config.config.name = args.model
    config.config.platform = "onnxruntime_onnx"
    config.config.max_batch_size = args.max_batch_size
    for name, dims in args.input:
        config.config.input.add(name=name, data_type=mc.TYPE_FP32, dims=dims)
    for name, dims in args.output:
        config.config.output.add(name=name, data_type=mc.TYPE_FP32, dims=dims)
    statistics = pb.ModelStatisticsResponse()
    statistics.model_stats.add(name=args.model, version="1")
    infer = pb.ModelInferResponse(model_name=args.model, model_version="1")
    for name, dims in args.output:
        shape = ([1] if args.max_batch_size > 0 else []) + dims
        count = 1
        for d in shape:
            count *= d
        infer.outputs.add(name=name, datatype="FP32", shape=shape)
        infer.raw_output_contents.append(bytes(4 * count))
    stream = pb.ModelStreamInferResponse(infer_response=infer)
    return {
        "ServerLive": pb.ServerLiveResponse(live=True).SerializeToString(),
        "ServerReady": pb.ServerReadyResponse(ready=True).SerializeToString(),
        "ModelReady": pb.ModelReadyResponse(ready=True).SerializeToString(),
        "ServerMetadata": pb.ServerMetadataResponse(name="grpc-aio-ceiling",
                                                    version="0").SerializeToString(),
        "ModelMetadata": metadata.SerializeToString(),
        "ModelConfig": config.SerializeToString(),
        "ModelStatistics": statistics.SerializeToString(),
        "ModelInfer": infer.SerializeToString(),
        "ModelStreamInfer": stream.SerializeToString(),
    }


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def handler(answers: dict[str, bytes]) -> grpc.GenericRpcHandler:
    def unary(answer: bytes):
        async def call(_request: bytes, _context) -> bytes:
            return answer
        return grpc.unary_unary_rpc_method_handler(call)  # bytes in, bytes out

    def streaming(infer: bytes):
        # A stream's answers must carry their request's id (perf_analyzer matches them by
        # it): the one thing read from each request, and appended to the cached answer.
        parse = pb.ModelInferRequest.FromString

        async def call(requests, _context):
            async for data in requests:
                request_id = parse(data).id.encode()
                inner = infer + b"\x1a" + _varint(len(request_id)) + request_id
                yield b"\x12" + _varint(len(inner)) + inner  # infer_response, field 2
        return grpc.stream_stream_rpc_method_handler(call)

    methods = {name: unary(answer) for name, answer in answers.items()
               if name != "ModelStreamInfer"}
    methods["ModelStreamInfer"] = streaming(answers["ModelInfer"])
    return grpc.method_handlers_generic_handler(SERVICE, methods)


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler(cached_answers(args)),))
    server.add_insecure_port(f"{args.address}:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"grpc.aio ceiling serving '{args.model}' on {args.address}:{args.port}", flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--model", default="add")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--input", type=tensor_arg, action="append", required=True,
                   help="NAME:D1,D2 (FP32, without the batch dimension)")
    p.add_argument("--output", type=tensor_arg, action="append", required=True,
                   help="NAME:D1,D2 (FP32, without the batch dimension)")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
