#!/usr/bin/env bash
# Renders a timeline's HTML export in headless Chromium to a PNG, to look at
# the page (and its chart) as a reader would. Not run in CI.
#
#   scripts/render-timeline-html.sh [JOURNAL] [OUT.png]
#
# Without JOURNAL, records a PM-003-shaped sample incident first.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="${2:-$root/target/timeline.png}"
warroom="${WARROOM:-$root/target/debug/warroom}"
[ -x "$warroom" ] || (cd "$root" && cargo build --quiet --bin warroom)

chromium_bin="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$chromium_bin" ]; then
  echo "chromium is not installed (Debian: apt-get install chromium)" >&2
  exit 4
fi

journal="${1:-}"
if [ -z "$journal" ]; then
  journal="$work/PM-SAMPLE.jsonl"
  day=2026-11-26
  w() { "$warroom" timeline "$@" >/dev/null; }
  w new "$journal" --id PM-SAMPLE --severity SEV-2 --title "Order lock granted twice during GC pause" \
    --started "${day}T09:00:00Z" --actor ingrid
  # metric snapshots, one a minute: contention from 09:05 until the scale-down at 09:40
  python3 - "$journal" "$day" <<'PY'
import json, math, sys
path, day = sys.argv[1], sys.argv[2]
with open(path) as f:
    seq = sum(1 for _ in f)
lines = []
for minute in range(0, 120):
    hh, mm = 9 + minute // 60, minute % 60
    if 5 <= minute <= 40:
        c = round((minute - 4) * (1 + 0.3 * math.sin(minute)), 1)
        e = round(20 + 15 * (minute - 4) + 30 * math.cos(minute / 3), 1)
    elif 41 <= minute <= 45:
        c, e = 1.0, 40.0
    else:
        c, e = 0.0, 2.0
    seq += 1
    lines.append(json.dumps({"seq": seq, "at": f"{day}T{hh:02}:{mm:02}:00.000Z", "actor": "warroom",
                             "kind": "metric", "payload": {"collisions_per_min": c, "errors_per_min": e,
                             "concurrent_holders": 2 if c else 1, "fencing_rejections": 0}}))
with open(path, "a") as f:
    f.write("\n".join(lines) + "\n")
PY
  w alert "$journal" LockConcurrentHolders --state fired --value 2 --label key=order:9927431 --actor warroom --at "${day}T09:12:00Z"
  w mark "$journal" detected --at "${day}T09:14:00Z" --actor bastian
  w note "$journal" "Two pods (pod-7f, pod-3c) hold order:9927431; GC pause 280-400 ms" --at "${day}T09:18:00Z" --actor bastian
  w mark "$journal" declared --at "${day}T09:21:00Z" --actor chen
  step='{"playbook":"lock-contention","run_id":"run-1","step":"scale-to-one","kind":"scale","phase":"applied","target":{"api_version":"apps/v1","kind":"Deployment","namespace":"shop","name":"order-service"},"before":{"spec":{"replicas":8}},"after":{"spec":{"replicas":1}}}'
  w step "$journal" "$step" --actor lena --at "${day}T09:40:00Z"
  w mark "$journal" mitigated --at "${day}T09:46:00Z" --actor lena
  w mark "$journal" resolved --at "${day}T10:55:00Z" --actor ingrid
fi

html="$work/timeline.html"
"$warroom" timeline export "$journal" --format html -o "$html"
"$chromium_bin" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --screenshot="$out" --window-size=1200,1600 "file://$html" 2>/dev/null
echo "$out"
