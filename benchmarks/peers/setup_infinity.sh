#!/usr/bin/env bash
# infinity (infinity-emb 0.0.78, its optimum/ONNX engine) as a peer for the server benchmark, in a venv of
# its own so its pins (numpy<2, transformers, optimum 1.x) never touch ours.
#
#   setup_infinity.sh VENV                              # create or update the venv
#   setup_infinity.sh VENV MODEL_DIR VIEW_DIR           # + a view of MODEL_DIR that infinity loads as we do
#   setup_infinity.sh VENV MODEL_DIR VIEW_DIR PORT      # + start it on 127.0.0.1:PORT, wait until ready,
#                                                       #   embed with curl, print the RSS, stop it
#
# Then serve with benchmarks/peers/serve_infinity.sh VENV VIEW_DIR PORT; it is ready when
# `GET /health` answers 200 (uvicorn answers only once the model is loaded and warmed up).
# Idempotent: a venv that already holds the pinned versions is kept; the view is rewritten.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:?usage: setup_infinity.sh VENV [MODEL_DIR VIEW_DIR [PORT]]}
python=${PYTHON:-python3}

# [optimum,server] and not [all]: [all] adds sentence-transformers, ctranslate2, vision and audio stacks and
# a CUDA torch of several GB. optimum resolves to 2.x (optimum-onnx): optimum 1.x, which infinity 0.0.78
# was written against, fails to import with torch 2.13 (a private torch.onnx symbol it needs is gone).
requirements=("infinity-emb[optimum,server]==0.0.78")
stamp="$venv/.fastembed-native-peer"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${requirements[*]}" ]; then
  "$python" -m venv --clear "$venv"  # a venv without the stamp may hold other pins: start it anew
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first (optimum requires it): this pin resolves to the CPU wheel on this machine; elsewhere set
  # TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu so pip does not fetch a CUDA build.
  "$venv/bin/python" -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  "$venv/bin/python" -m pip install -q "${requirements[@]}"
  "$venv/bin/python" -c "import infinity_emb, optimum.onnxruntime, torch; assert not torch.cuda.is_available()"
  echo "${requirements[*]}" > "$stamp"
fi
echo "infinity venv: $venv ($("$venv/bin/python" -m pip list 2>/dev/null |
  awk '$1 ~ /^(infinity.emb|infinity_emb|optimum|onnxruntime|transformers|torch)$/ {printf "%s %s, ", $1, $2}'))"

