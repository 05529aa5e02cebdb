"""The Slurm backend: one batch job per run, through slurmrestd.

``submit`` writes a batch script that enters the job folder as the cluster mounts it
(``slurm_jobdir``) and runs the wrapper there, with the input paths rewritten from ``datadir`` to
``slurm_datadir``; it asks for the partition, the app's cores (at most ``slurm_max_cores``),
``slurm_memory_mb`` (``--mem``; when 0, ``job_memory_limit_mib``) and the time limit; the
wrapper sets the jobs' rlimits (``CAESAR_JOB_LIMITS`` in the job's environment). A job of an
app that shares its work over MPI ranks (``slurm_mpi_apps``) asks for ``slurm_mpi_ranks``
tasks (on ``slurm_mpi_nodes`` nodes) with the app's cores each, and the wrapper starts the
app through ``slurm_mpi_launcher`` (``srun --mpi=<slurm_mpi_type>`` or ``mpirun``). Slurm
counts the limit in whole minutes, so with
``slurm_exact_time_limit`` the script enforces the job's own limit to the second (``timeout``,
then ``timed_out`` is written) and Slurm's limit, one minute later, is the backstop. Every value
in the script is quoted with :func:`shlex.quote`.

The job is recorded QUEUED with its Slurm id once slurmrestd has accepted it; a crash in between
leaves it PENDING, and reconciliation finds it again by its name (``caesar-<job id>``) or
submits it anew.

State mapping (base state, or v0.0.38's flag word):

==========================================  ==========================================
Slurm                                        job
==========================================  ==========================================
PENDING, CONFIGURING, POWER_UP_NODE          QUEUED (back to QUEUED if it had started)
REQUEUED, REQUEUE_HOLD, REQUEUE_FED,         QUEUED
SPECIAL_EXIT
RUNNING, COMPLETING, STAGE_OUT, RESIZING,    EXECUTING
SIGNALING
SUSPENDED, STOPPED                           SUSPENDED
COMPLETED                                    COMPLETED (ERROR if results are missing)
FAILED, NODE_FAIL, BOOT_FAIL,                ERROR (reason failed, Slurm's word kept)
OUT_OF_MEMORY, PREEMPTED
TIMEOUT, DEADLINE                            ERROR, reason timeout (TIMED-OUT)
CANCELLED                                    ABORTED, reason canceled
(not known to slurmctld)                     from exit.json, else ERROR (lost) after
                                             monitor_lost_after seconds unseen
anything else                                UNKNOWN (and polled again)
==========================================  ==========================================

Cancel sets ABORTED, then ``DELETE /job/{id}`` (Slurm signals every process of the job).
"""

from __future__ import annotations

import getpass
import math
import shlex
import time
from pathlib import Path

from caesar_rest.backends.process import MIB, job_environment, remap, wrapper_argv
from caesar_rest.backends.remote import BackendView, RemoteBackend, Seen
from caesar_rest.backends.slurmrest import SlurmClient, SlurmJobInfo, SlurmJobSpec
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.folder import EXIT_FILE, LOG_FILE, TIMEOUT_FLAG, read_exit, read_spec
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase, Reason
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import SlurmSettings

log = get_logger(__name__)

#: Seconds to wait for exit.json after Slurm reports the end (shared file systems lag).
SETTLE_SECONDS = 10.0
SLURM_LOG = "slurm.out"

_QUEUED = {"PENDING", "CONFIGURING", "POWER_UP_NODE"}
_REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "RESIZING", "SIGNALING"}
_SUSPENDED = {"SUSPENDED", "STOPPED"}
_FAILED = {
    "FAILED": "Slurm job failed",
    "NODE_FAIL": "Slurm node failure",
    "BOOT_FAIL": "Slurm node boot failure",
    "OUT_OF_MEMORY": "Slurm job ran out of memory",
    "PREEMPTED": "Slurm job preempted",
}
_TIMEOUT = {
    "TIMEOUT": "Slurm stopped the job at its time limit",
    "DEADLINE": "Slurm stopped the job at its deadline",
}
_FINAL = {"COMPLETED", "CANCELLED", *_FAILED, *_TIMEOUT}


def slurm_url(slurm: SlurmSettings) -> str:
    """slurmrestd's base URL from ``slurm_url``, or ``slurm_host``/``slurm_port``."""
    if slurm.url:
        return slurm.url
    if slurm.host:
        return f"http://{slurm.host}:{slurm.port}"
    raise ValueError("the slurm backend needs slurm_url (or slurm_host)")


