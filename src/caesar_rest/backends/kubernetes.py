"""The Kubernetes backend: one ``batch/v1`` Job per run, through the official client.

The Job runs the wrapper in the job folder, in the app's image (``kube_images[app]`` or
``kube_image``), with the data folder (read-only) and the job folders mounted from
PersistentVolumeClaims at ``/data`` and ``/jobs``; argument paths are rewritten from this
service's folders to those mount points, so the API hosts must mount the same volumes at
``datadir``/``jobdir``. The pod has no privileges: non-root user, no privilege escalation, all
capabilities dropped, a read-only root file system (a memory ``emptyDir`` at ``/tmp``), the
RuntimeDefault seccomp profile and no service-account token. It asks for the app's cores (at
most ``kube_cpu_limit``) and ``kube_memory_request``/``kube_memory_limit``; the Job has
``backoffLimit: 0``, ``activeDeadlineSeconds`` = the job's time limit and
``ttlSecondsAfterFinished`` = ``kube_ttl_seconds``.

State mapping (from the Job's conditions, read ``reason`` and not only ``type``):

==========================================  ==========================================
Job status                                   job
==========================================  ==========================================
no pod ready yet                             QUEUED
``ready`` >= 1 (``active`` on old clusters)  EXECUTING
``Suspended``                                SUSPENDED
``SuccessCriteriaMet`` or ``Complete``       COMPLETED (exit code from exit.json, else 0)
``FailureTarget``/``Failed``,                ERROR, reason timeout (TIMED-OUT)
reason ``DeadlineExceeded``
``FailureTarget``/``Failed``, other reason   ERROR (the condition's reason and message)
(``BackoffLimitExceeded``, ``PodFailurePolicy``...)
(Job gone: deleted, TTL)                     from exit.json, else ERROR (lost) after
                                             monitor_lost_after seconds unseen
==========================================  ==========================================

``FailureTarget`` is acted on as soon as it appears (pods may still be terminating). Cancel sets
ABORTED, then deletes the Job with ``propagationPolicy: Background`` (its pods go with it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from caesar_rest.backends.process import job_environment, remap, wrapper_argv
from caesar_rest.backends.remote import BackendView, CoreView, RemoteBackend, Seen
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.folder import LOG_FILE, read_spec
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import KubeSettings
from caesar_rest.storage.remote import STORAGE_ENV, Staging

log = get_logger(__name__)

DATA_MOUNT = "/data"
JOBS_MOUNT = "/jobs"
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def job_name(job_id: str) -> str:
    """The Kubernetes Job name of a job (DNS-1123: lowercase, at most 63 characters)."""
    return f"caesar-{job_id.lower()}"[:63]


def _label(value: str) -> str:
    return _LABEL_VALUE.sub("-", value)[:63].strip("-_.") or "x"


@dataclass(frozen=True)
class RcloneVolume:
    """The rclone volume of a Job's pod: staged by the job's wrapper, no FUSE mount.

    Parameters
    ----------
    workdir
        Where the pod keeps its data and job folders (an emptyDir; ``mount_volume_path``).
    secret
        The Secret holding ``rclone.conf`` (``rclone_secret_name``), mounted read-only.
    staging
        The :data:`~caesar_rest.storage.remote.STORAGE_ENV` value of the job.
    """

    workdir: str
    secret: str
    staging: str


#: Where the rclone Secret is mounted in a job pod.
RCLONE_CONFIG_DIR = "/etc/rclone"


def _pvc_volumes(kube: KubeSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and mounts on the PVCs: data read-only, job folders writable."""
    data_pvc = kube.pvc
    jobs_pvc = kube.jobs_pvc or kube.pvc
    if not data_pvc or not jobs_pvc:
        raise ValueError("the kubernetes backend needs kube_pvc (and optionally kube_jobs_pvc)")
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": data_pvc, "readOnly": True}}
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
        {"name": "jobs" if jobs_pvc != data_pvc else "data-rw", "mountPath": JOBS_MOUNT},
    ]
    if kube.data_subpath:
        mounts[0]["subPath"] = kube.data_subpath
    if kube.jobs_subpath:
        mounts[1]["subPath"] = kube.jobs_subpath
    # The job folders need a writable volume: a second reference to the claim when shared.
    volumes.append({"name": mounts[1]["name"], "persistentVolumeClaim": {"claimName": jobs_pvc}})
    return volumes, mounts


