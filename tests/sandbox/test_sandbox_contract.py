"""Every documented answer of the sandbox validates against docs/api/openapi.yaml (openapi-core)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from rotator.sandbox import Sandbox

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.yaml"
ORIGIN = "http://sandbox.test"
BACKUPS = "/api/v1/backups/"
WEB = 12345
DB = 12346


class HttpxOpenAPIRequest:
    """openapi-core's request protocol over an ``httpx.Request``."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(request.url.query.decode(), keep_blank_values=True)),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.content or None

    @property
    def content_type(self) -> str:
        return str(self.request.headers.get("content-type", "application/octet-stream")).lower()


class HttpxOpenAPIResponse:
    """openapi-core's response protocol over a read ``httpx.Response``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", "")).lower()

    @property
    def headers(self) -> Headers:
        return Headers(dict(self.response.headers))

    @property
    def data(self) -> bytes | None:
        return self.response.content or None


@dataclass
class Recorder:
    """Every exchange a client made, to validate afterwards."""

    exchanges: list[httpx.Response] = field(default_factory=list)

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.exchanges.append(response)

    def seen(self) -> set[tuple[str, str, int]]:
        """(method, path template, status) of every exchange."""
        return {(r.request.method, template_of(r.request.url.path), r.status_code) for r in self.exchanges}


def template_of(path: str) -> str:
    """The spec's path template for a concrete path."""
    parts = path.removeprefix("/api/v1").strip("/").split("/")
    if parts[0] == "backups" and len(parts) == 2:
        return "/backups/{backup_id}/"
    if parts[0] == "servers":
        return "/servers/{server_id}/restore/"
    return "/backups/"


@pytest.fixture(name="openapi", scope="module")
def fixture_openapi() -> OpenAPI:
    """The contract, its server URL pointed at the in-process sandbox."""
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    spec["servers"] = [{"url": f"{ORIGIN}/api/v1"}]
    return OpenAPI.from_dict(spec)


@pytest.fixture(name="recorder")
def fixture_recorder() -> Recorder:
    """Collects the responses of ``contract_client``."""
    return Recorder()


@pytest.fixture(name="contract_client")
async def fixture_contract_client(
    sandbox_transport: httpx.ASGITransport, sandbox: Sandbox, recorder: Recorder
) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated in-process client whose every response is recorded."""
    async with httpx.AsyncClient(
        transport=sandbox_transport,
        base_url=ORIGIN,
        headers={"Authorization": f"Bearer {sandbox.token}"},
        event_hooks={"response": [recorder]},
    ) as client:
        yield client


async def exercise(client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """Provoke every documented status of every operation."""
    no_token = {"Authorization": ""}
    bad_token = {"Authorization": "Bearer wrong"}
    # list: 200 (every page, filters, empty) and 401
    url: str | None = BACKUPS
    while url is not None:
        url = (await client.get(url)).json()["next"]
    await client.get(BACKUPS, params={"server_id": WEB, "backup_type": "automatic"})
    await client.get(BACKUPS, params={"server_id": 999})
    await client.get(BACKUPS, headers=no_token)
    await client.get(BACKUPS, headers=bad_token)
    # create: 201, 400, 401, 404
    created = (await client.post(BACKUPS, json={"server_id": WEB, "description": "contract"})).json()
    await client.post(BACKUPS, json={"server_id": DB})
    await client.post(BACKUPS, json={})
    await client.post(BACKUPS, json={"server_id": "x"})
    await client.post(BACKUPS, content=b"{", headers={"Content-Type": "application/json"})
    await client.post(BACKUPS, json={"server_id": WEB}, headers=no_token)
    await client.post(BACKUPS, json={"server_id": 999})
    # a listing with in-progress, completed and failed backups
    await client.get(BACKUPS, params={"server_id": WEB, "page": "last"})
    sandbox.update_faults(fail_rate=1.0)
    await client.post(BACKUPS, json={"server_id": WEB})
    sandbox.clock.advance(sandbox.options.create_seconds)
    await client.get(BACKUPS, params={"server_id": WEB, "page": "last"})
    # restore: 2xx, 400, 401, 404
    restore = f"/api/v1/servers/{WEB}/restore/"
    await client.post(restore, json={"backup_id": created["id"]})
    foreign = sandbox.state.backups(server_id=DB)[0].id
    await client.post(restore, json={"backup_id": foreign})
    await client.post(restore, json={})
    await client.post(restore, json={"backup_id": created["id"]}, headers=bad_token)
    await client.post(restore, json={"backup_id": 999999})
    await client.post("/api/v1/servers/999/restore/", json={"backup_id": created["id"]})
    # delete: 204, 401, 404
    await client.delete(f"{BACKUPS}{created['id']}/", headers=no_token)
    await client.delete(f"{BACKUPS}{created['id']}/")
    await client.delete(f"{BACKUPS}{created['id']}/")


async def test_every_documented_answer_validates_against_the_contract(
    contract_client: httpx.AsyncClient, sandbox: Sandbox, recorder: Recorder, openapi: OpenAPI
) -> None:
    """200/201/202/204/400/401/404 of the four operations all match docs/api/openapi.yaml."""
    await exercise(contract_client, sandbox)
    for response in recorder.exchanges:
        openapi.validate_response(HttpxOpenAPIRequest(response.request), HttpxOpenAPIResponse(response))
    assert {
        ("GET", "/backups/", 200),
        ("GET", "/backups/", 401),
        ("POST", "/backups/", 201),
        ("POST", "/backups/", 400),
        ("POST", "/backups/", 401),
        ("POST", "/backups/", 404),
        ("DELETE", "/backups/{backup_id}/", 204),
        ("DELETE", "/backups/{backup_id}/", 401),
        ("DELETE", "/backups/{backup_id}/", 404),
        ("POST", "/servers/{server_id}/restore/", 202),
        ("POST", "/servers/{server_id}/restore/", 400),
        ("POST", "/servers/{server_id}/restore/", 401),
        ("POST", "/servers/{server_id}/restore/", 404),
    } <= recorder.seen()


async def test_valid_requests_of_the_sandbox_tests_match_the_contract_too(
    contract_client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    """The requests used to drive the sandbox are themselves valid per the spec (sanity of the adapter)."""
    response = await contract_client.post(BACKUPS, json={"server_id": WEB, "description": "ok"})
    openapi.validate_request(HttpxOpenAPIRequest(response.request))
    listing = await contract_client.get(BACKUPS, params={"server_id": WEB, "page": 2})
    openapi.validate_request(HttpxOpenAPIRequest(listing.request))


async def test_the_validator_catches_a_broken_answer(
    contract_client: httpx.AsyncClient, openapi: OpenAPI
) -> None:
    """A listing without ``results`` fails validation, so the test above can fail."""
    response = await contract_client.get(BACKUPS)
    broken = httpx.Response(200, json={"count": 1}, request=response.request)
    with pytest.raises(Exception, match=r"(?i)valid|results"):
        openapi.validate_response(HttpxOpenAPIRequest(response.request), HttpxOpenAPIResponse(broken))
