"""Runs NVIDIA ModelOpt's PyTorch PTQ (modelopt.torch.quantization, `mtq`) inside ModelOpt's own venv (.venv-modelopt):
quant_peers_torch.py starts it as a script (`python modelopt_torch_runner.py --request REQUEST.json`), never imports
it. Standalone on purpose: only the standard library, numpy, torch, transformers and modelopt (the project's packages
are not in that venv).

The request (JSON) names the Hugging Face checkpoint folder, the calibration and evaluation batches (.npz written by the
project: key `<batch>/<input>`, the project's tokenization and length batching), the configurations (a name -> the mtq
config it starts from, and whether LayerNorm inputs are left unquantized), the device and where to write. For each
configuration the runner deep-copies the FP32 model, calls `mtq.quantize(model, cfg, forward_loop)` with a forward loop
over the calibration batches, and writes the sentence embeddings (attention-mask-weighted mean of last_hidden_state,
as the project's export) of the evaluation batches; the FP32 model's too, so the project can check it is the same
model. The quality numbers are computed by the project, not here.

Device: `cpu` runs ModelOpt's fake quantization (quantize -> dequantize in FP32 around each FP32 op) on the CPU;
`cuda` does the same on a GPU (ModelOpt's CUDA fake-quant kernels where it has them). The cuda path is written but was
not run on the machine this was written on (no GPU there): a missing GPU is an error, never a silent CPU run.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import modelopt_runner  # noqa: E402  (its sibling, standalone too: the standard library only at import)

VERSIONS = ("nvidia-modelopt", "torch", "transformers", "numpy")


def versions() -> dict:
    return modelopt_runner.versions(VERSIONS)


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]


def load_batches(path: str) -> list[dict]:
    import numpy as np

    with np.load(path) as z:
        batches: dict[int, dict] = {}
        for k in z.files:
            i, name = k.split("/", 1)
            batches.setdefault(int(i), {})[name] = z[k]
    return [batches[i] for i in sorted(batches)]


def embed(model, batches: list[dict], device: str) -> list:
    """sentence_embedding per batch (FP32 numpy): mean of last_hidden_state over the attention mask (clamped)."""
    import torch

    out = []
    with torch.no_grad():
        for b in batches:
            t = {k: torch.as_tensor(v, device=device) for k, v in b.items()}
            hidden = model(**t).last_hidden_state
            mask = t["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu().numpy())
    return out


def mtq_config(mtq, base: str, linear_only: bool) -> dict:
    """A deep copy of mtq.<base>; linear_only: every quantizer of an nn.LayerNorm turned off (ModelOpt's INT8/FP8
    defaults also quantize LayerNorm inputs; ours quantize linear layers only)."""
    cfg = copy.deepcopy(getattr(mtq, base))
    if linear_only:
        cfg["quant_cfg"] = list(cfg["quant_cfg"]) + [{"quantizer_name": "*", "parent_class": "nn.LayerNorm", "enable": False}]
    return cfg


def quantizers(model) -> dict:
    """Enabled quantizers by the class of the module that holds them and their kind, e.g. {'QuantLinear.input_quantizer': 36};
    those of BERT's pooler (its output is not the mean-pooled sentence embedding) apart, as 'pooler QuantLinear...'."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    mods = dict(model.named_modules())
    out: dict[str, int] = {}
    for name, m in mods.items():
        if isinstance(m, TensorQuantizer) and m.is_enabled:
            parent, _, kind = name.rpartition(".")
            key = ("pooler " if parent.startswith("pooler.") else "") + f"{type(mods.get(parent)).__name__}.{kind}"
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ModelOpt PyTorch PTQ runs (started by enc2triton.quant_peers_torch)")
    ap.add_argument("--request", help="the request JSON written by quant_peers_torch.py")
    ap.add_argument("--probe", action="store_true", help="print the versions as JSON (and whether modelopt.torch.quantization "
                    "and transformers import) and exit")
    a = ap.parse_args(argv)
    if a.probe:
        found = versions()
        try:
            import modelopt.torch.quantization  # noqa: F401
            import transformers  # noqa: F401
        except Exception as e:  # noqa: BLE001
            found["import_error"] = one_line(e)
        print(json.dumps(found))
        return 0
    if not a.request:
        ap.error("--request is required")
    req = json.load(open(a.request))
    record = {"versions": versions(), "device": req["device"], "configs": {}}
    status = 0
    try:
        import numpy as np
        import torch
        import modelopt.torch.quantization as mtq
        from transformers import AutoModel

        device = req["device"]
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device gpu: torch in ModelOpt's venv sees no CUDA GPU (a CPU run was not substituted)")
        record["gpu"] = torch.cuda.get_device_name() if device == "cuda" else None
        torch.manual_seed(0)
        model = AutoModel.from_pretrained(req["model_dir"], attn_implementation="eager").eval().float().to(device)
        calib, evals = load_batches(req["calibration"]), load_batches(req["evaluation"])
        record["calibration_batches"], record["evaluation_batches"] = len(calib), len(evals)
        arrays = {f"fp32/{i}": e for i, e in enumerate(embed(model, evals, device))}

        def forward_loop(m):
            with torch.no_grad():
                for b in calib:
                    m(**{k: torch.as_tensor(v, device=device) for k, v in b.items()})

        for name, c in req["configs"].items():
            rec = record["configs"][name] = {"base": c["base"], "linear_only": c["linear_only"]}
            t0 = time.perf_counter()
            try:
                cfg = mtq_config(mtq, c["base"], c["linear_only"])
                rec["algorithm"] = cfg.get("algorithm")
                q = mtq.quantize(copy.deepcopy(model), cfg, forward_loop)
                rec["seconds"] = round(time.perf_counter() - t0, 1)
                rec["quantizers"] = quantizers(q)
                arrays.update({f"{name}/{i}": e for i, e in enumerate(embed(q, evals, device))})
                del q
            except Exception as e:  # noqa: BLE001 - one configuration's failure is its record's one line
                status = 1
                rec["error"] = one_line(e)
                rec["traceback"] = traceback.format_exc()[-4000:]
                rec["seconds"] = round(time.perf_counter() - t0, 1)
        np.savez(req["output"], **arrays)
    except BaseException as e:  # noqa: BLE001 - every failure becomes the record's one line
        status = 1
        record["error"] = one_line(e)
        record["traceback"] = traceback.format_exc()[-4000:]
    json.dump(record, open(req["record"], "w"), indent=1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
