"""The deployment files validate offline: compose against the compose specification, the
Kubernetes manifests against the Kubernetes schemas, the systemd units with systemd-analyze,
and the settings they name against the Settings class (a misspelt variable is ignored at run
time, so it is caught here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from caesar_rest.settings import Settings, setting_fields

from tests.deploy.deploy_support import DEPLOY, REPO

K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
# The newest schemas this kubernetes-validate has, and an older cluster still common.
K8S_VERSIONS = (kubernetes_validate.utils.latest_version(), "1.27.0")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _setting_names(keys: list[str]) -> list[str]:
    """CAESAR_REST_* variables (and their _FILE forms) that are not settings."""
    fields = {env.removeprefix("CAESAR_REST_") for env, _, _ in setting_fields()}
    bad = []
    for key in keys:
        if not key.startswith("CAESAR_REST_"):
            continue
        name = key.removeprefix("CAESAR_REST_")
        if name not in fields and not (name.endswith("_FILE") and name[:-5] in fields):
            bad.append(key)
    return bad


# --- compose ------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_services_health_volumes_secrets(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"api", "worker", "monitor", "postgres", "rabbitmq", "redis", "nginx"} <= set(services)
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        # migrate runs once; the monitor has nothing to probe (both say so in the file).
        if name in ("migrate", "monitor"):
            assert hc == {"disable": True}, name
        else:
            assert hc and hc["test"], f"{name} has no health check"
        # Only nginx is reachable from outside.
        assert name == "nginx" or "ports" not in svc, name
    for name in ("postgres", "rabbitmq", "redis", "api", "worker", "monitor"):
        named = [v.split(":")[0] for v in services[name].get("volumes", [])]
        assert named and all(v in compose["volumes"] for v in named), name
    # The app's settings are real settings, and no password is written in the file.
    env = services["api"]["environment"]
    assert not _setting_names(list(env)), _setting_names(list(env))
    text = (DEPLOY / "compose.yaml").read_text()
    assert not re.search(r"(?i)(guest:guest|password:[ \t]*\S|://[^:/\s]+:[^@\s]+@)", text)
    # make-secrets.sh makes every secret file that compose names.
    work = tmp_path / "deploy"
    (work / "docker").mkdir(parents=True)
    shutil.copy(DOCKER / "make-secrets.sh", work / "docker" / "make-secrets.sh")
    r = subprocess.run(
        ["sh", str(work / "docker" / "make-secrets.sh"), "caesar.test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    for secret in compose["secrets"].values():
        made = work / secret["file"]
        assert made.is_file() and made.stat().st_size > 0, secret
    db_url = (work / "secrets" / "caesar_db_url").read_text()
    assert db_url.startswith("postgresql+psycopg://caesar:")
    assert db_url.split(":")[2].split("@")[0] == (work / "secrets/postgres_password").read_text()
    assert (work / "secrets" / ".gitignore").read_text() == "*\n"


def test_entrypoint_reads_file_settings(tmp_path: Path) -> None:
    """CAESAR_REST_X_FILE=path sets CAESAR_REST_X to the file's content (compose secrets)."""
    secret = tmp_path / "db_url"
    secret.write_text("postgresql+psycopg://caesar:s3cr%t@db:5432/caesar")
    env = {
        "PATH": os.environ["PATH"],
        "CAESAR_REST_DB_URL_FILE": str(secret),
        "CAESAR_REST_PORT": "8080",
    }
    script = 'echo "$CAESAR_REST_DB_URL|${CAESAR_REST_DB_URL_FILE:-unset}|$CAESAR_REST_PORT"'
    r = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{secret.read_text()}|unset|8080"
    env["CAESAR_REST_DB_URL_FILE"] = str(tmp_path / "missing")
    r = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "true"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and "cannot read" in r.stderr


