# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
VENV    ?= .venv
PY      := $(VENV)/bin/python
FEATINV := $(VENV)/bin/featinv
# The CPU build of torch that lies on disk here; an open range would pull a multi-GB CUDA build.
# (Space-separated requirements, unquoted: test-torchvision adds torchvision.)
TORCH   ?= torch==2.13.0

.PHONY: demo test test-all test-torchvision test-colmap setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(FEATINV) demo -o demo.png

test: setup
	$(PY) -m pytest -q

# Also the slow training tests that CI skips.
test-all: setup
	FEATINV_SLOW=1 $(PY) -m pytest -q

# The tests that need torchvision (torchvision:MODEL:MODULE, our AlexNet against torchvision's), in a
# second environment: PyPI's torchvision is built for another torch than the CPU one pinned above and
# does not import beside it, so this one gets a matching pair (a 5.5 GB CUDA build; runs on the CPU).
# `make test` skips these tests and says so.
test-torchvision:
	$(MAKE) VENV=.venv-tv TORCH="torch==2.14.1 torchvision==0.29.1" setup
	.venv-tv/bin/python -m pytest -q tests/test_torchvision.py tests/test_alexnet.py tests/test_squeezenet.py

# The tests that need pycolmap (colmap-sift from images against the fixture database), in .venv with
# the colmap extra added (about 135 MB). `make test` reads the database without it and says so.
test-colmap: setup
	$(PY) -m pip install -q -e ".[colmap]"
	$(PY) -m pytest -q tests/test_colmap.py

clean:
	rm -rf $(VENV) .venv-tv demo.png .pytest_cache
