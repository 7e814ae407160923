#!/usr/bin/env bash
# One run of dlkern on a GPU machine: build with the CUDA kernels for the GPU
# present, run the tests marked `cuda`, then the quick CUDA benchmark.
#
# Offline: it needs the CUDA toolkit (nvcc), CMake >= 3.26 and a python3 with
# NumPy, pybind11, pytest, torch and CuPy (ninja, rich and threadpoolctl are
# used when present); nothing is installed or downloaded. The build is CMake's,
# in place (build/device, extension modules into python/dlkern), so the Python
# environment is left as it was.
#
# Logs and results go to $OUT when it is set, else bench/results/. Every step
# has a time limit, so the run ends within 8 minutes; a failed step does not
# stop the steps that can still run, and each step's status is printed last
# (and kept in summary.txt). Exit status 0 when every step passed.
#
#   bench/device.sh
#   OUT=/tmp/out PYTHON=/opt/venv/bin/python3 DLKERN_CUDA_ARCHITECTURES=90 bench/device.sh
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/bench/results}
export DEVICE_ROOT=$root DEVICE_OUT=$out
export DEVICE_PY=${PYTHON:-python3}
export DEVICE_ARCH=${DLKERN_CUDA_ARCHITECTURES:-native}  # native: this machine's GPU only, the fastest build
export PYTHONPATH=$root/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
command -v nvcc >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
mkdir -p "$out"

# Seconds per step; with 5 s of grace each, the whole run stays under 8 minutes.
limit_build=180 limit_info=20 limit_tests=90 limit_bench=150

build() {
  local generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S "$DEVICE_ROOT" -B "$DEVICE_ROOT/build/device" "${generator[@]}" \
    -DDLKERN_CUDA=ON -DDLKERN_TESTS=ON -DDLKERN_DEV_INPLACE=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="$DEVICE_ARCH" \
    -DPython_EXECUTABLE="$(command -v "$DEVICE_PY")" \
    -Dpybind11_DIR="$("$DEVICE_PY" -m pybind11 --cmakedir)"
  cmake --build "$DEVICE_ROOT/build/device" --parallel "$(nproc)"
}

gpu_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  nvcc --version | tail -n 2
  "$DEVICE_PY" - <<'PY'
import numpy, torch, cupy
print(f"numpy {numpy.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}, "
      f"available: {torch.cuda.is_available()}), cupy {cupy.__version__}")
PY
  "$DEVICE_PY" -m dlkern info
}

cuda_tests() {
  cd "$DEVICE_ROOT"
  local rc=0
  # The emulator's runs of the same tests are CI's; here only the GPU's.
  "$DEVICE_PY" -m pytest -m cuda -k "not emu" -q -p no:cacheprovider tests || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "no tests marked cuda were collected"
    return 0
  fi
  return "$rc"
}

bench() {
  cd "$DEVICE_ROOT"
  "$DEVICE_PY" -m dlkern bench --device cuda --quick \
    --json "$DEVICE_OUT/bench-cuda.json" --markdown "$DEVICE_OUT/bench-cuda.md"
}

export -f build gpu_info cuda_tests bench

summary=()
failed=0
# step NAME LIMIT: the function NAME under `timeout` (which ends its whole
# process group), output in $out/NAME.log, its status added to the summary.
step() {
  local name=$1 limit=$2 log=$out/$1.log start=$SECONDS rc=0 state
  echo "== $name (limit ${limit}s), log: $log"
  timeout --kill-after=5 "$limit" bash -c "set -euo pipefail; $name" >"$log" 2>&1 || rc=$?
  case $rc in
    0) state=ok ;;
    124 | 137) state="TIMEOUT (${limit}s)" ;;
    *) state="FAILED (exit $rc)" ;;
  esac
  if [ "$rc" -ne 0 ]; then failed=$((failed + 1)); fi
  summary+=("$(printf '%-10s %-18s %4ss  %s' "$name" "$state" $((SECONDS - start)) "$log")")
  return "$rc"
}

if step build "$limit_build"; then
  step gpu_info "$limit_info" || true
  step cuda_tests "$limit_tests" || true
  step bench "$limit_bench" || true
else
  tail -n 30 "$out/build.log"
  for name in gpu_info cuda_tests bench; do
    failed=$((failed + 1))
    summary+=("$(printf '%-10s %s' "$name" "skipped: the build failed")")
  done
fi

# The benchmark's output (its table), then one line per step.
if [ -f "$out/bench.log" ]; then
  echo
  tail -n 40 "$out/bench.log"
fi
{
  echo
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
  echo "dlkern device run, $(date -u +%Y-%m-%dT%H:%M:%SZ), ${gpu:-no GPU found by nvidia-smi}"
  printf '%s\n' "${summary[@]}"
  if [ -f "$out/bench-cuda.md" ]; then echo "results: $out/bench-cuda.md and .json"; fi
  if [ "$failed" -eq 0 ]; then echo "all steps passed"; else echo "$failed step(s) did not pass"; fi
} | tee "$out/summary.txt"
[ "$failed" -eq 0 ]
