#!/bin/sh
# Run the Autobahn|Testsuite fuzzing-client cases 1.x-11.x (12.x/13.x are
# permessage-deflate, which iofogd does not offer) against the echo server
# built from iofogd.ws, using the `kosoku` runner (PyPI, MIT, no dependencies).
#
#   scripts/autobahn.sh [extra kosoku args, e.g. -i '6.*']
#
# Creates its own venv (.venv-ab, Python >= 3.10) and writes reports to
# reports/autobahn/.  Prints the verdict counts; exits 1 on any FAILED case.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${AB_VENV:-.venv-ab}
REPORTS=reports/autobahn

if [ ! -x "$VENV/bin/kosoku" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet kosoku
fi

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PYTHON" -m iofogd.ws.echo --port "$PORT" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT INT TERM

# Wait for the server to listen.
i=0
until "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1).close()" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -lt 50 ] || { echo "echo server did not start" >&2; exit 2; }
    sleep 0.1
done

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
status=0
"$VENV/bin/kosoku" "ws://127.0.0.1:$PORT/echo" -x '12.*' -x '13.*' -o "$REPORTS" "$@" || status=$?

# Count the verdicts in index.json ({agent: {case: {"behavior": ...}}}).
verdict=0
"$PYTHON" - "$REPORTS" <<'PY' || verdict=$?
import collections, json, pathlib, sys
found = list(pathlib.Path(sys.argv[1]).rglob("index.json"))
if not found:
    sys.exit("no index.json written")
counts = collections.Counter()
failed = []
for agent in json.loads(found[0].read_text()).values():
    for case, result in agent.items():
        counts[result["behavior"]] += 1
        if result["behavior"] not in ("OK", "INFORMATIONAL", "NON-STRICT"):
            failed.append(f"{case} {result['behavior']}")
print("autobahn:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
for line in sorted(failed):
    print("  ", line)
sys.exit(1 if failed else 0)
PY
[ "$status" -eq 0 ] || echo "kosoku exited with $status" >&2
exit $verdict
