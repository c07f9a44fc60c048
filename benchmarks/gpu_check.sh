#!/usr/bin/env bash
# The farm on a GPU machine, measured in one command (under 8 minutes), written to a JSON report:
#
#   benchmarks/gpu_check.sh [--out gpu_check.json] [--cpu-smoke]
#
# For a machine with an NVIDIA GPU and JAX (TensorFlow need not be there): the workers run Keras on
# LATENTFARM_BACKEND (default: jax where it imports, else tensorflow). It measures
#   1. the machine: nvidia-smi's GPUs, the backend's version and devices;
#   2. benchmarks/gpu_farm.py: dream tiles/s with K = 1, 2, 4 worker processes per GPU
#      (`latentfarm worker --gpus all --per-gpu K` on SQLite and a Redis server of its own: the redis-server on
#      PATH; without one, the embedded default with K jobs in threads, said so in the report), the farm's overhead
#      per tile, and a conv_ae train job's images/s on the farm;
#   3. benchmarks/train_throughput.py: the farm's train job against a plain Keras script on MNIST (with
#      --backend where that script takes it), where mnist.npz is found and time is left.
# Each step has its time limit; a step that fails or runs out of time is recorded as such and the next one runs.
# --cpu-smoke: a small run on simulated GPUs (LATENTFARM_GPUS=0, the framework on the CPU), to check this script
# on a machine without a GPU.
# Python: $PYTHON, else .venv/bin/python, else python3. MNIST: $LATENTFARM_CHECK_MNIST, ../shared/data/mnist.npz or
# ~/.keras/datasets/mnist.npz.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=gpu_check.json
SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --cpu-smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --out FILE, --cpu-smoke)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
START=$(date +%s)
TOTAL=470  # seconds: the whole check stays under 8 minutes
WORK=$(mktemp -d -t lf-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
left() { echo $((TOTAL - ($(date +%s) - START))); }

if [ "$SMOKE" = 1 ]; then
  export LATENTFARM_GPUS=0
fi
if [ -z "${LATENTFARM_BACKEND:-}" ]; then
  if timeout 120 "$PY" -c "import jax" >/dev/null 2>&1; then export LATENTFARM_BACKEND=jax
  else export LATENTFARM_BACKEND=tensorflow; fi
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
echo "gpu_check: backend $LATENTFARM_BACKEND, python $PY, report $OUT$([ "$SMOKE" = 1 ] && echo ', CPU smoke run')"

# 1. the machine
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader >"$WORK/gpus.txt" 2>/dev/null \
  || echo "nvidia-smi: not found or no GPU" >"$WORK/gpus.txt"
timeout 120 "$PY" - >"$WORK/backend.json" 2>"$WORK/backend.err" <<'EOF'
import json, os
backend = os.environ["LATENTFARM_BACKEND"]
if backend == "jax":
    import jax
    info = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
else:
    import tensorflow as tf
    info = {"tensorflow": tf.__version__, "devices": [d.name for d in tf.config.list_physical_devices()]}
print(json.dumps(info))
EOF
echo "  $(cat "$WORK/gpus.txt" | head -4 | tr '\n' ';') $(cat "$WORK/backend.json" 2>/dev/null)"

# 2. dream tiles per K, overhead per tile, train images/s on the farm
FARM_ARGS=()
[ "$SMOKE" = 1 ] && FARM_ARGS+=(--cpu-smoke)
FARM_LIMIT=$(( $(left) - 120 ))
[ "$FARM_LIMIT" -gt 340 ] && FARM_LIMIT=340
timeout -k 10 "$FARM_LIMIT" "$PY" benchmarks/gpu_farm.py "${FARM_ARGS[@]}" --budget $((FARM_LIMIT - 90)) \
  --json "$WORK/farm.json" 2>&1 | tee "$WORK/farm.log"
FARM_RC=${PIPESTATUS[0]}

# 3. the farm's train job against a plain Keras script
MNIST=""
for f in "${LATENTFARM_CHECK_MNIST:-}" ../shared/data/mnist.npz "$HOME/.keras/datasets/mnist.npz"; do
  [ -n "$f" ] && [ -f "$f" ] && { MNIST=$f; break; }
done
TT_RC=skipped
TT_WHY=""
TT_LIMIT=$(( $(left) - 15 ))
if [ -z "$MNIST" ]; then TT_WHY="no mnist.npz"
elif [ "$TT_LIMIT" -lt 60 ]; then TT_WHY="no time left (${TT_LIMIT} s)"
else
  # its farm run reads data from the data directory alone ($KERAS_HOME/datasets: it passes no LATENTFARM_ variable)
  mkdir -p "$WORK/keras/datasets" && cp "$MNIST" "$WORK/keras/datasets/mnist.npz"
  TT_ARGS=(--data "$WORK/keras/datasets/mnist.npz")
  [ "$SMOKE" = 1 ] && TT_ARGS+=(--images 2000 --epochs 2 --rounds 1)
  [ "$SMOKE" = 0 ] && [ "$TT_LIMIT" -lt 200 ] && TT_ARGS+=(--rounds 1)
  HELP=$("$PY" benchmarks/train_throughput.py --help 2>/dev/null)
  grep -q -- '--backend' <<<"$HELP" && TT_ARGS+=(--backend "$LATENTFARM_BACKEND")
  grep -q -- '--json' <<<"$HELP" && TT_ARGS+=(--json "$WORK/train_throughput.json")
  echo "train_throughput.py ${TT_ARGS[*]} (limit ${TT_LIMIT} s)"
  KERAS_HOME="$WORK/keras" timeout -k 10 "$TT_LIMIT" "$PY" benchmarks/train_throughput.py "${TT_ARGS[@]}" >"$WORK/train_throughput.log" 2>&1
  TT_RC=$?
  tail -n 8 "$WORK/train_throughput.log"
fi

# the report
WORK="$WORK" OUT="$OUT" FARM_RC="$FARM_RC" TT_RC="$TT_RC" TT_WHY="$TT_WHY" SMOKE="$SMOKE" START="$START" "$PY" - <<'EOF'
import json, os, time
from pathlib import Path

work = Path(os.environ["WORK"])

def read_json(name):
    try:
        return json.loads((work / name).read_text())
    except (OSError, ValueError):
        return None

def tail(name, n=12):
    try:
        return (work / name).read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []

def outcome(rc):
    return {"0": "ok", "124": "timed out", "137": "killed at its time limit", "skipped": "skipped"}.get(rc, f"failed ({rc})")

farm = read_json("farm.json") or {}
report = {
    "cpu_smoke": os.environ["SMOKE"] == "1",
    "backend": os.environ["LATENTFARM_BACKEND"],
    "backend_info": read_json("backend.json") or {"error": tail("backend.err", 3)},
    "gpus": (work / "gpus.txt").read_text().strip().splitlines(),
    "farm": {"outcome": outcome(os.environ["FARM_RC"]), **farm,
             **({} if os.environ["FARM_RC"] == "0" else {"log_tail": tail("farm.log")})},
    "train_throughput": {"outcome": outcome(os.environ["TT_RC"]), "why": os.environ["TT_WHY"] or None,
                         "result": read_json("train_throughput.json"), "log_tail": tail("train_throughput.log")},
    "seconds": round(time.time() - int(os.environ["START"]), 1),
}
Path(os.environ["OUT"]).write_text(json.dumps(report, indent=2))
print(f"gpu_check: {report['seconds']:.0f} s, farm {report['farm']['outcome']}, train_throughput "
      f"{report['train_throughput']['outcome']}; report {os.environ['OUT']}")
for d in farm.get("dream", []):
    if "tiles_per_s" in d:
        print(f"  K = {d['per_gpu']}: {d['tiles_per_s']} tiles/s, overhead {d['overhead_ms_per_tile']} ms per tile")
if farm.get("train"):
    print(f"  conv_ae train: {farm['train']['images_per_s_steady']} images/s ({farm['train']['dataset']})")
EOF
