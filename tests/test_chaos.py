"""The short fault campaign: rotator under every kind of fault and SIGKILL, judged by the invariant checker.

The long one is ``make chaos``. This one runs about half a minute: a few ticks of
``run-once`` on a fast-forwarded clock, side by side with a daemon killed twice
and stopped once. It asserts that no invariant broke, that rotator never crashed,
and that every fault kind really happened (otherwise the campaign proved nothing).
Replay a failure with the seed it prints: ``python -m bench.chaos --short --seed N``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.chaos.campaign import FAULT_KINDS, Settings, run_campaign
from rotator.api import BackupsClient, ClientSettings
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Runner
from rotator.sandbox import Clock, FaultOptions, SandboxOptions, running_sandbox
from rotator.secrets import ApiToken

SEED = int(os.environ.get("CHAOS_SEED", "20250116"))


@pytest.mark.slow
def test_the_short_campaign_breaks_no_invariant(tmp_path: Path) -> None:
    result = run_campaign(Settings.short(SEED), workdir=tmp_path)
    summary = f"(replay: python -m bench.chaos --short --seed {SEED}; logs in {tmp_path})\n{result.render()}"
    print(summary)
    assert result.violations == 0, summary
    assert not result.tally.errors, summary
    missing = [kind for kind in FAULT_KINDS if result.tally.faults[kind] == 0]
    assert not missing, f"faults that never happened: {missing}\n{summary}"
    assert result.tally.kills["run-once"] >= 1, summary
    assert result.tally.kills["daemon"] >= 1, summary
    assert result.tally.runs["daemon stopped"] >= 1, summary
    # the checks had something to judge: deletes planned, and a slot missed while the daemon was down
    assert result.reports["days"].checked["deletes planned"] > 0, summary
    assert result.reports["daemon"].checked["catch-ups owed"] > 0, summary
    assert result.tally.server_runs["days"] > 0, summary


# -- a bug the campaign ran into ------------------------------------------------------------------
#
# The days phase first simulated time in the past, and duplicates appeared whenever a create's answer
# was lost: after a lost answer rotator adopted the backup "with exactly the same description created
# since the request began (allowing for clock skew)", comparing the API's created_at with its own
# clock less ClientSettings.clock_skew (5 minutes). An API clock further behind rotator's (or a host
# clock that far ahead) hid the backup that was made, and the create was sent again, up to the retry
# limit: six backups for one slot. The runner now gives the client the ids the server had before the
# create (``known_ids``): the lost answer's backup is the new one, whatever either clock says.


@pytest.mark.parametrize(
    "behind",
    [
        pytest.param(timedelta(minutes=1), id="api-clock-1min-behind"),
        pytest.param(timedelta(minutes=10), id="api-clock-10min-behind"),
        pytest.param(timedelta(days=2), id="api-clock-2days-behind"),
        pytest.param(-timedelta(hours=3), id="api-clock-3h-ahead"),
    ],
)
async def test_a_lost_create_answer_never_makes_a_second_backup(behind: timedelta) -> None:
    """Every create's answer lost: the run adopts the backup the first create made, whatever the clocks."""
    clock = Clock()
    clock.set(datetime.now(UTC) - behind)
    options = SandboxOptions(fleet="empty", servers=1, create_seconds=0, faults=FaultOptions(drop_rate=1.0))
    settings = {"retry_wait_initial": 0, "retry_wait_max": 0, "retry_wait_jitter": 0}
    slot = datetime(2025, 1, 16, 3, tzinfo=UTC)
    spec = JobSpec(Policy("nightly", Retention(keep_last=7), servers=(1,)), description="nightly {date}")
    with running_sandbox(options, clock=clock) as sandbox:
        client_settings = ClientSettings(base_url=sandbox.api_url, **settings)
        async with BackupsClient(ApiToken(sandbox.token, "test"), client_settings) as client:
            report = await Runner(client, poll_initial=0.01, poll_max=0.01).run(spec, slot)
        created = sandbox.state.events("created")
    assert len(created) == 1, f"{len(created)} backups for one slot"
    assert report.ok, report.summary_line()
    assert report.totals()["created"] == 1
