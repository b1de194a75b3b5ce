"""The floor of a request's CPU: a plain asyncio + httpx client making rotator's requests, to compare.

Issue 13 measured rotator's CPU a request against "a plain asyncio + httpx script". This is that
script, run by ``bench/bench_fleet.py --scenarios documented floor`` beside rotator against the same
sandbox, at the same rate and concurrency, so that the two costs are measured on the same machine in
the same invocation. It makes the requests of rotator's cheapest run and nothing else::

    read the account's manual backups twice (every page, following ``next``)
    create one backup a server, at once (the rate and the concurrency allowing)
    wait for the creates to complete, and read the account's manual backups once more
    delete each server's oldest backup

That is three listings, one POST and one DELETE a server: 2.91 requests a server for 30 backups a
server at 100 a page, as rotator's run. It parses each answer's JSON (``response.json()``) and
validates nothing, logs nothing, retries nothing but a 429 (after its ``Retry-After``), and keeps
no safety rail: it exists to be measured, never to be used.

Run: ``API_TOKEN=... python bench/floor_client.py --api-url URL --servers 1000 --rate 100``; prints one
JSON object (requests, 429s, CPU with and without the interpreter's start and the imports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

import httpx


class Floor:
    """One client, a rate (GCRA, each caller reserving its start) and a cap on requests at once."""

    def __init__(self, http: httpx.AsyncClient, rate: float, concurrency: int) -> None:
        self.http = http
        self.interval = 1.0 / rate
        self.next_start = time.monotonic()
        self.places = asyncio.Semaphore(concurrency)
        self.requests = 0
        self.rate_limited = 0

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        while True:
            async with self.places:
                now = time.monotonic()
                start = max(now, self.next_start)
                self.next_start = start + self.interval
                if start > now:
                    await asyncio.sleep(start - now)
                self.requests += 1
                response = await self.http.request(method, url, **kwargs)
            if response.status_code != 429:
                response.raise_for_status()
                return response
            self.rate_limited += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    async def listing(self) -> list[dict[str, Any]]:
        backups: list[dict[str, Any]] = []
        url: str | None = "backups/"
        params: dict[str, Any] | None = {"backup_type": "manual"}
        while url is not None:
            page = (await self.send("GET", url, params=params)).json()
            backups.extend(page["results"])
            url, params = page["next"], None
        return backups


async def run(api_url: str, token: str, servers: int, rate: float, concurrency: int, wait: float) -> Floor:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=api_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        limits=limits,
    ) as http:
        floor = Floor(http, rate, concurrency)
        await floor.listing()
        await floor.listing()
        created = await asyncio.gather(
            *(
                floor.send("POST", "backups/", json={"server_id": sid, "description": "floor"})
                for sid in range(1, servers + 1)
            )
        )
        ids = {response.json()["id"] for response in created}
        await asyncio.sleep(wait)
        oldest: dict[int, dict[str, Any]] = {}
        for backup in await floor.listing():
            sid = backup["server"]["id"]
            if backup["id"] not in ids and (
                sid not in oldest or backup["created_at"] < oldest[sid]["created_at"]
            ):
                oldest[sid] = backup
        await asyncio.gather(*(floor.send("DELETE", f"backups/{b['id']}/") for b in oldest.values()))
        return floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--servers", type=int, required=True, help="servers 1..N")
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second (100)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests at once (8)")
    parser.add_argument("--wait", type=float, default=2.0, help="seconds for the creates to complete (2)")
    args = parser.parse_args(argv)
    token = os.environ.get("API_TOKEN")
    if not token:
        print("floor_client: set API_TOKEN", file=sys.stderr)
        return 2
    ready = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    floor = asyncio.run(run(args.api_url, token, args.servers, args.rate, args.concurrency, args.wait))
    done = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall_s": time.monotonic() - started,
                "requests": floor.requests,
                "rate_limited": floor.rate_limited,
                "cpu_s": done.ru_utime + done.ru_stime,
                "cpu_run_s": done.ru_utime + done.ru_stime - ready.ru_utime - ready.ru_stime,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
