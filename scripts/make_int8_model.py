#!/usr/bin/env python3
"""Quantise the FP32 YOLOX-Nano to INT8 (static, QDQ, per-channel weights) with ONNX
Runtime's quantisation tools, calibrated on frames of the shared sample images and clips.

    python scripts/make_int8_model.py FP32_MODEL OUT_MODEL SAMPLES_DIR

Frames are letterboxed as cgbot feeds YOLOX (top-left, pad 114, BGR, 0-255, 416x416) by
the ffmpeg CLI, so no imaging package is needed. The output is written atomically; it is
made locally and never committed.
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

SIZE = 416
# Enough frames to see people, cars, a bus and bottles at several sizes; more does not
# change the ranges much and slows `make int8-model` down.
FRAMES_PER_CLIP = 6


def letterboxed(path, frames):
    """`frames` frames of an image or clip, spread over its length, as 1x3x416x416 float32."""
    if frames > 1:
        seconds = float(subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
            check=True, capture_output=True, text=True).stdout.strip() or 0)
        rate = ["-vf", f"fps={frames / max(seconds, 1.0):.4f},"]
    else:
        rate = ["-vf", ""]
    scale = (f"scale={SIZE}:{SIZE}:force_original_aspect_ratio=decrease,"
             f"pad={SIZE}:{SIZE}:0:0:color=0x727272")
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, rate[0], rate[1] + scale, "-frames:v", str(frames),
         "-pix_fmt", "bgr24", "-f", "rawvideo", "-"],
        check=True, capture_output=True).stdout
    images = np.frombuffer(raw, dtype=np.uint8).reshape(-1, SIZE, SIZE, 3)
    return [img.transpose(2, 0, 1)[None].astype(np.float32) for img in images]


class Frames(CalibrationDataReader):
    def __init__(self, inputs):
        self.items = iter([{"images": x} for x in inputs])

    def get_next(self):
        return next(self.items, None)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fp32, out, samples = sys.argv[1:]
    sources = sorted(glob.glob(os.path.join(samples, "*.jpg")))
    clips = sorted(glob.glob(os.path.join(samples, "*.mp4")))
    if not sources and not clips:
        sys.exit(f"no calibration images or clips (*.jpg, *.mp4) in {samples}")
    inputs = [x for p in sources for x in letterboxed(p, 1)]
    inputs += [x for p in clips for x in letterboxed(p, FRAMES_PER_CLIP)]
    print(f"int8: calibrating on {len(inputs)} frames of {len(sources)} images and "
          f"{len(clips)} clips", file=sys.stderr)
    directory = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        # Per-channel DequantizeLinear (its `axis`) needs opset 13; the release is opset 11.
        upgraded = os.path.join(tmp, "opset13.onnx")
        onnx.save(version_converter.convert_version(onnx.load(fp32), 13), upgraded)
        prepared = os.path.join(tmp, "prepared.onnx")
        # The model has static shapes: ONNX shape inference suffices (no sympy needed).
        quant_pre_process(upgraded, prepared, skip_symbolic_shape=True)
        result = os.path.join(tmp, "int8.onnx")
        quantize_static(prepared, result, Frames(inputs), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        os.replace(result, out)
    print(f"int8: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
