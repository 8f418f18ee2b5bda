# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
VENV    ?= .venv
PY      := $(VENV)/bin/python
FEATINV := $(VENV)/bin/featinv
# The CPU build of torch that lies on disk here; an open range would pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: demo test test-all setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(FEATINV) demo -o demo.png

test: setup
	$(PY) -m pytest -q

# Also the slow training tests that CI skips.
test-all: setup
	FEATINV_SLOW=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo.png .pytest_cache
