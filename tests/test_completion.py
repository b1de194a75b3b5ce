"""Shell completion and the man page: generated from the parser, loaded by real shells, rendered by man."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rotator.cli import build_parser, main
from tests.debian_tools import require_program

ROOT = Path(__file__).resolve().parent.parent
SHARE = ROOT / "share"
BIN = str(Path(sys.executable).parent)  # where the venv's `rotator` is


def script(capsys: pytest.CaptureFixture[str], shell: str) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def shell_env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
    }


def run(argv: list[str], *, timeout: float = 120, cwd: Path | None = None, stdin: str | None = None) -> Any:
    """``argv`` run with the venv's rotator first on PATH; its CompletedProcess."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=shell_env(),
        cwd=cwd,
        input=stdin,
    )


# -- what the scripts hold ------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_command_and_option_is_in_the_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each script names every command, subcommand and long option the parser has."""
    text = script(capsys, shell)
    parser = build_parser()
    for name, command in subcommands(parser).items():
        assert name in text
        for sub in subcommands(command):
            assert sub in text
        for action in command._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    spelled = f"-l {option[2:]}" if shell == "fish" else option
                    assert spelled in text, (name, option)


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``rotator completion tcsh``: one line, exit 2."""
    with pytest.raises(SystemExit) as stopped:
        main(["completion", "tcsh"])
    assert stopped.value.code == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err


# -- bash -----------------------------------------------------------------------------------------


def test_bash_script_loads_in_bash_n(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bash -n`` accepts the script."""
    path = tmp_path / "rotator.bash"
    path.write_text(script(capsys, "bash"))
    checked = run(["bash", "-n", str(path)])
    assert (checked.returncode, checked.stderr) == (0, "")


BASH_COMPLETE = """
source "$1"
complete_words() {  # the words of a command line, the last one being completed
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
    _shtab_rotator "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s\\n' "${COMPREPLY[@]}" | sort
    echo --
}
complete_words rotator backups ''
complete_words rotator backups list --type ''
complete_words rotator run-once --dr
complete_words rotator plan --from-file "$2/"
"""


