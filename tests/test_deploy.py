"""The Kubernetes example (deploy/k8s): valid against Kubernetes' own schemas (offline), consistent with itself, and the
server flags it uses start the real tritonserver on a generated repository until /v2/health/ready answers."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from enc2triton.core import tools
from enc2triton.serve import repository, server

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.32"


def docs() -> dict[str, dict]:
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            out[d["kind"]] = d
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_schema_valid(name):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for d in yaml.safe_load_all((K8S / name).read_text()):
        kubernetes_validate.validate(d, KUBERNETES, strict=True)  # raises with the path of a wrong field


def test_resources_agree():
    d = docs()
    dep, svc, hpa = d["Deployment"], d["Service"], d["HorizontalPodAutoscaler"]
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    args = dict(a.split("=", 1) for a in c["args"][1:])
    assert {int(args[f"--{k}-port"]) for k in ("http", "grpc", "metrics")} == set(ports.values())
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" and args["--strict-readiness"] == "true"
    assert args["--model-control-mode"] == "none"  # as serve.sh: no runtime model control
    mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert args["--model-repository"] == mount["mountPath"] and mount["readOnly"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert {"name": "NCCL_NVLS_ENABLE", "value": "0"} in c["env"]


@pytest.mark.server
def test_same_flags_serve_the_generated_repository(tiny_artifacts, tmp_path):
    """The Deployment's tritonserver arguments, pointed at a repository this project generated, on this machine's
    tritonserver (ports moved to free ones, the backend directory added as serve.sh does)."""
    c = docs()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    repo = repository.generate(tiny_artifacts, tmp_path / "models", device="cpu")
    tool = tools.find_tritonserver()
    free = {k: server.free_port() for k in ("http", "grpc", "metrics")}
    args = []
    for a in c["args"][1:]:
        k, v = a.split("=", 1)
        if k == "--model-repository":
            v = str(repo)
        elif k.endswith("-port"):
            v = str(free[k[2:-5]])
        args.append(f"{k}={v}")
    args += [f"--backend-directory={tool.backend_dir}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1"]
    if not Path("/dev/nvidia0").exists():
        args.append("--allow-gpu-metrics=false")
    log = open(tmp_path / "tritonserver.log", "wb")
    proc = subprocess.Popen([str(tool.path), *args], stdout=log, stderr=subprocess.STDOUT,
                            env=server.server_env(tool.environ()), start_new_session=True)
    try:
        deadline, ready = time.time() + 180, False
        while time.time() < deadline and proc.poll() is None and not ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{free['http']}/v2/health/ready", timeout=2) as r:
                    ready = r.status == 200
            except OSError:
                time.sleep(0.5)
        assert ready, (tmp_path / "tritonserver.log").read_text()[-3000:]
        import tritonclient.grpc as grpcclient

        from triton_helpers import embed

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{free['grpc']}")
        got = embed(client, grpcclient, [b"a first text", b"and a second one"])
        assert got.shape[0] == 2 and np.isfinite(got).all()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)
        server.clean_orphans(proc.pid)
