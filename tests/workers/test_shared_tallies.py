"""The counts front-end workers share (pyserver.workers.tally), with no
process: each worker writes its own slot and reads everyone's sum; a body
budget fed by them bounds all workers at once; a dead worker's share is
cleared."""

from __future__ import annotations

from pyserver.process_limits import BodyBudget
from pyserver.workers.tally import BODY_BYTES, CONNECTIONS, SharedTallies


def test_each_worker_writes_its_slot_and_reads_the_sum():
    engine = SharedTallies.create(3)
    worker = SharedTallies.attach(engine.fd, 3)
    first, third = worker.tally(CONNECTIONS, 0), worker.tally(CONNECTIONS, 2)
    first.set_mine(4)
    third.set_mine(2)
    assert (first.mine, third.mine, first.total(), third.total()) == (4, 2, 6, 6)
    assert worker.tally(BODY_BYTES, 1).total() == 0  # counts do not mix
    engine.clear(0)
    assert third.total() == 2
    engine.close()


def test_a_shared_body_budget_bounds_every_worker_together():
    tallies = SharedTallies.create(2)
    one = BodyBudget(1000, tallies.tally(BODY_BYTES, 0))
    two = BodyBudget(1000, tallies.tally(BODY_BYTES, 1))
    assert one.try_reserve(600)
    assert not two.try_reserve(500)  # 600 are held by the other worker
    assert two.try_reserve(400)
    one.release(600)
    assert two.try_reserve(500)
    assert (one.refusals, two.refusals, tallies.tally(BODY_BYTES, 0).total()) == (0, 1, 900)


def test_a_budget_without_a_tally_counts_its_own_process_only():
    budget = BodyBudget(100)
    assert budget.try_reserve(100) and not budget.try_reserve(1)
    budget.release(100)
    assert budget.try_reserve(1)
