"""Notifications through Apprise, end to end: runs on the in-process sandbox notify a JSON webhook on a
loopback port through Apprise's ``json://`` scheme; a failed notification is logged and never fails the
run; URLs are never shown in full; a missing apprise is one configuration error line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from rotator import errors
from rotator.cli import main
from rotator.config import load_config
from rotator.events import Outcome, RunFinished, RunKey, ServerOutcome
from rotator.notifications import Notifications, kind_of, message, redact, secret_parts
from rotator.notify import Notifier
from rotator.runner import Runner
from rotator.sandbox import Sandbox
from rotator.scheduler import Daemon, ScheduledJob, jobs_from_config
from tests.test_pings import Monitor, fixture_closed_url, fixture_silent_url  # noqa: F401 - fixtures, found by name
from tests.test_runner_faults import (  # noqa: F401 - fixtures, found by name
    SLOT,
    SLOT_MARKER,
    fixture_client,
    fixture_hooked,
    fixture_runner,
    fixture_sandbox_options,
    fixture_time,
    job,
)

SECRET = "s3cr3t-pa55word"
TOKEN = "tok-0123456789abcdef"
TIMEOUT = 5.0
SLACK_TOKEN = "TIiajkdnlazkcOXrIdevi7FQ"  # the shape of a real one (made up), which Apprise checks
SLACK = f"slack://T1JJ3T3L2/A1BRTD4JD/{SLACK_TOKEN}"


@pytest.fixture(name="webhook")
def fixture_webhook() -> Iterator[Monitor]:
    """A JSON webhook on loopback that records what it is sent and answers ``status``."""
    monitor = Monitor()
    yield monitor
    monitor.close()


def json_url(monitor: Monitor, path: str = f"/hook/{TOKEN}") -> str:
    """The webhook as Apprise's ``json://`` URL, with a password and a token in its path."""
    host = monitor.url.removeprefix("http://")
    return f"json://rotator:{SECRET}@{host}{path}"


def payloads(monitor: Monitor) -> list[dict[str, Any]]:
    return [json.loads(ping.body) for ping in monitor.pings]


def notifications(*urls: str, on: tuple[str, ...] = ("failure", "success")) -> Notifications:
    return Notifications(list(urls), on, where="policies[0].notify", timeout=TIMEOUT)


async def test_a_run_that_succeeded_notifies_its_summary(
    runner: Runner, sandbox: Sandbox, webhook: Monitor
) -> None:
    """One POST to the webhook, of type success: the title names the policy and its state, the body the
    run's counts and its slot; the notification is logged without its URL."""
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(), SLOT, observers=[notifications(json_url(webhook))])
    assert report.ok, report.summary_line()
    (sent,) = payloads(webhook)
    assert webhook.pings[0].path == f"/hook/{TOKEN}"
    assert sent["type"] == "success"
    assert sent["title"] == "rotator: policy nightly ok"
    assert sent["message"].splitlines() == [report.finished().headline(), "slot 2025-01-16T03:00:00Z"]
    (note,) = [e for e in logs if e["event"] == "notification.sent"]
    assert (note["kind"], note["targets"]) == ("success", 1)
    assert SECRET not in repr(logs)
    assert TOKEN not in repr(logs)


async def test_a_failed_run_notifies_each_failed_server(
    runner: Runner, sandbox: Sandbox, webhook: Monitor
) -> None:
    """A server whose slot backup never completes: type failure, the body naming it and its error."""
    sandbox.state.add_backup(2, status="in_progress", description=f"stuck {SLOT_MARKER}")
    spec = job(wait_timeout=timedelta(minutes=5))
    report = await runner.run(spec, SLOT, observers=[notifications(json_url(webhook), on=("failure",))])
    assert not report.ok
    (sent,) = payloads(webhook)
    assert sent["type"] == "failure"
    assert sent["title"] == "rotator: policy nightly FAILED"
    (failed,) = report.finished().not_ok()
    assert sent["message"].splitlines()[2:] == [f"server 2: failed: {failed.error}"]


