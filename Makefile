# cgbot — the two commands of the README quick start are `make demo` and `make test`.
# Both install what they need on a fresh Debian machine (scripts/setup.sh) first.

CARGO      ?= cargo
SAMPLES    ?= ../shared/samples
DEMO_CLIP  ?= $(SAMPLES)/people-walking.mp4
DEMO_OUT   ?= out/demo
TOOLS_VENV := .venv
TEST_MODELS := target/test-models

.PHONY: setup build demo test test-models baseline-env lint bench clean

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release

# The main job on the embedded default: detect on the sample images, replay a clip
# analysing one frame every 2 s, then file cases for the example street camera (a van in a
# no-parking zone); annotated JPEGs, the case database and its evidence go to $(DEMO_OUT).
demo: build
	./target/release/cgbot detect $(SAMPLES)/dog-bicycle-truck.jpg $(SAMPLES)/street-bus-car.jpg --annotate $(DEMO_OUT)
	./target/release/cgbot replay $(DEMO_CLIP) --every 2s --annotate $(DEMO_OUT)
	./target/release/cgbot replay $(SAMPLES)/street-static-h264.mp4 --every 2s \
		--camera samples/street-static-camera.toml --db $(DEMO_OUT)/cases.db --jsonl $(DEMO_OUT)/case-events.jsonl
	./target/release/cgbot cases list --db $(DEMO_OUT)/cases.db
	@echo "annotated images in $(DEMO_OUT)/, cases in $(DEMO_OUT)/cases.db (evidence in $(DEMO_OUT)/cases.db.evidence/)"

# Tiny synthetic ONNX models (yolov8 layout, dynamic batch; a non-detector) for the tests.
$(TEST_MODELS)/tiny_yolov8.onnx: scripts/make_test_models.py
	test -x $(TOOLS_VENV)/bin/python || python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check onnx==1.23.2 'numpy<3'
	$(TOOLS_VENV)/bin/python scripts/make_test_models.py $(TEST_MODELS)

test-models: $(TEST_MODELS)/tiny_yolov8.onnx

test: setup test-models
	$(CARGO) test --release --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# The "usual Python pipeline" baseline the benchmark compares with (benches/baseline/):
# OpenCV and onnxruntime, pinned, in the same venv. Not part of `make test`.
BASELINE_REQS := benches/baseline/requirements.txt
BASELINE_STAMP := $(TOOLS_VENV)/.baseline-env

$(BASELINE_STAMP): $(BASELINE_REQS)
	test -x $(TOOLS_VENV)/bin/python || python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(BASELINE_REQS)
	touch $@

baseline-env: $(BASELINE_STAMP)

bench: setup baseline-env
	$(CARGO) bench

clean:
	rm -rf target out $(TOOLS_VENV)
