#!/usr/bin/env bash
# Source on the GPU machine (device tool) after the staged wheels arrived (see scripts/README.md):
#   source scripts/gpu_env.sh
# Installs the small staged wheels into /tmp/devstage/site (tritonclient with perf_analyzer, fvcore, the bundled
# model...), builds a numpy<2 environment for Triton 2.51's Python backend stub (the image has numpy 2, which
# corrupts the stub's BYTES tensors) that otherwise sees the image's torch, transformers and onnxruntime-gpu, and
# exports what the commands need. NVLink multicast stays off wherever NCCL or PyTorch might use it.
set -e
source /tmp/devstage/env.sh
F=$DEVSTAGE_FILES
SITE=/tmp/devstage/site
if [ ! -f /tmp/stubenv/.ready ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" $(ls "$F"/*.whl | grep -v '/numpy-')
    python3 -m venv --without-pip /tmp/stubenv
    STUB_SITE=$(/tmp/stubenv/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    python3 -m pip install -q --no-index --no-deps --target "$STUB_SITE" "$F"/numpy-1.26.4-*.whl
    # after its own numpy<2: the image's packages (torch, transformers, onnxruntime-gpu) and the staged ones
    printf '%s\n%s\n' "$(python3 -c 'import site; print(site.getsitepackages()[0])')" "$SITE" > "$STUB_SITE/zz_image.pth"
    touch /tmp/stubenv/.ready
fi
export ENC2TRITON_STUB_PYTHON_BIN=/tmp/stubenv/bin
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export PY=python3 DEVICE=gpu HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
set +e
