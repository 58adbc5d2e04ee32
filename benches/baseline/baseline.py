#!/usr/bin/env python3
"""The "usual Python pipeline" that cgbot is compared with.

One thread per camera reads its RTSP stream with OpenCV (cv2.VideoCapture on the FFmpeg
backend, RTSP over TCP), decoding every frame as cap.read() does, and every --every seconds
of stream time hands the frame to one shared onnxruntime session running YOLOX-Nano
(letterbox, raw grid decode, confidence filter, class-aware NMS). After --warmup seconds it
measures for --duration seconds: analysed frames/s against the wanted rate, CPU cores used
by the process (OS accounting), peak RSS and frame-to-detection latency.

    baseline.py --url-template 'rtsp://127.0.0.1:8554/cam/{i}' --cameras 4 \
        --model models/yolox_nano.onnx --every 2s --warmup 15 --duration 60 [--json]
    baseline.py --url-template ... --model ... --check     (detections on one frame of cam 0)

See README.md beside this file.
"""

import os

# Must be set before the first capture opens; a caller's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

INPUT_SIZE = 416  # YOLOX-Nano: 416×416, BGR, 0–255 unnormalised, pad 114, top-left
STRIDES = (8, 16, 32)
PAD_VALUE = 114
OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 10_000
DEFAULT_FPS = 25.0


def log(msg):
    print(f"baseline: {msg}", file=sys.stderr, flush=True)


def fail(msg, code=2):
    log(f"error: {msg}")
    sys.exit(code)


