"""Generate tiny synthetic ONNX models for cgbot's Rust tests (opset 17, IR version 8).

Usage: python scripts/make_test_models.py OUTDIR

tiny_yolov8.onnx
    Input `images` float32 [batch, 3, 64, 64] (symbolic batch dim), output `output0`
    float32 [batch, 6, 3]: the ultralytics YOLOv8 layout 1x(4+C)xA with C=2 classes and
    A=3 anchors (rows cx, cy, w, h in input pixels, then class scores; no objectness).
    Every batch item equals the constant tensor B below, except that the class-1 score of
    anchor 1 is mean(images[n]) / 255, so tests can check batch items are not mixed up.
    Anchor 2 overlaps anchor 0 with the same class, so NMS must drop it.
    Tests the YOLOv8 output adapter, NMS and batching paths.

not_a_detector.onnx
    Input `images` float32 [1, 3, 64, 64], output `output` float32 [1, 10] (the image mean
    repeated). Tests that an unexpected output shape gives a clear error.

Needs only `onnx` and `numpy`; if onnxruntime is installed the models are also run and
checked. The output is deterministic.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#                 anchor0 anchor1 anchor2
B = np.array([[[16.0, 40.0, 17.0],   # cx
               [16.0, 40.0, 16.0],   # cy
               [8.0, 16.0, 8.0],     # w
               [8.0, 16.0, 8.0],     # h
               [0.9, 0.05, 0.7],     # class 0 score
               [0.1, 0.0, 0.0]]],    # class 1 score (anchor 1 replaced by image mean / 255)
             dtype=np.float32)
MASK = np.zeros_like(B)
MASK[0, 5, 1] = 1.0


def save(graph, path):
    model = helper.make_model(graph, producer_name="cgbot-make_test_models",
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def tiny_yolov8(path):
    const = lambda name, arr: numpy_helper.from_array(np.asarray(arr), name)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape_n11"], ["mean_n11"]),
        helper.make_node("Div", ["mean_n11", "c255"], ["score"]),
        helper.make_node("Mul", ["score", "mask"], ["masked"]),
        helper.make_node("Add", ["masked", "base"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolov8",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 6, 3])],
        initializer=[const("shape_n11", np.array([-1, 1, 1], np.int64)),
                     const("c255", np.array(255.0, np.float32)),
                     const("mask", MASK), const("base", B * (1 - MASK))])
    save(graph, path)


def not_a_detector(path):
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape_11"], ["mean_11"]),
        helper.make_node("Tile", ["mean_11", "repeats"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "not_a_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(np.array([1, 1], np.int64), "shape_11"),
                     numpy_helper.from_array(np.array([1, 10], np.int64), "repeats")])
    save(graph, path)


def verify(outdir):
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed; skipped runtime check")
        return
    run = lambda name, x: ort.InferenceSession(
        os.path.join(outdir, name), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    imgs = np.stack([np.full((3, 64, 64), 51.0), np.full((3, 64, 64), 204.0)]).astype(np.float32)
    out = run("tiny_yolov8.onnx", imgs)
    assert out.shape == (2, 6, 3), out.shape
    for n, want in enumerate((0.2, 0.8)):
        assert np.isclose(out[n, 5, 1], want, atol=1e-6), out[n, 5, 1]
        assert np.array_equal(out[n] * (1 - MASK[0]), B[0] * (1 - MASK[0]))
    print(f"ort {ort.__version__}: tiny_yolov8 batch of 2 (fill 51, 204) -> shape {out.shape}, "
          f"anchor1/class1 = {out[0, 5, 1]:.6f}, {out[1, 5, 1]:.6f}; all other values equal B")
    out = run("not_a_detector.onnx", np.full((1, 3, 64, 64), 10.0, np.float32))
    assert out.shape == (1, 10) and np.allclose(out, 10.0), out
    print(f"ort {ort.__version__}: not_a_detector -> shape {out.shape}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    tiny_yolov8(os.path.join(outdir, "tiny_yolov8.onnx"))
    not_a_detector(os.path.join(outdir, "not_a_detector.onnx"))
    print(f"wrote {outdir}/tiny_yolov8.onnx and {outdir}/not_a_detector.onnx")
    verify(outdir)


if __name__ == "__main__":
    main()
