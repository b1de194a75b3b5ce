"""The environment of a rotator started as a child process by the benchmarks and the tests."""

from __future__ import annotations

import os


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without rotator's settings (``ROTATOR_*``) or systemd credentials,
    plus ``extra``: the child sees only the configuration it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "CREDENTIALS_DIRECTORY"))}
    env.update(extra)
    return env
