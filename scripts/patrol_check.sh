#!/usr/bin/env bash
# Patrol under load: N simulated 1080p cameras through the daemon's patrol slots, one
# status line every 10 s (worst revisit, analysed frames/s, skips by stage, RSS).
#
#   scripts/patrol_check.sh [CAMERAS=1000] [SLOTS=50] [SECONDS=180] [INTERVAL=2s]
#
# Needs a release build (`make build`) and the samples at ../shared/samples (or $SAMPLES).
set -euo pipefail
cd "$(dirname "$0")/.."
cameras=${1:-1000} slots=${2:-50} seconds=${3:-180} interval=${4:-2s}
clip=${SAMPLES:-../shared/samples}/people-walking-1080p-h264.mp4
bin=./target/release/cgbot
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
sim_port=18554 api_port=18080

$bin sim --clip "$clip" --cameras "$cameras" --port $sim_port >"$dir/sim.log" 2>&1 &
{
    echo '[defaults]'
    for i in $(seq 0 $((cameras - 1))); do
        printf '\n[[camera]]\nid = "cam-%d"\nmain_stream = "rtsp://127.0.0.1:%d/cam/%d"\n' "$i" $sim_port "$i"
        printf '[[camera.zone]]\nid = "street"\npolygon = [[0, 0], [1, 0], [1, 1], [0, 1]]\n'
        printf 'rules = [{ event = "illegal_parking" }]\n'
    done
} >"$dir/cams.toml"
cat >"$dir/run.toml" <<EOF
cameras = "cams.toml"
db = "cases.db"
[sampling]
interval = "$interval"
[patrol]
slots = $slots
samples = 1
visit_timeout = "10s"
revisit = "60s"
[api]
listen = "127.0.0.1:$api_port"
EOF
sleep 3
$bin run --config "$dir/run.toml" >"$dir/run.log" 2>&1 &
daemon=$!
metric() { curl -s "http://127.0.0.1:$api_port/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
start=$(date +%s) last=0
while (($(date +%s) - start < seconds)); do
    sleep 10
    analysed=$(metric cgbot_frames_analysed_total)
    rss=$(awk '/VmRSS/ { print int($2 / 1024) }' /proc/$daemon/status)
    printf 't=%3ds  worst revisit %6s s  visits %6s  analysed %5.1f/s  skipped decode %s detect %s  RSS %s MiB\n' \
        $(($(date +%s) - start)) "$(metric cgbot_patrol_revisit_max_seconds)" \
        "$(metric cgbot_patrol_visits_total)" "$(awk -v a="${analysed:-0}" -v b="$last" 'BEGIN { print (a - b) / 10 }')" \
        "$(metric 'cgbot_frames_skipped_total{stage="decode"}')" \
        "$(metric 'cgbot_frames_skipped_total{stage="detect"}')" "$rss"
    last=${analysed:-0}
done
