"""The `p2pdist` entry point: every command is reachable and loads only its own module."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from p2pdist import cli


def test_commands_table_matches_what_modules_register() -> None:
    for module in cli.COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).add_commands(sub)
        registered = set(sub.choices)
        assert registered == {c for c, m in cli.COMMANDS.items() if m == module}, module


def test_help_lists_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "p2pdist", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in cli.COMMANDS:
        assert command in result.stdout


def test_create_does_not_import_the_engine_or_aiohttp() -> None:
    code = (
        "import sys; from p2pdist import cli; cli.build_parser('create'); "
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'p2pdist.agent', 'p2pdist.tracker'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "p2pdist", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
