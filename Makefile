# edge-agent: every entry point a user or CI needs.
#   make demo   install, then run the real daemon on the bundled model, clip and an
#               embedded broker, printing what it publishes (Ctrl-C stops it)
#   make test   install, make sure a broker is available, run the whole test suite
#   make test-matrix   the suite on every CPython 3.9-3.13 (pyenv), each in a fresh venv
#   make ci     what CI runs (.ci/run): the CI matrix, then the distribution check

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo run test test-matrix ci dist-check test-faults soak lint format bench dist clean broker models \
	install-service uninstall-service fetch-models bench-growth fleet-bench

install: $(STAMP)

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV): pip, then edge-agent with [tflite,broker,test,dev] (about a minute)"
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --progress-bar on -e ".[tflite,broker,test,dev]"
	touch $(STAMP)

demo: install
	$(BIN)/edge-agent demo

run: install
	$(BIN)/edge-agent run --config $${CONFIG:-/etc/edge-agent/config.toml}

# mosquitto from Debian when we can install it (root + apt); otherwise the tests fall
# back to the embedded amqtt broker. rabbitmq-server likewise, for the cluster test.
broker:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null) || \
	    echo "mosquitto unavailable: tests use the embedded amqtt broker"; }
	@# RabbitMQ (MQTT plugin) for the 2-node cluster test; skipped where it cannot install.
	@test -x /usr/lib/rabbitmq/bin/rabbitmq-server || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null) || \
	    echo "rabbitmq-server unavailable: the RabbitMQ cluster test is skipped"; }

test: install broker
	$(BIN)/python -m pytest -q -m "not soak" -p no:cacheprovider

# Every CPython 3.9-3.13 found (pythonX.Y on PATH or pyenv), each in a fresh venv with
# the package installed as a user would; results in build/matrix/results.md.
test-matrix: broker
	.ci/matrix full

ci:
	.ci/run

dist-check:
	.ci/dist-check

test-faults: install broker
	$(BIN)/python -m pytest -q -m faults -s -p no:cacheprovider

# 30 minutes by default; EDGE_AGENT_SOAK_SECONDS=240 make soak for a short one.
soak: install broker
	$(BIN)/python -m pytest -q -m soak -s -p no:cacheprovider

lint: install
	$(BIN)/ruff format --check edge_agent tests models tools
	$(BIN)/ruff check edge_agent tests models tools

format: install
	$(BIN)/ruff format edge_agent tests models tools
	$(BIN)/ruff check --fix edge_agent tests models tools

# mobilenet_v2 and yolov8n from $EDGE_AGENT_SHARED/models (default ../shared), else the
# bundled demo model; with 1 thread (the second core carries the daemon) and all cores.
bench: install
	$(BIN)/python tools/bench_quantize.py
	$(BIN)/edge-agent bench --all --threads 1
	$(BIN)/edge-agent bench --all

# Group push over 50, 100 and 200 simulated devices (edge_agent/tools/fleet): time to all
# active and the broker's peak load; see docs/FLEET.md.
fleet-bench: install broker
	$(BIN)/python tools/fleet_bench.py --sizes $${SIZES:-50,100,200} --processes $${SHARDS:-4}

bench-growth: install
	$(BIN)/edge-agent bench --all --frames 10000 --rounds 1 --pace-frames 0 --cold-starts 0

# As root on the box: the systemd service (see deploy/install.sh --help).
install-service:
	deploy/install.sh

uninstall-service:
	deploy/install.sh --uninstall

fetch-models:
	models/fetch --dir $${MODELS_DIR:-/var/lib/edge-agent/models}

models: install
	$(BIN)/python models/make_models.py

dist: install
	$(BIN)/pip install -q build
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir dist .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
