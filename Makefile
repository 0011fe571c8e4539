# The two fresh-machine commands: `make demo` (install + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before the project so pip does not resolve torch itself: 2.13.0 is the CPU build
# these machines carry. On a CUDA machine use e.g. `make TORCH_SPEC=torch demo`.
TORCH_SPEC ?= torch==2.13.0
# llama-cpp-python builds from source; its multimodal part is not needed and halves the build.
# A portable AVX2 build, not -march=native: some VMs advertise AMX in cpuinfo but trap on its
# instructions (SIGILL in libggml-cpu), and a native build would also not run on an older host.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install demo test lint bench clean env audit lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# requirements.lock pins every package (torch included) to the versions the suite was run and
# audited with; `make lock` rewrites it from a fresh install.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" -c requirements.lock
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c requirements.lock
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/meetara run --domain general_health

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest-xdist workers (the chaos tests run one after another on one of them; see tests/conftest.py).
TEST_WORKERS ?= 2

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS)

# Known vulnerabilities in the locked versions (PyPI's advisory data); fails on any finding.
# pip-audit reads PyPI's per-version JSON API; where that is unreachable (some sandboxes only
# mirror the package index) it says so instead of passing vacuously.
AUDIT_PROBE := import urllib.request; urllib.request.urlopen("https://pypi.org/pypi/pip/24.0/json", timeout=10)
audit: install
	@if $(BIN)/python -c '$(AUDIT_PROBE)' 2>/dev/null; then \
		$(BIN)/pip-audit --strict --no-deps --disable-pip --progress-spinner off -r requirements.lock; \
	else \
		echo "audit NOT RUN: PyPI's vulnerability API (pypi.org/pypi/NAME/VERSION/json) is unreachable from here"; \
	fi

lock: install
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/+cpu$$//' -e '/^meetara-lab/d' > requirements.lock

bench: install
	$(BIN)/python -m bench.bus
	$(BIN)/python -m bench.data --catalogue
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.pipeline --tiny --swarm

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Secrets docker compose reads: a random Redis password and dashboard token, each added once.
env:
	@test -f .env || { touch .env && chmod 600 .env; }
	@grep -q '^REDIS_PASSWORD=.' .env || { python3 -c "import secrets; print('REDIS_PASSWORD=' + secrets.token_hex(24))" >> .env && echo "added a random REDIS_PASSWORD to .env"; }
	@grep -q '^MEETARA_MCP_TOKEN=.' .env || { python3 -c "import secrets; print('MEETARA_MCP_TOKEN=' + secrets.token_urlsafe(24))" >> .env && echo "added a random MEETARA_MCP_TOKEN to .env (the dashboard's token)"; }
