"""Generate model_repository/ from artifacts/manifest.json: tokenizer, one model per variant, one
ensemble per variant. Configs are protobuf messages (model_config_pb2) written with text_format, so
they are valid by construction; names, shapes and batch limits all come from the manifest/spec.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from enc2triton.core import cli, host, io, spec, tools
from enc2triton.core.io import StageError

MODELS_SRC = Path(__file__).parent / "triton_models"
# What a Python-backend model folder holds besides its artifact: the runner and the engine modules it imports.
METRICS_FILE = (MODELS_SRC / "stage_metrics.py", "enc2triton_stage_metrics.py")  # beside every Python-backend model
RUNTIME_SRC = Path(__file__).parent.parent / "runtime"  # the engines, which the runner imports by these flat names
RUNNER_FILES = ((MODELS_SRC / "runner.py", "model.py"), (RUNTIME_SRC / "engines.py", "enc2triton_engines.py"),
                (RUNTIME_SRC / "torch_model.py", "enc2triton_torch_model.py"), (RUNTIME_SRC / "qgemm.py", "enc2triton_qgemm.py"),
                METRICS_FILE)
FUSED_FILES = RUNNER_FILES + ((MODELS_SRC / "tokenizer.py", "enc2triton_tokenizer.py"),)  # + the tokenizer's files


def _tensor(cls, name: str, dtype, dims):
    return cls(name=name, data_type=dtype, dims=list(dims))


def _params(config: mc.ModelConfig, **values) -> None:
    for k, v in values.items():
        config.parameters[k].string_value = str(v)


def _instances(kind: str, count: int, gpus: list[int]) -> list[mc.ModelInstanceGroup]:
    if kind == "gpu":  # one group per GPU, so every visible GPU gets its own instances
        return [mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=count, gpus=[g]) for g in (gpus or [0])]
    return [mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=count)]


def _batching(serving: spec.Serving, max_batch: int) -> mc.ModelDynamicBatching:
    return mc.ModelDynamicBatching(
        # an export with a smaller maximum batch (torch2onnx --max-batch) drops the larger defaults; sizes asked for
        # explicitly over it are refused by the CLI
        preferred_batch_size=[b for b in serving.preferred_batch_sizes if b <= max_batch],
        max_queue_delay_microseconds=serving.max_queue_delay_us,
        # beyond the queue bound a request is rejected at once, not left to wait without limit
        default_queue_policy=mc.ModelQueuePolicy(max_queue_size=serving.max_queue_size, timeout_action=mc.ModelQueuePolicy.REJECT),
    )


def _tokenizer_params(cfg: mc.ModelConfig, manifest: dict) -> None:
    max_seq = manifest["shapes"]["max_seq"]
    _params(cfg, max_length=max_seq, buckets=",".join(str(b) for b in spec.SEQ_BUCKETS if b <= max_seq), tokenizer_dir="tokenizer")


def tokenizer_config(manifest: dict, serving: spec.Serving, name: str = spec.TOKENIZER) -> mc.ModelConfig:
    shapes = manifest["shapes"]
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=shapes["max_batch"])
    cfg.input.append(_tensor(mc.ModelInput, spec.TEXT_INPUT, mc.TYPE_STRING, [1]))
    for name in manifest["inputs"]:
        cfg.output.append(_tensor(mc.ModelOutput, name, mc.TYPE_INT64, [-1]))
    cfg.dynamic_batching.CopyFrom(_batching(serving, shapes["max_batch"]))
    cfg.instance_group.extend(_instances("cpu", serving.tokenizer_instances, []))
    _tokenizer_params(cfg, manifest)
    return cfg


def _outputs(cls, manifest: dict, outputs: tuple[str, ...]) -> list:
    hidden = manifest["model"]["hidden_size"]
    dims = {"sentence_embedding": [hidden], "last_hidden_state": [-1, hidden]}
    return [_tensor(cls, name, mc.TYPE_FP32, dims[name]) for name in outputs]


def model_config(variant: spec.Variant, manifest: dict, serving: spec.Serving, native: bool, kind: str,
                 gpus: list[int], name: str | None = None) -> mc.ModelConfig:
    """native: the server has the family's backend (NVIDIA containers); else the Python-backend runner."""
    shapes, family = manifest["shapes"], variant.family
    cfg = mc.ModelConfig(name=name or variant.name, max_batch_size=shapes["max_batch"])
    if native:
        cfg.platform = family.platform
        cfg.default_model_filename = family.file
    else:
        cfg.backend = "python"
        _params(cfg, runtime=family.runtime, artifact=family.file, vocab_size=manifest["model"]["vocab_size"],
                max_length=shapes["max_seq"],
                intra_op_threads=0 if kind == "gpu" else max(1, len(host.usable_cpus()) // max(1, serving.model_instances)))
    # ragged: the runner pads and groups requests of different lengths itself; a native backend needs equal shapes
    ragged = serving.ragged and not native
    for n in manifest["inputs"]:
        cfg.input.append(mc.ModelInput(name=n, data_type=mc.TYPE_INT64, dims=[-1], allow_ragged_batch=ragged))
    cfg.output.extend(_outputs(mc.ModelOutput, manifest, serving.outputs))
    cfg.dynamic_batching.CopyFrom(_batching(serving, shapes["max_batch"]))
    cfg.instance_group.extend(_instances(kind, serving.model_instances, gpus))
    return cfg


def fused_config(variant: spec.Variant, manifest: dict, serving: spec.Serving, kind: str, gpus: list[int],
                 name: str | None = None) -> mc.ModelConfig:
    """The ensemble's interface (TEXT in, the embedding out) in one Python-backend model: the runner's config with the
    tokenizer's input and parameters. Any requests batch together: TEXT is one string per batch item."""
    cfg = model_config(variant, manifest, serving, False, kind, gpus, name or spec.fused_name(variant.name))
    del cfg.input[:], cfg.instance_group[:]
    cfg.instance_group.extend(_instances(kind, serving.fused_instances, gpus))
    cfg.input.append(_tensor(mc.ModelInput, spec.TEXT_INPUT, mc.TYPE_STRING, [1]))
    _tokenizer_params(cfg, manifest)
    _params(cfg, token_inputs=",".join(manifest["inputs"]), tokenizer_threads=serving.fused_tokenizer_threads)
    return cfg


def ensemble_config(model: str, manifest: dict, outputs: tuple[str, ...] = spec.Serving.outputs,
                    tokenizer: str = spec.TOKENIZER) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=spec.ensemble_name(model), platform="ensemble", max_batch_size=manifest["shapes"]["max_batch"])
    cfg.input.append(_tensor(mc.ModelInput, spec.TEXT_INPUT, mc.TYPE_STRING, [1]))
    cfg.output.extend(_outputs(mc.ModelOutput, manifest, outputs))
    tok = cfg.ensemble_scheduling.step.add(model_name=tokenizer, model_version=-1)
    tok.input_map[spec.TEXT_INPUT] = spec.TEXT_INPUT
    run = cfg.ensemble_scheduling.step.add(model_name=model, model_version=-1)
    for name in manifest["inputs"]:
        tok.output_map[name] = f"_{name}"
        run.input_map[name] = f"_{name}"
    for name in outputs:  # the model computes only what the ensemble maps (runner reads requested outputs)
        run.output_map[name] = name
    return cfg


def write_config(model_dir: Path, cfg: mc.ModelConfig) -> Path:
    path = model_dir / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(cfg))
    return path


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # big weights: a hard link costs nothing and is a real file to the server
    except OSError:
        shutil.copy2(src, dst)


