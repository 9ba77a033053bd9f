"""The hop's pieces with no process: the shared-memory ring (wrap-around,
a full ring, positions announced through the doorbell) and the request
and response records (every field survives the trip)."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
from pyserver.api.request import InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import Class, InferenceResponse, InferOutput
from pyserver.errors import Code, ServerError
from pyserver.shared_memory import SharedMemoryRef
from pyserver.workers import hop
from pyserver.workers.ring import Announcer, Doorbell, RingReader, RingWriter, SharedRegion


def _ring(capacity: int = 256):
    region = SharedRegion.create(capacity)
    return region, RingWriter(region.view), RingReader(region.view)


def test_records_come_out_in_order_across_the_wrap():
    region, writer, reader = _ring()
    seen = []
    for round_ in range(40):
        payload = bytes([round_]) * (13 + round_ % 50)
        assert writer.write([payload[:5], payload[5:]], len(payload))
        seen.extend(bytes(r) for r in reader.records(writer.tail))
        writer.head = reader.head
        assert seen[-1] == payload
    assert len(seen) == 40
    region.close()


def test_a_full_ring_refuses_until_the_reader_moves_on():
    region, writer, reader = _ring(128)
    assert writer.write([b"x" * 40], 40)
    assert writer.write([b"y" * 40], 40)
    assert not writer.write([b"z" * 40], 40)
    first = next(reader.records(writer.tail))
    assert bytes(first) == b"x" * 40
    writer.head = reader.head
    assert writer.write([b"z" * 40], 40)
    assert [bytes(r) for r in reader.records(writer.tail)] == [b"y" * 40, b"z" * 40]
    region.close()


def test_the_doorbell_delivers_the_newest_positions():
    a, b = socket.socketpair()
    sender, receiver = Doorbell(a), Doorbell(b)
    for tail in (8, 16, 24):
        assert sender.ring(tail, tail // 2, waiting=tail == 24)
    assert receiver.received() == (24, 12, True)
    a.close()
    assert receiver.received() is None and receiver.closed
    b.close()


def test_a_request_record_keeps_every_field():
    request = InferenceRequest(
        "m", [InferInput("raw", "FP32", (1, 2), np.float32([1, 2]).tobytes()),
              InferInput("array", None, None, np.arange(6, dtype=np.int64).reshape(2, 3)),
              InferInput("json", "INT32", (2,), [3, 4]),
              InferInput("inline", "FP32", (1,), None, 4),
              InferInput("shm", "FP32", (1,), None, 4, SharedMemoryRef("r", 8, 4))],
        [RequestedOutput("out", 3, SharedMemoryRef("o", 0, 64))], version=2, id="abc",
        priority=1, timeout_us=500, batch_size=1, input_data=b"\x00\x00\x80\x3f",
        parameters={"k": 1}, signature=("sig", 1), shared_memory=True, sequence_id=7,
        sequence_start=True)
    parts, size = hop.encode_request(9, request)
    kind, ticket, back = hop.decode_request(memoryview(b"".join(map(bytes, parts))))
    assert (kind, ticket) == (hop.INFER, 9) and len(b"".join(map(bytes, parts))) == size
    assert (back.model, back.version, back.id, back.priority, back.timeout_us,
            back.batch_size, back.parameters, back.signature, back.shared_memory,
            back.sequence_id, back.sequence_start, back.sequence_end) == \
        ("m", 2, "abc", 1, 500, 1, {"k": 1}, ("sig", 1), True, 7, True, False)
    raw, array, json, inline, shm = back.inputs
    assert np.frombuffer(raw.data, np.float32).tolist() == [1, 2]
    assert array.data.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert json.data == [3, 4] and inline.data is None and inline.byte_size == 4
    assert (shm.shared_memory.region, shm.shared_memory.offset) == ("r", 8)
    assert bytes(back.input_data) == b"\x00\x00\x80\x3f"
    (out,) = back.outputs
    assert (out.name, out.classification, out.shared_memory.region) == ("out", 3, "o")


def test_a_response_record_keeps_tensors_classes_and_errors():
    scores = InferOutput("cls", "BYTES", np.array([[b"0.9:1:cat"]], dtype=np.object_),
                         [[Class(1, 0.9, "cat")]], "FP32")
    response = InferenceResponse("m", 1, 5, [InferOutput("t", "FP32", np.ones((2, 2), np.float32)),
                                             scores], batch_size=2, batched=True)
    parts, _ = hop.encode_response(4, response, 17)
    caches = hop.ResponseCaches()
    ticket, back = hop.decode_response(memoryview(b"".join(map(bytes, parts))), caches)
    assert ticket == 4 and (back.model, back.version, back.id, back.batch_size) == ("m", 1, 5, 2)
    assert back.as_numpy("t").tolist() == [[1, 1], [1, 1]]
    assert back.output("cls").classes == [[Class(1, 0.9, "cat")]]
    assert back.output("cls").data.tolist() == [[b"0.9:1:cat"]]
    assert back.cache is caches.get(17)
    failed = InferenceResponse.failure("m", 1, 5, ServerError(Code.INVALID_ARG, "bad"))
    _, back = hop.decode_response(memoryview(b"".join(map(bytes, hop.encode_response(
        1, failed, 0)[0]))), caches)
    assert (back.error.code, back.error.message) == (Code.INVALID_ARG, "bad")


def _announcing(positions: list, waiting: list, slack: int = 100):
    """An Announcer over a socket pair, and a turn of its loop that returns
    what the far side received."""
    left, right = socket.socketpair()
    far = Doorbell(right)
    loop = asyncio.new_event_loop()
    announcer = Announcer(loop, Doorbell(left), lambda: positions[0], lambda: waiting[0], slack)

    def turn():
        announcer.schedule()
        announcer.schedule()  # twice in one turn: one ring
        loop.run_until_complete(asyncio.sleep(0))
        return far.received()

    def close():
        loop.close()
        left.close()
        right.close()
    return announcer, turn, close


def test_the_announcer_rings_for_a_new_tail_and_never_with_nothing_new():
    positions, waiting = [(10, 0)], [False]
    _, turn, close = _announcing(positions, waiting)
    try:
        assert turn() == (10, 0, False)
        assert turn() is None  # nothing new to say: the other side is not woken
        positions[0] = (18, 0)
        assert turn() == (18, 0, False)
    finally:
        close()


def test_a_head_is_announced_after_the_slack_or_at_once_to_a_waiting_writer():
    positions, waiting = [(0, 40)], [False]
    announcer, turn, close = _announcing(positions, waiting, slack=100)
    try:
        assert turn() is None  # 40 bytes read: not worth a wake-up
        positions[0] = (0, 100)
        assert turn() == (0, 100, False)
        positions[0] = (0, 120)
        assert turn() is None
        announcer.peer_waiting = True  # the other side's ring is full
        assert turn() == (0, 120, False)
    finally:
        close()


def test_a_writer_with_a_full_ring_says_it_waits_once():
    positions, waiting = [(64, 0)], [False]
    _, turn, close = _announcing(positions, waiting)
    try:
        assert turn() == (64, 0, False)
        waiting[0] = True
        assert turn() == (64, 0, True)
        assert turn() is None  # said once; the reader's answer ends the wait
        positions[0], waiting[0] = (128, 0), False
        assert turn() == (128, 0, False)
    finally:
        close()
