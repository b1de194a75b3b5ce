"""bench/bench_metrics.py's machinery on a small fleet, each set-up in a process of its own as the
benchmark runs them (no timing is judged here)."""

from __future__ import annotations

import shutil

import pytest

from bench import bench_metrics

SERVERS = 300


def test_the_before_module_is_the_one_with_a_series_per_server() -> None:
    """The 'before' set-up renders one series per server and the _created gauges; the default, neither."""
    before = bench_metrics.measure_in_child("before", SERVERS, 1, bench_metrics.BEFORE_REF)
    assert before["series"] > SERVERS
    assert before["created_series"] > 0
    if shutil.which("curl") is None:
        pytest.skip("curl is missing: the default set-up's loop stall cannot be measured")
    default = bench_metrics.measure_in_child("default", SERVERS, 2, bench_metrics.BEFORE_REF)
    assert default["series"] < 100
    assert default["created_series"] == 0
    assert default["bytes"] < before["bytes"] / 3
    assert len(default["render_s"]) == 2
    assert default["loop_stall_s"] > 0
    text = bench_metrics.report([before, default], 2, bench_metrics.BEFORE_REF)
    assert "| default (per-policy gauges) |" in text
    assert "times smaller" in text
