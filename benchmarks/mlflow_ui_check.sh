#!/usr/bin/env bash
# The MLflow UI as a newcomer meets it: serve a store, open the home page in headless Chromium,
# follow the link of the experiment from there (where a click on its name leads, not a typed
# runs URL) and save screenshots of both pages. Debian: apt-get install chromium.
#
#   benchmarks/mlflow_ui_check.sh [STORE.db] [EXPERIMENT] [OUT_DIR]
#   benchmarks/mlflow_ui_check.sh .smoke/mlflow.db metalearn/workspace results/mlflow
#
# Fails if the server does not come up, the home page has no link to the experiment, or the page
# the link opens does not show the training runs (their names end in @<experiment>) with their
# meta-test metric (test_nrmse or test_accuracy).
set -euo pipefail
store=$(realpath "${1:-mlflow.db}")
experiment=${2:-metalearn/workspace}
out=${3:-results/mlflow}
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
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000
       --virtual-time-budget=30000)
mkdir -p "$out"

# 1. the home page, as `make mlflow-ui` opens it; the experiment's link on it
"$browser" "${flags[@]}" --screenshot="$out/1-home.png" "$base/" 2>/dev/null
home=$(mktemp)
"$browser" "${flags[@]}" --dump-dom "$base/" 2>/dev/null >"$home"
link=$(python3 - "$experiment" "$home" <<'EOF'
import html.parser, sys
name, page = sys.argv[1], open(sys.argv[2]).read()
class Links(html.parser.HTMLParser):  # the href of the first <a> whose text is the name
    href = found = None
    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.href = dict(attrs).get("href")
    def handle_data(self, data):
        if self.href and data.strip() == name and self.found is None:
            self.found = self.href
    def handle_endtag(self, tag):
        if tag == "a":
            self.href = None
parser = Links()
parser.feed(page)
print(parser.found or "")
EOF
)
[ -n "$link" ] || { echo "the home page at $base/ has no link to $experiment" >&2; exit 1; }
case $link in http*) url=$link ;; /*) url=$base$link ;; *) url=$base/$link ;; esac

# 2. where the click leads: it must be the runs table, with the meta-test metric
"$browser" "${flags[@]}" --screenshot="$out/2-experiment.png" "$url" 2>/dev/null
page=$("$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null)
grep -q "@${experiment#*/}" <<<"$page" || {
    echo "the experiment's link ($url) shows no training run of $experiment" >&2; exit 1; }
grep -Eq "test_(nrmse|accuracy)" <<<"$page" || {
    echo "the runs at $url show no meta-test metric column" >&2; exit 1; }
echo "home page -> $link: runs table with the meta-test metric; screenshots in $out/"
