# Two entry points: `make run` (the sample end to end) and `make test`.
# Both create the virtual environment on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run stop test faults bench install kafka-start kafka-stop typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Start a local broker, run the sample through the pipeline, print the decisions and a summary, stop.
run: $(STAMP)
	BIN=$(BIN) scripts/run-sample.sh

## Stop what `KEEP_RUNNING=1 make run` left running: executors, worker and broker.
stop:
	BIN=$(BIN) scripts/run-sample.sh stop

## Run the test suite; the tests start their own broker unless MITIGATE_TEST_BOOTSTRAP_SERVERS is set.
test: $(STAMP)
	$(BIN)/pytest

## Run the fault suite at full size on the real broker: worker kills, a broker restart, a rebalance,
## 10,000 bad inputs, slow and failing executors, schema evolution. REPEAT=3 runs it three times.
## Figures go to .run/faults/figures.json; `make test` runs the same scenarios at a smaller size.
faults: $(STAMP)
	@for round in $$(seq $${REPEAT:-1}); do \
	  echo "fault suite: round $$round of $${REPEAT:-1}"; \
	  MITIGATE_FAULTS_FULL=1 $(BIN)/pytest -m faults tests/faults || exit 1; \
	done

## Benchmark the pipeline against a pass-through Faust agent and a raw Kafka client on a broker of its own.
## Takes about 20 minutes; pass options with ARGS, for example ARGS="--events 50000 --policies 0".
bench: $(STAMP)
	BIN=$(BIN) scripts/bench.sh $(ARGS)

kafka-start:
	scripts/kafka.sh start

kafka-stop:
	scripts/kafka.sh stop

typecheck: $(STAMP)
	$(BIN)/mypy mitigate benchmarks

clean:
	rm -rf .run $(VENV)
