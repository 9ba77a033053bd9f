"""Cancellation in the in-process API: cancelling the task awaiting
``pyserver.Server.infer_async`` while its request waits in the model's queue
takes the request out of the queue; it never runs and the statistics count
it as failed. A request already running completes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pyserver import Server
from slow_model_helpers import SlowModel, cancellation_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cancel_inprocess_store")
    slow, _ = cancellation_store(root)
    return root, slow


@pytest.fixture(scope="module")
def server(store):
    with Server(store[0]) as srv:
        yield srv


@pytest.fixture
def slow(store):
    store[1].release()
    yield store[1]
    store[1].release()


def failed_and_succeeded(server) -> tuple[int, int]:
    counts = server.statistics("slow")[0].by_batch_size.get(1, {})
    return counts.get("failed_count", 0), counts.get("success_count", 0)


def infer(server, request_id: int):
    return asyncio.ensure_future(server.infer_async("slow", {"INPUT0": SlowModel.input(request_id)}))


def test_cancelling_the_awaiting_task_while_queued_means_the_request_never_runs(server, slow):
    failed0, succeeded0 = failed_and_succeeded(server)

    async def scenario():
        slow.hold()
        first = infer(server, 11)
        await asyncio.to_thread(slow.wait_running, 11)
        doomed = infer(server, 12)
        later = infer(server, 13)
        await asyncio.sleep(0.4)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.sleep(0.4)
        slow.release()
        return await first, await later

    first, later = asyncio.run(scenario())
    np.testing.assert_array_equal(first.as_numpy("OUTPUT0"), SlowModel.input(11))
    np.testing.assert_array_equal(later.as_numpy("OUTPUT0"), SlowModel.input(13))
    executed = slow.executed_ids()
    assert 12 not in executed and executed[-2:] == [11, 13]
    failed, succeeded = failed_and_succeeded(server)
    assert (failed - failed0, succeeded - succeeded0) == (1, 2)


def test_cancelling_a_running_request_lets_it_complete(server, slow):
    failed0, succeeded0 = failed_and_succeeded(server)

    async def scenario():
        slow.hold()
        running = infer(server, 21)
        await asyncio.to_thread(slow.wait_running, 21)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        slow.release()
        return await infer(server, 22)

    after = asyncio.run(scenario())
    np.testing.assert_array_equal(after.as_numpy("OUTPUT0"), SlowModel.input(22))
    assert slow.executed_ids()[-2:] == [21, 22]
    failed, succeeded = failed_and_succeeded(server)
    assert (failed - failed0, succeeded - succeeded0) == (0, 2)
