# The README's two commands: `make serve` and `make test`. Both create .venv on first use.
PY := .venv/bin/python
PIP := $(PY) -m pip

.PHONY: serve test lint train export parity

.venv/serving.stamp: pyproject.toml
	python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

.venv/dev.stamp: pyproject.toml .venv/serving.stamp
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -e ".[train,dev]"
	touch $@

serve: .venv/serving.stamp
	.venv/bin/triage serve

test: .venv/dev.stamp
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest -q
	.venv/bin/triage parity

lint: .venv/dev.stamp
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

train: .venv/dev.stamp
	.venv/bin/triage train --out artifacts

export: .venv/dev.stamp
	.venv/bin/triage export --out artifacts

parity: .venv/dev.stamp
	.venv/bin/triage parity