def map_state(info: SlurmJobInfo, started: bool) -> BackendView:
    """The job-side view of a Slurm job record (``started``: the job was EXECUTING)."""
    word = info.state
    words = {word, *info.flags}
    state = "+".join([word, *info.flags])
    elapsed = info.end_time - info.start_time if info.end_time and info.start_time else None
    if word == "CANCELLED":
        return BackendView(
            Seen.CANCELED, state, info.exit_code, elapsed, "Job canceled in Slurm (CANCELLED)"
        )
    if word == "COMPLETED":
        return BackendView(Seen.DONE, state, info.exit_code, elapsed)
    if word in _FAILED:
        return BackendView(Seen.FAILED, state, info.exit_code, elapsed, _FAILED[word])
    if word in _TIMEOUT:
        return BackendView(Seen.TIMEOUT, state, info.exit_code, elapsed, _TIMEOUT[word])
    if words & _REQUEUED or (word in _QUEUED and started):
        return BackendView(Seen.QUEUED, state, message=f"Job requeued by Slurm ({state})")
    if word in _QUEUED:
        return BackendView(Seen.QUEUED, state)
    if word in _SUSPENDED:
        return BackendView(Seen.SUSPENDED, state, message=f"Job suspended by Slurm ({state})")
    if word in _RUNNING:
        return BackendView(Seen.RUNNING, state, message="Job running in Slurm")
    if word in {"UPDATE_DB", "RECONFIG_FAIL", "LAUNCH_FAILED", "REVOKED"}:
        return BackendView(Seen.NOCHANGE, state)  # transitional: the base state follows
    return BackendView(Seen.UNKNOWN, state, message=f"Slurm reports an unknown state {state!r}")