def plan(manifest: dict, artifacts: Path, device: str = "cpu", only: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """(models to write, skip messages): every registered variant (of `only`, when given) whose artifact the manifest
    records, still matches, and runs on `device`."""
    models, skipped = [], []
    for v in spec.VARIANTS:
        if only and v.name not in only:
            continue
        entry = (manifest.get(v.family.section) or {}).get(v.precision.name) or {}
        art, extras = entry.get(v.family.key), entry.get("extras") or {}
        why = None
        if not (art and io.is_valid(art, artifacts)) or not all(io.is_valid(e, artifacts) for e in extras.values()):
            why = entry.get("reason") or v.family.missing
        elif v.unserved:
            why = f"not served: {v.unserved}"
        elif v.family is spec.TORCH and entry.get("device") != ("cuda" if device == "gpu" else "cpu"):
            why = f"compiled for {entry.get('device')}, this repository is for {device} (torch_build --device)"
        if why:
            skipped.append(f"{v.name}: skipped: {why}")
            continue
        models.append({"name": v.name, "variant": v, "src": io.resolve(art["path"], artifacts),
                       "extras": {name: io.resolve(e["path"], artifacts) for name, e in extras.items()}})
    return models, skipped


def grouped(skipped: list[str]) -> list[str]:
    """'a: skipped: why' lines with the same reason as one line 'a, b: skipped: why' (one TensorRT reason, not five)."""
    by_reason: dict[str, list[str]] = {}
    for line in skipped:
        name, _, why = line.partition(": skipped: ")
        by_reason.setdefault(why, []).append(name)
    return [f"{', '.join(names)}: skipped: {why}" for why, names in by_reason.items()]


def write_models(dest: Path, manifest: dict, artifacts: Path, models: list[dict], serving: spec.Serving, device: str,
                 gpus: list[int], have: set[str], tag: str = "", tokenizer_tag: str | None = None) -> list[str]:
    """The tokenizer, every planned model and its ensemble under `dest`, named <name><tag> (a search's candidates
    live side by side on one server; candidates with the same tokenizer settings share tokenizer<tokenizer_tag>).
    Returns the model names written."""
    tok_name = spec.TOKENIZER + (tag if tokenizer_tag is None else tokenizer_tag)
    tok_dir = dest / tok_name
    written = []
    if not tok_dir.exists():
        write_config(tok_dir, tokenizer_config(manifest, serving, tok_name))
        (tok_dir / "1").mkdir(parents=True)
        shutil.copy2(MODELS_SRC / "tokenizer.py", tok_dir / "1" / "model.py")
        shutil.copy2(METRICS_FILE[0], tok_dir / "1" / METRICS_FILE[1])
        shutil.copytree(io.resolve(manifest["tokenizer_dir"], artifacts), tok_dir / "1" / "tokenizer")
        written.append(tok_name)
    for m in models:
        v = m["variant"]
        name = v.name + tag
        is_native = v.family.runtime in have and v.family.platform is not None
        cfg = model_config(v, manifest, serving, is_native, device, gpus, name)
        _model_dir(dest / name, cfg, m, () if is_native else RUNNER_FILES)
        ens = spec.ensemble_name(name)
        write_config(dest / ens, ensemble_config(name, manifest, serving.outputs, tok_name))
        (dest / ens / "1").mkdir(parents=True)
        written += [name, ens]
        print(f"  {name}: {'native ' + cfg.platform if is_native else 'python backend, ' + v.family.runtime} ({device})")
        if serving.fused:
            written.append(write_fused(dest, v, manifest, serving, device, gpus, m, artifacts, tag))
    return written


def _model_dir(mdir: Path, cfg: mc.ModelConfig, m: dict, files) -> Path:
    """A model folder: its config, the variant's artifact and extras (hard-linked) and the source `files` it runs."""
    write_config(mdir, cfg)
    _place(m["src"], mdir / "1" / m["variant"].family.file)
    for extra, src in m["extras"].items():
        _place(src, mdir / "1" / extra)
    for src, dst in files:
        shutil.copy2(src, mdir / "1" / dst)
    return mdir


def write_fused(dest: Path, v: spec.Variant, manifest: dict, serving: spec.Serving, device: str, gpus: list[int], m: dict,
                artifacts: Path, tag: str = "") -> str:
    """fused_<variant>: the variant's artifact (hard-linked), the runner, the tokenizer module and its files."""
    name = spec.fused_name(v.name) + tag
    fdir = _model_dir(dest / name, fused_config(v, manifest, serving, device, gpus, name), m, FUSED_FILES)
    shutil.copytree(io.resolve(manifest["tokenizer_dir"], artifacts), fdir / "1" / "tokenizer")
    print(f"  {name}: python backend, tokenizer + {v.family.runtime} in one model ({device})")
    return name


def generate(artifacts: Path = spec.ARTIFACTS, out: Path = spec.REPOSITORY, serving: spec.Serving | None = None,
             device: str = "cpu", gpus: list[int] | None = None, native: bool | None = None,
             only: list[str] | None = None) -> Path:
    """Write the repository into a temp folder, then swap it in: an interrupted run leaves the old one."""
    serving = serving or spec.Serving.for_device(device, gpus=len(gpus or [0]))
    artifacts, out = Path(artifacts), Path(out)
    manifest = io.load_manifest(artifacts)
    models, skipped = plan(manifest, artifacts, device, only)
    if not models:
        raise StageError("no model variant to serve: " + ("; ".join(skipped) or "run `python torch2onnx.py` first"))
    have = tools.backends(tools.find_tritonserver()) if native is None else ({"onnxruntime", "tensorrt"} if native else set())
    io.ensure_writable_dir(out.parent)
    recover(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}.", suffix=".partial"))
    try:
        written = write_models(tmp, manifest, artifacts, models, serving, device, gpus or [], have)
        for line in grouped(skipped):
            print(f"  {line}")
        io.write_json(tmp / "repository.json", {"models": written, "skipped": skipped, "device": device,
                                                 "manifest_sha256": io.sha256_file(io.manifest_path(artifacts)),
                                                 "settings": settings_of(serving, device, gpus or [], only),
                                                 "model": manifest["model"]})
        io.default_permissions(tmp)  # mkdtemp makes 0700; the server may run as another user
        swap_in(tmp, out)
    finally:
        with _signals_deferred():  # a Ctrl-C now must not leave the temp folder behind
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"model repository: {out} ({len(written)} models)")
    return out


