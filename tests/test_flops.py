import json

import pytest
import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

from enc2triton.core import io
from enc2triton.export import flops


class Encoder(torch.nn.Module):
    """The exported graph's interface: (last_hidden_state, mean-pooled sentence_embedding)."""

    def __init__(self, enc):
        super().__init__()
        self.encoder = enc

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return h, (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "distilbert":
        cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                               max_position_embeddings=64, attn_implementation="eager")
        return Encoder(DistilBertModel(cfg)), cfg
    cfg = BertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=96, max_position_embeddings=64, attn_implementation="eager")
    return Encoder(BertModel(cfg, add_pooling_layer=False)), cfg


def inputs(batch, seq, bert=False):
    ids = torch.randint(0, 100, (batch, seq))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return x | ({"token_type_ids": torch.zeros_like(ids)} if bert else {})


@pytest.fixture(scope="module")
def counted():
    out = {}
    for kind in ("distilbert", "bert"):
        model, cfg = tiny(kind)
        out[kind] = (flops.count_flops(model, inputs(2, 16, kind == "bert")), cfg)
    return out


def test_analytic_distilbert_base_seq128():
    # h=768, 6 layers, i=3072: 6 * (8*s*h^2 + 4*s^2*h + 4*s*h*i) = 11.17 GFLOP per sequence
    f = flops.analytic_flops(DistilBertConfig(), 128)
    assert f == pytest.approx(11.17e9, rel=0.02)
    assert f == flops.analytic_flops({"hidden_size": 768, "num_hidden_layers": 6, "intermediate_size": 3072,
                                      "num_attention_heads": 12}, 128)


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
def test_fvcore_gemms_match_analytic(counted, kind):
    c, cfg = counted[kind]
    gemm = c["by_operator"]["linear"]["flops"] + c["by_operator"]["matmul"]["flops"]
    assert gemm / c["batch_size"] == pytest.approx(flops.analytic_flops(cfg, 16), rel=0.02)


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
def test_flops_are_twice_macs_and_memory_ops_counted(counted, kind):
    c, _ = counted[kind]
    assert c["total_flops"] == 2 * c["total_macs"]
    assert all(v["flops"] == 2 * v["macs"] for v in c["by_operator"].values())
    assert all(r["flops"] == 2 * r["macs"] for r in c["rows"])
    assert sum(r["flops"] for r in c["rows"]) == pytest.approx(c["total_flops"])
    assert {"softmax", "layer_norm", "gelu", "add", "mul", "div", "embedding"} <= set(c["by_operator"])
    assert {"attn_qkv_linear", "attn_out_linear", "attn_matmul", "ffn_in_linear", "ffn_out_linear",
            "layernorm", "softmax", "gelu"} <= set(c["groups"])
    assert c["modules"][""]["flops"] == c["total_flops"]


def test_distilbert_base_fvcore_vs_analytic():
    cfg = DistilBertConfig(attn_implementation="eager")
    model = Encoder(DistilBertModel(cfg))
    res = flops.analyze(model, inputs(1, 128), cfg, "distilbert-base-uncased (random weights)")
    assert res["flops_per_sequence"] == pytest.approx(res["analytic_flops_per_sequence"], rel=0.02)
    assert res["gemm_flops_per_sequence"] == pytest.approx(res["analytic_flops_per_sequence"], rel=1e-9)


def test_ridge_batch_hand_computed():
    # k = n = 1000, fp16 (2 bytes), ridge 100 FLOP/B:
    # intensity(B) = 2*B*s*1e6 / (2*(B*s*1000 + 1e6 + B*s*1000)) >= 100  <=>  B*s*(1e6 - 2e5) >= 1e8
    assert flops.linear_ridge_batch(100, 1, 1000, 1000, 2) == 125  # exactly on the ridge at B = 125
    assert flops.linear_ridge_batch(100, 4, 1000, 1000, 2) == 32   # B >= 31.25
    assert flops.linear_ridge_batch(1, 128, 1000, 1000, 2) == 1
    # asymptote 2kn/(bytes(k+n)) = 500: a ridge at or above it is never reached
    assert flops.linear_ridge_batch(600, 128, 1000, 1000, 2) == "never"
    assert flops.linear_ridge_batch(500, 128, 1000, 1000, 2) == "never"


def test_roofline_batch_dependence(counted):
    c, cfg = counted["distilbert"]
    r1, r64 = (flops.roofline(c["rows"], cfg, 16, b) for b in (1, 64))
    i1 = {o["name"]: o["intensity"]["fp16"] for o in r1["operators"]}
    i64 = {o["name"]: o["intensity"]["fp16"] for o in r64["operators"]}
    lin = [n for n in i1 if n.endswith(":linear")]
    assert lin and all(i64[n] > i1[n] for n in lin)  # weights amortised over the batch
    mm = [n for n in i1 if ":matmul" in n]
    assert mm and all(i64[n] == i1[n] for n in mm)   # no weights: batch-independent
    # tiny dims: asymptote 2*32*32/(2*64) = 16 FLOP/B is below every fp16 ridge
    assert all(v["fp16"]["h->h"] == "never" for v in r1["ridge_batch"].values())
    assert "encoder.transformer.layer.*.attention:softmax" in r1["memory_bound"]["H100-SXM"]["fp16"]


def test_reports_written(tmp_path):
    model, cfg = tiny("bert")
    res = flops.analyze(model, inputs(1, 16, bert=True), cfg, "tiny-bert")
    for key in ("model", "batch_size", "seq_len", "total_flops", "total_macs", "flops_per_sequence",
                "analytic_flops_per_sequence", "convention", "operators", "modules", "memory_bound_at_batch1",
                "ridge_batch", "gpus"):
        assert key in res
    jp, mp = flops.write_reports(res, tmp_path)
    assert (jp, mp) == (tmp_path / "flops.json", tmp_path / "flops.md")
    back = io.read_json(jp)
    assert back == json.loads(json.dumps(res))
    assert back["ridge_batch"]["T4"]["int8"]["h->h"] == "never"
    md = mp.read_text()
    for g in flops.GPUS.values():
        assert g.name in md
    assert "compute-bound from batch 32" in md and "| op |" in md
