"""Notifications through Apprise: a policy's ``notify`` URLs told how each run went (``rotator[notify]``).

Apprise (https://github.com/caronc/apprise) reaches Slack, e-mail, ntfy,
PagerDuty, Matrix, Telegram, a JSON webhook (``json://``, ``jsons://``) and a
hundred more from one URL each. :class:`Notifications` is one policy's URLs as
an observer of its runs' events (:mod:`rotator.events`): at ``run.finished``
it sends a title and a body built from the typed event, when the run's outcome
is one the policy asked for (``on: [failure, success]``; ``failure`` covers a
create whose outcome stayed unknown). A dry run and an abandoned run (a
shutdown cut it short) send nothing.

A notification that fails (the service down, an error status, a timeout) is
logged as ``notification.failed`` and never fails the run. Notification URLs
carry tokens: they are never logged; a log line or an error names a target by
:func:`redact` (the scheme, and the host of a webhook), and Apprise's own log
and urllib3's are kept out of rotator's (at debug they print whole URLs and
paths), Apprise's warnings passed on with the URLs' secret parts masked.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import structlog

from rotator.errors import ConfigError
from rotator.events import Event, RunFinished, Status

log = structlog.get_logger("rotator.notifications")

FAILURE: Final = "failure"
SUCCESS: Final = "success"
DEFAULT_TIMEOUT: Final = 30.0  # seconds for one run's notifications, all URLs together
MAX_SERVERS_LISTED: Final = 20  # servers named in a body; the rest are counted
MASK: Final = "***"
_SECRET_MIN_LENGTH: Final = 6  # shorter parts of a URL are masked only where they stand in it
# schemes whose host is a host, not a token: a webhook's host may be named
_WEBHOOK_SCHEMES: Final = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
EXTRA_HINT: Final = "pip install 'rotator[notify]'"


def redact(url: str) -> str:
    """A notification URL as it may be shown: ``json://hooks.example.com/…``, ``slack://…``."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        return "(not a URL)"
    scheme = scheme.lower()
    if scheme in _WEBHOOK_SCHEMES:
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if host:
            return f"{scheme}://{host}/…"
    return f"{scheme}://…"


def secret_parts(url: str) -> set[str]:
    """The parts of ``url`` that may be secrets (all but its scheme and a webhook's host), for masking."""
    parts = {url}
    try:
        split = urlsplit(url)
    except ValueError:
        return parts
    pieces = [split.username, split.password, split.fragment, *split.path.split("/")]
    pieces += [value for _, value in parse_qsl(split.query)]
    if split.scheme.lower() not in _WEBHOOK_SCHEMES:
        pieces.append(split.hostname)
    parts.update(piece for piece in pieces if piece and len(piece) >= _SECRET_MIN_LENGTH)
    return parts


def _import_apprise(where: str) -> Any:
    try:
        import apprise  # noqa: PLC0415 - an optional extra, loaded only for policies that notify
    except ImportError:
        raise ConfigError(f"{where}: notifications need the 'notify' extra: {EXTRA_HINT}") from None
    return apprise


def message(run: RunFinished) -> tuple[str, str]:
    """The title and body of ``run``'s notification, from its typed fields."""
    state = "ok" if run.ok else run.status.value.upper()
    title = f"rotator: policy {run.policy} {state}"
    lines = [run.headline(), f"slot {run.slot.isoformat().replace('+00:00', 'Z')}"]
    not_ok = run.not_ok()
    for server in not_ok[:MAX_SERVERS_LISTED]:
        lines.append(f"server {server.server_id}: {server.outcome.value}: {server.error}")
    if len(not_ok) > MAX_SERVERS_LISTED:
        lines.append(f"... and {len(not_ok) - MAX_SERVERS_LISTED} more servers not ok")
    return title, "\n".join(lines)


def kind_of(run: RunFinished) -> str | None:
    """``success``, ``failure`` (failed or unknown), or None for an abandoned run."""
    status = run.status
    if status is Status.OK:
        return SUCCESS
    if status in (Status.FAILED, Status.UNKNOWN):
        return FAILURE
    return None


class Notifications:
    """One policy's notification URLs, as an observer of its runs (see the module's docstring).

    Built when the configuration is: a missing ``apprise`` or a URL it does not
    know is a :class:`~rotator.errors.ConfigError` naming ``where`` (the
    configuration path) and the redacted URL.
    """

    def __init__(
        self, urls: Sequence[str], on: Collection[str], *, where: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        module = _import_apprise(where)
        self._module = module
        self._apprise = module.Apprise()
        self.targets = tuple(redact(url) for url in urls)
        self.on = frozenset(on)
        self.timeout = timeout
        self._secrets: set[str] = set()
        # Apprise logs whole URLs at debug, and a bad URL's token at warning: its records stay out of
        # rotator's log (they are captured per call instead, see send(), and passed on masked)
        logging.getLogger("apprise").propagate = False
        # likewise urllib3's (Apprise sends through requests): its debug lines name each request's path
        logging.getLogger("urllib3").propagate = False
        for index, url in enumerate(urls):
            self._secrets |= secret_parts(url)
            with warnings.catch_warnings():
                # the first add() loads Apprise's plugins, whose e-mail signing imports the stdlib's
                # imghdr (deprecated since Python 3.11): a warning that is not ours to fix
                warnings.simplefilter("ignore", DeprecationWarning)
                known = self._apprise.add(url)
            if not known:
                raise ConfigError(f"{where}.urls[{index}]: not a URL Apprise knows ({redact(url)})")

    def __repr__(self) -> str:
        return f"Notifications(targets={list(self.targets)!r}, on={sorted(self.on)!r})"

    def mask(self, text: str) -> str:
        """``text`` with every secret part of this policy's URLs masked."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    async def __call__(self, event: Event) -> None:
        if not isinstance(event, RunFinished) or event.dry_run:
            return
        kind = kind_of(event)
        if kind is None or kind not in self.on:
            return
        await self.send(event, kind)

    async def send(self, run: RunFinished, kind: str) -> bool:
        """Send ``run``'s notification to every URL; True if all took it. Never raises."""
        title, body = message(run)
        notify_type = self._module.NotifyType.SUCCESS if kind == SUCCESS else self._module.NotifyType.FAILURE
        try:
            result = await self._apprise.async_notify(
                body=body,
                title=title,
                notify_type=notify_type,
                timeout=self.timeout,
                log_level=logging.WARNING,
            )
        except Exception as exc:  # noqa: BLE001 - a notification must never fail the run, whatever went wrong
            log.warning("notification.failed", kind=kind, error=self.mask(f"{type(exc).__name__}: {exc}"))
            return False
        sent = 0
        for service in result.results:
            status = str(getattr(service.status, "name", service.status)).lower()
            if status == "success":
                sent += 1
                continue
            log.warning(
                "notification.failed",
                kind=kind,
                target=self.mask(redact(service.url)),
                status=status,
                detail=self.mask(_details(service)),
            )
        if not result.results:
            log.warning(
                "notification.failed", kind=kind, status=str(result.status).lower(), detail="no service"
            )
            return False
        if sent:
            log.info("notification.sent", kind=kind, targets=sent)
        return sent == len(result.results)


def _details(service: Any) -> str:
    """What Apprise said of one service's attempts (its warnings and errors), in one line."""
    messages = [entry.message for attempt in service.attempts for entry in attempt.logs]
    return " | ".join(" ".join(str(text).split()) for text in messages)[:500]
