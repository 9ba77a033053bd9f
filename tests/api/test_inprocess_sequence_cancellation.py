"""Cancellation of a sequence model's request (in-process API): a request
waiting behind its sequence's running one is taken back and never runs; its
END moves to the request before it, so the sequence still ends."""

from __future__ import annotations

import asyncio

import pytest

from pyserver import Server
from slow_model_helpers import SlowModel

pytestmark = pytest.mark.timeout(120)

SEQUENCE = ('sequence_batching { control_input [ { name: "START" control [ { kind: '
            'CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ] }\n')


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequence_cancel_store")
    slow = SlowModel(root, "slow_seq", batching=SEQUENCE)
    with Server(root) as server:
        yield server, slow
    slow.release()


def test_cancelled_waiting_request_never_runs_and_the_sequence_ends(slow_server):
    server, slow = slow_server

    def infer(request_id: int, **flags):
        return asyncio.ensure_future(server.infer_async(
            "slow_seq", {"INPUT0": SlowModel.input(request_id)}, sequence_id=5, **flags))

    async def scenario():
        slow.hold()
        first = infer(21, sequence_start=True)
        await asyncio.to_thread(slow.wait_running, 21)
        middle = infer(22)
        doomed = infer(23, sequence_end=True)
        await asyncio.sleep(0.4)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        slow.release()
        await first
        await middle

    asyncio.run(scenario())
    assert slow.executed_ids() == [21, 22]
    # The END moved to request 22: id 5 has no open sequence any more.
    with pytest.raises(Exception) as info:
        server.infer("slow_seq", {"INPUT0": SlowModel.input(24)}, sequence_id=5)
    assert "must specify the START flag" in str(info.value)
