"""The documentation lists every setting."""

from __future__ import annotations

from pathlib import Path

from caesar_rest.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"`CAESAR_REST_{n.upper()}`" not in text]
    assert missing == [], f"add to docs/configuration.md (scripts/settings_doc.py): {missing}"
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
