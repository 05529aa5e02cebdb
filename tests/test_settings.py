"""Settings per subsystem: the sections keep every environment variable of the single class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from caesar_rest.settings import SECTIONS, Settings, setting_fields

from tests.support.paths import SUPPORT

#: A value no setting has by default; strings keep it, every other type rejects it.
PROBE = "probe-value-7f3a"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CAESAR_REST_* variable and no .env file around (the test sets its own)."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("CAESAR_REST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _attribute(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_environment_names_are_unchanged() -> None:
    """The variables are those of the single class of 106 fields, in the same order."""
    frozen = SUPPORT / "data" / "settings_env_names.txt"
    before = [ln for ln in frozen.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(before) == 106
    known = set(before)  # settings added since keep these in their order
    assert [env for env, _, _ in setting_fields() if env in known] == before


def test_every_environment_variable_reaches_its_attribute(clean_env: pytest.MonkeyPatch) -> None:
    """Each variable alone changes the outcome: its string lands at its attribute, or its
    field rejects the probe (a number, a flag, a choice, a JSON list or mapping)."""
    ignored = []
    for env, path, _ in setting_fields():
        clean_env.setenv(env, PROBE)
        try:
            value = _attribute(Settings(), path)
        except ValidationError as exc:
            locs = {".".join(str(p) for p in e["loc"]) for e in exc.errors()}
            assert path in locs, (env, locs)
        except SettingsError as exc:  # JSON-valued setting: the probe is no JSON
            assert path.rsplit(".", 1)[-1] in str(exc), (env, str(exc))
        else:
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if str(value) != PROBE:
                ignored.append((env, path, value))
        clean_env.delenv(env)
    assert ignored == []


def test_sections_read_the_env_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "CAESAR_REST_SLURM_URL=http://slurm:6820\nCAESAR_REST_BROKER_URL=redis://r:6379/1\n"
        "CAESAR_REST_OIDC_ISSUER=http://issuer\nCAESAR_REST_KUBE_IMAGE=caesar:1\n"
    )
    s = Settings()
    assert s.slurm.url == "http://slurm:6820" and s.slurm_enabled
    assert s.celery.broker_url == "redis://r:6379/1" and s.celery_enabled
    assert s.oidc.issuer == "http://issuer"
    assert s.kube.image == "caesar:1" and s.kube_enabled


def test_flat_keyword_names_are_routed_into_sections(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CAESAR_REST_SLURM_USER", "bob")
    s = Settings(slurm_url="http://h:6820", broker_url="amqp://b", celery_queue="q", kube_pvc="p")
    assert (s.slurm.url, s.slurm.user) == ("http://h:6820", "bob")  # keywords and environment
    assert (s.celery.broker_url, s.celery.queue, s.kube.pvc) == ("amqp://b", "q", "p")
    nested = Settings(oidc={"issuer": "http://i"}, oidc_audience="aud")
    assert (nested.oidc.issuer, nested.oidc.audience) == ("http://i", "aud")
    plain = Settings()
    assert not (plain.celery_enabled or plain.slurm_enabled or plain.kube_enabled)
    assert set(SECTIONS) == {"celery", "slurm", "kube", "oidc"}


def test_section_errors_name_the_section(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(slurm_port=0)
    assert [e["loc"] for e in err.value.errors()] == [("slurm", "port")]
