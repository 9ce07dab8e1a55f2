#!/usr/bin/env bash
# The MLflow UI as a user sees it: serve a store, open its experiment in headless Chromium
# (Debian: apt-get install chromium) and save a screenshot of the runs table.
#
#   benchmarks/mlflow_ui_check.sh [STORE.db] [EXPERIMENT] [OUT.png]
#   benchmarks/mlflow_ui_check.sh .smoke/mlflow.db metalearn/workspace results/mlflow_ui.png
#
# Fails if the server does not come up, the experiment is missing or the page has no run names.
set -euo pipefail
store=$(realpath "${1:-mlflow.db}")
experiment=${2:-metalearn/workspace}
out=${3:-results/mlflow_ui.png}
port=${PORT:-5077}
mlflow=${VENV:-.venv}/bin/mlflow
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome) || {
    echo "no chromium on PATH (Debian: apt-get install chromium)" >&2; exit 1; }

"$mlflow" server --backend-store-uri "sqlite:///$store" --host 127.0.0.1 --port "$port" \
    --workers 1 >/tmp/mlflow_ui_check.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 120); do curl -sf "$base/health" >/dev/null && break; sleep 0.5; done
name=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$experiment")
id=$(curl -sf "$base/api/2.0/mlflow/experiments/get-by-name?experiment_name=$name" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["experiment"]["experiment_id"])')
url="$base/#/experiments/$id/runs"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000
       --virtual-time-budget=30000)
mkdir -p "$(dirname "$out")"
"$browser" "${flags[@]}" --screenshot="$out" "$url" 2>/dev/null
# the rendered page (after its scripts ran) must list the runs: their names end in @<experiment>
"$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null | grep -q "@${experiment#*/}" || {
    echo "the runs table of $experiment at $url shows no run" >&2; exit 1; }
echo "$url: runs table rendered; screenshot $out"
