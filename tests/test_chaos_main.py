"""``python -m bench.chaos``: a campaign that found a violation keeps its event logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import __main__ as chaos_main


class _Result:
    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.events = {"days": [{"what": "ready", "process": 1}]}

    def render(self) -> str:
        return "summary"


@pytest.mark.parametrize("ok", [True, False])
def test_a_failed_campaign_keeps_its_events(
    ok: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(chaos_main.tempfile, "gettempdir", lambda: str(tmp_path))

    def run_campaign(settings: Any, workdir: Any, say: Any) -> _Result:
        return _Result(ok)

    monkeypatch.setattr(chaos_main, "run_campaign", run_campaign)
    code = chaos_main.main(["--seed", "7", "--quiet"])
    kept = tmp_path / "rotator-chaos-7-events.json"
    assert code == (0 if ok else 1)
    assert kept.exists() is not ok
    if not ok:
        assert json.loads(kept.read_text(encoding="utf-8")) == {"days": [{"what": "ready", "process": 1}]}
        assert str(kept) in capsys.readouterr().out


def test_events_asked_for_are_written_where_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_main, "run_campaign", lambda settings, workdir, say: _Result(False))
    target = tmp_path / "asked.json"
    assert chaos_main.main(["--seed", "7", "--quiet", "--events", str(target)]) == 1
    assert json.loads(target.read_text(encoding="utf-8"))["days"][0]["process"] == 1