async def test_on_failure_only_a_good_run_sends_nothing(runner: Runner, webhook: Monitor) -> None:
    """``on: [failure]``: a run that succeeded stays quiet."""
    report = await runner.run(job(), SLOT, observers=[notifications(json_url(webhook), on=("failure",))])
    assert report.ok
    assert webhook.pings == []


async def test_a_dry_run_sends_nothing(runner: Runner, webhook: Monitor) -> None:
    """A dry run made no backup: nobody is told it did."""
    report = await runner.run(job(), SLOT, dry_run=True, observers=[notifications(json_url(webhook))])
    assert report.ok
    assert webhook.pings == []


@pytest.mark.parametrize("down", ["500", "closed"])
async def test_a_failed_notification_is_logged_and_never_fails_the_run(
    runner: Runner, sandbox: Sandbox, webhook: Monitor, closed_url: str, down: str
) -> None:
    """The webhook answering 500, or no listener at all: the run is ok and has pruned, one
    notification.failed names the target by scheme and host only, and no secret of the URL is in any
    log line."""
    if down == "500":
        webhook.status = 500
        url = json_url(webhook)
    else:
        url = json_url(webhook).replace(webhook.url.removeprefix("http://"), closed_url.split("/")[2])
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(), SLOT, observers=[notifications(url)])
    assert report.ok, report.summary_line()
    assert report.totals()["deleted"] == 16
    (failed,) = [e for e in logs if e["event"] == "notification.failed"]
    assert failed["log_level"] == "warning"
    assert failed["kind"] == "success"
    assert failed["target"] == "json://127.0.0.1/…"
    assert failed["status"] == "failure"
    assert failed["detail"]  # what Apprise said, e.g. the 500 or the refused connection
    assert not [e for e in logs if e["event"] == "notification.sent"]
    text = repr(logs)
    assert SECRET not in text
    assert TOKEN not in text
    assert len(webhook.pings) == (1 if down == "500" else 0)


async def test_one_url_down_does_not_stop_the_others(
    runner: Runner, webhook: Monitor, closed_url: str
) -> None:
    """Two URLs, the first unreachable: the second is still notified; one failure logged."""
    down = json_url(webhook).replace(webhook.url.removeprefix("http://"), closed_url.split("/")[2])
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(), SLOT, observers=[notifications(down, json_url(webhook))])
    assert report.ok
    assert len(webhook.pings) == 1
    assert len([e for e in logs if e["event"] == "notification.failed"]) == 1


def finished(*outcomes: Outcome, dry_run: bool = False) -> RunFinished:
    servers = tuple(
        ServerOutcome(sid, outcome, error=None if outcome is Outcome.OK else f"error of {sid}")
        for sid, outcome in enumerate(outcomes, start=1)
    )
    return RunFinished(RunKey("nightly", SLOT, dry_run), servers=servers, duration=3.0)


@pytest.mark.parametrize(
    ("outcomes", "kind"),
    [
        ((Outcome.OK, Outcome.OK), "success"),
        ((Outcome.OK, Outcome.FAILED), "failure"),
        ((Outcome.UNKNOWN,), "failure"),
        ((Outcome.OK, Outcome.ABANDONED), None),
    ],
)
def test_which_runs_are_a_success_or_a_failure(outcomes: tuple[Outcome, ...], kind: str | None) -> None:
    """A create whose outcome stayed unknown is a failure; an abandoned run is neither."""
    assert kind_of(finished(*outcomes)) == kind


async def test_an_abandoned_run_notifies_nobody(webhook: Monitor) -> None:
    """A shutdown cut the run short: the next start finishes its slot; no alarm, no all-clear."""
    await notifications(json_url(webhook))(finished(Outcome.ABANDONED))
    assert webhook.pings == []