# --- Dockerfiles --------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "job.Dockerfile"])
def test_dockerfiles_are_multistage_non_root(name: str) -> None:
    """What the files say (test_containers builds and runs the images): the wheelhouse, made
    by pip download (scripts/docker.sh), is the one build input not in the repository."""
    ins = _instructions(DOCKER / name)
    stages = [rest for word, rest in ins if word == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    users = [rest for w, rest in ins[last:] if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runs as non-root"
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    for word, rest in ins:
        if word != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = [a for a in rest.split() if not a.startswith("--")]
        for src in sources:
            made = src == "wheelhouse" and "wheelhouse/" in (REPO / ".gitignore").read_text()
            assert made or (REPO / src).exists(), f"{name}: COPY {src}: not in the repository"
            assert f"!{src.rstrip('/')}" in {i.rstrip("/") for i in ignore}, f"{src} ignored"
    # Build tools stay in the build stage; pins come from the lock file.
    assert "requirements.lock" in (DOCKER / name).read_text()
    final = " ".join(rest for _, rest in ins[last:])
    assert "gcc" not in final and "build-essential" not in final


# --- Kubernetes ---------------------------------------------------------------------------


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            if doc.get("kind") != "Kustomization":
                out.append((path, doc))
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate(version: str) -> None:
    manifests = _manifests()
    assert len(manifests) >= 12
    for path, doc in manifests:
        try:  # raises on an invalid manifest, returns the version validated against
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{path.name} {doc['kind']}: {exc.message}") from None


def test_kubernetes_wiring() -> None:
    """What the Kubernetes backend and the pods need, and what the manifests give them."""
    by_kind: dict[tuple[str, str], dict[str, Any]] = {
        (d["kind"], d["metadata"]["name"]): d for _, d in _manifests()
    }
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    cm = by_kind[("ConfigMap", "caesar-rest")]["data"]
    assert not _setting_names(list(cm)), _setting_names(list(cm))
    assert ("PersistentVolumeClaim", cm["CAESAR_REST_KUBE_PVC"]) in by_kind
    assert by_kind[("PersistentVolumeClaim", "caesar-data")]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    job_sa = by_kind[("ServiceAccount", cm["CAESAR_REST_KUBE_SERVICE_ACCOUNT"])]
    assert job_sa["automountServiceAccountToken"] is False
    role = by_kind[("Role", "caesar-rest-jobs")]
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert {"create", "get", "list", "delete"} <= verbs[("batch", "jobs")]
    assert {"get", "list", "delete"} <= verbs[("", "pods")]
    binding = by_kind[("RoleBinding", "caesar-rest-jobs")]
    bound = {s["name"] for s in binding["subjects"]}
    for name in ("caesar-rest-api", "caesar-rest-monitor"):
        pod = by_kind[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in bound, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
    api = by_kind[("Deployment", "caesar-rest-api")]["spec"]["template"]["spec"]
    probes = api["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Longer than the server's graceful shutdown (30 s) plus the preStop pause.
    assert api["terminationGracePeriodSeconds"] > 35
    ingress = by_kind[("Ingress", "caesar-rest")]["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert ingress["nginx.ingress.kubernetes.io/proxy-body-size"] == _body_limit()


# --- nginx, systemd, filebeat -------------------------------------------------------------


def _body_limit() -> str:
    """nginx's body limit: the app's default upload limit plus 1 MiB of multipart framing."""
    return f"{Settings.model_fields['max_upload_mib'].default + 1}m"


def test_nginx_limits_match_the_app() -> None:
    snippet = (DEPLOY / "nginx" / "caesar-rest-locations.conf").read_text()
    assert f"client_max_body_size {_body_limit()};" in snippet
    assert "proxy_request_buffering off;" in snippet
    assert "X-Request-ID $caesar_request_id" in snippet
    for layout in ("caesar-rest-upstream.conf", "caesar-rest-socket.conf"):
        text = (DEPLOY / "nginx" / layout).read_text()
        assert "include /etc/nginx/snippets/caesar-rest-locations.conf;" in text
    assert "least_conn;" in (DEPLOY / "nginx" / "caesar-rest-upstream.conf").read_text()


def _units() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def test_systemd_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify (unknown keys, bad values); ExecStart pointed at this venv."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    here = Path(sys.executable).parent
    names = []
    for unit in _units():
        text = unit.read_text().replace("/opt/caesar-rest/venv/bin/", f"{here}/")
        name = unit.name.replace("@.", "@8081.")
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    r = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert not re.search(r"Unknown (key|section)|[Ii]gnoring|[Ii]nvalid", r.stderr), r.stderr


def test_systemd_units_settings_and_hardening() -> None:
    env_keys = [
        line.split("=", 1)[0]
        for line in (SYSTEMD / "caesar-rest.env").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert not _setting_names(env_keys), _setting_names(env_keys)
    for unit in _units():
        text = unit.read_text()
        assert "EnvironmentFile=/etc/caesar-rest/caesar-rest.env" in text, unit.name
        assert "User=caesar" in text and "NoNewPrivileges=yes" in text, unit.name
        assert "ProtectSystem=strict" in text, unit.name
    api = (SYSTEMD / "caesar-rest@.service").read_text()
    stop = int(re.search(r"TimeoutStopSec=(\d+)", api)[1])  # type: ignore[index]
    assert stop > 30  # beyond uvicorn's graceful shutdown


def test_filebeat_ships_what_the_units_write() -> None:
    cfg = yaml.safe_load((DEPLOY / "filebeat" / "filebeat.yml").read_text())
    outputs = [k for k in cfg if k.startswith("output.")]
    assert outputs == ["output.elasticsearch"]  # one output; Logstash is the commented one
    inputs = cfg["filebeat.inputs"]
    app = next(i for i in inputs if i["id"] == "caesar-rest-app")
    assert app["parsers"][0]["ndjson"]["target"] == ""
    globs = [p for i in inputs for p in i["paths"]]
    written = [
        m[1]
        for unit in _units()
        for m in re.finditer(r"StandardError=append:(\S+)", unit.read_text())
    ]
    assert written
    for path in written:
        assert any(Path(path.replace("%i", "8081")).match(g) for g in globs), path
    access = re.search(r"access_log (\S+) caesar_rest;", (DEPLOY / "nginx" /
                       "caesar-rest-upstream.conf").read_text())  # fmt: skip
    assert access and access[1] in globs


def _runtime_closure() -> dict[str, str]:
    """The runtime dependencies of pyproject (not its extras) and theirs, with their extras, as
    installed in this environment: normalised name -> installed version."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    done: set[tuple[str, frozenset[str]]] = set()
    versions: dict[str, str] = {}
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        dist = metadata.distribution(req.name)
        versions[key[0]] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in ["", *req.extras]
            ):
                todo.append(sub)
    return versions


def test_runtime_image_installs_runtime_dependencies_only() -> None:
    """The API image installs pyproject's dependencies with the lock as a constraint file,
    not the whole lock (which pins the test tools) nor the test extra: no pytest, mypy or ruff
    in it. Every package the runtime needs is pinned by the lock."""
    from packaging.utils import canonicalize_name

    ins = _instructions(DOCKER / "Dockerfile")
    installs = [rest for word, rest in ins if word == "RUN" and "pip install" in rest]
    assert installs
    words = " ".join(installs).split()
    # The lock only as a constraint (-c), never as requirements (-r requirements.lock).
    for i, w in enumerate(words[:-1]):
        if w in ("-r", "--requirement"):
            assert words[i + 1] != "requirements.lock", installs
    assert "requirements.lock" in words and words[words.index("requirements.lock") - 1] == "-c"
    assert not [w for w in words if "[test" in w or w.startswith(".[")], installs
    extra = tomllib_extra("test")
    assert not [w for w in words if canonicalize_name(w.split("=")[0]) in extra], installs
    # What those install lines resolve to: the runtime closure, without the test tools.
    closure = _runtime_closure()
    assert {"fastapi", "gunicorn", "uvicorn-worker", "prometheus-client"} <= set(closure)
    assert not {"pytest", "mypy", "ruff", "pytest-timeout"} & set(closure), closure
    pins = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1]
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    unpinned = sorted(set(closure) - set(pins))
    assert not unpinned, f"runtime packages missing from requirements.lock: {unpinned}"
    # The runtime-requirements.txt the Dockerfile writes is pyproject's dependency list.
    assert "['project']['dependencies']" in " ".join(installs)


def tomllib_extra(name: str) -> set[str]:
    """The normalised package names of one optional-dependency group of pyproject."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"][name]}
