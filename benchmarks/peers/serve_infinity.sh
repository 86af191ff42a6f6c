#!/usr/bin/env bash
# Serves a view made by setup_infinity.sh with infinity's optimum (ONNX) engine on 127.0.0.1:PORT, batch 32,
# mean pooling, CPU, OpenAI routes under /v1 (POST /v1/embeddings, GET /v1/models). The model's name is
# the view's folder name. Ready when `GET /health` answers 200. Runs in the foreground (exec): stop it
# with SIGTERM/SIGINT to this process.
#
#   serve_infinity.sh VENV VIEW_DIR PORT [more infinity_emb v2 options]
set -euo pipefail
venv=$(cd "${1:?usage: serve_infinity.sh VENV VIEW_DIR PORT}" && pwd)
view=$(cd "${2:?usage: serve_infinity.sh VENV VIEW_DIR PORT}" && pwd)
port=${3:?usage: serve_infinity.sh VENV VIEW_DIR PORT}
shift 3

cd "$view" # --model-id . (see setup_infinity.sh: the only local form infinity 0.0.78 + optimum load)
# No telemetry, no hub lookups (the model is local), and infinity's caches (its optimized graph included)
# inside the view rather than in the working directory or ~/.cache.
export DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 HF_HUB_OFFLINE=1
export HF_HOME="$view/.hf" INFINITY_HOME="$view/.infinity"
# --pooling-method mean: the optimum engine's "auto" means CLS pooling, wrong for MiniLM (mean).
exec "$venv/bin/infinity_emb" v2 \
  --model-id . \
  --served-model-name "$(basename "$view")" \
  --engine optimum \
  --device cpu \
  --batch-size 32 \
  --pooling-method mean \
  --host 127.0.0.1 \
  --port "$port" \
  --url-prefix /v1 \
  --log-level warning \
  "$@"
