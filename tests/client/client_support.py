"""Client test helpers: the root conftest's LiveServer, whatever ``conftest`` means now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1]


def root_conftest() -> ModuleType:
    """``tests/conftest.py``; another folder's ``conftest`` may hold the name in a session."""
    mod = sys.modules.get("conftest")
    if mod is not None and hasattr(mod, "LiveServer"):
        return mod
    name = "caesar_tests_root_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


LiveServer = root_conftest().LiveServer