# --- swapping the new repository in: `out` is always the old one or the new one, never half of one ---

_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT/SIGTERM wait until the block is over (the swap is two renames where the OS lacks exchange)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _old(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def swap_in(tmp: Path, out: Path) -> None:
    """Make the complete repository `tmp` the one at `out`. With an atomic exchange, `tmp` holds the
    previous repository afterwards (the caller removes it); otherwise two renames, signals deferred."""
    old = _old(out)
    shutil.rmtree(old, ignore_errors=True)
    try:
        with _signals_deferred():
            if out.exists() and _exchange(tmp, out):
                return
            if out.exists():
                out.rename(old)
            tmp.rename(out)
    finally:
        with _signals_deferred():
            if old.exists() and not out.exists():
                old.rename(out)  # the swap failed half-way: the previous repository goes back
            shutil.rmtree(old, ignore_errors=True)


def recover(out: Path) -> list[str]:
    """Clean up after a generation that was killed (SIGKILL, power loss): put back the previous
    repository if the kill fell between the two renames of a non-atomic swap, and remove temp
    folders whose writer is gone. Returns what was done."""
    out = Path(out)
    done = []
    old = _old(out)
    if old.is_dir():
        if not out.exists() and (old / "repository.json").exists():
            old.rename(out)
            done.append(f"restored the previous repository from {old.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}")
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(\d+)\..*\.partial$")
    for p in out.parent.iterdir() if out.parent.is_dir() else ():
        m = pattern.match(p.name)
        if m and p.is_dir() and not host.pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed the unfinished {p.name}")
    for line in done:
        print(f"  {out}: {line} (an earlier generation was interrupted)")
    return done


def chosen_overrides(path: Path, device: str) -> dict:
    """The Serving overrides a search chose (for `repository --tuned`; the search is measure/tune.py)."""
    data = io.read_json(path) if Path(path).exists() else None
    if not data or data.get("status") != "complete" or "chosen" not in data:
        raise StageError(f"{path} is not a complete serving-config search (run `python -m enc2triton.tune` first)")
    if data.get("device") != device:
        raise StageError(f"{path} was measured for --device {data.get('device')}, not {device}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data["chosen"]["overrides"].items()}


def settings_of(serving: spec.Serving, device: str, gpus: list[int], only: list[str] | None = None) -> dict:
    """What the configs derive from besides the manifest, plus the generator's own code: a change means regenerate."""
    code = [Path(__file__), Path(spec.__file__), *(src for src, _ in FUSED_FILES)]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in code)).hexdigest()
    # through JSON, so it compares equal to what repository.json holds (tuples become lists)
    return json.loads(json.dumps({"device": device, "gpus": list(gpus), "serving": dataclasses.asdict(serving),
                                  "variants": sorted(only or []), "code_sha256": digest}))