[ $# -ge 3 ] || exit 0
model=$(cd "$2" && pwd)
view=$3

# The view: infinity 0.0.78 + optimum only load a local model when the id is "." and model.onnx sits at
# its root (it passes the file's path where optimum wants a bare file name), so the view holds a symlink
# to MODEL_DIR's onnx/model.onnx (the same file, not a copy) and copies of the small files. Copies, not
# symlinks: infinity's optimizer writes next to what it loads and must never write into our model cache.
onnx="$model/onnx/model.onnx"
[ -f "$onnx" ] || onnx="$model/model.onnx"
[ -f "$onnx" ] || { echo "setup_infinity: no onnx/model.onnx or model.onnx in $model" >&2; exit 1; }
identity="$(cd "$(dirname "$onnx")" && pwd)/$(basename "$onnx") $(wc -c < "$onnx") $(date -r "$onnx" +%s)"
if [ ! -f "$view/.source" ] || [ "$(cat "$view/.source")" != "$identity" ]; then
  rm -rf "$view"  # a new model: infinity's optimized copy of the old one (under .hf) must go too
fi
mkdir -p "$view"
find "$model" -maxdepth 2 -type f \( -name '*.json' -o -name '*.txt' -o -name '*.model' \) -not -path '*/onnx/*' |
  while read -r file; do
    mkdir -p "$view/$(dirname "${file#"$model"/}")"
    cp "$file" "$view/${file#"$model"/}"
  done
if [ -f "$onnx.onnx_data" ] || [ -f "$(dirname "$onnx")/model.onnx_data" ]; then
  # Weights in an external data file: ONNX Runtime refuses data that resolves outside the model's own
  # folder, which a symlinked graph's does, so graph and data are copied (once per model) instead.
  cp "$onnx" "$view/model.onnx"
  cp "$(dirname "$onnx")/model.onnx_data" "$view/model.onnx_data"
else
  ln -sfn "$onnx" "$view/model.onnx"
fi
echo "$identity" > "$view/.source"

# infinity truncates at config.json's max_position_embeddings (512 for MiniLM) instead of the model's own
# max_seq_length (256, sentence_bert_config.json), so long texts would be embedded differently from
# sentence-transformers and cost it twice the tokens. The view says 256: same work, same vectors.
# (Only the tokenizer reads it; the ONNX graph is the one exported with the real 512 positions.)
# INFINITY_AS_SHIPPED=1 keeps the 512, to measure infinity as its users run it on this model.
if [ "${INFINITY_AS_SHIPPED:-0}" != 1 ] && [ -f "$view/sentence_bert_config.json" ]; then
  "$venv/bin/python" - "$view" <<'EOF'
import json, sys
from pathlib import Path

view = Path(sys.argv[1])
max_seq_length = json.loads((view / "sentence_bert_config.json").read_text())["max_seq_length"]
config = json.loads((view / "config.json").read_text())
config["max_position_embeddings"] = min(config.get("max_position_embeddings", max_seq_length), max_seq_length)
(view / "config.json").write_text(json.dumps(config, indent=2))
print(f"view truncates at {config['max_position_embeddings']} tokens (the model's max_seq_length)")
EOF
fi
# infinity optimizes the graph on first load (ORT transformer fusions, level 99) and keeps the result in
# its cache, but its call passes OptimizationConfig(optimize_with_onnxruntime_only=...), which optimum 2
# rejects: it logs "Optimization failed" and serves the plain graph. So the view gets the optimized graph
# infinity means to make (same optimizer, same settings less that argument), where infinity finds it on
# start ("Optimized model found"). INFINITY_AS_SHIPPED=1 skips this too.
if [ "${INFINITY_AS_SHIPPED:-0}" != 1 ]; then
  (cd "$view" && HF_HOME="$view/.hf" HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 "$venv/bin/python" - <<'EOF'
from pathlib import Path

from huggingface_hub.constants import HUGGINGFACE_HUB_CACHE
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
from optimum.onnxruntime.configuration import OptimizationConfig

# Where infinity 0.0.78 looks (utils_optimum.optimize_model): HF cache / infinity_onnx / provider / model id.
target = Path(HUGGINGFACE_HUB_CACHE) / "infinity_onnx" / "CPUExecutionProvider"
if not list(target.glob("**/*_optimized.onnx")):
    model = ORTModelForFeatureExtraction.from_pretrained(".", file_name="model.onnx", provider="CPUExecutionProvider")
    config = OptimizationConfig(optimization_level=99, optimize_for_gpu=False, fp16=False)
    ORTOptimizer.from_pretrained(model).optimize(optimization_config=config, save_dir=target, one_external_file=True)
print("infinity's optimized graph:", ", ".join(str(p) for p in target.glob("**/*_optimized.onnx")))
EOF
  )
fi
echo "view for infinity: $view -> $onnx"
echo "serve: $here/serve_infinity.sh $venv $view PORT   (ready: GET http://127.0.0.1:PORT/health is 200)"

[ $# -ge 4 ] || exit 0
port=$4
log="$view/.smoke.log"
"$here/serve_infinity.sh" "$venv" "$view" "$port" > "$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
started=$SECONDS
until curl -fsS "http://127.0.0.1:$port/health" > /dev/null 2>&1; do
  if ! kill -0 "$server" 2>/dev/null; then
    tail -30 "$log" >&2
    echo "setup_infinity: infinity exited before it was ready (log: $log)" >&2
    exit 1
  fi
  if ((SECONDS - started > 300)); then
    echo "setup_infinity: infinity not ready after 300 s (log: $log)" >&2
    exit 1
  fi
  sleep 0.5
done
echo "ready after $((SECONDS - started)) s"
curl -fsS "http://127.0.0.1:$port/v1/embeddings" -H 'Content-Type: application/json' \
  -d '{"model": "'"$(basename "$view")"'", "input": ["hello world", "flag embedding"]}' |
  "$venv/bin/python" -c '
import json, sys
reply = json.load(sys.stdin)
rows = [r["embedding"] for r in reply["data"]]
print(f"POST /v1/embeddings: {len(rows)} vectors of {len(rows[0])}, usage {reply['"'"'usage'"'"']}")'
# The server is the serve script's exec'd python: its RSS, after warm-up and one request.
echo "RSS: $(($(ps -o rss= -p "$server") / 1024)) MB"
