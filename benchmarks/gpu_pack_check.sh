#!/usr/bin/env bash
# The trial-pack checks of issue #17 on a CUDA GPU, torch only (no Ray needed), in under 10 minutes:
#   1. the CUDA tests: a pack equals its members run alone (tests/test_cuda.py), fit_pack trains on CUDA with amp
#      and validates all members in one fused forward (tests/test_fit_pack.py, whose CPU tests then run on CUDA too);
#   2. benchmarks/pack_throughput.py: aggregate training throughput of packs of 1-16 members, fp32 and bf16, for three
#      implementations of the members' linear maps (bmm, the default; bmm_out, whose products write straight into
#      the members' channel layout; bmm_mm, bmm_out with each member's weight gradient an mm of its own), against one
#      solo trial and the release structure;
#   3. how many members of the paper model mmn.pack.members_that_fit lets one pack have on this GPU;
#   4. benchmarks/compile_step.py: short solo fits of the paper model, eager against train.compile=on (CUDA graphs),
#      bf16 then fp32, a line as each fit ends; capped at 175 s (compiling the paper model took about 3 minutes in
#      pack_throughput.py --cuda-graphs, so the later lines may be cut: run it alone for all four). train.compile's
#      CUDA test, alone: python -m pytest -q tests/test_compile.py -m cuda
#
#   bash benchmarks/gpu_pack_check.sh
set -euo pipefail
python -c "import torch; print(f'GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}')"

echo "== 1. CUDA tests"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_pack.py tests/test_fit_pack.py || true

echo "== 2. pack throughput"
python -m benchmarks.pack_throughput --device cuda --members 1,2,4,8,16 --seconds 1.5 --linear bmm,bmm_out,bmm_mm

echo "== 3. members of the paper model that fit"
python - <<'PY'
import torch
from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.pack import members_that_fit
for amp in (False, True):
    config = apply_overrides(with_budget(RunConfig(), "paper"), {"train.amp": amp})
    print(f"paper model, batch {config.train.batch_size}, amp {amp}: {members_that_fit(config, torch.device('cuda'))} "
          f"members within 80% of the free memory")
PY

echo "== 4. solo fit, eager against train.compile=on"
timeout 175 python -m benchmarks.compile_step --device cuda --epochs 3 --max-steps 20 --precisions bf16,fp32 \
  || echo "compile step: stopped (status $?); the lines above are what it measured"