def test_bash_completes_commands_choices_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bash completes subcommands, an option's choices, an option's name, and file names for paths."""
    path = tmp_path / "rotator.bash"
    path.write_text(script(capsys, "bash"))
    files = tmp_path / "listings"
    files.mkdir()
    (files / "monday.json").write_text("{}")
    done = run(["bash", "-c", BASH_COMPLETE, "bash", str(path), str(files)])
    assert done.returncode == 0, done.stderr
    answers = [block.split() for block in done.stdout.split("--\n")[:-1]]
    assert answers[0] == ["create", "delete", "list"]
    assert answers[1] == ["automatic", "manual"]
    assert answers[2] == ["--dry-run"]
    assert answers[3] == [f"{files}/monday.json"]


def test_the_installed_bash_loader_completes(tmp_path: Path) -> None:
    """The loader the package installs asks the rotator on PATH for its script and registers it."""
    done = run(["bash", "-c", f'source "{SHARE}/bash-completion/completions/rotator"; complete -p rotator'])
    assert done.returncode == 0, done.stderr
    assert "-F _shtab_rotator" in done.stdout
    assert done.stdout.rstrip().endswith(" rotator")


# -- zsh ------------------------------------------------------------------------------------------


@pytest.fixture(name="zsh")
def fixture_zsh() -> str:
    return require_program("zsh", "zsh")


def test_zsh_script_parses_and_defines_its_function(
    zsh: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``zsh -n`` accepts the script; eval'd after compinit (as README says), it binds rotator."""
    path = tmp_path / "rotator.zsh"
    path.write_text(script(capsys, "zsh"))
    checked = run([zsh, "-n", str(path)])
    assert (checked.returncode, checked.stderr) == (0, "")
    loaded = run(
        [
            zsh,
            "-f",
            "-c",
            f'autoload -U compinit && compinit -u -D && eval "$(<{path})" && print -r -- $_comps[rotator]',
        ],
        cwd=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "_shtab_rotator"


def test_the_installed_zsh_loader_is_found_on_fpath(zsh: str, tmp_path: Path) -> None:
    """With the package's site-functions on fpath, compinit binds rotator to ``_rotator``, which parses."""
    functions = SHARE / "zsh" / "site-functions"
    checked = run([zsh, "-n", str(functions / "_rotator")])
    assert (checked.returncode, checked.stderr) == (0, "")
    found = run(
        [
            zsh,
            "-f",
            "-c",
            f'fpath=("{functions}" $fpath); autoload -U compinit && compinit -u -D; '
            "print -r -- $_comps[rotator]",
        ],
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "_rotator"


# Drives an interactive zsh through zpty: types the line and a tab, and prints the first set of matches
# the completion system adds (compadd wrapped to print them); the read blocks until they come.
ZSH_COMPLETE = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($2 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () { builtin compadd -O hits "$@"; (( $#hits )) && print -r -- "HI""TS[${(j: :)hits}]"; }'
zpty -w z "$1"$'\t'
zpty -r z reply '*HITS\[*\]*'
zpty -d z
print -r -- ${${reply##*HITS\[}%%\]*}
"""


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("rotator backups ", ["create", "delete", "list"], id="subcommands"),
        pytest.param("rotator backups list --type ", ["automatic", "manual"], id="choices"),
        pytest.param("rotator completion ", ["bash", "fish", "zsh"], id="shells"),
    ],
)
def test_the_installed_zsh_loader_completes(zsh: str, tmp_path: Path, line: str, expected: list[str]) -> None:
    """In an interactive zsh with the package's site-functions on fpath, a tab completes from the parser."""
    try:  # a loader that adds nothing leaves the read waiting: that is the failure
        done = run(
            [zsh, "-f", "-c", ZSH_COMPLETE, "zsh", line, str(SHARE / "zsh" / "site-functions")],
            cwd=tmp_path,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"zsh offered no completion for {line!r} within 30 s")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == expected


# -- fish -----------------------------------------------------------------------------------------


@pytest.fixture(name="fish")
def fixture_fish() -> str:
    return require_program("fish", "fish")


def fish_complete(fish: str, setup: str, line: str) -> list[str]:
    done = run([fish, "--no-config", "-c", f"{setup}; complete -C '{line}'"])
    assert done.returncode == 0, done.stderr
    return sorted(entry.split("\t")[0] for entry in done.stdout.splitlines())


def test_fish_script_parses_and_completes(
    fish: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fish --no-execute`` accepts the script; sourced, it completes subcommands and choices."""
    path = tmp_path / "rotator.fish"
    path.write_text(script(capsys, "fish"))
    checked = run([fish, "--no-execute", str(path)])
    assert (checked.returncode, checked.stderr) == (0, "")
    assert fish_complete(fish, f"source {path}", "rotator backups ") == ["create", "delete", "list"]
    assert fish_complete(fish, f"source {path}", "rotator backups list --type ") == ["automatic", "manual"]
    assert fish_complete(fish, f"source {path}", "rotator --log-level ") == [
        "debug",
        "error",
        "info",
        "warning",
    ]


def test_the_installed_fish_loader_is_autoloaded(fish: str) -> None:
    """With the package's vendor_completions.d on fish_complete_path, fish loads rotator's completions."""
    where = SHARE / "fish" / "vendor_completions.d"
    setup = f"set -p fish_complete_path {where}"
    assert fish_complete(fish, setup, "rotator completion ") == ["bash", "fish", "zsh"]


# -- packaging ------------------------------------------------------------------------------------


def test_the_package_installs_every_loader() -> None:
    """pyproject's data-files install each loader where its shell looks under the prefix."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert data_files == {
        "share/bash-completion/completions": ["share/bash-completion/completions/rotator"],
        "share/zsh/site-functions": ["share/zsh/site-functions/_rotator"],
        "share/fish/vendor_completions.d": ["share/fish/vendor_completions.d/rotator.fish"],
    }
    for files in data_files.values():
        for name in files:
            assert (ROOT / name).is_file()


# -- the man page ---------------------------------------------------------------------------------


@pytest.fixture(name="page")
def fixture_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["man"]) == 0
    path = tmp_path / "rotator.1"
    path.write_text(capsys.readouterr().out)
    return path


def test_the_man_page_renders_without_warnings(page: Path) -> None:
    """groff reads the page with every warning on and finds nothing to say; man -l shows its sections."""
    groff = require_program("groff", "groff-base")
    checked = run([groff, "-man", "-ww", "-z", str(page)])
    assert (checked.returncode, checked.stderr) == (0, "")
    man = require_program("man", "man-db")
    shown = run([man, "-l", str(page)], stdin="")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.replace("\u2010", "-")
    for heading in ("NAME", "SYNOPSIS", "EXIT STATUS", "ENVIRONMENT"):
        assert f"\n{heading}\n" in text
    assert re.search(r"rotator\s+-\s+create manual backups on a schedule", text)


def test_the_man_page_names_every_command_and_exit_code(page: Path) -> None:
    """Every command and subcommand has its heading, and every documented exit code is listed."""
    roff = page.read_text()
    for name, command in subcommands(build_parser()).items():
        assert f"rotator {name}".replace("-", r"\-") in roff, name
        for sub in subcommands(command):
            assert f"rotator {name} {sub}" in roff
    status = roff.split(".SH EXIT STATUS", 1)[1].split(".SH", 1)[0]
    assert [line for line in status.splitlines() if line.startswith(".B ")] == [
        ".B 0",
        ".B 1",
        ".B 2",
        ".B 75",
        ".B 78",
        ".B 130",
    ]
