# The front door. On a machine with only python3 and make:
#   make test-integration   the integration suite (Docker if a daemon answers and has or can pull
#                           the images, else embedded)
#   make test               every tier: unit, integration, and the harness's own
# Every target bootstraps its own tox into .tools/ on first use; every tox env installs the
# exact versions of its hashed lock in locks/ (`make lock` after changing a dependency, README
# "Dependencies").

PYTHON ?= python3
TOOLS := .tools
TOX ?= $(TOOLS)/bin/tox
# Pinned: tox-docker 5.0.0 is unmaintained and needs tox 4; tox-uv 1.37.1 resolves everywhere we run;
# uv, which tox-uv brings, compiles the locks (pyproject's lint group pins the same uv, which checks them).
TOOL_PINS := tox==4.67.13 tox-uv==1.37.1 tox-docker==5.0.0 uv==0.13.9
# The harness's tox hooks (toxfile.py imports them) come from its own distribution, installed
# editable beside tox, without its dependencies: the hooks need only tox and the standard library.
HARNESS_DIST := pytest-realstack
UV := $(TOOLS)/bin/uv
BACKEND ?= auto
ARGS ?=
# SHARD=i/n: the i-th of n duration-balanced shards of the integration tier (pytest-split).
SHARD ?=
DURATIONS := .test_durations

.DEFAULT_GOAL := help
.PHONY: help tools lock test-unit test-tooling test-integration test-harness test lint type coverage dev migration services-up services-down clean-leftovers bench bench-services durations shard-check clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: BACKEND=auto|docker|embedded, ARGS='pytest args', e.g. ARGS='-n 2 -k upload',"
	@echo "             SHARD=i/n (test-integration: the i-th of n shards)"

# The stamp holds the pins it was made with, so changing TOOL_PINS reinstalls the tools.
tools: ## install the pinned tox, tox-uv (with uv) and tox-docker, and the harness's tox hooks, into .tools/
	@if [ "$$(cat $(TOOLS)/.installed 2>/dev/null)" != "$(TOOL_PINS) -e ./$(HARNESS_DIST)" ]; then \
	  echo "make: installing tox ($(TOOL_PINS)) and the harness's tox hooks into $(TOOLS)/"; \
	  $(PYTHON) -m venv $(TOOLS) && \
	  $(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check $(TOOL_PINS) && \
	  $(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e ./$(HARNESS_DIST) && \
	  echo "$(TOOL_PINS) -e ./$(HARNESS_DIST)" > $(TOOLS)/.installed; \
	fi

# UPGRADE=NAME (or several, space-separated) moves those packages to the newest versions their
# bounds allow; UPGRADE=:all: moves every package.
lock: tools ## rewrite locks/ after changing pyproject.toml; UPGRADE=NAME moves one package to its newest allowed version
	$(TOOLS)/bin/python .ci/locks.py --uv $(UV) $(if $(filter :all:,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p)))

test-unit: tools ## the app's unit tests: no Docker, no database, no network
	$(TOX) -e unit $(if $(ARGS),-- $(ARGS))

test-tooling: tools ## the repository's tooling: locks, shard checks, tox.ini's contract (no services)
	$(TOX) -e tooling $(if $(ARGS),-- $(ARGS))

test-integration: tools ## the app's integration tests on real PostgreSQL + S3 (tox-docker, or embedded); SHARD=i/n for one shard
	@env=$$($(MAKE) --no-print-directory _integration-env) || exit $$?; \
	if [ -z "$(SHARD)" ]; then \
	  $(TOX) -e $$env $(if $(ARGS),-- $(ARGS)); \
	else \
	  shard=$$($(MAKE) --no-print-directory _shard) || exit $$?; set -- $$shard; \
	  echo "make: shard $$1 of $$2 (pytest-split, $(DURATIONS)): its own tox dir .tox/shard-$$1-of-$$2, its own services, reports/integration-shard-$$1-of-$$2.xml" >&2; \
	  JUNIT_XML=$(CURDIR)/reports/integration-shard-$$1-of-$$2.xml \
	  $(TOX) --workdir .tox/shard-$$1-of-$$2 -e $$env -- \
	    --splits $$2 --group $$1 --splitting-algorithm least_duration --durations-path $(DURATIONS) \
	    $(or $(ARGS),tests/integration); rc=$$?; \
	  if [ $$rc -eq 5 ]; then \
	    echo "make: shard $$1 of $$2 holds no test (more shards than tests, or ARGS selected none of its share); nothing to run" >&2; exit 0; \
	  fi; exit $$rc; \
	fi

# Prints "i n" for SHARD=i/n, or fails saying what is wrong with it: whole numbers without
# leading zeros (SHARD=2/02 would name a report shard-check never reads), 1 <= i <= n <= MAX_SHARDS
# (pytest-split builds every group in memory: SHARD=1/99999999999999999999 grew it to 24 GB).
MAX_SHARDS := 1000
_shard:
	@s='$(SHARD)'; \
	bad() { echo "make: SHARD must be i/n, whole numbers without leading zeros, 1 <= i <= n <= $(MAX_SHARDS), e.g. SHARD=1/2 (got '$$s')" >&2; exit 2; }; \
	case "$$s" in */*) i=$${s%%/*}; n=$${s#*/} ;; *) bad ;; esac; \
	for x in "$$i" "$$n"; do \
	  case "$$x" in [1-9]|[1-9][0-9]|[1-9][0-9][0-9]|[1-9][0-9][0-9][0-9]) ;; *) bad ;; esac; \
	done; \
	{ [ "$$n" -le $(MAX_SHARDS) ] && [ "$$i" -le "$$n" ]; } || bad; \
	echo "$$i $$n"

