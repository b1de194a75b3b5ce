"""bench/log_volume.py on a tiny fleet: it counts every line by event, and measures the checkout it is
told to (no timing is judged here)."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import log_volume

SERVERS = 6


def test_a_run_is_counted_line_by_line_by_event(tmp_path: Path) -> None:
    """At info: one server.pruned per server and no backup.kept; lines and bytes add up by event."""
    volume = log_volume.measure(log_volume.ROOT, SERVERS, tmp_path)
    assert volume.exit_code == 0
    assert volume.package == str(log_volume.ROOT / "rotator" / "__init__.py")
    assert volume.by_event["server.pruned"] == SERVERS
    assert volume.by_event["backup.created"] == SERVERS
    assert volume.by_event["backup.kept"] == 0
    assert volume.lines == sum(volume.by_event.values())
    assert volume.cpu_s > 0
    assert volume.bytes == sum(volume.bytes_by_event.values()) == (tmp_path / "run.log").stat().st_size


def test_another_checkout_is_measured_with_its_own_package(tmp_path: Path) -> None:
    """``--checkout DIR``: the child imports DIR's rotator, not the editable install's."""
    other = tmp_path / "other"
    shutil.copytree(log_volume.ROOT / "rotator", other / "rotator")
    assert log_volume.imported_package(other) == str(other / "rotator" / "__init__.py")
    work = tmp_path / "work"
    work.mkdir()
    volume = log_volume.measure(other, 2, work)
    assert volume.exit_code == 0
    assert volume.package == str(other / "rotator" / "__init__.py")
    assert volume.by_event["server.pruned"] == 2