def _rclone_volumes(rclone: RcloneVolume) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and mounts with an rclone volume: an emptyDir to work in and the
    rclone Secret (read-only); the wrapper stages the input in and the folder out."""
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {}},
        {"name": "rclone-config", "secret": {"secretName": rclone.secret, "defaultMode": 0o440}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": rclone.workdir},
        {"name": "rclone-config", "mountPath": RCLONE_CONFIG_DIR, "readOnly": True},
    ]
    return volumes, mounts


def build_manifest(
    kube: KubeSettings,
    core: CoreView,
    job: JobRecord,
    command: list[str],
    rclone: RcloneVolume | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job for ``job`` running the app ``command``.

    Parameters
    ----------
    kube
        The ``kube`` settings section (image, volumes, resources, security).
    core
        The core settings: the folders mounted in the pod and the kill grace.
    job
        The job.
    command
        The app's argument list (service paths; rewritten to the pod's mounts).
    rclone
        The rclone volume (``mount_rclone_volume``): folders staged from and to the remote
        instead of the PVCs.

    Returns
    -------
    dict
        The Job object.
    """
    image = kube.images.get(job.app) or kube.image
    if not image:
        raise ValueError("the kubernetes backend needs kube_image")
    mapping = [(str(core.datadir.resolve()), DATA_MOUNT), (str(core.jobdir.resolve()), JOBS_MOUNT)]
    if rclone is not None:
        root = rclone.workdir.rstrip("/")
        mapping = [
            (core.datadir.resolve().as_posix(), f"{root}/data"),
            (core.jobdir.resolve().as_posix(), f"{root}/jobs"),
        ]
    # The pod's output also goes to job.log in the job folder, as with the other backends;
    # the arguments reach the shell as positional parameters, never as code.
    argv = [
        "/bin/sh",
        "-c",
        f'exec "$@" >>{LOG_FILE} 2>&1',
        "caesar-job",
        *wrapper_argv(command, kube.python, mapping),
    ]
    cores = max(1, min(job.cores, math.floor(kube.cpu_limit) or 1))
    labels = {
        "app.kubernetes.io/name": "caesar-rest-job",
        "app.kubernetes.io/managed-by": "caesar-rest",
        "caesar-rest/job-id": job.id,
        "caesar-rest/app": _label(job.app),
    }
    if rclone is None:
        volumes, mounts = _pvc_volumes(kube)
        workdir = f"{JOBS_MOUNT}/{job.reldir}"
    else:
        volumes, mounts = _rclone_volumes(rclone)
        workdir = f"{rclone.workdir.rstrip('/')}/jobs/{job.reldir}"
        # The emptyDir starts empty: the job folder is made first (the path is an argument).
        argv[2] = f'mkdir -p -- "$0" && cd -- "$0" && exec "$@" >>{LOG_FILE} 2>&1'
        argv[3] = workdir
    volumes.append({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    staging = [] if rclone is None else [{"name": STORAGE_ENV, "value": rclone.staging}]
    container: dict[str, Any] = {
        "name": "job",
        "image": image,
        "imagePullPolicy": kube.image_pull_policy,
        "command": argv,
        "workingDir": workdir if rclone is None else rclone.workdir,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            # The wrapper's rlimits (memory, CPU time, files), inside the pod's own limits.
            *({"name": k, "value": v} for k, v in job_environment(cores, core.limits).items()),
            {"name": "CAESAR_JOB_ID", "value": job.id},
            *staging,
        ],
        "resources": {
            "requests": {"cpu": str(cores), "memory": kube.memory_request},
            "limits": {"cpu": str(cores), "memory": kube.memory_limit},
        },
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": kube.run_as_user,
            "runAsGroup": kube.run_as_group,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": max(1, math.ceil(core.kill_grace)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": kube.run_as_user,
            "runAsGroup": kube.run_as_group,
            "fsGroup": kube.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if kube.service_account:
        pod_spec["serviceAccountName"] = kube.service_account
    if kube.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in kube.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job.id),
            "labels": labels,
            "annotations": {"caesar-rest/owner": job.owner},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(job.time_limit),
            "ttlSecondsAfterFinished": kube.ttl_seconds,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def view_from_status(status: Any) -> BackendView:
    """The job-side view of a Job's ``status`` (a client model or a plain dict)."""

    def get(obj: Any, key: str, attr: str | None = None) -> Any:
        if obj is None:
            return None
        if isinstance(obj, dict):
            return obj.get(key)
        return getattr(obj, attr or key, None)

    conds = {}
    for c in get(status, "conditions") or []:
        if str(get(c, "status")) == "True":
            conds[str(get(c, "type"))] = (str(get(c, "reason") or ""), str(get(c, "message") or ""))
    active = int(get(status, "active") or 0)
    ready = get(status, "ready")
    failed = int(get(status, "failed") or 0)
    succeeded = int(get(status, "succeeded") or 0)
    start, end = (
        get(status, "startTime", "start_time"),
        get(status, "completionTime", "completion_time"),
    )
    elapsed = None
    if start is not None and end is not None and hasattr(end, "timestamp"):
        elapsed = end.timestamp() - start.timestamp()
    for kind in ("Failed", "FailureTarget"):
        if kind in conds:
            reason, msg = conds[kind]
            word = f"{kind}:{reason}"
            if reason == "DeadlineExceeded":
                return BackendView(
                    Seen.TIMEOUT,
                    word,
                    message=f"Kubernetes stopped the job at its deadline ({msg or reason})",
                )
            return BackendView(
                Seen.FAILED, word, elapsed=elapsed, message=f"Kubernetes job failed: {reason} {msg}"
            )
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conds:
            return BackendView(Seen.DONE, kind, elapsed=elapsed)
    if "Suspended" in conds:
        return BackendView(Seen.SUSPENDED, "Suspended", message="Job suspended in Kubernetes")
    running = (ready or 0) >= 1 if ready is not None else active >= 1
    word = f"active={active},ready={ready},failed={failed},succeeded={succeeded}"
    if running:
        return BackendView(Seen.RUNNING, word, message="Job running in Kubernetes")
    return BackendView(Seen.QUEUED, word)


class KubernetesBackend(RemoteBackend):
    """Runs jobs as Kubernetes Jobs.

    Parameters
    ----------
    service
        The job service the backend reports to.
    config
        The ``kube`` settings section.
    api
        A ``BatchV1Api`` (default: one made from ``config``).
    namespace
        The namespace of the jobs (default: ``config``'s, the kubeconfig's, or "default").
    """

    name = "kubernetes"

    def __init__(
        self,
        service: JobService,
        config: KubeSettings,
        api: Any = None,
        namespace: str | None = None,
    ):
        super().__init__(service)
        if not config.image and not config.images:
            raise ValueError("the kubernetes backend needs kube_image")
        if not config.pvc and service.volume is None:
            raise ValueError("the kubernetes backend needs kube_pvc (the data and job volume)")
        self.config = config
        if api is None:
            api, ns = make_batch_api(config)
            namespace = namespace or ns
        self.api = api
        self.namespace = namespace or config.namespace or "default"

    def close(self) -> None:
        """Close the API client's connection pool."""
        client = getattr(self.api, "api_client", None)
        if client is not None and hasattr(client, "close"):
            client.close()

    def manifest(self, job: JobRecord) -> dict[str, Any]:
        """The Job object this backend creates for ``job``."""
        return build_manifest(
            self.config, self.core, job, self.job_command(job), self.rclone_volume(job)
        )

    def rclone_volume(self, job: JobRecord) -> RcloneVolume | None:
        """The pod's rclone volume with the job's staging (None without a remote volume).

        The pod reads rclone.conf from the Secret, and its input from its own folder.
        """
        volume = self.service.volume
        if volume is None:
            return None
        settings = self.service.settings
        workdir = settings.mount_volume_path.as_posix().rstrip("/") or "/mnt/storage"
        spec = read_spec(self.service.job_dir(job))
        pod_input = remap(
            spec.input_file, [(self.core.datadir.resolve().as_posix(), f"{workdir}/data")]
        )
        env = self.service.staging_env(job, pod_input)[STORAGE_ENV]
        staging = Staging.from_env(env)
        remote = replace(staging.remote, config=f"{RCLONE_CONFIG_DIR}/rclone.conf")
        return RcloneVolume(
            workdir, settings.rclone_secret_name, replace(staging, remote=remote).to_env()
        )

    # --- interface -----------------------------------------------------------------------
    def submit(self, job: JobRecord) -> None:
        """Create the Job, then record QUEUED with its name."""
        from kubernetes.client import V1Job
        from kubernetes.client.exceptions import ApiException

        body = V1Job.from_dict(self.manifest(job))
        name = job_name(job.id)
        try:
            self.api.create_namespaced_job(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # 409: created before a crash; adopt it
                raise
        log.info("job_created", backend=self.name, job_id=job.id, kube_job=name)
        if not self.service.transition(
            job.id,
            Phase.QUEUED,
            message=f"Job created in Kubernetes as {self.namespace}/{name}",
            expect=[Phase.PENDING, Phase.HELD],
            backend_job_id=name,
        ):
            self._delete(name)

    def cancel(self, job: JobRecord) -> bool:
        """ABORTED first, then delete the Job and its pods."""
        ok = self.service.transition(job.id, Phase.ABORTED, Reason.CANCELED, "Job canceled by user")
        if not ok:
            return False
        fresh = self.service.get_any(job.id)
        name = (fresh.backend_job_id if fresh else None) or job_name(job.id)
        try:
            self._delete(name)
        except Exception:
            log.exception("kube_delete_failed", job_id=job.id)
        return True

    def _delete(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_job(
                name, self.namespace, propagation_policy="Background", grace_period_seconds=0
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def view(self, job: JobRecord) -> BackendView:
        """Read the Job and map its status."""
        from kubernetes.client.exceptions import ApiException

        assert job.backend_job_id
        try:
            obj = self.api.read_namespaced_job(job.backend_job_id, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return BackendView(
                    Seen.GONE, message=f"Kubernetes Job {job.backend_job_id} no longer exists"
                )
            raise
        return view_from_status(obj.status)

    def find_submitted(self, job: JobRecord) -> str | None:
        """The Job of this job, if it was created before a crash."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.read_namespaced_job(job_name(job.id), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return job_name(job.id)


def make_batch_api(kube: KubeSettings) -> tuple[Any, str | None]:
    """A ``BatchV1Api`` and the namespace, from the service account or a kubeconfig."""
    from kubernetes import client, config

    cfg = client.Configuration()
    namespace = kube.namespace
    if kube.incluster:
        config.load_incluster_config(client_configuration=cfg)
        if namespace is None and SA_NAMESPACE.is_file():
            namespace = SA_NAMESPACE.read_text().strip()
    else:
        cfg_file = str(kube.config) if kube.config else None
        config.load_kube_config(
            config_file=cfg_file, context=kube.context, client_configuration=cfg
        )
        if namespace is None:
            _, current = config.list_kube_config_contexts(config_file=cfg_file)
            ctx = current
            if kube.context:
                contexts, _ = config.list_kube_config_contexts(config_file=cfg_file)
                ctx = next((c for c in contexts if c["name"] == kube.context), current)
            namespace = (ctx or {}).get("context", {}).get("namespace")
    # The predecessor's certificate overrides.
    if kube.certfile:
        cfg.cert_file = str(kube.certfile)
    if kube.keyfile:
        cfg.key_file = str(kube.keyfile)
    if kube.cafile:
        cfg.ssl_ca_cert = str(kube.cafile)
    return client.BatchV1Api(client.ApiClient(cfg)), namespace
