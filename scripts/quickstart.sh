#!/usr/bin/env bash
# Set anisearch up on this machine and identify a real anime screenshot from the terminal.
#
#   bash scripts/quickstart.sh [IMAGE]
#
# 1. installs anisearch with every extra and the test tools (pip, into the active Python environment, or
#    into a .venv made here when there is no `python` or it is the system's externally managed one);
# 2. installs redis-server (the tests of the shared Redis ledger need it) when missing and allowed (root
#    with apt-get), or says what to run;
# 3. starts the trace.moe and AniList emulators on loopback and searches IMAGE (default: trace.moe's demo
#    frame in examples/), printing Kokoro Connect, episode 5, 19:29 (the title from the AniList emulator).
#    Nothing leaves this machine.
set -euo pipefail
# IMAGE is the caller's: a relative path is resolved against the directory the script was run from, before
# the script moves to the repository (an absolute path, an http(s) URL and - for standard input stay as is).
if [ -n "${1:-}" ]; then
    case "$1" in
        /* | - | [Hh][Tt][Tt][Pp]://* | [Hh][Tt][Tt][Pp][Ss]://*) ;;
        *) set -- "$PWD/$1" "${@:2}" ;;
    esac
fi
cd "$(dirname "$0")/.."

if [ -t 2 ]; then say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }; else say() { printf '==> %s\n' "$*" >&2; }; fi

# The Python to install into: the active one, unless there is none called `python`, it is older than 3.11,
# or it is the system's "externally managed" one (PEP 668: Debian, Ubuntu), which pip refuses; then a .venv
# made here with python3. The tests (ANISEARCH_QUICKSTART_NO_INSTALL) run it where everything is installed.
py=python
usable() {  # Python 3.11 or newer, with pip
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && "$1" -m pip --version >/dev/null 2>&1
}
if [ -z "${ANISEARCH_QUICKSTART_NO_INSTALL:-}" ] && {
    ! command -v python >/dev/null 2>&1 \
        || ! python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || python - <<'PY' 2>/dev/null
import sys, sysconfig
from pathlib import Path
managed = Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()
sys.exit(0 if sys.prefix == sys.base_prefix and managed else 1)
PY
}; then
    system="$(command -v python3 || command -v python || true)"
    if [ -z "$system" ] || ! "$system" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "anisearch needs Python 3.11 or newer: install it (python3 --version says which you have)" >&2
        exit 2
    fi
    if [ -e .venv ] && ! usable .venv/bin/python; then
        say "the .venv here has no Python 3.11+ with pip: making it again"
        rm -rf .venv
    fi
    if [ ! -e .venv ]; then
        say "making a virtual environment in .venv ($system -m venv .venv)"
        if ! "$system" -m venv .venv || ! usable .venv/bin/python; then
            rm -rf .venv
            echo "could not make a virtual environment with pip: install python3-venv (Debian, Ubuntu), or" \
                "activate one of your own and run this again" >&2
            exit 2
        fi
    fi
    py=.venv/bin/python
fi

if [ -z "${ANISEARCH_QUICKSTART_NO_INSTALL:-}" ]; then  # set by the tests, which run in an installed checkout
    say "installing anisearch (pip install -e '.[dev]')"
    "$py" -m pip install -q --disable-pip-version-check -e ".[dev]"
fi

if command -v redis-server >/dev/null 2>&1; then
    say "redis-server is installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing redis-server (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
else
    say "redis-server is missing: the Redis ledger tests need it. Install it, then run the tests:"
    echo "    sudo apt-get install redis-server      # Debian, Ubuntu" >&2
    echo "    brew install redis                     # macOS" >&2
fi

image="${1:-examples/tinted-good.jpg}"
port="${ANISEARCH_QUICKSTART_PORT:-$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
state="$(mktemp -d)"
emulator=""
titles=""
cleanup() {
    if [ -n "$emulator" ]; then kill "$emulator" 2>/dev/null || true; fi
    if [ -n "$titles" ]; then kill "$titles" 2>/dev/null || true; fi
    rm -rf "$state"
}
trap cleanup EXIT

if ! "$py" -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
    echo "port $port is taken: set ANISEARCH_QUICKSTART_PORT to a free port" >&2  # search nothing else
    exit 2
fi
anilist_port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
say "starting the trace.moe emulator on 127.0.0.1:$port and the AniList emulator on 127.0.0.1:$anilist_port"
"$py" -m anisearch emulate tracemoe --port "$port" >"$state/tracemoe.out" &
emulator=$!
"$py" -m anisearch emulate anilist --port "$anilist_port" >"$state/anilist.out" &
titles=$!
# Each emulator prints its URL once it holds its port: wait for that (another program that took the port
# meanwhile would answer a connection too, but not print it), or stop if an emulator could not start.
"$py" - "$emulator" "$state/tracemoe.out" "$port" "$titles" "$state/anilist.out" "$anilist_port" <<'PY'
import os, socket, sys, time
from pathlib import Path

def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())  # exited, not yet reaped

deadline = time.monotonic() + 30
args = sys.argv[1:]
for pid, out, port in zip(args[::3], args[1::3], args[2::3]):
    while True:
        if "http://" in Path(out).read_text():  # the port is this emulator's: is it serving yet?
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
                break
            except OSError:
                pass
        if not alive(int(pid)):
            sys.exit("an emulator could not start (see above)")
        if time.monotonic() > deadline:
            sys.exit(f"the emulator on port {port} did not start within 30 s")
        time.sleep(0.05)
PY

say "anisearch search $image -p tracemoe"
# A throwaway state and cache directory: the demo spends no quota of yours and leaves nothing behind.
export ANISEARCH_TRACEMOE_URL="http://127.0.0.1:$port" ANISEARCH_STATE_DIR="$state/state" \
    ANISEARCH_CACHE_DIR="$state/cache" ANISEARCH_ANILIST_URL="http://127.0.0.1:$anilist_port" \
    ANISEARCH_METADATA=anilist
"$py" -m anisearch search "$image" -p tracemoe
if [ "$py" = python ]; then
    say "done: 'python -m pytest -n auto --cov' runs the tests; 'anisearch -h' lists the commands"
else
    say "done: '. .venv/bin/activate', then 'python -m pytest -n auto --cov' runs the tests; 'anisearch -h' lists the commands"
fi
