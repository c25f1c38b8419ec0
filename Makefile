# The three commands a user needs: make setup, make all, make test (see README.md).
SHELL := /bin/bash
PY ?= .venv/bin/python
export PY  # the shell entry points (run_tests.sh, serve.sh, convert_to_trt.sh) use the same Python
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))
MODEL ?= distilbert-base-uncased
DEVICE ?= cpu

.PHONY: setup peers modelopt all test test-fast export variants trt repository serve stop quality perf bench report clean help

help:
	@echo "make setup   install everything into .venv and check tritonserver + perf_analyzer start"
	@echo "make all     export -> variants -> trt -> repository -> quality -> perf -> bench -> report (MODEL=..., DEVICE=cpu|gpu)"
	@echo "make test    the test suite (real tritonserver, perf_analyzer and ONNX Runtime)"
	@echo "make peers   the serving peer infinity-emb in its own venv .venv-peers (python -m enc2triton.serving_peers)"
	@echo "make modelopt  the quantization peer NVIDIA ModelOpt in its own venv .venv-modelopt (python -m enc2triton.quant_peers, ... .quant_peers_torch)"

# pip runs only when requirements.txt changed; the start check always runs (a few seconds).
setup: .venv/.installed
	$(PY) -m enc2triton.setup_check

.venv/.installed: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -c "import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()['purelib'], 'enc2triton.pth').write_text('$(CURDIR)/src\n')"
	touch $@

# infinity-emb cannot share .venv (requirements-peers.txt says why): its own venv, found by serving_peers.py
peers: .venv-peers/.installed

.venv-peers/.installed: requirements-peers.txt
	test -x .venv-peers/bin/python || python3 -m venv .venv-peers
	.venv-peers/bin/python -m pip install -q --upgrade pip
	.venv-peers/bin/python -m pip install -q -r requirements-peers.txt
	touch $@

# NVIDIA ModelOpt's ONNX PTQ cannot share .venv either (requirements-modelopt.txt says why): its own venv, found by
# quant_peers.py and quant_peers_torch.py; modelopt itself --no-deps (its [onnx] extra pulls GBs of CUDA packages)
MODELOPT ?= nvidia-modelopt==0.47.0
modelopt: .venv-modelopt/.installed

.venv-modelopt/.installed: requirements-modelopt.txt
	test -x .venv-modelopt/bin/python || python3 -m venv .venv-modelopt
	.venv-modelopt/bin/python -m pip install -q --upgrade pip
	.venv-modelopt/bin/python -m pip install -q -r requirements-modelopt.txt
	.venv-modelopt/bin/python -m pip install -q --no-deps $(MODELOPT)
	.venv-modelopt/bin/python -c "import modelopt.onnx.quantization, modelopt.torch.quantization, transformers"
	touch $@

# a noisy level is measured and marked unstable, not a failure; a real failure (crash, dead server): report, then make fails
all: export variants trt repository quality
	@status=0; $(MAKE) --no-print-directory perf || status=$$?; $(MAKE) --no-print-directory bench report && exit $$status

export:
	$(PY) torch2onnx.py --model $(MODEL)

# on a GPU the fp16 variant is the fused graph (its FP16 kernels exist on CUDA only), and the PyTorch engines
# (torch_fp16/fp8/int8, compiled once here) are built from the same checkpoint
variants:
	$(PY) -m enc2triton.quantize
	if [ "$(DEVICE)" = gpu ]; then $(PY) -m enc2triton.optimize && $(PY) -m enc2triton.torch_build; fi

trt:
	./convert_to_trt.sh

repository:
	$(PY) -m enc2triton.repository --if-stale --device $(DEVICE)

serve: repository
	./serve.sh start

stop:
	./serve.sh stop

quality: repository
	$(PY) client.py

perf: repository
	./run_tests.sh

# on a GPU: CUDA graphs, the peers (what a user would run instead) and per-kernel profiles in the same process
bench:
	$(PY) -m enc2triton.bench --device $(DEVICE) $(if $(filter gpu,$(DEVICE)),--cuda-graph --peers --profile)

report:
	$(PY) -m enc2triton.report

# two workers, one test file each (module-scoped servers stay in one worker): most tests wait on a server or perf_analyzer
test:
	$(PY) -m pytest -q -ra -n 2 --dist loadfile

test-fast:
	$(PY) -m pytest -q -ra -n 2 --dist loadfile -m "not slow and not server"

clean:
	rm -rf artifacts model_repository REPORT.md logs/*.json logs/*.md logs/*.csv logs/*.png logs/*.log logs/perf_inputs logs/*.incomplete logs/*.partial logs/batch16
