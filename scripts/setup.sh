#!/usr/bin/env bash
# One-time setup on a fresh Debian machine: system packages, the ONNX Runtime shared
# library (from the `onnxruntime` PyPI wheel; ort's own download host is not used) and the
# default model. Safe to re-run: each step is skipped when its result is already there.
#
#   ORT_VERSION   ONNX Runtime version matching the `ort` API we build against (1.31.1)
#   ORT_WHEEL     `onnxruntime` (CPU) or `onnxruntime-gpu` (adds the CUDA/TensorRT providers)
#   CGBOT_MODEL_MIRROR  directory holding model files to link instead of downloading
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=${ORT_VERSION:-1.31.1}
ORT_WHEEL=${ORT_WHEEL:-onnxruntime}
ORT_DIR=.ort

# The interop tests (tests/interop.rs) run GStreamer's RTSP server from the system Python
# (tests/interop/gst_rtsp_server.py): python3-gi and the GstRtspServer typelib, plus the
# elements it uses, qtdemux/rtph264pay/rtph265pay (plugins-good) and h264parse/h265parse
# (plugins-bad). Both plugin sets are dependencies of the server library anyway; they are
# named so that the list says what the script needs.
gst_apt=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)

# They also run VLC's RTSP server (tests/common/mod.rs, VlcServer: `cvlc --sout
# '#rtp{sdp=rtsp://…}'`), which refuses RTP over TCP and writes SDPs retina misreads:
# cvlc, and the demuxers, packetisers and stream output it uses.
vlc_apt=(vlc-bin vlc-plugin-base)

# The web console's end-to-end tests (tests/common/browser.rs) drive a real headless
# Chromium over WebDriver: Debian's browser and its matching chromedriver, from the same
# source package so their versions always agree (no browser download at test time).
# fonts-wqy-microhei (below) renders the pages' Chinese.
browser_apt=(chromium chromium-driver)

# The store's tests run every case-store test on PostgreSQL too (src/store/test_db.rs):
# a throw-away cluster from Debian's initdb/pg_ctl (/usr/lib/postgresql/*/bin), run as the
# package's `postgres` user when the tests run as root.
pg_apt=(postgresql)

need_apt=()
for pkg in libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libclang-dev clang \
    pkg-config ffmpeg fonts-dejavu-core fonts-wqy-microhei python3 python3-venv python3-pip python3-yaml unzip curl \
    "${gst_apt[@]}" "${vlc_apt[@]}" "${browser_apt[@]}" "${pg_apt[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

lib="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$lib" ] || [ "$(cat "$ORT_DIR/wheel" 2>/dev/null)" != "$ORT_WHEEL" ]; then
  echo "setup: fetching $ORT_WHEEL==$ORT_VERSION from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The shared library inside is independent of the Python version; pin one so the
  # download does not depend on the local interpreter.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$tmp" "$ORT_WHEEL==$ORT_VERSION"
  rm -rf "$ORT_DIR" && mkdir -p "$ORT_DIR"
  unzip -q -j -o "$tmp"/*.whl 'onnxruntime/capi/libonnxruntime*.so*' 'onnxruntime/capi/libonnxruntime_providers_*.so' -d "$ORT_DIR" 2>/dev/null \
    || unzip -q -j -o "$tmp"/*.whl 'onnxruntime/capi/libonnxruntime*.so*' -d "$ORT_DIR"
  ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
  echo "$ORT_WHEEL" > "$ORT_DIR/wheel"
fi
echo "setup: ONNX Runtime at $(readlink -f "$ORT_DIR/libonnxruntime.so")"

python3 scripts/fetch_models.py
