"""The documentation lists every setting, as scripts/settings_doc.py prints them."""

from __future__ import annotations

import importlib.util

from caesar_rest.settings import setting_fields

from tests.support.paths import REPO

DOCS = REPO / "docs"


def _settings_doc_table() -> str:
    path = REPO / "scripts" / "settings_doc.py"
    spec = importlib.util.spec_from_file_location("settings_doc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table: str = module.table()
    return table


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [env for env, _, _ in setting_fields() if f"`{env}`" not in text]
    assert missing == [], f"add to docs/configuration.md (scripts/settings_doc.py): {missing}"
    for env, path, field in setting_fields():
        assert field.description, f"setting {path} ({env}) has no description"


def test_the_settings_table_is_the_generated_one() -> None:
    """docs/configuration.md carries the table scripts/settings_doc.py prints, unedited."""
    text = (DOCS / "configuration.md").read_text()
    assert _settings_doc_table() in text, "regenerate: .venv/bin/python scripts/settings_doc.py"
