# The two commands of the README (and docs/getting-started/install.md): `make run` (bootstrap, then the whole stack in the foreground)
# and `make test` (bootstrap, then the whole test suite). Both install what the machine lacks.
.PHONY: run test bootstrap clean docs docs-serve

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	@bash deploy/bootstrap.sh

# SOURCE=replay:DIR runs offline from a recording (e.g. SOURCE=replay:tests/data/binance_futures_ws)
run: bootstrap
	$(VENV)/bin/tapeflow up $(if $(SOURCE),--source $(SOURCE))

# The suite runs on TEST_WORKERS parallel pytest-xdist workers (each starts its own broker and
# PostgreSQL; most of a test's time is waiting on processes, so two more than the cores, 3 to 8: on 2
# cores 4 workers took 17.8 min where 3 took 18.8-19.7, the CPU busier; on 2026-11-25, from fresh
# clones of the same tests, 4 took 22.7 min and 5 took 29.2 min with 5 load failures). Tests are
# handed out one at a time (--maxschedchunk 1) and the longest first (tests/conftest.py), so the
# workers finish together. TEST_WORKERS=0 runs them in one process.
# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); w=$$((n + 2)); [ $$w -lt 3 ] && w=3; [ $$w -gt 8 ] && w=8; echo $$w)

test: bootstrap
	$(PY) -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/): built strictly (a broken link or a page missing from the
# navigation fails) and offline into site/; docs-serve serves it with live reload on 127.0.0.1:8000.
# docs/gen_reference.py regenerates docs/reference/ from the code (tests/docs/ checks it is current).
docs: bootstrap
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: bootstrap
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8000

clean:
	rm -rf $(VENV) .pytest_cache site
