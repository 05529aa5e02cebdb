"""The predecessor-compatible ``/caesar/api/v1.0`` API."""

from fastapi import APIRouter

from caesar_rest.api.v1 import accounting, admin, apps, files, jobs, results

PREFIX = "/caesar/api/v1.0"

router = APIRouter(prefix=PREFIX)
# Routes are matched in order and the job routes are the ones clients poll: first.
router.include_router(jobs.router)
router.include_router(files.router)
router.include_router(apps.router)
router.include_router(accounting.router)
router.include_router(admin.router)
router.include_router(results.router)