def test_a_body_names_twenty_servers_and_counts_the_rest() -> None:
    """A fleet failing at once gives a bounded body: 20 servers named, the others counted."""
    title, body = message(finished(*[Outcome.FAILED] * 25))
    assert title == "rotator: policy nightly FAILED"
    lines = body.splitlines()
    assert lines[2:4] == ["server 1: failed: error of 1", "server 2: failed: error of 2"]
    assert len(lines) == 2 + 20 + 1
    assert lines[-1] == "... and 5 more servers not ok"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"json://user:{SECRET}@hooks.example.com:8443/x/{TOKEN}?k={TOKEN}", "json://hooks.example.com/…"),
        (f"jsons://hooks.example.com/{TOKEN}", "jsons://hooks.example.com/…"),
        (f"slack://{TOKEN}/B0000/{SECRET}", "slack://…"),
        (f"tgram://{TOKEN}/12345", "tgram://…"),
        (f"mailtos://user:{SECRET}@mail.example.com", "mailtos://…"),
        ("not a url", "(not a URL)"),
    ],
)
def test_a_url_is_shown_by_its_scheme_and_a_webhooks_host(url: str, shown: str) -> None:
    """Tokens hide in a URL's user, password, path, query and, for most services, its host."""
    assert redact(url) == shown
    assert SECRET not in shown
    assert TOKEN not in shown


def test_every_secret_part_of_a_url_is_masked() -> None:
    """Apprise's words about a service are passed on with its URL's secret parts masked."""
    target = notifications(SLACK, f"json://u:{SECRET}@127.0.0.1/h/{TOKEN}")
    said = f"Failed to send to {SLACK_TOKEN} with {SECRET} via http://u:{SECRET}@127.0.0.1/h/{TOKEN}"
    masked = target.mask(said)
    assert SECRET not in masked
    assert TOKEN not in masked
    assert SLACK_TOKEN not in masked
    assert "127.0.0.1" in masked
    assert {TOKEN, SECRET} <= secret_parts(f"slack://{TOKEN}/B0000/{SECRET}")
    assert TOKEN not in repr(target)
    assert SECRET not in repr(target)
    assert SLACK_TOKEN not in repr(target)


def test_a_url_apprise_does_not_know_is_a_config_error() -> None:
    """One line naming the configuration path and the URL's scheme, never the URL."""
    with pytest.raises(errors.ConfigError) as raised:
        notifications(json_url_text := f"nosuchservice://{TOKEN}@host/{SECRET}")
    assert str(raised.value) == "policies[0].notify.urls[0]: not a URL Apprise knows (nosuchservice://…)"
    assert TOKEN not in str(raised.value)
    assert json_url_text not in str(raised.value)


def test_a_missing_apprise_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the 'notify' extra: a ConfigError naming the policy's notify and the pip command."""
    monkeypatch.setitem(sys.modules, "apprise", None)  # import apprise raises ImportError
    with pytest.raises(errors.ConfigError) as raised:
        notifications("json://127.0.0.1/hook")
    assert str(raised.value) == (
        "policies[0].notify: notifications need the 'notify' extra: pip install 'rotator[notify]'"
    )
    assert raised.value.exit_code == errors.EXIT_CONFIG


# -- configuration ---------------------------------------------------------------------------


