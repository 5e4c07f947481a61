#!/usr/bin/env bash
# Smoke test of the terminal UI as a person sees it: runs `enclave` in tmux on the
# installed default model, types a question, waits for the answer, and prints the
# captured screen (also written to $OUT, default tui-smoke.txt).
#   scripts/tui_smoke.sh ["question"] [COLUMNS] [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
question=${1:-"What is the capital of France?"}
cols=${2:-100}
rows=${3:-30}
out=${OUT:-tui-smoke.txt}
enclave=${ENCLAVE_BIN:-.venv/bin/enclave}
session="enclave-smoke-$$"
command -v tmux >/dev/null || { echo "tmux is not installed (apt-get install tmux)" >&2; exit 2; }
tmux new-session -d -s "$session" -x "$cols" -y "$rows" "$enclave"
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT
sleep "${STARTUP_WAIT:-4}"
tmux send-keys -t "$session" -l "$question"
tmux send-keys -t "$session" Enter
# Wait until the answer footer shows the speed line (the turn has finished), at most 60 s.
for _ in $(seq 1 120); do
  sleep 0.5
  if tmux capture-pane -t "$session" -p | grep -q "tok/s · TTFT"; then break; fi
done
sleep 1
tmux capture-pane -t "$session" -p > "$out"
cat "$out"
tmux send-keys -t "$session" C-q
