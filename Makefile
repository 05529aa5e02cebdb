# caesar-rest: the two commands of the README are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
ARGS ?=

.PHONY: serve test lint typecheck unit bench-api bench-backends slurm-up slurm-down slurm-env celery-up celery-down images stack-up stack-down venv clean

$(BIN)/caesar-rest: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

venv: $(BIN)/caesar-rest

## Start the service on the embedded default (SQLite, local runner, ./caesar-data).
serve: venv
	$(BIN)/caesar-rest serve --host $(HOST) --port $(PORT) $(ARGS)

## The whole test suite: format check, lint, type check, tests.
test: venv
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -p no:cacheprovider --durations=40 $(ARGS)

lint: venv
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench-api: venv
	$(BIN)/python benchmarks/api_load.py $(ARGS)

## Job backends: 200 short jobs each on local, celery, slurm, kubernetes (fake API).
bench-backends: venv
	$(BIN)/python benchmarks/backends.py $(ARGS)

## A single-node Slurm with slurmrestd (JWT) for local use; `make slurm-env` prints the settings.
slurm-up:
	scripts/slurm.sh start

slurm-down:
	scripts/slurm.sh stop

slurm-env:
	@scripts/slurm.sh env

## RabbitMQ and Redis here, and one Celery worker with this shell's CAESAR_REST_* settings.
celery-up: venv
	scripts/celery.sh services
	scripts/celery.sh start

celery-down:
	scripts/celery.sh stop

## Container images (no registry needed: a Debian base and a wheelhouse cached in
## /var/cache/caesar-rest): caesar-rest (API, worker, monitor), caesar-rest-job, caesar-rest-nginx.
images:
	scripts/docker.sh images

## The stack from those images, host networking, against this machine's PostgreSQL, Redis and
## RabbitMQ: nginx on 127.0.0.1:18480 -> the API, a Celery worker, the monitor (docs/deployment.md).
stack-up:
	scripts/docker.sh up

stack-down:
	scripts/docker.sh down

clean:
	rm -rf $(VENV) caesar-data .mypy_cache .ruff_cache
