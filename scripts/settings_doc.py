"""Print the settings table of docs/configuration.md from the settings classes.

Usage: ``.venv/bin/python scripts/settings_doc.py > /tmp/table.md``

One row per environment variable, the core settings first and each section's rows in its
place (``caesar_rest.settings.setting_fields``); the attribute column names where the code
reads it (``slurm.url`` is ``settings.slurm.url``).
"""

from __future__ import annotations

from pydantic.fields import FieldInfo

from caesar_rest.settings import setting_fields

#: Defaults computed at start, in words.
FACTORY_DEFAULTS = {
    "max_concurrent_jobs": "cores",
    "extra_apps": "[]",
    "cors_origins": "[]",
    "oidc.algorithms": "RS*, PS256, ES*, EdDSA",
}


def default_text(path: str, field: FieldInfo) -> str:
    """The default as the table shows it."""
    if field.default_factory is not None:
        return FACTORY_DEFAULTS.get(path, "see meaning")
    return str(field.default)


def table() -> str:
    """Markdown table: variable, attribute, default, meaning."""
    rows = ["| variable | attribute | default | meaning |", "|---|---|---|---|"]
    for env, path, field in setting_fields():
        rows.append(f"| `{env}` | `{path}` | `{default_text(path, field)}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
