"""The benchmarks' machinery on a tiny fleet: what they count adds up (no timing is judged here).

``bench/bench_fleet.py`` runs rotator and the reference cron script as real
processes against the sandbox on loopback and accounts every request from the
sandbox's own statistics and access log; ``bench/bench_idle.py`` starts
``rotator run`` and reads its memory and CPU from ``/proc``. Here both run
small (20 servers, creates done in 0.3 s; an idle second), so that a change
to rotator, the sandbox or the benchmarks that breaks the measuring shows up in
``make test``, not an hour into ``make bench``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import bench_fleet, bench_idle, bench_scale

SERVERS = 20


@pytest.fixture(name="setup")
def fixture_setup() -> bench_fleet.FleetSetup:
    """20 servers x 30 backups, 100 a page, a bucket of 50 requests/s holding 5, creates done in 0.3 s."""
    return bench_fleet.FleetSetup(servers=SERVERS, latency=0.0, rate_limit=50.0, burst=5, create_seconds=0.3)


def test_a_rotator_run_is_accounted_request_by_request(setup: bench_fleet.FleetSetup, tmp_path: Path) -> None:
    """Configured for 8 times the sandbox's rate, so that 429s may come: every request is counted once,
    by route and status, and the bound counts the listings at the cheaper way (account pages here)."""
    choice = bench_fleet.RotatorChoice(
        requests_per_second=400, burst=20, max_concurrency=8, poll_interval="0.3s", poll_max_interval="1s"
    )
    result = bench_fleet.run_rotator(setup, choice, scenario="smoke", workdir=tmp_path)
    assert result.exit_code == 0, result.summary
    assert f"{SERVERS} created" in result.summary
    assert result.creates == SERVERS
    assert result.deletes == SERVERS  # keep_last 30 of 31: one each
    assert result.total_requests == sum(sum(by_status.values()) for by_status in result.requests.values())
    assert result.rate_limited == sum(by_status.get("429", 0) for by_status in result.requests.values())
    assert result.rate_limited == sum(result.rate_limited_by_kind.values())
    pages = result.requests["GET /api/v1/backups/"]["200"]
    assert sum(result.listing_pages.values()) == pages
    assert result.total_requests == 2 * SERVERS + pages + result.rate_limited + sum(
        result.other_statuses.values()
    )
    assert result.requests_per_server == pytest.approx(result.total_requests / SERVERS)
    # 600 backups before (6 pages; 20 per server), 620 after (7 pages)
    assert result.minimum == {
        "creates": 20,
        "deletes": 20,
        "listing_before": 6,
        "listing_after": 7,
        "total": 53,
    }
    assert result.lower_bound_s == pytest.approx(53 / 50)
    assert result.ratio == pytest.approx(result.wall_s / result.lower_bound_s)
    # the bucket starts full: its first 5 requests cost no time
    assert result.burst == 5
    assert result.honest_bound_s == pytest.approx((53 - 5) / 50)
    assert result.ratio_honest == pytest.approx(result.wall_s / result.honest_bound_s)
    # every request by method; every GET tagged, inside rotator's process, by why it was sent
    assert result.by_method == {
        "POST": SERVERS + posts_limited(result),
        "DELETE": SERVERS + deletes_limited(result),
        "GET": pages + result.requests["GET /api/v1/backups/"].get("429", 0),
    }
    assert set(result.gets_by_purpose) <= set(bench_fleet.PURPOSES)
    assert sum(result.gets_by_purpose.values()) == result.by_method["GET"]
    assert result.gets_by_purpose["initial"] >= 6  # the first listing: 600 backups, 6 account pages
    assert result.gets_by_purpose["confirm"] >= 1  # a multi-page view is confirmed before the creates
    assert result.inventory_reads["confirm"] >= 1
    assert result.views_read is not None
    assert result.safety_requests == result.gets_by_purpose.get("confirm", 0) + result.gets_by_purpose.get(
        "reread", 0
    )
    assert result.requests_without_safety == result.total_requests - result.safety_requests
    per = result.per_server()
    assert per["total"] == pytest.approx(per["POST"] + per["DELETE"] + per["GET"])
    assert per["GET"] == pytest.approx(sum(per[f"GET {name}"] for name in bench_fleet.PURPOSES))
    assert per["without_safety"] == pytest.approx(per["total"] - per["safety"])
    assert {"GET initial", "GET confirm", "creates", "GET poll", "deletes"} <= set(result.phases)
    assert result.run_duration_s is not None
    summary = bench_fleet.summarise([result])
    assert summary["all_ok"]
    assert summary["wall_s"]["median"] == result.wall_s
    assert summary["honest_bound_s"] == result.honest_bound_s
    assert summary["per_server"]["GET confirm"]["median"] == per["GET confirm"]
    assert set(bench_fleet.verdicts("unknown", summary)) == {"ratio_honest", "rate_limited_share"}
    described = bench_fleet.describe_run(result)
    assert "honest bound" in described
    assert "confirm" in described
    assert "old bound" in bench_fleet.describe_summary("unknown", summary)
    # what the run cost: rotator's CPU and memory from its own process, the sandbox's CPU beside it
    assert result.cpu_s is not None
    assert result.cpu_run_s is not None
    assert 0 < result.cpu_run_s < result.cpu_s
    assert result.peak_rss_mb is not None
    assert result.peak_rss_mb > 20  # an interpreter with rotator's imports
    assert result.sandbox_cpu_s is not None
    assert result.sandbox_cpu_s > 0
    assert result.cpu_ms_per_server == pytest.approx(1000 * result.cpu_s / SERVERS)
    assert summary["peak_rss_mb"]["median"] == result.peak_rss_mb
    assert "peak RSS" in described
    # the scale report renders it against a target, met or missed
    scenario = bench_scale.Scenario(
        "smoke", "a smoke run", SERVERS, 50, 0, targets={"peak_rss_mb": (1e6, "RSS")}
    )
    document = {"summaries": {"documented": summary}}
    (row,) = bench_scale.fleet_rows(scenario, document)
    assert row.startswith("| smoke: RSS |")
    assert row.endswith("| met |")
    assert "peak RSS" in "\n".join(bench_scale.fleet_details(scenario, document))


def test_the_scale_report_names_the_machines_calibration() -> None:
    """The section says how fast this machine runs Python (a fixed loop's CPU), when it was measured."""
    began = datetime.now(UTC)
    with_it = "\n".join(bench_scale.section({}, None, began, ("0", "0"), 1.234))
    assert "a loop of 10,000,000 Python additions took 1.23 s of CPU here" in with_it
    assert "Calibration" not in "\n".join(bench_scale.section({}, None, began, ("0", "0")))
    assert bench_scale.calibrate(runs=1) > 0


def posts_limited(result: bench_fleet.RunResult) -> int:
    return result.requests["POST /api/v1/backups/"].get("429", 0)


def deletes_limited(result: bench_fleet.RunResult) -> int:
    return result.requests["DELETE /api/v1/backups/{backup_id}/"].get("429", 0)


def test_the_cron_script_is_accounted_too(setup: bench_fleet.FleetSetup) -> None:
    """The reference script on 2 servers: a create, polls, a listing and a delete each."""
    result = bench_fleet.run_naive(setup, 2, poll=0.1)
    assert result.exit_code == 0, result.summary
    assert (result.creates, result.deletes) == (2, 2)
    assert result.listing_pages == {"server_page": result.total_requests - 4 - result.rate_limited}
    assert result.minimum["total"] == 2 + 2 + 2 + 2  # per-server listings are the cheaper for 2 servers
    assert result.honest_bound_s == pytest.approx((8 - 5) / 50)
    assert result.gets_by_purpose == {}  # not rotator: no purposes, no safety reads
    assert result.requests_without_safety == result.total_requests


def test_the_plain_client_makes_rotators_requests_and_reports_its_cpu(setup: bench_fleet.FleetSetup) -> None:
    """The floor of a request's CPU (bench/floor_client.py) on the 20 servers: three account listings,
    a create and a delete each (rotator's cheapest run), its CPU read; and the scale report sets its
    CPU a request beside rotator's, run by run."""
    result = bench_fleet.run_floor(setup, SERVERS, concurrency=4)
    assert result.exit_code == 0, result.summary
    assert (result.creates, result.deletes) == (SERVERS, SERVERS)
    assert result.listings == {"account": 3}
    before, after = SERVERS * 30, SERVERS * 31  # backups listed before the creates, and after them
    pages = 2 * -(-before // 100) + -(-after // 100)
    assert result.listing_pages == {"account_page": pages}
    assert result.total_requests == 2 * SERVERS + pages + result.rate_limited
    assert result.cpu_s is not None
    assert result.cpu_run_s is not None
    assert 0 < result.cpu_run_s < result.cpu_s
    ours = {"cpu_ms_per_request": 3.0, "cpu_ms_per_server": 9.0}
    document = {
        "runs": {"documented": [ours, ours], "floor": [result.to_json(), result.to_json()]},
        "summaries": {"floor": bench_fleet.summarise([result, result])},
    }
    (line,) = bench_scale.floor_line(document)
    assert f"{3.0 / result.cpu_ms_per_request:.2f}" in line  # type: ignore[operator]
    assert f"{result.cpu_ms_per_server:.2f} ms a server-run" in line


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_idle_daemon_is_measured_from_proc() -> None:
    """rotator run with 2 policies of 3 servers: READY=1 arrives, memory and CPU are read, no request."""
    with bench_idle.tempfile.TemporaryDirectory() as tmp:
        config = bench_idle.write_config(
            Path(tmp) / "rotator.yaml", 2, 3, bench_idle.datetime.now(bench_idle.UTC)
        )
        run = bench_idle.run_once(config, idle=0.5)
    assert run.exit_code == 0
    assert run.ready_s > 0
    assert run.status.startswith("next run fleet-")
    assert 0 < run.rss_mb <= run.hwm_mb
    assert run.idle_cpu_s >= 0
    assert run.api_requests == 0
