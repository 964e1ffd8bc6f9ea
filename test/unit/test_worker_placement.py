"""Where a job of a lane that loads a model runs, on the Redis queue (server/jobs/cluster/workers.py):
every rule of `place`, on reports written out by hand."""

from __future__ import annotations

import pytest

from lib.schemas import LaneSlots, WorkerInfo, WorkersReport
from server.jobs.cluster import workers
from server.jobs.cluster.workers import FAIL, LEAVE, TAKE, NoWorkerHasModel, place

NOW = 1_000.0


def peer(name="w2", loaded=(), installed=("m",), busy=0, capacity=2, running=(), installed_at=NOW, lane="decode"):
    return WorkerInfo(
        name=name,
        host="h",
        pid=1,
        device="cpu",
        heartbeat_at=NOW,
        loaded=list(loaded),
        installed=list(installed),
        installed_at=installed_at,
        lanes={lane: LaneSlots(capacity=capacity, busy=busy, models=list(running))},
    )


def verdict(*, installed_here=True, loaded_here=False, others=(), ready_since=NOW - 0.5, now=NOW):
    return place(
        "decode",
        "m",
        installed_here=installed_here,
        loaded_here=loaded_here,
        others=list(others),
        ready_since=ready_since,
        now=now,
    )


def test_a_model_only_another_worker_has_is_left_to_it():
    assert verdict(installed_here=False, others=[peer(installed=["m"])]) == LEAVE


def test_a_model_no_live_worker_has_fails_once_every_worker_looked_since_the_job_was_ready():
    ready = NOW - workers.FAIL_AFTER_S
    assert verdict(installed_here=False, others=[], ready_since=ready) == FAIL
    assert verdict(installed_here=False, others=[peer(installed=["other"])], ready_since=ready) == FAIL
    # A worker whose last look predates the job (a download that just ended there): ask again later.
    stale = peer(installed=[], installed_at=ready - 1)
    assert verdict(installed_here=False, others=[stale], ready_since=ready) == LEAVE
    # Just ready: a worker starting now has not said it is there yet.
    assert verdict(installed_here=False, others=[], ready_since=NOW - 0.1) == LEAVE


def test_workers_without_the_lane_do_not_count():
    other_lane = peer(installed=["m"], lane="codec")
    assert verdict(installed_here=False, others=[other_lane], ready_since=NOW - workers.FAIL_AFTER_S) == FAIL


def test_a_worker_that_has_the_model_loaded_and_a_free_slot_has_it_first_for_the_affinity_window():
    warm = peer(loaded=["m"])
    assert verdict(others=[warm]) == LEAVE
    assert verdict(others=[warm], ready_since=NOW - workers.AFFINITY_S) == TAKE  # waited long enough
    assert verdict(loaded_here=True, others=[warm]) == TAKE  # loaded here too: no reason to wait


@pytest.mark.parametrize(
    "warm",
    [
        peer(loaded=["m"], busy=2, capacity=2, running=["m"]),  # full
        peer(loaded=["m"], busy=1, capacity=2, running=["n"]),  # its batch holds another model
    ],
    ids=["full", "busy-with-another-model"],
)
def test_a_warm_worker_that_cannot_take_it_now_does_not_hold_it(warm):
    assert verdict(others=[warm]) == TAKE


def test_a_warm_worker_whose_batch_holds_the_model_can_take_one_more():
    assert verdict(others=[peer(loaded=["m"], busy=1, capacity=2, running=["m"])]) == LEAVE


def test_nobody_warm_means_take():
    assert verdict(others=[peer(loaded=[])]) == TAKE


def test_the_error_names_the_model_and_the_workers_and_what_to_do():
    err = NoWorkerHasModel("musicgen-small", ["w2", "w1"])
    assert err.status == 409 and err.code == "model_not_installed" and err.field == "model"
    assert "no worker has model musicgen-small installed (2 workers: w1, w2)" in err.message
    assert err.hint == "resource-audiocraft models pull musicgen-small"
    assert "no worker is running" in NoWorkerHasModel("m", []).message


def test_the_report_sums_the_slots_and_the_loaded_models():
    report = WorkersReport.of([peer("b", loaded=["x"], busy=1), peer("a", loaded=["x", "y"], capacity=4)])
    assert (report.count, report.busy_slots, report.total_slots) == (2, 1, 6)
    assert report.models == ["x", "y"] and [w.name for w in report.workers] == ["a", "b"]


def test_a_heartbeat_value_this_version_cannot_read_is_skipped():
    assert workers.parse("1764600000.0", NOW) is None  # an older worker's bare timestamp
    assert workers.parse('{"name": 1}', NOW) is None
    info = workers.parse(peer().model_dump_json(), NOW + 2)
    assert info is not None and info.heartbeat_age_s == 2.0


def test_an_api_node_knows_what_is_installed_only_once_a_worker_reported():
    from lib.catalogue import get_spec
    from lib.settings import Settings
    from server.models.elsewhere import ModelsElsewhere

    reports: list[WorkerInfo] = []
    node = ModelsElsewhere(Settings(), lambda: reports)
    small = get_spec("musicgen-small")
    assert not node.knows_installed() and not node.is_installed(small)  # starting: nothing refused yet
    reports.append(peer(installed=["musicgen-small"]))
    assert node.knows_installed() and node.is_installed(small)
    assert not node.is_installed(get_spec("musicgen-medium")) and node.installed() == ["musicgen-small"]
