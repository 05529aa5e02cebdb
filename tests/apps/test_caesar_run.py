"""The caesar program's own steps (the shared run is tested in test_program.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from caesar_rest.apps import caesar_run


@pytest.mark.parametrize(("limit", "calls"), [(caesar_run.SMALL_IMAGE_PIXELS, 1), (0, 0)])
def test_small_images_keep_freed_blocks(
    synth_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, limit: int, calls: int
) -> None:
    # A small image is processed with freed memory kept for reuse; a larger one is not.
    seen: list[bool] = []
    monkeypatch.setattr(caesar_run, "keep_freed_blocks", lambda: seen.append(True) or True)
    monkeypatch.setattr(caesar_run, "SMALL_IMAGE_PIXELS", limit)
    caesar_run.FINDER.load(synth_factory().path, {})
    assert len(seen) == calls