def is_stale(artifacts: Path = spec.ARTIFACTS, out: Path = spec.REPOSITORY, settings: dict | None = None) -> bool:
    """The repository is out of date with the manifest or, when given, with these generation settings."""
    info = Path(out) / "repository.json"
    mpath = io.manifest_path(artifacts)
    if not info.exists() or not mpath.exists():
        return True
    recorded = io.read_json(info)
    return recorded.get("manifest_sha256") != io.sha256_file(mpath) or (settings is not None and recorded.get("settings") != settings)


def main(argv=None) -> int:
    ap = cli.parser("python -m enc2triton.repository", "Step 4: generate the Triton model repository from artifacts/manifest.json.",
                    logs=False)
    ap.add_argument("--out", type=Path, default=spec.REPOSITORY, help="the repository folder (default %(default)s)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="instance kind for the model variants (default %(default)s)")
    ap.add_argument("--gpus", type=cli.int_list("GPU ids", minimum=0), help="comma-separated GPU ids (default: all visible)")
    ap.add_argument("--instances", type=cli.at_least(1), help=f"instances per model, per GPU with --device gpu (default cpu "
                    f"{spec.Serving.model_instances}, gpu {spec.Serving.gpu_model_instances})")
    ap.add_argument("--tokenizer-instances", type=cli.at_least(1), help=f"CPU instances of the tokenizer (default cpu "
                    f"{spec.Serving.tokenizer_instances}, gpu 3/4 of the cores up to {spec.Serving.gpu_tokenizer_instances_max} per GPU)")
    ap.add_argument("--preferred-batch-sizes", type=cli.int_list("preferred batch sizes"),
                    help="dynamic batcher's preferred sizes, comma-separated, each <= the export's max batch (default cpu "
                    + ",".join(map(str, spec.Serving.preferred_batch_sizes)) + ", gpu none)")
    ap.add_argument("--max-queue-delay-us", type=cli.at_least(0),
                    help="how long the dynamic batcher may hold a request to grow a batch (default cpu "
                    f"{spec.Serving.max_queue_delay_us}, gpu 0: greedy, see spec.Serving.for_device)")
    ap.add_argument("--hidden-state", "--ensemble-hidden-state", action="store_true",
                    help="raw models and ensembles also return last_hidden_state (default: the sentence embedding only)")
    ap.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                    help="also serve fused_<variant>: TEXT in, tokenizer and engine in one Python-backend model, one hop per "
                    "request (default: on with --device gpu, off on the cpu)")
    ap.add_argument("--fused-instances", type=cli.at_least(1), help=f"instances per fused model, per GPU with --device gpu "
                    f"(default cpu {spec.Serving.fused_instances}, gpu {spec.Serving.gpu_fused_instances})")
    ap.add_argument("--no-ragged", action="store_true", help="Python-backend models batch only requests of equal length "
                    "(default: requests of any length batch together; the runner groups them by length)")
    ap.add_argument("--variants", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                    help="comma-separated variants to serve, e.g. onnx_fp32,onnx_fp16,torch_fp16 (default: every one built)")
    ap.add_argument("--tuned", type=Path, help="take instances and batching from a serving-config search (logs/tune.json of "
                    "`python -m enc2triton.tune`); options given here still win")
    ap.add_argument("--if-stale", action="store_true", help="do nothing when the repository matches the manifest, these settings and this code")

    def body(a) -> None:
        gpus = list(a.gpus or (host.visible_gpus() if a.device == "gpu" else []))
        if a.device == "gpu" and not gpus:
            raise StageError("--device gpu but nvidia-smi lists no GPU here: generate with --device cpu, or name the "
                             "deployment's GPUs with --gpus 0[,1...] (the repository is then for another machine)")
        if a.preferred_batch_sizes:
            max_batch = io.load_manifest(a.artifacts)["shapes"]["max_batch"]
            too_big = sorted(b for b in set(a.preferred_batch_sizes) if b > max_batch)
            if too_big:
                raise StageError(f"--preferred-batch-sizes {','.join(map(str, too_big))} exceed the export's max batch {max_batch} "
                                 "(the largest batch the models accept): choose sizes <= it, or re-export with "
                                 "`torch2onnx.py --max-batch N`")
        outputs = ("sentence_embedding", "last_hidden_state") if a.hidden_state else spec.Serving.outputs
        if a.instances == 1:
            print("warning: one instance per model: Triton 2.51's dynamic batcher can then hold a request for its "
                  "500 ms idle wait (see spec.Serving)", file=sys.stderr)
        tuned = {}
        if a.tuned:
            tuned = chosen_overrides(a.tuned, a.device)
        explicit = {"model_instances": a.instances, "tokenizer_instances": a.tokenizer_instances,
                    "ragged": False if a.no_ragged else None, "max_queue_delay_us": a.max_queue_delay_us, "fused": a.fused,
                    "fused_instances": a.fused_instances,
                    "preferred_batch_sizes": tuple(sorted(set(a.preferred_batch_sizes))) if a.preferred_batch_sizes else None}
        # explicit options win over the search's choice, which wins over the device's defaults
        serving = spec.Serving.for_device(a.device, gpus=len(gpus), outputs=outputs,
                                          **{**tuned, **{k: v for k, v in explicit.items() if v is not None}})
        unknown = [v for v in a.variants or [] if v not in spec.BY_NAME]
        if unknown:
            raise StageError(f"unknown variant(s) {', '.join(unknown)}: known are {', '.join(spec.BY_NAME)}")
        if a.if_stale and not is_stale(a.artifacts, a.out, settings_of(serving, a.device, gpus, a.variants)):
            print(f"model repository {a.out} is up to date")
            return
        # SIGTERM unwinds like Ctrl-C, so the unfinished temp folder is removed on the way out
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        generate(a.artifacts, a.out, serving, a.device, gpus, only=a.variants)
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
