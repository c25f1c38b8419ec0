"""ONNX variants -> TensorRT engines (trtexec, or the TensorRT Python builder), one per precision.

TensorRT 10 and 11 differ in where precision comes from, so each (major, precision) maps to one ONNX
variant and one set of trtexec flags (the `trt` table of each TensorRT variant in spec.VARIANTS):
- TensorRT 11 is always strongly typed and removed --fp16/--int8/--bf16/--fp8/--int4/--best/--calib;
  precision lives in the graph (FP16 graph, Q/DQ graphs). `--stronglyTyped` "is no longer needed: it is
  always enabled", so we do not pass it.
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-trtexec.html
- TensorRT 10 is weakly typed by default: --fp16 on the FP32 graph; --int8/--best only on a Q/DQ graph
  (without a calibration cache --int8 would use dummy ranges); fp8 uses --stronglyTyped, which must not be
  combined with --int8/--best ("Use of specific builder precision flags such as --int8 or --best with this
  option is not allowed", https://github.com/NVIDIA/TensorRT/blob/main/samples/trtexec/README.md).
Other flag spellings follow `trtexec --help` of TensorRT 10.5: --memPoolSize=workspace:<size> ("base-2
suffixes: B, K, M, G; default unit MiB"), --skipInference, --profilingVerbosity=detailed,
--exportLayerInfo=<file>, --timingCacheFile=<file>, --min/opt/maxShapes=name:BxS,... (and the 8.x->10.x
migration guide: --workspace became --memPoolSize=workspace:<size>).

No TensorRT here means no engine: each precision prints one `trt_<precision>: skipped: <reason>` line and
the manifest records {"engine": null, "reason": ...}. Nothing is ever faked.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from enc2triton.core import cli, io, spec
from enc2triton.core.io import StageError
from enc2triton.trt.toolchain import (  # noqa: F401 (callers use them as trt.<name>)
    SUPPORTED_MAJORS, Toolchain, TrtVersion, _cc, detect, find_trtexec, gpu_info,
)

ALL = spec.family_precisions("trt")
DEFAULT_WORKSPACE_MB = 4096
FP8_MIN_CC = (8, 9)
QDQ_VARIANTS = ("int8", "best", "fp8")  # variants that must carry explicit Q/DQ scales
REBUILD = "./convert_to_trt.sh --precision {}"

# ONNX variant each (major, precision) builds from, and its trtexec precision flags (TensorRT 11 has none left):
# from the registry. TensorRT 10 never builds int8/best from a graph without Q/DQ: --int8 there would calibrate
# with dummy ranges. "best" on 11 is the Q/DQ graph with FP16 elsewhere (11 cannot pick FP16 for us any more).
SOURCE = {major: {p: spec.variant("trt", p).trt[major][0] for p in ALL} for major in SUPPORTED_MAJORS}
FLAGS: dict[int, dict[str, tuple[str, ...]]] = {major: {p: spec.variant("trt", p).trt[major][1] for p in ALL}
                                               for major in SUPPORTED_MAJORS}


class Skip(StageError):
    """This precision cannot be built here (no TensorRT, no variant, no FP8 GPU): reported, not an error."""


# ----------------------------------------------------------------------------------------------- commands
def source_variant(precision: str, major: int) -> str:
    """The ONNX variant (manifest["variants"] key) that `precision` is built from on TensorRT `major`."""
    if major not in SOURCE:
        raise StageError(f"TensorRT {major}.x is not supported (10.x and 11.x are)")
    if precision not in SOURCE[major]:
        raise StageError(f"unknown precision {precision!r}: expected one of {', '.join(ALL)}")
    return SOURCE[major][precision]


def shape_specs(inputs: Sequence[str], shapes: spec.ShapeLimits) -> dict[str, str]:
    """trtexec --min/opt/maxShapes values: every input is (batch, seq)."""
    dims = {"min": (shapes.min_batch, shapes.min_seq), "opt": (shapes.opt_batch, shapes.opt_seq),
            "max": (shapes.max_batch, shapes.max_seq)}
    return {k: ",".join(f"{name}:{b}x{s}" for name in inputs) for k, (b, s) in dims.items()}


def build_command(precision: str, onnx_path: Path, engine_path: Path, inputs: Sequence[str],
                  shapes: spec.ShapeLimits, version: TrtVersion, extra: Sequence[str] = (), *,
                  trtexec: str = "trtexec", workspace_mb: int = DEFAULT_WORKSPACE_MB,
                  layers_path: Path | None = None, timing_cache: Path | None = None) -> list[str]:
    """The exact trtexec argv that builds `precision` from `onnx_path` (already the right variant)."""
    source_variant(precision, version.major)  # validates precision and major
    if not inputs:
        raise StageError("no input names: the manifest must list the graph inputs")
    engine_path = Path(engine_path)
    layers_path = layers_path or engine_path.with_suffix(".layers.json")
    timing_cache = timing_cache or engine_path.parent / f"timing_trt{version}.cache"
    s = shape_specs(inputs, shapes)
    return [
        trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
        f"--minShapes={s['min']}", f"--optShapes={s['opt']}", f"--maxShapes={s['max']}",
        *FLAGS[version.major][precision],
        f"--memPoolSize=workspace:{workspace_mb}M",
        "--skipInference",  # build only (layer info is still exported: trtexec.cpp prints it before returning)
        "--profilingVerbosity=detailed", f"--exportLayerInfo={layers_path}", f"--timingCacheFile={timing_cache}",
        *extra,
    ]


def has_qdq(onnx_path: Path) -> bool:
    import onnx  # noqa: PLC0415

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 (protobuf DecodeError, OSError)
        raise StageError(f"cannot read {onnx_path} as ONNX: {e}: re-export it") from e
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


# ----------------------------------------------------------------------------------------------- building
def interface(manifest: dict) -> tuple[list[str], spec.ShapeLimits]:
    inputs, shapes = manifest.get("inputs"), manifest.get("shapes")
    if not inputs or not isinstance(shapes, dict):
        raise StageError("manifest has no `inputs`/`shapes`: run `python torch2onnx.py` (or `make export`) first")
    known = {f.name for f in fields(spec.ShapeLimits)}
    try:
        return list(inputs), spec.ShapeLimits(**{k: int(v) for k, v in shapes.items() if k in known})
    except ValueError as e:
        raise StageError(f"manifest shapes are invalid: {e}") from e


def _plan(precision: str, manifest: dict, artifacts: Path, version: TrtVersion,
          gpu: tuple[str, str] | None, gate_fp8: bool = True) -> tuple[str, dict, Path]:
    """(variant, manifest onnx entry, onnx path) for `precision`, or Skip with the reason."""
    variant = source_variant(precision, version.major)
    if precision == "fp8" and gate_fp8:
        if gpu is None:
            raise Skip("fp8 needs compute capability >= 8.9 and the GPU could not be queried (nvidia-smi)")
        if _cc(gpu[1]) < FP8_MIN_CC:
            raise Skip(f"fp8 needs compute capability >= 8.9; {gpu[0]} has {gpu[1]}")
    entry = ((manifest.get("variants") or {}).get(variant) or {}).get("onnx") or {}
    if not entry.get("path"):
        raise Skip(f"no '{variant}' ONNX variant in the manifest (TensorRT {version.major}.x builds {precision} "
                   "from it): export it first")
    return variant, entry, io.resolve(entry["path"], artifacts)


def _run_logged(argv: list[str], log_path: Path, verbose: bool) -> int:
    """Run argv, streaming stdout+stderr line by line into log_path (and to our stdout if verbose)."""
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", bufsize=1)
        except OSError as e:
            raise StageError(f"cannot run {argv[0]}: {e}") from e
        with proc:
            for line in proc.stdout:
                log.write(line)
                if verbose:
                    sys.stdout.write(line)
            return proc.wait()


def _build_python(precision: str, onnx_path: Path, out: Path, layers: Path, inputs: Sequence[str],
                  shapes: spec.ShapeLimits, version: TrtVersion, workspace_mb: int, cache_path: Path,
                  log_path: Path) -> list[str]:
    """Same engine as build_command via the TensorRT Python API (no trtexec). Returns the builder flags.

    Untested here (no TensorRT on our machines); written against the 10.x/11.x Python API docs:
    STRONGLY_TYPED is required for fp8 on 10 and "retained for API compatibility but ignored" on 11
    (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html);
    BuilderFlag.FP16/INT8 exist only on 10.
    """
    import tensorrt as trt  # noqa: PLC0415

    with open(log_path, "w") as logf:
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg):  # noqa: ANN001
                logf.write(f"[{severity}] {msg}\n")
                logf.flush()

        logger = Logger()
        logf.write(f"# TensorRT {version} Python builder: {precision} from {onnx_path}\n")
        builder = trt.Builder(logger)
        strongly = version.major >= 11 or precision == "fp8"
        network = builder.create_network(
            1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly and version.major == 10 else 0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external data next to it
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise StageError(f"TensorRT could not parse {onnx_path}: {errs}")
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if sorted(names) != sorted(inputs):
            raise StageError(f"{onnx_path} has inputs {names}, the manifest says {list(inputs)}: re-export")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        # Weak typing only on 10 (11 removed these flags); --best ~ FP16+INT8 here (trtexec --best adds BF16/FP8).
        weak = {"fp16": ["FP16"], "int8": ["INT8"], "best": ["FP16", "INT8"]}
        flags = weak.get(precision, []) if version.major == 10 else []
        for f in flags:
            config.set_flag(getattr(trt.BuilderFlag, f))
        profile = builder.create_optimization_profile()
        for name in inputs:
            profile.set_shape(name, (shapes.min_batch, shapes.min_seq), (shapes.opt_batch, shapes.opt_seq),
                              (shapes.max_batch, shapes.max_seq))
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise StageError(f"TensorRT failed to build the {precision} engine: see {log_path}")
        out.write_bytes(bytes(plan))
        with io.atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        try:  # layer info is a report, never a reason to fail the build
            engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(plan))
            layers.write_text(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        except Exception as e:  # noqa: BLE001
            logf.write(f"# layer info not exported: {e}\n")
    return [f"BuilderFlag.{f}" for f in flags] + (["STRONGLY_TYPED"] if strongly else [])


def _build_one(precision: str, manifest: dict, artifacts: Path, logs: Path, tc: Toolchain,
               gpu: tuple[str, str] | None, workspace_mb: int, extra: Sequence[str], verbose: bool) -> dict:
    version = tc.version
    inputs, shapes = interface(manifest)
    variant, entry, onnx_path = _plan(precision, manifest, artifacts, version, gpu)
    if not onnx_path.exists():
        raise Skip(f"ONNX variant '{variant}' is recorded but {onnx_path} is missing: re-export it")
    if variant in QDQ_VARIANTS and not has_qdq(onnx_path):
        raise StageError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes, so it cannot give "
                         f"{precision} its scales: re-run the quantization stage")
    sha = io.sha256_file(onnx_path)
    if entry.get("sha256") and entry["sha256"] != sha:
        raise StageError(f"{onnx_path} changed since the manifest recorded it (sha256 differs): re-export it")

    engines = io.ensure_writable_dir(artifacts / "engines").resolve()
    io.ensure_writable_dir(logs)
    engine = engines / f"{spec.model_name('trt', precision)}.plan"
    meta_path, layers = engine.with_suffix(".json"), engine.with_suffix(".layers.json")
    repro = engine.with_suffix(".reproduce.sh")
    cache = engines / (f"timing_trt{version}" + (f"_sm{''.join(gpu[1].split('.'))}" if gpu else "") + ".cache")
    log_path = logs / f"trt_build_{precision}.log"
    onnx_abs = onnx_path.resolve()
    argv = build_command(precision, onnx_abs, engine, inputs, shapes, version, extra, trtexec=tc.path or "trtexec",
                         workspace_mb=workspace_mb, layers_path=layers, timing_cache=cache)

    start = time.monotonic()
    with io.atomic_path(engine) as tmp:
        tmp_layers = tmp.with_name(tmp.name + ".layers")
        try:
            if tc.kind == "trtexec":
                ran = build_command(precision, onnx_abs, tmp, inputs, shapes, version, extra, trtexec=tc.path,
                                    workspace_mb=workspace_mb, layers_path=tmp_layers, timing_cache=cache)
                rc = _run_logged(ran, log_path, verbose)
                if rc != 0:
                    raise StageError(f"trtexec exited with {rc}: see {log_path}")
                flags = list(FLAGS[version.major][precision])
            else:
                ran = None
                try:
                    flags = _build_python(precision, onnx_abs, tmp, tmp_layers, inputs, shapes, version,
                                          workspace_mb, cache, log_path)
                except StageError:
                    raise
                except Exception as e:  # TensorRT raises RuntimeError/TypeError; report, don't crash the loop
                    raise StageError(f"TensorRT Python builder failed: {e}: see {log_path}") from e
            if tmp.stat().st_size == 0:  # never hand on an empty file as an engine
                raise StageError(f"TensorRT reported success but wrote no engine: see {log_path}")
            seconds = round(time.monotonic() - start, 1)
            if tmp_layers.exists() and tmp_layers.stat().st_size:
                os.replace(tmp_layers, layers)
            meta = {
                "precision": precision, "engine": io.rel(engine, artifacts), "tensorrt": str(version),
                "builder": tc.kind, "gpu": {"name": gpu[0], "compute_capability": gpu[1]} if gpu else None,
                "inputs": inputs, "shapes": shapes.as_dict(), "profile": shape_specs(inputs, shapes),
                "flags": flags, "strongly_typed": version.major >= 11 or precision == "fp8",
                "workspace_mb": workspace_mb, "argv": argv if ran else None, "argv_as_run": ran,
                "source": {"variant": variant, "path": str(onnx_abs), "sha256": sha},
                "layers": io.rel(layers, artifacts) if layers.exists() else None,
                "log": str(log_path), "build_seconds": seconds,
                "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            io.write_json(meta_path, meta)
            cmd = argv if ran else [sys.executable, "-m", "enc2triton.trt", "--precision", precision,
                                    "--artifacts", str(artifacts.resolve()), "--logs", str(logs.resolve())]
            io.write_text(repro, "#!/usr/bin/env bash\n"
                                 f"# Rebuilds {engine.name} as convert_to_trt.sh did: TensorRT {version}, "
                                 f"{gpu[0] if gpu else 'unknown GPU'}, {meta['built_at']}.\n"
                                 "set -euo pipefail\n" + " \\\n    ".join(map(shlex.quote, cmd)) + "\n")
            repro.chmod(0o755)
        finally:
            tmp_layers.unlink(missing_ok=True)
    return {"status": "built", "engine": io.artifact_entry(engine, artifacts), "reason": None,
            "meta": io.rel(meta_path, artifacts), "reproduce": io.rel(repro, artifacts), "variant": variant,
            "tensorrt": str(version), "gpu": meta["gpu"], "log": str(log_path), "build_seconds": seconds}


def build_engines(manifest: dict, artifacts_dir: Path, logs_dir: Path, precisions: Sequence[str] = ALL,
                  toolchain: Toolchain | None = None, *, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                  extra: Sequence[str] = (), verbose: bool = False) -> dict:
    """Build each precision (detecting TensorRT unless `toolchain` is given); record manifest["trt"].

    Prints one line per precision. Returns the whole `trt` section; entries have status built|skipped|failed.
    """
    artifacts, logs = Path(artifacts_dir), Path(logs_dir)
    tc = toolchain or detect()
    gpu = gpu_info() if tc.kind else None
    section = dict(manifest.get("trt") or {})
    if not tc.kind:  # one reason for every precision: said once
        reason = tc.reason or "TensorRT not found"
        for p in precisions:
            section[p] = {"status": "skipped", "engine": None, "reason": reason}
        manifest["trt"] = section
        io.update_manifest("trt", section, artifacts)
        print(f"{', '.join(spec.model_name('trt', p) for p in precisions)}: skipped: {reason}", flush=True)
        return section
    for p in precisions:
        name = spec.model_name("trt", p)
        try:
            section[p] = _build_one(p, manifest, artifacts, logs, tc, gpu, workspace_mb, extra, verbose)
            print(f"{name}: built {section[p]['engine']['path']} (TensorRT {tc.version}, "
                  f"{section[p]['build_seconds']:.0f}s)", flush=True)
        except Skip as e:
            section[p] = {"status": "skipped", "engine": None, "reason": str(e)}
            print(f"{name}: skipped: {e}", flush=True)
        except StageError as e:
            section[p] = {"status": "failed", "engine": None, "reason": str(e)}
            print(f"{name}: FAILED: {e}", flush=True)
        manifest["trt"] = section
        io.update_manifest("trt", section, artifacts)  # after each precision: a crash keeps earlier builds
    return section


# ------------------------------------------------------------------------------------------------ serving
def check_engine_compat(meta: dict, runtime_version: TrtVersion | None, gpu: tuple[str, str] | None) -> None:
    """Raise StageError saying what to rebuild if the engine in `meta` (its .json) cannot run here.

    By default an engine runs only on the TensorRT version and GPU architecture that built it
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html#version-compatibility).
    None for runtime_version or gpu means unknown: that side is not checked.
    """
    precision = meta.get("precision", "<precision>")
    problems = []
    if runtime_version is not None:
        if not meta.get("tensorrt"):
            problems.append("it records no TensorRT version")
        elif (built := TrtVersion.parse(str(meta["tensorrt"]))) != TrtVersion(*runtime_version):
            problems.append(f"it was built with TensorRT {built} but this runtime is TensorRT "
                            f"{TrtVersion(*runtime_version)} (an engine only runs on the exact version that built it)")
    built_gpu = meta.get("gpu") or {}
    if gpu is not None and built_gpu.get("compute_capability"):
        if _cc(built_gpu["compute_capability"]) != _cc(gpu[1]):
            problems.append(f"it was built on {built_gpu.get('name', 'a GPU')} (compute capability "
                            f"{built_gpu['compute_capability']}) but this GPU is {gpu[0]} (compute capability {gpu[1]})")
    if problems:
        raise StageError(f"TensorRT engine {meta.get('engine', f'trt_{precision}')} cannot run here: "
                         + "; ".join(problems) + f". Rebuild it on this machine: `{REBUILD.format(precision)}`")


# ---------------------------------------------------------------------------------------------------- CLI
def dry_run(manifest: dict, artifacts: Path, precisions: Sequence[str], version: TrtVersion,
            trtexec: str = "trtexec", workspace_mb: int = DEFAULT_WORKSPACE_MB, extra: Sequence[str] = ()) -> None:
    """Print the trtexec commands a build would run (a shell script: comments + one command per line)."""
    inputs, shapes = interface(manifest)
    engines = artifacts / "engines"
    print(f"# TensorRT {version}: commands convert_to_trt.sh would run (dry run, nothing is built)")
    for p in precisions:
        try:
            variant, _, onnx_path = _plan(p, manifest, artifacts, version, None, gate_fp8=False)
        except StageError as e:
            print(f"# trt_{p}: skipped: {e}")
            continue
        note = " (fp8 only where compute capability >= 8.9)" if p == "fp8" else ""
        print(f"# trt_{p}: from ONNX variant '{variant}'{note}")
        print(shlex.join(build_command(p, onnx_path, engines / f"{spec.model_name('trt', p)}.plan", inputs,
                                       shapes, version, extra, trtexec=trtexec, workspace_mb=workspace_mb)))


def _parser() -> argparse.ArgumentParser:
    ap = cli.parser("convert_to_trt.sh", "Step 3: build TensorRT engines (TensorRT 10.x or 11.x) from the ONNX variants in "
                    "the manifest. Without TensorRT every precision is reported as skipped (exit 0).", logs=False)
    ap.add_argument("--precision", action="append", choices=ALL, help="repeatable; default: all "
                    f"({', '.join(ALL)}; fp8 only where compute capability >= 8.9)")
    ap.add_argument("--logs", type=Path, default=spec.LOGS, help="where trt_build_<precision>.log go (default %(default)s)")
    ap.add_argument("--workspace-mb", type=cli.at_least(1), default=DEFAULT_WORKSPACE_MB,
                    help="builder workspace in MiB (default %(default)s)")
    ap.add_argument("--verbose", action="store_true", help="pass --verbose to trtexec and echo its log")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only (works without TensorRT)")
    ap.add_argument("--assume-version", metavar="X.Y.Z", help="with --dry-run: the TensorRT version to "
                    "print commands for, e.g. 10.8.0 or 11.0.0 (default: the one installed)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()

    def body(args) -> int:
        if args.assume_version and not args.dry_run:
            ap.error("--assume-version only applies with --dry-run")
        precisions = tuple(dict.fromkeys(args.precision or ALL))
        extra = ("--verbose",) if args.verbose else ()
        manifest = io.load_manifest(args.artifacts)
        if args.dry_run:
            if args.assume_version:
                version, trtexec = TrtVersion.parse(args.assume_version).check(), "trtexec"
            else:
                tc = detect()
                if not tc.kind:
                    raise StageError(f"{tc.reason}; pass --assume-version 10.8.0 (or 11.0.0) to see the commands")
                version, trtexec = tc.version, tc.path if tc.kind == "trtexec" else "trtexec"
            dry_run(manifest, args.artifacts, precisions, version, trtexec, args.workspace_mb, extra)
            return 0
        section = build_engines(manifest, args.artifacts, args.logs, precisions, workspace_mb=args.workspace_mb,
                                extra=extra, verbose=args.verbose)
        return 1 if any(section[p]["status"] == "failed" for p in precisions) else 0
    return cli.run(ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
