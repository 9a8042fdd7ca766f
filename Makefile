# The README's two commands: `make serve` and `make test`. Both create .venv on first use.
PY := .venv/bin/python
# The project needs Python 3.11 (the local torch wheels are built for it): prefer python3.11 where python3 is newer.
PYTHON ?= $(shell command -v python3.11 || echo python3)
PIP := $(PY) -m pip
RUFF := .venv/bin/ruff
PYTEST := .venv/bin/pytest
TRIAGE := .venv/bin/triage

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

# Every check runs, also after one has failed; then the run fails if any did, listing each check's result.
TEST_CHECKS := \
	"ruff check|$(RUFF) check ." \
	"ruff format|$(RUFF) format --check ." \
	"pytest|$(PYTEST) -q" \
	"triage parity|$(TRIAGE) parity"

test: .venv/dev.stamp
	@status=0; results=; \
	for check in $(TEST_CHECKS); do \
		name="$${check%%|*}"; command="$${check#*|}"; \
		echo "== $$name: $$command"; \
		if $$command; then result=passed; else result="FAILED (exit status $$?)"; status=1; fi; \
		results="$$results$$name: $$result;"; \
	done; \
	echo "make test:"; \
	IFS=";"; for line in $$results; do echo "  $$line"; done; \
	exit $$status

lint: .venv/dev.stamp
	$(RUFF) check . && $(RUFF) format --check .

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
