"""Validated backups built and copied from trusted values, and their shared servers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rotator.models import Backup, ServerRef


def test_servers_of_equal_refs_are_one_instance() -> None:
    """Two validated backups of one server hold the same ServerRef."""
    data = {"server": {"id": 9, "name": "db-9"}, "backup_type": "manual", "status": "completed"}
    one = Backup.from_api({**data, "id": 1, "created_at": "2025-01-01T00:00:00Z"})
    two = Backup.from_api({**data, "id": 2, "created_at": "2025-01-02T00:00:00+02:00"})
    assert one.server is two.server
    assert one.server == ServerRef(id=9, name="db-9")
    assert two.created_at.tzinfo is UTC


def test_a_backup_built_or_copied_from_trusted_values_is_not_validated() -> None:
    """model_construct takes a plan's would-be id 0; model_copy changes only what it is told."""
    server = ServerRef(id=9, name="db-9")
    when = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
    planned = Backup.model_construct(
        id=0, server=server, backup_type="manual", status="completed", created_at=when
    )
    assert (planned.id, planned.size_mb, planned.description) == (0, None, None)
    running = planned.model_copy(update={"status": "in_progress"})
    assert running.status == "in_progress"
    assert running.server is server
    assert planned.status == "completed"
    with pytest.raises(TypeError, match="created_at"):
        Backup.model_construct(id=1, server=server, backup_type="manual", status="completed")
