"""A longer schemathesis run over the whole OpenAPI, authentication off and on (issue 14).

    PYTHONPATH=src nice python scripts/fuzz_api.py --examples 100

Each operation gets ``--examples`` generated requests per mode (``tests/support/fuzz.py``, the
same runner as ``tests/api/test_schemathesis.py``); prints, per mode, the cases sent, the
answers by status, and every server error or response-schema violation (distinct ones with
their first answer). Exit status 1 when there was any.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fuzz import AUTH_HEADERS, fuzz, service  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and mode")
    parser.add_argument("--seed", type=int, default=None, help="0: derandomized; default random")
    parser.add_argument("--mode", choices=["off", "on", "both"], default="both")
    args = parser.parse_args()
    bad = 0
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.mode]
    for aai in modes:
        with tempfile.TemporaryDirectory() as tmp, service(Path(tmp), aai) as client:
            report = fuzz(client, args.examples, AUTH_HEADERS if aai else None, seed=args.seed)
        distinct = sorted(report.distinct())
        print(
            f"auth {'on' if aai else 'off'}: {report.cases} cases ({report.unsendable} "
            f"unsendable) in {report.seconds:.0f} s; server errors {report.server_errors}; "
            f"failures {len(report.failures)} ({len(distinct)} distinct)"
        )
        print(f"  statuses: {dict(sorted(report.statuses.items()))}")
        for op, status, msg in distinct:
            print(f"  {op} -> {status}: {msg}")
        bad += report.server_errors + len(report.failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
