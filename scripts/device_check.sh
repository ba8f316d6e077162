#!/usr/bin/env bash
# The accelerator check, one prepared script (<= 8 min): on a GPU machine with JAX preinstalled and no network, it
# runs the dream / V / M benchmarks (with --scaling), the sharding tests and a 20-generation τ sweep, and writes
# every record as JSON (plus the scaling curves as PNG) under OUTDIR, with OUTDIR/device_check.json summing up
# what ran (exit code and seconds of each step, the versions, the device).
#
#   scripts/device_check.sh OUTDIR             # on the accelerator (paper sizes)
#   WM_JAX_DEVICE_CHECK_SMALL=1 JAX_PLATFORMS=cpu scripts/device_check.sh /tmp/dc   # the CPU rehearsal (tiny sizes;
#   on a shared 2-core VM add WM_JAX_DEVICE_CHECK_CAP_SCALE=4 WM_JAX_DEVICE_CHECK_BUDGET_S=1500)
#
# Packages the accelerator's image lacks (evosax, gymnasium, tensorboardX, ...) travel as wheels in .whl/
# (scripts/device_wheels.sh downloads them here); when .whl/ holds any, they are installed to /tmp/wm_jax_site
# with --no-index --no-deps first. Steps run in order of importance, each under a time cap (times
# WM_JAX_DEVICE_CHECK_CAP_SCALE, default 1), and the whole under WM_JAX_DEVICE_CHECK_BUDGET_S (default 450 s): a
# step that would start with less than 20 s left is skipped and recorded as skipped. A failing step is recorded and the next one runs; the script's exit code is the number of
# failed steps (0: all passed).
# The sharding tests run on forced host devices (JAX_PLATFORMS=cpu, tests/conftest.py): one GPU cannot hold the
# four devices they compare, and what they check here is the image's JAX release.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:?usage: scripts/device_check.sh OUTDIR}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
BUDGET=${WM_JAX_DEVICE_CHECK_BUDGET_S:-450}
CAP_SCALE=${WM_JAX_DEVICE_CHECK_CAP_SCALE:-1}  # multiplies every step's cap (a slow or shared rehearsal machine)
SMALL=${WM_JAX_DEVICE_CHECK_SMALL:-0}
PY=${PYTHON:-python3}
START=$SECONDS
STEPS="$OUTDIR/steps.tsv"
: >"$STEPS"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/wm_jax_site \
    .whl/*.whl || exit 99
  export PYTHONPATH="/tmp/wm_jax_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# step NAME CAP_S COMMAND...: run it under min(CAP_S, time left), log to OUTDIR/NAME.log, record rc and seconds.
step() {
  local name=$1 cap=$(($2 * CAP_SCALE))
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < 20)); then
    printf '%s\tskipped\t0\n' "$name" >>"$STEPS"
    echo "== $name: skipped (${left} s left)"
    return
  fi
  ((cap > left)) && cap=$left
  echo "== $name (cap ${cap} s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$cap" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$STEPS"
  echo "   rc $rc, $((SECONDS - t0)) s"
  tail -n 3 "$OUTDIR/$name.log"
}

BENCH=("$PY" -m wm_jax.cli bench)

if [[ $SMALL == 1 ]]; then  # the CPU rehearsal: every command line of the real check, at toy sizes
  TC=(--env takecover --hidden 16 --pop 8 --trials 4 --steps 40 --chunk 10 --repeats 1)
  CR=(--env carracing --hidden 16 --pop 8 --trials 4 --steps 40 --chunk 10 --repeats 1)
  DSCALE=(--widths 64,128 --steps 20 --chunk 10 --hidden 16 --trials 4 --repeats 1)
  SWEEP=(--pop 8 --trials 4 --hidden 16 --steps 200 --chunk 10)
  MDN=(--batch 8 --seq-len 20 --hidden 16 --min-seconds 0.2 --rounds 1)
  MSCALE=(--widths 8,16 --model-args "--seq-len 20 --hidden 16 --min-seconds 0.2 --rounds 1")
  VAE=(--batch 8 --seconds 0.5)
  VSCALE=(--widths 8 --model-args "--seconds 0.5")
  SHARD_K="sharded_equals_unsharded or test_sharded_step_equals_single_device"
else  # the paper's sizes (bench defaults); the sweeps go from 64 up, x4 a step, until memory or time ends them
  TC=(--env takecover --repeats 2)
  CR=(--env carracing --repeats 2)
  DSCALE=(--widths 64,256,1024,4096,16384,65536,262144,1048576 --steps 500 --repeats 1 --max-seconds 15)
  SWEEP=()
  MDN=(--min-seconds 1 --rounds 2)
  MSCALE=(--widths 64,256,1024,4096,16384 --max-seconds 10)
  VAE=(--seconds 1)
  VSCALE=(--widths 64,256,1024,4096,16384 --max-seconds 10)
  SHARD_K="sharded or single_device or unroll"
fi
TAUS=0.1,0.5,1,1.15,1.3
ENDS=0.00015,0.00015,0.001,0.001,0.001

step environment 60 "$PY" -c "import jax, json; from wm_jax.sysinfo import conditions; \
print(json.dumps(conditions(), indent=1)); print(jax.devices())"
step peak 60 "${BENCH[@]}" peak --out "$OUTDIR/peak.json"
step dream_takecover 90 "${BENCH[@]}" dream "${TC[@]}" --out "$OUTDIR/dream_takecover.json"
# es.unroll 1/2/4/8, timed in turn in one process (on CPU unrolling did not pay: benchmarks/dream_unroll_*.json)
step dream_unroll_takecover 120 "${BENCH[@]}" dream "${TC[@]}" --no-profile --unrolls 1,2,4,8 \
  --out "$OUTDIR/dream_unroll_takecover.json"
# the τ sweep: 5 τ x 20 generations in one compiled call, episodes ending as the cpu sweep's did, compacted
step tau_sweep_20 120 "${BENCH[@]}" dream --env takecover "${SWEEP[@]}" --taus $TAUS --end-prob $ENDS --compact 8 \
  --compact-ratio 0.75 --generations 20 --repeats 1 --out "$OUTDIR/tau_sweep_20.json"
step dream_scaling_takecover 150 "${BENCH[@]}" dream --scaling --env takecover "${DSCALE[@]}" \
  --out "$OUTDIR/dream_scaling_takecover.json"
step mdnrnn 60 "${BENCH[@]}" mdnrnn "${MDN[@]}" --out "$OUTDIR/mdnrnn.json"
step vae 60 "${BENCH[@]}" vae "${VAE[@]}" --out "$OUTDIR/vae.json"
step sharding_tests 150 env JAX_PLATFORMS=cpu "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
  --junitxml="$OUTDIR/sharding_tests.xml" tests/test_es.py tests/test_mdnrnn.py tests/test_vae.py \
  tests/test_dream_unroll.py -k "$SHARD_K"
step mdnrnn_scaling 90 "${BENCH[@]}" scaling --model mdnrnn "${MSCALE[@]}" --out "$OUTDIR/mdnrnn_scaling.json"
step vae_scaling 90 "${BENCH[@]}" scaling --model vae "${VSCALE[@]}" --out "$OUTDIR/vae_scaling.json"
step dream_carracing 60 "${BENCH[@]}" dream "${CR[@]}" --out "$OUTDIR/dream_carracing.json"
step dream_scaling_carracing 120 "${BENCH[@]}" dream --scaling --env carracing "${DSCALE[@]}" \
  --out "$OUTDIR/dream_scaling_carracing.json"

"$PY" - "$OUTDIR" "$BUDGET" "$SMALL" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, sec = line.split("\t")
    steps.append({"step": name, "rc": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                  "seconds": int(sec)})
try:
    from wm_jax.sysinfo import conditions
    cond = conditions()
except Exception as e:  # noqa: BLE001 -- the summary is written whatever broke
    cond = {"error": repr(e)}
summary = {"budget_s": int(sys.argv[2]), "small": sys.argv[3] == "1", "steps": steps,
           "failed": [s["step"] for s in steps if s["rc"] not in (0, None)],
           "skipped": [s["step"] for s in steps if s["skipped"]], **cond}
(out / "device_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: summary[k] for k in ("failed", "skipped")}))
EOF
echo "device check: $((SECONDS - START)) s, records in $OUTDIR"
exit "$(awk -F'\t' '$2 != "0" && $2 != "skipped"' "$STEPS" | wc -l)"
