#!/usr/bin/env bash
# Set anisearch up on a fresh machine and identify a real anime screenshot from the terminal.
# The search goes to the trace.moe emulator on loopback (the real api.trace.moe is used when
# ANISEARCH_TRACEMOE_URL is not set to an emulator). Usage: bash scripts/quickstart.sh [IMAGE]
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install -q -e ".[dev]"

image="${1:-../shared/upstream-samples/tinted-good.jpg}"
port="${ANISEARCH_QUICKSTART_PORT:-18765}"
state="$(mktemp -d)"
trap 'kill "$emulator" 2>/dev/null || true; rm -rf "$state"' EXIT

anisearch emulate tracemoe --port "$port" &
emulator=$!
python - "$port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the trace.moe emulator did not start")
PY

export ANISEARCH_TRACEMOE_URL="http://127.0.0.1:$port" XDG_STATE_HOME="$state" XDG_CACHE_HOME="$state"
anisearch search "$image" -p tracemoe --anilist-info
