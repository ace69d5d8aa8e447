#!/usr/bin/env bash
# The GPU checks, in one run of under 10 minutes on a machine with a CUDA GPU:
#   1. tests/test_cuda.py (fp32 reproduces the release on the GPU, bf16 stays close, fit runs on CUDA);
#   2. a paper-budget `ablations.run msm_mtm --epochs 2` on the built-in synthetic set, 4 trials sharing the GPU;
#   3. `ablations.evaluate` of that experiment on the test split, and its test-split report;
#   4. what ran on the GPU and how fast, read back from the trials' records (mmn.folders.RESULT).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR [ablations.run options ...]]
#
# OUT_DIR defaults to a temporary folder; the experiment stays there. Options after it go to ablations.run (for
# example --gpus-per-trial 0 --set model.embed_dim=16 with GPU_CHECK_ON_CPU=1, to try the script on a CPU first).
# Run from the repository root, with the package installed (pip install -e ".[test]" and a CUDA build of torch).
set -euo pipefail

out="${1:-$(mktemp -d /tmp/gpucheck.XXXX)}"
shift || true
mkdir -p "$out"
export MMN_CACHE="$out/cache" RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS
python - <<'EOF'
import os, torch
if not torch.cuda.is_available():
    assert os.environ.get("GPU_CHECK_ON_CPU"), "no CUDA device visible: this script checks the GPU paths"
    print(f"no GPU: trying the script on the CPU (torch {torch.__version__})")
else:
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

echo "== 1. tests/test_cuda.py"
python -m pytest -q tests/test_cuda.py

echo "== 2. paper budget, 2 epochs, 4 trials sharing the GPU (0.25 each)"
started=$(date +%s)
python -m ablations.run msm_mtm --budget paper --epochs 2 --seeds 1 --gpus-per-trial 0.25 --cpus-per-trial 2 \
    --storage "$out/runs" --name gpu_check "$@"
echo "experiment wall time: $(( $(date +%s) - started )) s"

echo "== 3. evaluate on the test split, then the test-split report"
python -m ablations.evaluate "$out/runs/gpu_check" --split test
python -m analysis.report "$out/runs/gpu_check" --split test

echo "== 4. what ran where"
python - "$out/runs/gpu_check" <<'EOF'
import json, sys
from pathlib import Path
from mmn.folders import RESULT
for path in sorted(Path(sys.argv[1]).rglob(RESULT)):
    record = json.loads(path.read_text())
    if "config_hash" not in record:
        continue
    hw, tp = record.get("hardware", {}), record.get("throughput") or {}
    print(f"{record.get('variant_key', '?'):<40} {record['status']:<9} device {hw.get('device')} "
          f"({hw.get('gpu', 'no GPU')}), resources {record.get('resources')}, "
          f"train {tp.get('train_clips_per_s')} clips/s, eval {tp.get('eval_clips_per_s')} clips/s, "
          f"peak memory {record.get('peak_memory_mib')} MiB, wall {record.get('wall_time_s')} s")
EOF
