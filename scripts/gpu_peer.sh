#!/usr/bin/env bash
# infinity-emb (the serving peer, src/enc2triton/measure/serving_peers.py) on the GPU machine: no network, image Python 3.12.
#
# Here, on a machine with PyPI:
#   bash scripts/gpu_peer.sh download    # .whl-peer/*.whl (cp312 manylinux) and one archive of them, .whl-peer/peer-wheels.tar
#   then stage the archive with the project's files: add  --file .whl-peer/peer-wheels.tar  to the stage.py command of
#   scripts/README.md. An archive, not wheels: gpu_env.sh installs every staged *.whl into the project's site, and
#   transformers 4.57 there would replace the image's 5.17 for the whole project.
# There, in the same warm machine:
#   source scripts/gpu_env.sh
#   source scripts/gpu_peer.sh install   # /tmp/peersite; exports ENC2TRITON_PEER_PYTHON/_PYTHONPATH for serving_peers
#   bash scripts/gpu_peer.sh run [MODEL_DIR] [serving_peers options]   # start, check embeddings, sweep, stop
#
# What the image lacks or has in a version infinity-emb 0.0.78 cannot use, and only the peer's process sees
# (ENC2TRITON_PEER_PYTHONPATH is put first on its path alone; the project keeps the image's packages):
#   transformers 4.57.6          the image's 5.17 removed tokenizer.batch_encode_plus, which infinity's warm-up calls
#   sentence-transformers 3.4.1  infinity pins <4 (and 3.x needs transformers<5)
#   tokenizers 0.22.2, huggingface-hub 0.36.2   transformers 4.57 refuses at import the image's 0.23.2 and 1.33
#   fastapi 0.141.1 (0.142+ needs opentelemetry-api), starlette 1.10.0, pydantic 2.14.4, pydantic-core 2.50.5,
#   annotated-types 0.8.0, typing-inspection 0.4.5, uvicorn 0.32.1, httptools 0.9.0, orjson 3.13.0,
#   prometheus-fastapi-instrumentator 8.1.0    not in the image
#   typing-extensions 4.16.0     pydantic 2.14 needs >= 4.16
#   click 8.1.8, typer 0.12.5, rich 13.9.4      infinity pins click<8.2, typer<0.13, rich<14
# Not carried: numpy (infinity pins <2, but runs on numpy 2: same embeddings, checked with 2.4.6), torch, safetensors,
# scipy, scikit-learn, pillow, requests, anyio, h11, uvloop, pyyaml, prometheus-client (the image's).
PEER_WHEELS="infinity-emb==0.0.78 sentence-transformers==3.4.1 transformers==4.57.6 tokenizers==0.22.2
huggingface-hub==0.36.2 fastapi==0.141.1 starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
typing-inspection==0.4.5 typing-extensions==4.16.0 uvicorn==0.32.1 httptools==0.9.0 orjson==3.13.0
prometheus-fastapi-instrumentator==8.1.0 click==8.1.8 typer==0.12.5 rich==13.9.4"
PEER_SITE=${PEER_SITE:-/tmp/peersite}

case "${1:-}" in
download)
    W=.whl-peer
    mkdir -p "$W"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
        -d "$W" $PEER_WHEELS || exit 1
    (cd "$W" && rm -f peer-wheels.tar && tar cf peer-wheels.tar *.whl && ls -l *.whl peer-wheels.tar)
    ;;
install)
    # sourced: the exports stay in the caller's shell
    if [ ! -f "$PEER_SITE/.ready" ]; then
        T=$(mktemp -d)
        tar xf "${DEVSTAGE_FILES:?source scripts/gpu_env.sh first}/peer-wheels.tar" -C "$T" &&
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$PEER_SITE" "$T"/*.whl &&
        touch "$PEER_SITE/.ready"
        rm -rf "$T"
    fi
    export ENC2TRITON_PEER_PYTHON=$(command -v python3) ENC2TRITON_PEER_PYTHONPATH=$PEER_SITE
    PYTHONPATH=$PEER_SITE python3 -c 'import infinity_emb, transformers, sentence_transformers, numpy, torch
print("peer: infinity-emb", infinity_emb.__version__, "transformers", transformers.__version__, "sentence-transformers",
      sentence_transformers.__version__, "numpy", numpy.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available())'
    ;;
run)
    shift
    MODEL=${1:-.cache/random/distilbert-base-uncased}
    [ $# -gt 0 ] && shift
    [ -n "${ENC2TRITON_PEER_PYTHONPATH:-}" ] || { echo "source scripts/gpu_peer.sh install first" >&2; exit 1; }
    if [ ! -f "$MODEL/config.json" ] && [ "$MODEL" = .cache/random/distilbert-base-uncased ]; then
        python3 -c 'from enc2triton.export import models; print(models.make_random("distilbert-base-uncased"))'
    fi
    # the speed model (random weights: its cosine vs FP32 is checked too, and means agreement, not quality); the
    # bundled all-MiniLM-L6-v2 for quality:  bash scripts/gpu_peer.sh run "$(python3 -c 'from enc2triton.export import models; print(models.bundled_model_dir())')"
    python3 -m enc2triton.serving_peers --model "$MODEL" --device gpu "$@"
    ;;
*)
    echo "usage: bash scripts/gpu_peer.sh download | source scripts/gpu_peer.sh install | bash scripts/gpu_peer.sh run [MODEL_DIR] [options]" >&2
    ;;
esac
