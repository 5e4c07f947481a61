#!/usr/bin/env bash
# End-to-end run of the terminal UI as a person drives it, in tmux, on the installed
# real model: open Enclave, ask, pick the model for each engine in the picker (Ctrl+O),
# ask on each, turn documents on (F3) and ask about them, turn them off, quit (Ctrl+Q).
# Each step waits for what the screen must show; on a failure the screen is printed and
# the script exits 1. Screens are written to $OUT (default tui-smoke/).
#
#   scripts/tui_smoke.sh [COLUMNS] [ROWS]          (default 80 24)
#
# Needs: tmux; a home (ENCLAVE_HOME) with smollm2-135m-instruct built for onnx and
# litert and one indexed document collection (tests/slow/test_tui_tmux.py sets it up).
set -euo pipefail
cd "$(dirname "$0")/.."
cols=${1:-80}
rows=${2:-24}
out=${OUT:-tui-smoke}
enclave=${ENCLAVE_BIN:-.venv/bin/enclave}
question=${QUESTION:-"What is the capital of France?"}
docs_question=${DOCS_QUESTION:-"How do I reset the pump pressure?"}
patience=${PATIENCE:-180}  # seconds per step: a loaded 2-core machine is slow
session="enclave-smoke-$$"
command -v tmux >/dev/null || { echo "tmux is not installed (apt-get install tmux)" >&2; exit 2; }
mkdir -p "$out"
# The shell around Enclave writes its exit status to a file: tmux's own record of it
# (#{pane_dead_status}) was sometimes empty after a clean exit (tmux 3.3a).
status_file="$(cd "$out" && pwd)/exit-status"
rm -f "$status_file"
tmux new-session -d -s "$session" -x "$cols" -y "$rows" \
  "$enclave tui -m smollm2-135m-instruct -e onnx; echo \$? > '$status_file'"
tmux set-option -t "$session" remain-on-exit on >/dev/null
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT
step=0

screen() { tmux capture-pane -t "$session" -p; }

# expect NAME PATTERN: wait until the screen shows PATTERN (a grep -E expression).
expect() {
  local name=$1 pattern=$2 waited=0
  step=$((step + 1))
  while ! screen | grep -qE -- "$pattern"; do
    if [ "$(tmux display-message -t "$session" -p '#{pane_dead}')" = "1" ]; then
      echo "FAIL step $step ($name): Enclave exited" >&2; screen >&2; exit 1
    fi
    sleep 0.5
    waited=$((waited + 1))
    if [ "$waited" -gt $((patience * 2)) ]; then
      echo "FAIL step $step ($name): the screen never showed /$pattern/" >&2
      screen | tee "$out/$step-${name// /-}.txt" >&2
      exit 1
    fi
  done
  screen > "$out/$step-${name// /-}.txt"
  echo "ok   step $step: $name"
}

send() { tmux send-keys -t "$session" "$@"; }
say() { tmux send-keys -t "$session" -l "$1"; tmux send-keys -t "$session" Enter; }

expect "opened on onnx" "smollm2-135m-instruct · onnx"
expect "the welcome" "Three things to try"
say "$question"
expect "answered on onnx" "smollm2-135m-instruct · onnx · local · TTFT"

send C-o
expect "the picker lists both engines" "smollm2-135m-instruct · litert"
screen | grep -qE "smollm2-135m-instruct · onnx" || { echo "FAIL: the picker lacks the onnx build" >&2; exit 1; }
send Up Enter   # the litert build is listed just above the onnx one (the current, highlighted)
expect "switched to litert" "smollm2-135m-instruct · litert +ctx"
say "$question"
expect "answered on litert" "smollm2-135m-instruct · litert · local · TTFT"

send C-o
expect "the picker again" "Choose a model and engine"
send Down Enter
expect "back on onnx" "smollm2-135m-instruct · onnx +ctx"

send F3
expect "documents on" "docs: "
say "$docs_question"
expect "answered from the documents" "documents · |nothing relevant"
expect "the sources panel" "Sources"
send F3
expect "documents off" "Documents off"

send C-q
waited=0
until [ "$(tmux display-message -t "$session" -p '#{pane_dead}')" = "1" ]; do
  sleep 0.5; waited=$((waited + 1))
  [ "$waited" -lt 60 ] || { echo "FAIL: Ctrl+Q did not quit" >&2; screen >&2; exit 1; }
done
status="" waited=0
until [ -s "$status_file" ] || [ "$waited" -ge 120 ]; do sleep 0.5; waited=$((waited + 1)); done
[ -s "$status_file" ] && status=$(cat "$status_file")
[ "$status" = "0" ] || { echo "FAIL: Enclave exited with status ${status:-unknown}, not 0" >&2; screen >&2; exit 1; }
echo "ok   quit (status 0)"
