# cgbot — the two commands of the README quick start are `make demo` and `make test`.
# Both install what they need on a fresh Debian machine (scripts/setup.sh) first.

CARGO      ?= cargo
SAMPLES    ?= ../shared/samples
DEMO_CLIP  ?= $(SAMPLES)/people-walking.mp4
DEMO_OUT   ?= out/demo
TOOLS_VENV := .venv
TEST_MODELS := target/test-models
# Pinned Python packages of the venv (the baseline's; the INT8 recipe uses the same
# onnxruntime and numpy).
BASELINE_REQS := benches/baseline/requirements.txt

.PHONY: setup build demo eval test test-models int8-model baseline-env lint bench clean

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

# Case quality over the scenario suite in eval/ (clips made from the shared samples with
# FFmpeg, cached in target/eval-clips): the table on stderr, the report and its figure in
# $(EVAL_OUT).
EVAL_OUT ?= out/eval
eval: build
	mkdir -p $(EVAL_OUT)
	CGBOT_SAMPLES=$(SAMPLES) ./target/release/cgbot eval eval/ --json --plot $(EVAL_OUT)/eval.png > $(EVAL_OUT)/report.json
	@echo "report in $(EVAL_OUT)/report.json, figure in $(EVAL_OUT)/eval.png"

# Tiny synthetic ONNX models (yolov8 layout, dynamic batch; a non-detector) for the tests.
$(TEST_MODELS)/tiny_yolov8.onnx: scripts/make_test_models.py
	test -x $(TOOLS_VENV)/bin/python || python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check onnx==1.23.2 'numpy<3'
	$(TOOLS_VENV)/bin/python scripts/make_test_models.py $(TEST_MODELS)

test-models: $(TEST_MODELS)/tiny_yolov8.onnx

# YOLOX-Nano quantised to INT8 from the FP32 file (catalogue entry yolox_nano_int8),
# calibrated on the shared samples with onnxruntime's quantisation tools in the venv.
INT8_MODEL := models/yolox_nano_int8.onnx
ORT_PY_STAMP := $(TOOLS_VENV)/.onnxruntime

$(ORT_PY_STAMP): $(BASELINE_REQS)
	test -x $(TOOLS_VENV)/bin/python || python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check onnx==1.23.2 \
		$$(grep -E '^(onnxruntime|numpy)==' $(BASELINE_REQS))
	touch $@

$(INT8_MODEL): scripts/make_int8_model.py $(ORT_PY_STAMP)
	python3 scripts/fetch_models.py yolox_nano
	$(TOOLS_VENV)/bin/python scripts/make_int8_model.py models/yolox_nano.onnx $@ $(SAMPLES)

int8-model: $(INT8_MODEL)

test: setup test-models int8-model
	$(CARGO) test --release --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# The "usual Python pipeline" baseline the benchmark compares with (benches/baseline/):
# OpenCV and onnxruntime, pinned, in the same venv. Not part of `make test`.
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
