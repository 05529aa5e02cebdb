"""An MPI caesar job through the Slurm backend (issue 19): 2 tasks on the one-node test Slurm,
OpenMPI's mpirun inside the batch script. A module of its own, with its own cluster: the last
test of test_slurm.py restarts slurmctld without state, after which the node refused jobs of
several tasks ("Requested partition configuration not available now") in the clean-clone CI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.backend_support import SlurmCluster, slurm_server, start_slurm, upload
from tests.sourcefinder.sf_synth import ranks_field
from tests.support.paths import REPO, SUPPORT
from tests.support.server import wait_state

pytestmark = pytest.mark.slurm

FINAL = {"SUCCESS", "FAILURE", "TIMED-OUT", "ABORTED", "CANCELED"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    yield from start_slurm()


def test_mpi_caesar_job_over_two_ranks(cluster: SlurmCluster, tmp_path: Path) -> None:
    """A caesar job as 2 MPI ranks of one Slurm job (2 tasks on the one node, OpenMPI's
    mpirun inside the batch script) ends SUCCESS with the single-process catalogue."""
    mpirun = Path(sys.executable).parent / "mpirun"
    if not mpirun.exists():
        pytest.skip("no OpenMPI mpirun beside this interpreter (requirements.lock)")
    image = ranks_field(tmp_path / "f.fits")
    opts = {"tilesplit": True, "tilesize": 140, "nproc": 1}
    one = tmp_path / "one"
    flags = [f"--{k}" if v is True else f"--{k}={v}" for k, v in opts.items()]
    app = [sys.executable, "-m", "caesar_rest.apps.caesar_run", "--input", str(image)]
    done = subprocess.run([*app, "--outdir", str(one), *flags], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    job_env = {
        "PYTHONPATH": f"{REPO / 'src'}:{SUPPORT}",
        "HOME": str(tmp_path),  # OpenMPI reads its settings there
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_btl_tcp_if_include": "lo",
        "OMPI_MCA_oob_tcp_if_include": "lo",
    }
    s = slurm_server(
        tmp_path / "srv",
        cluster,
        CAESAR_REST_SLURM_ENV=json.dumps(job_env),
        CAESAR_REST_SLURM_MPI_RANKS="2",
        CAESAR_REST_SLURM_MPI_LAUNCHER=str(mpirun),
    )
    try:
        s.start(timeout=60)
        cluster.wait_idle()  # the test before restarted slurmctld without state
        with s.client() as c:
            r = c.post(
                "/job", json={"app": "caesar", "job_inputs": opts, "data_inputs": upload(c, image)}
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            st = wait_state(c, job_id, FINAL, timeout=240)
        jdir = s.jobdir / "anonymous" / f"job_{job_id}"
        log = (jdir / "job.log").read_text(errors="replace")
        assert st["state"] == "SUCCESS", (st, log[-3000:])
        summary = json.loads((jdir / "summary.json").read_text())
        assert summary["stats"]["n_ranks"] == 2 and summary["n_tiles"] == 9
        assert "islands shared among 2 ranks" in log
        assert (jdir / "catalog.csv").read_bytes() == (one / "catalog.csv").read_bytes()
    finally:
        s.stop()
