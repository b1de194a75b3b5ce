"""A reference "cron script": what an operator would write instead of rotator, to compare against.

Plain, synchronous httpx, one server after the other::

    for each server:
        create a manual backup (its description carries the owner's marker)
        poll the server's backups every second until the new one is no longer in progress
        list the server's backups
        delete the oldest of the owner's completed manual backups beyond ``--keep``

It does what a careful cron script does and no more: it follows ``next`` links,
sleeps a 429's ``Retry-After`` and tries again, and skips the prune of a server
whose backup did not complete. It has no rate limiter, no concurrency, no
adoption of a slot's backup after a crash: it exists to be timed beside rotator.

Run: ``API_TOKEN=... python bench/naive_rotate.py --api-url URL --servers 1-100 [--keep 30]``;
prints one JSON object (wall time, requests, 429s, creates, deletes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx


class NaiveRotator:
    """The script's state: one HTTP client and what it counted."""

    def __init__(self, api_url: str, token: str, *, owner: str, keep: int, poll: float) -> None:
        self.http = httpx.Client(
            base_url=api_url.rstrip("/") + "/", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.owner = owner
        self.keep = keep
        self.poll = poll
        self.requests = 0
        self.rate_limited = 0
        self.created = 0
        self.deleted = 0
        self.failed: list[int] = []

    def close(self) -> None:
        self.http.close()

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; a 429 is waited out (Retry-After) and sent again."""
        while True:
            self.requests += 1
            response = self.http.request(method, url, **kwargs)
            if response.status_code != 429:
                response.raise_for_status()
                return response
            self.rate_limited += 1
            time.sleep(float(response.headers.get("retry-after", "1")))

    def list_server(self, server_id: int) -> list[dict[str, Any]]:
        backups: list[dict[str, Any]] = []
        url: str | None = "backups/"
        params: dict[str, Any] | None = {"server_id": server_id, "backup_type": "manual"}
        while url is not None:
            page = self.send("GET", url, params=params).json()
            backups.extend(page["results"])
            url, params = page["next"], None
        return backups

    def rotate(self, server_id: int, slot: str) -> None:
        marker = f"[rotator:{self.owner}@{slot}]"
        created = self.send(
            "POST", "backups/", json={"server_id": server_id, "description": f"{self.owner} {marker}"}
        ).json()
        self.created += 1
        status = created["status"]
        while status == "in_progress":
            time.sleep(self.poll)
            mine = [b for b in self.list_server(server_id) if b["id"] == created["id"]]
            status = mine[0]["status"] if mine else "vanished"
        if status != "completed":
            self.failed.append(server_id)
            return
        owned = [
            b
            for b in self.list_server(server_id)
            if b["status"] == "completed" and (b["description"] or "").startswith(f"{self.owner} ")
        ]
        owned.sort(key=lambda b: (b["created_at"], b["id"]))
        for backup in owned[: max(0, len(owned) - self.keep)]:
            self.send("DELETE", f"backups/{backup['id']}/")
            self.deleted += 1


def parse_servers(text: str) -> list[int]:
    """``1-100`` or ``1,2,5``."""
    if "-" in text:
        first, last = text.split("-", 1)
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--servers", required=True, help="1-100, or 1,2,5")
    parser.add_argument("--owner", default="fleet")
    parser.add_argument("--keep", type=int, default=30)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls (default 1)")
    args = parser.parse_args(argv)
    token = os.environ.get("API_TOKEN")
    if not token:
        print("naive_rotate: set API_TOKEN", file=sys.stderr)
        return 2
    slot = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    rotator = NaiveRotator(args.api_url, token, owner=args.owner, keep=args.keep, poll=args.poll)
    started = time.monotonic()
    try:
        for server_id in parse_servers(args.servers):
            rotator.rotate(server_id, slot)
    finally:
        rotator.close()
    result = {
        "wall_s": time.monotonic() - started,
        "requests": rotator.requests,
        "rate_limited": rotator.rate_limited,
        "created": rotator.created,
        "deleted": rotator.deleted,
        "failed": rotator.failed,
    }
    print(json.dumps(result))
    return 1 if rotator.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
