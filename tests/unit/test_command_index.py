"""The root command lists commands from a static table and imports each one only to run it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from contextlib import nullcontext

import pytest
from typer.testing import CliRunner

from sfmlops.cli import app
from sfmlops.cli.command_index import COMMANDS, LazyCommandGroup, load_command

HEAVY_MODULES = ("pandas", "numpy", "mlflow", "ray", "pyspark", "fastapi", "sklearn")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_short_help_is_the_first_paragraph_of_the_commands_own_help(name: str) -> None:
    command = load_command(name)
    own_help = inspect.cleandoc(command.help or "").partition("\f")[0].split("\n\n")[0]
    assert COMMANDS[name].short_help == own_help
    assert command.name == name


def test_root_help_matches_the_listing_of_the_loaded_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    lazy = runner.invoke(app, ["--help"], env=env)
    # Without the listing mode the group loads every command and renders its own help.
    monkeypatch.setattr(LazyCommandGroup, "_listing_only", lambda self: nullcontext())
    eager = runner.invoke(app, ["--help"], env=env)
    assert lazy.exit_code == eager.exit_code == 0
    assert lazy.output == eager.output
    for name in COMMANDS:
        assert f" {name} " in lazy.output


def test_an_unknown_command_is_refused_by_name() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_root_help_in_a_fresh_process_imports_no_heavy_library() -> None:
    probe = textwrap.dedent(
        f"""
        import sys
        sys.argv = ["sfmlops", "--help"]
        from sfmlops.cli import main
        try:
            main()
        except SystemExit as exited:
            assert exited.code in (0, None), exited.code
        loaded = [name for name in {HEAVY_MODULES!r} if name in sys.modules]
        print("LOADED", ",".join(loaded), file=sys.stderr)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Commands" in result.stdout
    assert "LOADED \n" in result.stderr, result.stderr


def test_running_a_command_loads_only_its_module() -> None:
    probe = textwrap.dedent(
        """
        import sys
        sys.argv = ["sfmlops", "stores", "--help"]
        from sfmlops.cli import main
        try:
            main()
        except SystemExit as exited:
            assert exited.code in (0, None), exited.code
        print("LOADED", "sfmlops.cli.data" in sys.modules, "sfmlops.cli.serve" in sys.modules,
              file=sys.stderr)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "List the stores with their metadata." in result.stdout
    assert "LOADED True False" in result.stderr, result.stderr
