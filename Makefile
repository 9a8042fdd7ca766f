# The README's two commands: `make serve` and `make test`. Both create .venv on first use.
PY := .venv/bin/python
# The project needs Python 3.11 (the local torch wheels are built for it): prefer python3.11 where python3 is newer.
PYTHON ?= $(shell command -v python3.11 || echo python3)
PIP := $(PY) -m pip

.PHONY: serve test lint train export parity photos

# Every install is constrained by requirements/serving.lock, the exact serving set the images install, so the
# environment the tests run in serves with the same packages as the images.
LOCK := requirements/serving.lock

.venv/serving.stamp: pyproject.toml $(LOCK)
	$(PYTHON) -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(LOCK) -e .
	touch $@

.venv/dev.stamp: pyproject.toml .venv/serving.stamp
	$(PIP) install --quiet -c $(LOCK) "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -c $(LOCK) -e ".[train,dev,deploy]"
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

train: .venv/dev.stamp photos
	.venv/bin/triage train --out artifacts --overwrite

# The real photographs the generator builds on (model/synth/real_photos.json lists them): Debian packages, installed
# (as root) only where one of their files is missing. Some slim images exclude /usr/share/doc, where opencv-doc's are.
PHOTOS_MISSING := $(PYTHON) -c 'import json, os; d = json.load(open("model/synth/real_photos.json")); \
	print(" ".join(sorted({p["package"] for p in d["photos"] if not os.path.isfile(p["path"])})))'
photos:
	@missing="$$($(PHOTOS_MISSING))"; \
	if [ -n "$$missing" ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; fi; \
	missing="$$($(PHOTOS_MISSING))"; \
	if [ -n "$$missing" ]; then echo "photos of $$missing still missing (does dpkg path-exclude them?)" >&2; exit 1; fi

export: .venv/dev.stamp
	.venv/bin/triage export --out artifacts

parity: .venv/dev.stamp
	.venv/bin/triage parity