def parse_duration(text):
    """'2s', '500ms', '1.5', '1m' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|s|m)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2s, 500ms, 1m)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return value


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_labels(model_path):
    """COCO labels from the models/manifest.toml entry of this model file, if there is one."""
    try:
        import tomllib
    except ImportError:
        return None
    candidates = [
        model_path.parent / "manifest.toml",
        Path(__file__).resolve().parents[2] / "models" / "manifest.toml",
    ]
    for manifest in candidates:
        try:
            with open(manifest, "rb") as f:
                entries = tomllib.load(f).get("model", [])
        except (OSError, tomllib.TOMLDecodeError):
            continue
        for entry in entries:
            if entry.get("file") == model_path.name and entry.get("labels"):
                return list(entry["labels"])
    return None


class YoloxDetector:
    """YOLOX-Nano on one onnxruntime CPU session shared by all cameras."""

    def __init__(self, model_path, threads, conf=0.3, nms=0.45):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_path), opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.conf = conf
        self.nms = nms
        # One session, one Run at a time: it already uses every core.
        self.lock = threading.Lock()
        grids, strides = [], []
        for stride in STRIDES:
            n = INPUT_SIZE // stride
            ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
            strides.append(np.full((n * n, 1), stride))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    def preprocess(self, frame):
        h, w = frame.shape[:2]
        r = min(INPUT_SIZE / h, INPUT_SIZE / w)
        nw, nh = int(round(w * r)), int(round(h * r))
        resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        padded = np.full((INPUT_SIZE, INPUT_SIZE, 3), PAD_VALUE, dtype=np.uint8)
        padded[:nh, :nw] = resized
        blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        return blob, r

    def postprocess(self, output, r, width, height):
        """Raw head output (1 × anchors × (5 + C)) -> [(class, score, x1, y1, x2, y2)]."""
        pred = output[0]
        keep = pred[:, 4] >= self.conf  # score = objectness × class ≤ objectness
        pred, grid, stride = pred[keep], self.grid[keep], self.stride[keep]
        if not len(pred):
            return []
        classes = pred[:, 5:].argmax(axis=1)
        scores = pred[:, 4] * pred[np.arange(len(pred)), 5 + classes]
        keep = scores >= self.conf
        pred, grid, stride = pred[keep], grid[keep], stride[keep]
        classes, scores = classes[keep], scores[keep]
        if not len(pred):
            return []
        centres = (pred[:, :2] + grid) * stride / r
        sizes = np.exp(pred[:, 2:4]) * stride / r
        corners = centres - sizes / 2
        xywh = np.concatenate((corners, sizes), axis=1)
        idx = cv2.dnn.NMSBoxesBatched(
            xywh.tolist(), scores.tolist(), classes.tolist(), self.conf, self.nms
        )
        dets = []
        for i in np.asarray(idx).reshape(-1):
            x, y, w, h = (float(v) for v in xywh[i])
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(width)), min(y + h, float(height))
            dets.append((int(classes[i]), float(scores[i]), x1, y1, x2, y2))
        dets.sort(key=lambda d: -d[1])
        return dets

    def detect(self, frame):
        blob, r = self.preprocess(frame)
        with self.lock:
            output = self.session.run(None, {self.input_name: blob})[0]
        return self.postprocess(output, r, frame.shape[1], frame.shape[0])


def open_capture(url):
    cap = cv2.VideoCapture(
        url,
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS],
    )
    if not cap.isOpened():
        cap.release()
        return None
    return cap


class Camera(threading.Thread):
    """Reads (decodes) every frame of one stream; detects on every N-th frame."""

    def __init__(self, index, url, detector, every_s, stop, grab_only=False):
        super().__init__(name=f"cam{index}", daemon=True)
        self.grab_only = grab_only
        self.index = index
        self.url = url
        self.detector = detector
        self.every_s = every_s
        self.stop = stop
        self.opened = threading.Event()
        self.open_error = None
        self.fps = None
        self.interval = None
        # Counters read by the main thread (ints: plain reads are safe under the GIL).
        self.decoded = 0
        self.analysed = 0
        self.read_failures = 0
        self.latencies = []  # (time detections were done, seconds since cap.read() returned)
        self.last_detections = 0

    def run(self):
        cap = open_capture(self.url)
        if cap is None:
            self.open_error = f"cannot open {self.url}"
            self.opened.set()
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not (1.0 <= fps <= 240.0):
            log(f"cam {self.index}: stream reports {fps} fps; assuming {DEFAULT_FPS}")
            fps = DEFAULT_FPS
        self.fps = fps
        self.interval = max(1, round(fps * self.every_s))  # analyse every interval-th frame
        self.opened.set()
        frame_index = 0
        try:
            while not self.stop.is_set():
                analyse = frame_index % self.interval == 0
                if analyse or not self.grab_only:
                    ok, frame = cap.read()
                else:
                    ok, frame = cap.grab(), None  # decodes too, but skips the BGR conversion
                read_at = time.monotonic()
                if not ok:
                    # Stream ended or broke: reconnect, as a long-running script must.
                    self.read_failures += 1
                    cap.release()
                    log(f"cam {self.index}: read failed; reconnecting")
                    cap = None
                    while cap is None and not self.stop.wait(1.0):
                        cap = open_capture(self.url)
                    if cap is None:
                        return
                    frame_index = 0
                    continue
                self.decoded += 1
                if analyse:
                    dets = self.detector.detect(frame)
                    done_at = time.monotonic()
                    self.latencies.append((done_at, done_at - read_at))
                    self.last_detections = len(dets)
                    self.analysed += 1
                frame_index += 1
        finally:
            if cap is not None:
                cap.release()


def machine_cpu():
    """(busy, total) CPU ticks of the whole machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def snapshot(cameras):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "machine": machine_cpu(),
        "wall": time.monotonic(),
        "cpu": usage.ru_utime + usage.ru_stime,
        "decoded": [c.decoded for c in cameras],
        "analysed": [c.analysed for c in cameras],
        "failures": [c.read_failures for c in cameras],
    }


