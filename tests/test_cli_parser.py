"""The parser built from light modules: same help text, every command reachable, same defaults.

``tests/golden/cli_help.txt`` is the help of the program and of every command at 100 columns,
then a few usage errors, as the parser printed them before it moved out of the command modules
and learnt to build only the command a run names (regenerate it with ``python
tests/test_cli_parser.py > tests/golden/cli_help.txt`` after a deliberate change).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path

import pytest

from img_crypt.cli import main
from img_crypt.retention import DEFAULT_GRACE

GOLDEN = Path(__file__).resolve().parent / "golden" / "cli_help.txt"
HELPS = [[], ["encrypt"], ["decrypt"], ["inspect"], ["rewrap"], ["keys"], ["keys", "create"],
         ["keys", "list"], ["keys", "delete"], ["keys", "consumers"], ["reconcile"], ["upload"],
         ["download"]]
USAGE_ERRORS = [[], ["bogus"], ["encrypt"], ["keys"], ["keys", "bogus"], ["--debug", "decrypt"],
                ["--deb", "inspect", "a", "b"], ["decrypt", "a", "b", "--range", "x"],
                ["reconcile", "--grace-period", "x"], ["keys", "list", "--bogus"]]


def render_help() -> str:
    """``img-crypt [COMMAND] --help`` for every command, ``--version``, then usage errors."""
    parts = []
    for command in [*([*c, "--help"] for c in HELPS), ["--version"], *USAGE_ERRORS]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(command)
        parts.append(f"===== {' '.join(command)} (exit {code})\n{out.getvalue()}"
                     f"{err.getvalue()}")
    return "".join(parts)


def _functions(p: argparse.ArgumentParser) -> list[str]:
    """Every ``func`` default of ``p``'s sub-commands, recursively."""
    names = [p.get_default("func")] if p.get_default("func") else []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                names += _functions(child)
    return names


def test_the_help_and_usage_errors_of_the_program_and_of_every_command_are_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    for name in ("IMG_CRYPT_KEY_MANAGER", "OS_CLOUD", "IMG_CRYPT_BARBICAN_URL", "OS_PROJECT_ID",
                 "IMG_CRYPT_GLANCE_URL", "IMG_CRYPT_THREADS"):
        monkeypatch.delenv(name, raising=False)

    assert render_help() == GOLDEN.read_text()


def test_every_command_names_a_function_that_its_module_defines() -> None:
    from img_crypt.cli import parser

    names = _functions(parser.build())

    assert sorted(names) == sorted(parser.COMMANDS)
    for name in names:
        function = parser.command(name)
        assert callable(function) and function.__name__ == name


def test_grace_period_default_is_the_retention_default() -> None:
    from img_crypt.cli import parser

    args = parser.build().parse_args(["reconcile"])

    assert args.grace_period == DEFAULT_GRACE


def test_an_unknown_command_name_is_a_key_error() -> None:
    from img_crypt.cli import parser

    with pytest.raises(KeyError):
        parser.command("format_disk")


if __name__ == "__main__":
    os.environ["COLUMNS"] = "100"
    print(render_help(), end="")


def test_a_run_builds_only_the_command_it_names() -> None:
    from img_crypt.cli import parser

    def commands(p: argparse.ArgumentParser) -> dict[str, bool]:
        """Each sub-command -> whether it got its arguments (more than ``--help``)."""
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        return {name: len(child._actions) > 1 for name, child in action.choices.items()}

    assert commands(parser.build(["--debug", "decrypt", "x", "-"])) == {
        name: name == "decrypt" for name in parser.HELP}
    assert not any(commands(parser.build(["--version"])).values())
    assert all(commands(parser.build()).values())