class SlurmBackend(RemoteBackend):
    """Runs jobs as Slurm batch jobs.

    Parameters
    ----------
    service
        The job service the backend reports to.
    config
        The ``slurm`` settings section.
    client
        The slurmrestd client (default: one made from ``config``).
    """

    name = "slurm"

    def __init__(
        self, service: JobService, config: SlurmSettings, client: SlurmClient | None = None
    ):
        super().__init__(service)
        self.config = config
        self.client = client or SlurmClient(
            slurm_url(config),
            config.user or getpass.getuser(),
            keyfile=config.keyfile,
            token=config.token.get_secret_value() if config.token else None,
            version=config.api_version,
            lifespan=config.token_lifespan,
            timeout=config.timeout,
            verify=config.verify_tls,
        )

    def close(self) -> None:
        """Close the HTTP pool."""
        self.client.close()

    # --- paths and script ----------------------------------------------------------------
    def cluster_job_dir(self, job: JobRecord) -> str:
        """The job folder as the cluster sees it."""
        root = self.config.jobdir or self.core.jobdir.resolve()
        return str(Path(root) / job.reldir)

    def path_mapping(self) -> list[tuple[str, str]]:
        """(service path, cluster path) prefixes."""
        slurm, core = self.config, self.core
        pairs = []
        if slurm.datadir:
            pairs.append((str(core.datadir.resolve()), str(slurm.datadir)))
        if slurm.jobdir:
            pairs.append((str(core.jobdir.resolve()), str(slurm.jobdir)))
        return pairs

    def staging_env(self, job: JobRecord) -> dict[str, str]:
        """The remote volume's staging of the job, its input where the cluster reads it."""
        if self.service.volume is None:
            return {}
        spec = read_spec(self.service.job_dir(job))
        return self.service.staging_env(job, remap(spec.input_file, self.path_mapping()))

    def mpi_ranks(self, job: JobRecord) -> int:
        """The job's MPI ranks: ``slurm_mpi_ranks`` for an app of ``slurm_mpi_apps`` not
        given ``no-mpi``, else 1."""
        slurm = self.config
        if slurm.mpi_ranks <= 1 or job.app not in slurm.mpi_apps:
            return 1
        if read_spec(self.service.job_dir(job)).options.get("no-mpi"):
            return 1
        return slurm.mpi_ranks

    def launcher(self, job: JobRecord) -> list[str]:
        """The launcher of the app's ranks (empty for one process): ``srun`` with the job's
        tasks and CPUs, or OpenMPI's ``mpirun`` (which takes the ranks' nodes from the
        allocation; no binding, so each rank's tile processes use all of its CPUs)."""
        ranks = self.mpi_ranks(job)
        if ranks <= 1:
            return []
        slurm = self.config
        name = slurm.mpi_launcher.rsplit("/", 1)[-1]
        if name == "srun":
            cores = self.cores(job)
            return [
                slurm.mpi_launcher,
                f"--mpi={slurm.mpi_type}",
                f"--ntasks={ranks}",
                f"--cpus-per-task={cores}",
                "--kill-on-bad-exit=1",
            ]
        return [slurm.mpi_launcher, "-n", str(ranks), "--bind-to", "none"]

    def cores(self, job: JobRecord) -> int:
        """CPUs per task: the app's cores, at most ``slurm_max_cores``."""
        return max(1, min(job.cores, self.config.max_cores))

    def batch_script(self, job: JobRecord) -> str:
        """The batch script: every value quoted with shlex.quote."""
        slurm = self.config
        argv = wrapper_argv(self.job_command(job), slurm.python, self.path_mapping())
        # The wrapper runs the launcher, which starts the app's ranks.
        argv[4:4] = self.launcher(job)
        q = shlex.quote
        run = " ".join(q(a) for a in argv)
        limit = int(job.time_limit)
        lines = [
            "#!/bin/bash",
            f"# caesar-rest job {job.id} ({job.app})",
            f"cd -- {q(self.cluster_job_dir(job))} || exit 1",
            f"rm -f -- {q(TIMEOUT_FLAG)} {q(EXIT_FILE)}",
        ]
        if slurm.exact_time_limit:
            grace = max(1, math.ceil(self.core.kill_grace))
            lines += [
                f"timeout --signal=TERM --kill-after={grace} {limit} {run} >> {q(LOG_FILE)} 2>&1",
                "rc=$?",
                # timeout says 124 (137 after SIGKILL); SECONDS tells it from an app's own 124.
                f'if {{ [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; }} && [ "$SECONDS" -ge {limit} ];'
                f' then echo "$SECONDS" > {q(TIMEOUT_FLAG)}; fi',
                'exit "$rc"',
            ]
        else:
            lines.append(f"exec {run} >> {q(LOG_FILE)} 2>&1")
        return "\n".join(lines) + "\n"

    def job_spec(self, job: JobRecord) -> SlurmJobSpec:
        """The Slurm job description."""
        slurm = self.config
        jdir = self.cluster_job_dir(job)
        minutes = math.ceil(job.time_limit / 60) + (1 if slurm.exact_time_limit else 0)
        cores = self.cores(job)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            **job_environment(cores, self.core.limits),
            "CAESAR_JOB_ID": job.id,
            **self.staging_env(job),
            **slurm.env,
        }
        return SlurmJobSpec(
            name=f"caesar-{job.id}",
            script=self.batch_script(job),
            cwd=jdir,
            stdout=str(Path(jdir) / SLURM_LOG),
            environment=env,
            time_limit_min=minutes,
            cpus=cores,
            # --mem: the section's own value, else the jobs' memory limit (the wrapper's
            # rlimit catches an allocation first and names the limit in the status).
            memory_mb=slurm.memory_mb or self.core.limits.memory // MIB,
            partition=slurm.partition,
            tasks=self.mpi_ranks(job),
            nodes=slurm.mpi_nodes if self.mpi_ranks(job) > 1 else 0,
        )

    # --- interface -----------------------------------------------------------------------
    def submit(self, job: JobRecord) -> None:
        """Submit to slurmrestd, then record QUEUED with the Slurm job id."""
        slurm_id = self.client.submit(self.job_spec(job))
        log.info("job_submitted", backend=self.name, job_id=job.id, slurm_job_id=slurm_id)
        if not self.service.transition(
            job.id,
            Phase.QUEUED,
            message=f"Job queued in Slurm as job {slurm_id}",
            expect=[Phase.PENDING, Phase.HELD],
            backend_job_id=str(slurm_id),
            backend_state="PENDING",
        ):
            # Canceled (or settled) meanwhile: do not leave it running in Slurm.
            self.client.cancel(slurm_id)

    def cancel(self, job: JobRecord) -> bool:
        """ABORTED first, then ``DELETE`` the Slurm job."""
        ok = self.service.transition(job.id, Phase.ABORTED, Reason.CANCELED, "Job canceled by user")
        if not ok:
            return False
        fresh = self.service.get_any(job.id)
        if fresh is not None and fresh.backend_job_id:
            try:
                self.client.cancel(fresh.backend_job_id)
            except Exception:
                log.exception("slurm_cancel_failed", job_id=job.id)
        return True

    def view(self, job: JobRecord) -> BackendView:
        """Ask slurmctld (through slurmrestd) about the job."""
        assert job.backend_job_id
        info = self.client.job(job.backend_job_id)
        if info is None:
            return BackendView(
                Seen.GONE, message=f"Slurm job {job.backend_job_id} is unknown to slurmctld"
            )
        if info.name and info.name != f"caesar-{job.id}":
            # Job ids start again when slurmctld loses its state: that id is someone else's.
            return BackendView(
                Seen.GONE,
                message=f"Slurm job {job.backend_job_id} is now another job ({info.name!r})",
            )
        view = map_state(info, started=job.phase != Phase.QUEUED.value)
        if (
            info.state in _FINAL
            and view.seen != Seen.CANCELED
            and read_exit(self.service.job_dir(job)) is None
            and info.end_time
            and time.time() - info.end_time < SETTLE_SECONDS
        ):
            # The record may not have reached this side of a shared file system yet.
            return BackendView(Seen.NOCHANGE, view.backend_state)
        return view

    def find_submitted(self, job: JobRecord) -> str | None:
        """A Slurm job named after this job (submitted before a crash)."""
        name = f"caesar-{job.id}"
        for info in self.client.jobs():
            if info.name == name:
                return str(info.job_id)
        return None
