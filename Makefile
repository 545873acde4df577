# Set-up and entry points. `make report` and `make test` each install what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data report test test-fast site clean-reports

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[notebooks,dev]'
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST: the Debian package when apt-get can install it, else a torchvision download.
data: setup
	@if [ ! -f $(DEBIAN_FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi
	$(PY) -c "from pdblib.data import prepare_fashion_mnist; print(prepare_fashion_mnist(download=True))"

report: data
	$(PY) -m pdblib.pipeline --profile $(PROFILE)

test: data
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

site: setup
	$(PY) -m pdblib.site

clean-reports:
	rm -rf reports/*/