def run_check(args, detector):
    url = args.url_template.format(i=0)
    cap = open_capture(url)
    if cap is None:
        fail(f"cannot open {url}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if 1.0 <= fps <= 240.0 else DEFAULT_FPS
    for _ in range(round(args.check_at * fps) + 1):
        ok, frame = cap.read()
        if not ok:
            fail(f"no frame from {url}")
    cap.release()
    if args.check_save:
        cv2.imwrite(args.check_save, frame)
    dets = detector.detect(frame)
    labels = load_labels(Path(args.model)) or []
    name = lambda c: labels[c] if c < len(labels) else f"class{c}"  # noqa: E731
    if args.json:
        print(json.dumps({
            "url": url,
            "width": frame.shape[1],
            "height": frame.shape[0],
            "detections": [
                {"label": name(c), "score": round(s, 4), "box": [round(v, 1) for v in (x1, y1, x2, y2)]}
                for c, s, x1, y1, x2, y2 in dets
            ],
        }))
    else:
        print(f"check: {url}: {frame.shape[1]}x{frame.shape[0]} frame, {len(dets)} detections")
        for c, s, x1, y1, x2, y2 in dets:
            print(f"  {name(c):<14} {s:.2f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url-template", required=True,
                   help="camera URL with {i} for the camera index, e.g. rtsp://127.0.0.1:8554/cam/{i}")
    p.add_argument("--cameras", type=int, default=1, help="cameras 0..N-1 to read (default 1)")
    p.add_argument("--model", required=True, help="YOLOX-Nano ONNX file (raw grid output)")
    p.add_argument("--every", type=parse_duration, default=2.0,
                   help="analyse one frame per this much stream time (default 2s)")
    p.add_argument("--warmup", type=parse_duration, default=15.0, help="seconds before measuring (default 15)")
    p.add_argument("--duration", type=parse_duration, default=60.0, help="seconds measured (default 60)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    p.add_argument("--conf", type=float, default=0.3, help="minimum detection score (default 0.3)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--grab", action="store_true",
                   help="cap.grab() the frames not analysed instead of cap.read() (still decodes "
                        "every frame, without converting it to BGR); default: cap.read() every frame")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.add_argument("--check", action="store_true",
                   help="detect on the first frame of camera 0, print the detections and exit")
    p.add_argument("--check-at", type=parse_duration, default=0.0, metavar="SECONDS",
                   help="with --check: use the frame this far into the stream (default: the first)")
    p.add_argument("--check-save", metavar="JPG", help="with --check: also save that frame")
    args = p.parse_args()

    if args.cameras < 1:
        fail("--cameras must be at least 1")
    if args.every <= 0 or args.duration <= 0:
        fail("--every and --duration must be positive")
    if "{i}" not in args.url_template and args.cameras > 1:
        fail("--url-template needs {i} to address more than one camera")
    model = Path(args.model)
    if not model.is_file():
        fail(f"model not found: {model}")
    threads = args.threads or cpu_count()
    try:
        detector = YoloxDetector(model, threads, args.conf, args.nms)
    except Exception as e:  # onnxruntime raises its own exception types
        fail(f"cannot load model {model}: {e}")

    if args.check:
        run_check(args, detector)
        return

    stop = threading.Event()
    cameras = [
        Camera(i, args.url_template.format(i=i), detector, args.every, stop, args.grab)
        for i in range(args.cameras)
    ]
    for cam in cameras:
        cam.start()
    for cam in cameras:
        cam.opened.wait()
    broken = [c for c in cameras if c.open_error]
    if broken:
        stop.set()
        for c in broken:
            log(f"error: camera {c.index}: {c.open_error}")
        for c in cameras:
            c.join(timeout=5)
        fail(f"{len(broken)} of {len(cameras)} cameras could not be opened")
    fps = cameras[0].fps
    log(f"{len(cameras)} cameras open at {fps:g} fps, analysing every {cameras[0].interval}th frame; "
        f"{threads} inference threads; warming up {args.warmup:g} s, measuring {args.duration:g} s")

    time.sleep(args.warmup)
    start = snapshot(cameras)
    time.sleep(args.duration)
    end = snapshot(cameras)
    stop.set()

    wall = end["wall"] - start["wall"]
    analysed = [b - a for a, b in zip(start["analysed"], end["analysed"])]
    decoded = [b - a for a, b in zip(start["decoded"], end["decoded"])]
    failures = sum(b - a for a, b in zip(start["failures"], end["failures"]))
    latencies = [
        lat for c in cameras for done, lat in list(c.latencies) if start["wall"] <= done <= end["wall"]
    ]
    cores = (end["cpu"] - start["cpu"]) / wall
    machine_busy = None  # cores busy on the whole machine, this process included
    if start["machine"] and end["machine"] and end["machine"][1] > start["machine"][1]:
        busy = (end["machine"][0] - start["machine"][0]) / (end["machine"][1] - start["machine"][1])
        machine_busy = busy * (os.cpu_count() or 1)
    # One frame in `interval`: 1 / every when fps × every is a whole number of frames.
    wanted = sum(c.fps / c.interval for c in cameras)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {
        "cameras": len(cameras),
        "analysed_fps": round(sum(analysed) / wall, 4),
        "wanted_fps": round(wanted, 4),
        "min_camera_fps": round(min(analysed) / wall, 4),
        "cpu_cores": round(cores, 4),
        "cores_per_camera": round(cores / len(cameras), 4),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 4) if latencies else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 4) if latencies else None,
        "duration_s": round(wall, 3),
        # Beyond the harness's fields: how far decoding kept up with the streams.
        "decoded_fps": round(sum(decoded) / wall, 2),
        "stream_fps": round(sum(c.fps for c in cameras), 2),
        "min_camera_decoded_fps": round(min(decoded) / wall, 2),
        "read_failures": failures,
        "skipped_frames": "grab" if args.grab else "read",
        "machine_cores": os.cpu_count(),
        "machine_busy_cores": round(machine_busy, 3) if machine_busy is not None else None,
    }

    for cam in cameras:
        cam.join(timeout=READ_TIMEOUT_MS / 1000 + 5)
    stuck = [c.index for c in cameras if c.is_alive()]

    if args.json:
        print(json.dumps(result))
    else:
        n = len(cameras)
        # Behind: a camera decoded under 95 % of its stream, or analysed a frame fewer than due.
        behind = any(
            d < 0.95 * c.fps * wall or a < c.fps / c.interval * wall - 1
            for c, d, a in zip(cameras, decoded, analysed)
        )
        behind = "  (cameras falling behind)" if behind else ""
        print(f"usual Python pipeline (OpenCV FFmpeg decode of every frame + onnxruntime YOLOX-Nano), "
              f"{n} camera{'s' if n > 1 else ''}, one frame per {args.every:g} s, measured {wall:.1f} s")
        print(f"  analysed        {result['analysed_fps']:.3f} frames/s of {wanted:.3f} wanted; "
              f"slowest camera {result['min_camera_fps']:.3f}/s{behind}")
        print(f"  decoded         {result['decoded_fps']:.1f} frames/s of {result['stream_fps']:.1f} streamed; "
              f"slowest camera {result['min_camera_decoded_fps']:.1f}/s")
        print(f"  CPU             {cores:.3f} cores, {result['cores_per_camera']:.3f} per camera")
        if machine_busy is not None:
            others = max(machine_busy - cores, 0.0)
            print(f"  machine         {machine_busy:.2f} of {os.cpu_count()} cores busy, "
                  f"{others:.2f} by other processes")
        print(f"  peak RSS        {result['peak_rss_mb']:.0f} MB")
        if latencies:
            print(f"  frame→detections latency p50 {result['latency_p50_s'] * 1000:.1f} ms, "
                  f"p99 {result['latency_p99_s'] * 1000:.1f} ms ({len(latencies)} frames)")
        if failures:
            print(f"  read failures   {failures} (reconnected)")
    sys.stdout.flush()
    if stuck:
        log(f"cameras {stuck} did not stop; exiting anyway")
        os._exit(0)


if __name__ == "__main__":
    main()
