"""Print the settings table of docs/configuration.md from the Settings class.

Usage: ``.venv/bin/python scripts/settings_doc.py > /tmp/table.md``
"""

from __future__ import annotations

from caesar_rest.settings import Settings


def table() -> str:
    """Markdown table: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        if f.default_factory is not None:
            default = "cores" if name == "max_concurrent_jobs" else "see meaning"
            if name in ("extra_apps",):
                default = "[]"
            elif name == "oidc_algorithms":
                default = "RS*, PS256, ES*, EdDSA"
        else:
            default = str(f.default)
        rows.append(f"| `CAESAR_REST_{name.upper()}` | `{default}` | {f.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