def write_config(path: Path, notify: dict[str, Any]) -> Path:
    document = {
        "policies": [{"name": "nightly", "servers": [1, 2], "retention": {"keep_last": 3}, "notify": notify}]
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_notify_in_the_configuration(tmp_path: Path) -> None:
    """urls and on are read; the URLs' repr is masked; the policy's job carries its notifications."""
    url = f"json://u:{SECRET}@127.0.0.1:9/{TOKEN}"
    config = load_config(write_config(tmp_path / "c.yaml", {"urls": [url], "on": ["success", "failure"]}))
    notify = config.policies[0].notify
    assert notify is not None
    assert [u.get_secret_value() for u in notify.urls] == [url]
    assert notify.on == ["success", "failure"]
    assert SECRET not in repr(config)
    assert TOKEN not in repr(config)
    (job_,) = jobs_from_config(config)
    (observer,) = job_.observers
    assert isinstance(observer, Notifications)
    assert observer.targets == ("json://127.0.0.1/…",)
    assert observer.on == {"success", "failure"}


def test_notify_defaults_to_failures(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", {"urls": ["json://127.0.0.1/h"]}))
    assert config.policies[0].notify is not None
    assert config.policies[0].notify.on == ["failure"]


@pytest.mark.parametrize(
    ("notify", "line"),
    [
        ({"urls": [], "on": ["failure"]}, "policies[0].notify.urls: List should have at least 1 item"),
        ({"urls": ["json://h/x"], "on": ["failures"]}, "policies[0].notify.on[0]: Input should be"),
        ({"url": [f"slack://{TOKEN}"]}, "policies[0].notify.url: unknown key (value not shown"),
        ({"urls": f"slack://{TOKEN}"}, "policies[0].notify.urls: Input should be a valid list (value not"),
    ],
)
def test_a_bad_notify_is_named_without_its_urls(tmp_path: Path, notify: dict[str, Any], line: str) -> None:
    """The key's path and what is wrong; a value that may be a URL is never echoed."""
    with pytest.raises(errors.ConfigError) as raised:
        load_config(write_config(tmp_path / "c.yaml", notify))
    text = str(raised.value)
    assert any(row.strip().startswith(line) for row in text.splitlines()), text
    assert TOKEN not in text


class RecordingNotifier(Notifier):
    """The systemd notifier, recording each message instead of sending it."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True


async def test_the_daemon_notifies_and_its_status_line_follows_the_run(
    runner: Runner, sandbox: Sandbox, webhook: Monitor
) -> None:
    """A daemon's run of a policy with notify: the webhook is told (failure), the status line and the
    run.summary line come from the same run-finished event, and the daemon's history holds it."""
    sandbox.state.add_backup(2, status="in_progress", description=f"stuck {SLOT_MARKER}")
    spec = job(wait_timeout=timedelta(minutes=5))
    scheduled = ScheduledJob(spec, None, observers=(notifications(json_url(webhook)),))
    notifier = RecordingNotifier()
    daemon = Daemon([scheduled], runner, notifier=notifier)
    with structlog.testing.capture_logs() as logs:
        await daemon._run(scheduled, SLOT)
    (sent,) = payloads(webhook)
    assert sent["type"] == "failure"
    last = daemon.history.last_runs["nightly"]
    assert last.status.value == "failed"
    assert notifier.sent == [("STATUS=no scheduled runs; last run nightly FAILED",)]
    (summary,) = [e for e in logs if e["event"] == "run.summary"]
    assert summary["log_level"] == "error"
    assert summary["summary"] == last.summary()
    assert summary["summary"].startswith("policy nightly FAILED: 2 servers")


def test_check_config_names_the_targets_without_their_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config lists a policy's notification targets by scheme and webhook host only."""
    url = f"json://u:{SECRET}@127.0.0.1:9/{TOKEN}"
    config = write_config(tmp_path / "c.yaml", {"urls": [url, SLACK], "on": ["success", "failure"]})
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "  notify on failure, success: json://127.0.0.1/…, slack://…" in out.splitlines()
    assert SECRET not in out
    assert TOKEN not in out
    assert SLACK_TOKEN not in out
    assert main(["check-config", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    (policy,) = json.loads(out)["policies"]
    assert policy["notify"] == [{"on": ["failure", "success"], "targets": ["json://127.0.0.1/…", "slack://…"]}]
    for secret in (SECRET, TOKEN, SLACK_TOKEN):
        assert secret not in out


async def test_a_webhook_that_never_answers_neither_blocks_the_loop_nor_outlasts_the_timeout(
    silent_url: str,
) -> None:
    """Apprise waits in a thread: the event loop runs on (the daemon's watchdog and listener with it);
    after the timeout the notification is logged as failed, status timeout."""
    host = silent_url.split("/")[2]
    target = Notifications([f"json://{host}/hook"], ["failure"], where="policies[0].notify", timeout=0.5)
    ticks = 0
    with structlog.testing.capture_logs() as logs:
        sending = asyncio.ensure_future(target.send(finished(Outcome.FAILED), "failure"))
        while not sending.done():
            ticks += 1
            await asyncio.sleep(0)  # a yield: counts how often the loop came round while Apprise waited
        assert sending.result() is False
    assert ticks > 100
    (failed,) = [e for e in logs if e["event"] == "notification.failed"]
    assert failed["target"] == "json://127.0.0.1/…"
    assert failed["status"] == "timeout"
