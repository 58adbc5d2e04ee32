"""Reference YOLOX-Nano detector (Python + onnxruntime, CPU) for cgbot's Rust tests.

Letterbox to the top-left corner (pad 114, BGR, 0-255), run the model, decode the
raw 1x3549x85 output on strides 8/16/32, keep score = obj * max class score >= conf,
apply greedy class-aware NMS and map boxes back to the original image (clipped).

yolox_nano.json in this directory was regenerated with (from /work/main):

    python tests/reference/make_reference.py --model ../shared/models/yolox_nano.onnx \
        --conf 0.25 --nms 0.45 ../shared/samples/dog-bicycle-truck.jpg \
        ../shared/samples/street-bus-car.jpg ../shared/samples/street-person.jpg \
        > tests/reference/yolox_nano.json

Requires: numpy, opencv-python-headless, onnxruntime.
"""
import argparse
import json
import os

import cv2
import numpy as np
import onnxruntime as ort

LABELS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
]
SIZE = 416
STRIDES = (8, 16, 32)


def letterbox(img):
    h, w = img.shape[:2]
    r = min(SIZE / h, SIZE / w)
    resized = cv2.resize(img, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((SIZE, SIZE, 3), 114, dtype=np.uint8)
    canvas[: int(h * r), : int(w * r)] = resized
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), r


def decode(out):
    grids, strides = [], []
    for s in STRIDES:
        n = SIZE // s
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")  # x varies fastest
        grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy = (out[:, :2] + grid) * stride
    wh = np.exp(out[:, 2:4]) * stride
    return np.concatenate([xy - wh / 2, xy + wh / 2], 1)


def iou(box, boxes):
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(boxes) - inter)


def nms(boxes, scores, classes, thr):
    keep = []
    for c in np.unique(classes):
        idx = np.where(classes == c)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while idx.size:
            keep.append(idx[0])
            idx = idx[1:][iou(boxes[idx[0]], boxes[idx[1:]]) <= thr]
    return sorted(keep, key=lambda i: -scores[i])


def detect(sess, path, conf, nms_thr):
    img = cv2.imread(path)
    if img is None:
        raise SystemExit(f"cannot read image {path}")
    h, w = img.shape[:2]
    blob, r = letterbox(img)
    out = sess.run(None, {"images": blob})[0][0]
    if out[:, 4:].min() < 0 or out[:, 4:].max() > 1:  # this export already applies sigmoid
        out[:, 4:] = 1 / (1 + np.exp(-out[:, 4:]))
    boxes = decode(out)
    classes = out[:, 5:].argmax(1)
    scores = out[:, 4] * out[:, 5:].max(1)
    mask = scores >= conf
    boxes, scores, classes = boxes[mask], scores[mask], classes[mask]
    dets = []
    for i in nms(boxes, scores, classes, nms_thr):
        b = boxes[i] / r
        b = np.clip(b, 0, [w, h, w, h])
        dets.append({"label": LABELS[classes[i]], "class": int(classes[i]),
                     "score": round(float(scores[i]), 4),
                     "box": [round(float(v), 4) for v in b]})
    return {"image": os.path.basename(path), "width": w, "height": h, "detections": dets}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--nms", type=float, default=0.45)
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    result = {"model": os.path.basename(a.model), "conf": a.conf, "nms": a.nms,
              "images": [detect(sess, p, a.conf, a.nms) for p in a.images]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
