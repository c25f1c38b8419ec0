"""Client helpers shared by the real-server tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from enc2triton.core import io, spec
from enc2triton.serve import repository
from enc2triton.core.texts import load_tokenizer, tokenize
from enc2triton.runtime.engines import ort_session


def texts_input(mod, texts: list[bytes]):
    arr = np.array([[t] for t in texts], dtype=object)
    inp = mod.InferInput(spec.TEXT_INPUT, list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    return inp


def embed(client, mod, texts: list[bytes], model="ensemble_onnx_fp32") -> np.ndarray:
    res = client.infer(model, [texts_input(mod, texts)], outputs=[mod.InferRequestedOutput("sentence_embedding")])
    return res.as_numpy("sentence_embedding")


def raw_embed(client, mod, names: list[str], ids: np.ndarray, model="onnx_fp32") -> np.ndarray:
    """A raw model's sentence embedding of token ids (`names`: the model's inputs; every mask position 1)."""
    inputs = []
    for name in names:
        a = ids if name == "input_ids" else np.ones_like(ids)
        inputs.append(mod.InferInput(name, list(a.shape), "INT64"))
        inputs[-1].set_data_from_numpy(a)
    return client.infer(model, inputs, outputs=[mod.InferRequestedOutput("sentence_embedding")]).as_numpy("sentence_embedding")


def local_embed(art: Path, texts: list[str]) -> np.ndarray:
    m = io.load_manifest(art)
    tok = load_tokenizer(art / "tokenizer")
    sess = ort_session(art / "onnx" / "model_fp32.onnx")
    return np.concatenate([sess.run(["sentence_embedding"], tokenize(tok, [t], m["inputs"], 128))[0] for t in texts])


def stub_count(repo: Path) -> int:
    """Python-backend stub processes the server should run: one per instance of every Python model."""
    total = 0
    for name in io.read_json(Path(repo) / "repository.json")["models"]:
        cfg = repository.read_config(Path(repo) / name / "config.pbtxt")
        if cfg.backend == "python":
            total += sum(g.count for g in cfg.instance_group)
    return total


def fake_dead_server_with_stub(region: str) -> tuple[int, int]:
    """A 'server' that is gone and a stub of its process group that is not (what a SIGKILLed server leaves), with the
    stub's shm region in /dev/shm: (the dead server's pid, the stub's pid), once server.orphans() sees the stub.
    `echo $!` can come before the subshell's exec (its own `bash -c` line names the stub too), so this waits for it."""
    import subprocess
    import sys
    import time

    from enc2triton.serve import server

    (Path("/dev/shm") / region).write_bytes(b"\0" * 16)
    leader = subprocess.Popen(["bash", "-c", f"(exec -a triton_python_backend_stub {sys.executable} -c 'import time; time.sleep(60)' model.py {region}) & echo $!"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    stub = int(leader.stdout.readline())
    leader.wait()  # the "server" is gone; its stub is not
    deadline = time.time() + 10
    while server.orphans(leader.pid) != [stub] and time.time() < deadline:
        time.sleep(0.01)
    assert server.orphans(leader.pid) == [stub], "the fake stub never showed as the dead server's orphan"
    return leader.pid, stub
