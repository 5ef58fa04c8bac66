# The two commands of the README: `make run` (bootstrap, then the whole stack in the foreground)
# and `make test` (bootstrap, then the whole test suite). Both install what the machine lacks.
.PHONY: run test bootstrap clean

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	@bash deploy/bootstrap.sh

# SOURCE=replay:DIR runs offline from a recording (e.g. SOURCE=replay:tests/data/binance_futures_ws)
run: bootstrap
	$(VENV)/bin/tapeflow up $(if $(SOURCE),--source $(SOURCE))

# pytest exits 5 when it collected no test: make treats that as a failure, as it should.
test: bootstrap
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
