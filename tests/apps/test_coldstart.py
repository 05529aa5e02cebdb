"""The collector in a cold job process: off while the stack loads, frozen after, skipped at exit."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import atexit, gc; from caesar_rest.apps import coldstart; " + code,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.split()


def test_loading_turns_the_collector_off_then_freezes_what_it_loaded() -> None:
    code = (
        "print(gc.get_freeze_count());\n"
        "with coldstart.loading(): print(gc.isenabled()); import json\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 0); gc.disable()\n"
        "with coldstart.loading(): pass\n"
        "print(gc.isenabled())"
    )
    assert _run(code) == ["0", "False", "True", "True", "False"]


def test_freeze_loaded_freezes_once() -> None:
    code = (
        "coldstart.freeze_loaded(); n = gc.get_freeze_count(); x = [[] for _ in range(100)]; "
        "coldstart.freeze_loaded(); print(n > 0, gc.get_freeze_count() == n)"
    )
    assert _run(code) == ["True", "True"]


def test_the_exit_skips_the_final_collections() -> None:
    """The atexit handler freezes the collector, and asking twice leaves one handler (one
    unregister removes it)."""
    code = (
        "coldstart.skip_exit_collection(); coldstart.skip_exit_collection(); "
        "frozen = gc.get_freeze_count() > 0; atexit._run_exitfuncs(); "
        "print(frozen, gc.get_freeze_count() > 0); gc.unfreeze(); "
        "coldstart.skip_exit_collection(); coldstart.skip_exit_collection(); "
        "atexit.unregister(gc.freeze); atexit._run_exitfuncs(); print(gc.get_freeze_count())"
    )
    assert _run(code) == ["False", "True", "0"]


def test_the_caesar_program_freezes_its_stack() -> None:
    """What the program imported is frozen when it runs (``--help``: no image needed)."""
    code = (
        "import caesar_rest.apps.caesar_run as r\n"
        "try: r.main(['--help'])\n"
        "except SystemExit: pass\n"
        "print(gc.get_freeze_count() > 50_000)"
    )
    assert _run(code)[-1] == "True"  # after the help text