# Prints the tox env to use, and on stderr one line saying which and why. A daemon that answers
# must also have, or pull, the images tox-docker will fetch (`toxdocker images`): offline or
# rate-limited, auto falls back to the embedded services and BACKEND=docker stops (exit 2).
PROBE := $(TOOLS)/bin/python -m realstack.toxdocker
_integration-env:
	@embedded="tox -e integration-embedded (PostgreSQL + SeaweedFS from PyPI)"; \
	case "$(BACKEND)" in \
	  docker) if where=$$($(PROBE) 2>/dev/null) && ! why=$$($(PROBE) images integration); then \
	            echo "make: BACKEND=docker, but the Docker daemon at $$where $$why. Run without Docker with BACKEND=embedded, or make the image available: docker pull it, or set POSTGRES_IMAGE / MINIO_DOCKERFILE to one the daemon has" >&2; exit 2; \
	          fi; \
	          echo "make: BACKEND=docker -> tox -e integration (containers via tox-docker)" >&2; echo integration ;; \
	  embedded) echo "make: BACKEND=embedded -> $$embedded" >&2; echo integration-embedded ;; \
	  auto) if ! where=$$($(PROBE) 2>/dev/null); then \
	          echo "make: no Docker daemon ($$where) -> $$embedded; BACKEND=docker|embedded forces one" >&2; echo integration-embedded; \
	        elif why=$$($(PROBE) images integration); then \
	          echo "make: Docker daemon answered at $$where -> tox -e integration (containers via tox-docker)" >&2; echo integration; \
	        else \
	          echo "make: the Docker daemon at $$where $$why -> $$embedded; BACKEND=docker forces Docker" >&2; echo integration-embedded; \
	        fi ;; \
	  *) echo "make: BACKEND must be auto, docker or embedded (got '$(BACKEND)')" >&2; exit 2 ;; \
	esac

test-harness: tools ## the harness's own tests, on a sample app (embedded services)
	$(TOX) -e harness $(if $(ARGS),-- $(ARGS))

test: test-unit test-tooling test-integration test-harness ## all tests: unit, tooling, integration, then the harness's own

lint: tools ## the locks up to date, ruff check and format check, the harness's layer contracts, the GitHub workflow checked
	$(TOX) -e lint

type: tools ## mypy --strict
	$(TOX) -e type

coverage: tools ## branch coverage of api from both tiers (embedded services), HTML in reports/coverage
	$(TOX) -e coverage $(if $(ARGS),-- $(ARGS))

dev: tools ## serve the API on http://127.0.0.1:8000 on the embedded services; Ctrl-C stops all
	$(TOX) -e dev

# The message goes to tox as one argument; alembic derives the file name from it.
migration: tools ## write a migration of the models' changes: m="add tags" (autogenerate against a throwaway database at head)
	@if [ -z "$(m)" ]; then echo 'make: give the revision message, e.g. make migration m="add tags"' >&2; exit 2; fi
	$(TOX) -e migration -- -m '$(subst ','\'',$(m))'

services-up: tools ## keep the embedded services running for fast reruns (pytest reads their services file)
	$(TOX) -e services -- up

services-down: tools ## stop the services of make services-up
	$(TOX) -e services -- down

clean-leftovers: tools ## remove what killed runs left: servers, run dirs, containers, stamped schemas and buckets
	@$(TOOLS)/bin/python -m realstack.toxdocker clean
	@$(TOX) -q -e clean-leftovers

bench: tools ## every benchmark in one process on the embedded services; writes bench/results.json
	$(TOX) -e bench $(if $(ARGS),-- $(ARGS))

bench-services: tools ## start-up times of the embedded services and of make test-integration, median of 5
	$(TOX) -e bench-services
	$(PYTHON) bench/bench_make.py

durations: tools ## rerun the integration tier unsharded and rewrite .test_durations (commit it)
	@env=$$($(MAKE) --no-print-directory _integration-env) || exit $$?; \
	JUNIT_XML=$(CURDIR)/reports/integration-durations.xml \
	$(TOX) -e $$env -- --store-durations --clean-durations --durations-path $(DURATIONS) tests/integration

# The shards' union is exactly the suite: no test lost, none run twice. Compares
# $(REPORTS)/integration-shard-*-of-N.xml with the unsharded $(REPORTS)/integration.xml, or,
# without one (CI: the shards ran on other runners), with the suite's collected test ids.
REPORTS ?= reports
shard-check: tools ## after SHARD=1/N ... N/N: their union is the whole suite (SHARDS=N, default 2; REPORTS=dir)
	@n=$(or $(SHARDS),2); shards=$$(ls $(REPORTS)/integration-shard-*-of-$$n.xml 2>/dev/null); \
	if [ -f "$(REPORTS)/integration.xml" ]; then expected=$(REPORTS)/integration.xml; \
	else \
	  expected=reports/integration-ids.txt; mkdir -p reports; \
	  env=$$($(MAKE) --no-print-directory _integration-env) || exit $$?; \
	  JUNIT_XML=$(CURDIR)/reports/integration-collect.xml \
	  $(TOX) -q -e $$env -- --collect-only -q tests/integration > reports/integration-collect.out || \
	    { cat reports/integration-collect.out; exit 1; }; \
	  grep '::' reports/integration-collect.out > $$expected; \
	fi; \
	$(PYTHON) .ci/check_shards.py --expected $$expected $$shards

clean: ## remove tox envs, tools, reports and caches (never your data)
	rm -rf .tox $(TOOLS) reports .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* bench/results.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
