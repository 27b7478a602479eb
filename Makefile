# Two commands for a fresh machine with Python 3.10+:  `make demo` and `make test`.
# Each creates its own virtual environment (.venv) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q

.PHONY: demo test bench clean

$(VENV)/.sim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

# torch first, pinned to the CPU build, so that the runtime extra's torch>=... is already met (a plain `torch`
# requirement can pull a multi-GB CUDA build).
$(VENV)/.test: $(VENV)/.sim
	$(PIP) torch==2.13.0 || $(PIP) torch --index-url https://download.pytorch.org/whl/cpu
	$(PIP) -e '.[test,runtime,sweep]'
	touch $@

demo: $(VENV)/.sim
	$(VENV)/bin/memwall simulate

test: $(VENV)/.test
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV)
