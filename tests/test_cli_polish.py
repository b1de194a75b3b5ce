"""The command line's rough edges, one test (or a few) per edge: help, pipes, colour, dates, prompts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.child_env import clean_env

# A meta path finder that makes starlette and uvicorn unimportable: rotator installed without the extra.
WITHOUT_SANDBOX_EXTRA = (
    "import sys\n"
    "class Missing:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Missing())\n"
    "from rotator.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_without_extra(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SANDBOX_EXTRA, *argv],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
        timeout=60,
    )


# -- rotator sandbox --help ------------------------------------------------------------------------


def test_sandbox_help_lists_its_options_without_the_extra() -> None:
    """Without starlette and uvicorn, ``rotator sandbox --help`` still lists every option."""
    result = run_without_extra("sandbox", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--fleet", "--error-rate", "--rate-limit", "--listing-lag"):
        assert flag in result.stdout
    assert "rotator[sandbox]" in result.stdout


def test_sandbox_without_the_extra_is_one_line_and_exit_78() -> None:
    """Running the sandbox without its extra: one line naming the extra, exit 78, no traceback."""
    result = run_without_extra("sandbox", "--port", "0")
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'rotator[sandbox]'" in lines[0]
    assert "uvicorn is missing" in lines[0] or "starlette is missing" in lines[0]


def test_sandbox_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """``rotator sandbox --help`` through main: the option groups and their help."""
    from rotator.cli import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as stopped:
        main(["sandbox", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "faults (all off by default)" in out
    assert "--frozen-clock ISO" in out
