# make run / make test do all their own set-up on a fresh Debian machine with Python 3.11:
# a .venv in this folder, reinstalled only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test checks lint bench clean integration-ready docker-ready systemd-analyze-ready registry-ready

run: $(STAMP)
	$(BIN)/matrix run --backend venv

# Lint, types and unit tests need none of the integration tests' parts (Docker engine and base
# images, systemd-analyze, a registry, Chromium), so those are made ready meanwhile: on a fresh
# machine that is apt, debootstrap and downloads, mostly waiting on the network. Both in the
# foreground (Ctrl-C stops both); the integration tests start once both have succeeded.
test: $(STAMP)
	+$(MAKE) --no-print-directory -j2 --output-sync=target checks integration-ready
	$(BIN)/python -m pytest -q tests/integration

checks: lint
	$(BIN)/python -m pytest -q tests/unit

# One after the other, also under test's -j2 (the order-only prerequisites): each may run
# apt-get, which takes dpkg's lock.
integration-ready: docker-ready systemd-analyze-ready registry-ready
	tests/ensure-chromium.sh
systemd-analyze-ready: | docker-ready
registry-ready: | systemd-analyze-ready

# The container tests need an engine and the locally built Debian base images (no registry):
# bookworm (Python 3.11) for most, bullseye (3.9) for the four-TF sweep's TF 2.5.
docker-ready:
	dockerfiles/base/ensure-docker.sh
	BASE_IMAGE=tf-load-matrix/base:bullseye dockerfiles/base/ensure-docker.sh

# tests/integration/test_schedule.py checks the units `matrix schedule --emit systemd` writes with
# systemd-analyze (Debian's systemd package; only installed, nothing is started).
systemd-analyze-ready:
	command -v systemd-analyze >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; }

# tests/integration/test_ray_backend.py pushes to and pulls from a real registry: Debian's
# docker-registry (distribution 2.8), started on a free port by the test session itself.
registry-ready:
	command -v docker-registry >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/harness_overhead.py

# Debian's python3 ships without ensurepip until python3-venv is installed; a failed attempt
# leaves a venv without pip behind, so it is removed before trying again.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { \
	  echo "make: installing python3-venv (python3 -m venv needs it on Debian)" >&2; \
	  rm -rf $(VENV); \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && \
	  $(PYTHON) -m venv $(VENV); }

# uv (a dependency anyway: it builds the venv backend's environments) installs in half pip's
# time; --compile-bytecode as pip does, so no measured import compiles TensorFlow's sources.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -e '.[tf,test,ray]'
	touch $@

# Keeps .venv (TensorFlow is a large download) and results/ (measurements); remove those by hand.
clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
