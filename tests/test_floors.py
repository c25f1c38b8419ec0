"""Quality floors (spec.FLOORS, metrics.passes) with top-10 agreement, its machine-independent form for the int8
search (rounded cosines, stable ties), and the search's acceptance on it (greedy_exclusion). Fast, no model."""
from __future__ import annotations

import numpy as np
import pytest

from enc2triton.core import metrics, spec
from enc2triton.measure import quality, quant_peers
from enc2triton.quantize import exact, int8_search


def test_every_8bit_precision_has_a_top10_floor():
    for p, fl in spec.FLOORS.items():
        assert ("top10" in fl) == (spec.ROOF_BYTES[spec.PRECISIONS[p].roof] == 1), p
    assert spec.FLOORS["int8"]["top10"] == spec.FLOORS["best"]["top10"] == spec.FLOORS["fp8"]["top10"] == 0.97
    assert metrics.floor_text(spec.FLOORS["int8"]) == "mean >= 0.99, min >= 0.97, top-10 >= 0.97"
    assert metrics.floor_text(spec.FLOORS["fp16"]) == "mean >= 0.9999, min >= 0.999"


def test_passes_checks_top10_where_floor_and_result_have_it():
    fl = spec.FLOORS["int8"]
    good = {"mean_cos": 0.998, "min_cos": 0.99}
    assert metrics.passes({**good, "top10": 0.97}, fl)
    assert not metrics.passes({**good, "top10": 0.969}, fl)
    assert metrics.passes(good, fl) and metrics.passes({**good, "top10": None}, fl)  # logs from before the top-10 floor
    assert not metrics.passes({**good, "min_cos": 0.96, "top10": 1.0}, fl)
    assert metrics.passes({**good, "top10": 0.5}, {"mean_cos": 0.99, "min_cos": 0.97})  # a floor without top10 (fp16, old logs)


def test_quant_peer_rows_are_held_to_the_top10_floor():
    row = {"mean_cos": 0.998, "min_cos": 0.99, "top10": 0.95, "exact_mean_cos": 0.998, "exact_min_cos": 0.99, "exact_top10": 0.99}
    assert quant_peers._pass(row, "int8") is False
    assert quant_peers._pass({**row, "top10": 0.98}, "int8") is True
    fp8 = {k: v for k, v in row.items() if k.startswith("exact_")}  # FP8: as written only
    assert quant_peers._pass({**fp8, "exact_mean_cos": 0.9995, "exact_min_cos": 0.996}, "fp8") is True
    assert quant_peers._pass({**fp8, "exact_mean_cos": 0.9995, "exact_min_cos": 0.996, "exact_top10": 0.9}, "fp8") is False


def test_quality_markdown_prints_the_whole_floor():
    r = {"mean_cos": 0.999, "min_cos": 0.99, "max_abs": 0.01, "rel_l2": 0.02, "top10": 0.96}
    res = {"model": {"used": "m", "source": "s"}, "n_texts": 128, "texts": "data/evaluation.txt", "protocol": "grpc",
           "server": "x", "status": "complete",
           "variants": {"onnx_int8": {"floor": spec.FLOORS["int8"], "pytorch_fp32": r, "pass": metrics.passes(r, spec.FLOORS["int8"])},
                        "onnx_old": {"floor": {"mean_cos": 0.99, "min_cos": 0.97}, "pytorch_fp32": r, "pass": True}}}
    md = quality.to_markdown(res)
    assert "| onnx_int8 | pytorch_fp32 | 0.999000 | 0.990000 | 0.01 | 0.02 | 0.960 | mean >= 0.99, min >= 0.97, top-10 >= 0.97 | NO |" in md
    assert "| mean >= 0.99, min >= 0.97 | yes |" in md  # a row logged before the top-10 floor, as it was judged


def _near_tie(eps: float) -> np.ndarray:
    """Row 0's 2nd and 3rd nearest neighbours (rows 2 and 3) equally similar but for ~eps / 10 (the sign of eps)."""
    x = np.array([[1.0, 0, 0, 0], [1.0, 0.05, 0, 0], [1.0, 0.2, 0.1, 0], [1.0, 0.1, 0.2, 0], [0, 0, 0, 1.0]])
    x[2, 2] += eps
    return x


def test_topk_on_rounded_cosines_ignores_float_noise():
    lo, hi = _near_tie(1e-10), _near_tie(-1e-10)
    assert metrics.topk_neighbours(lo, 2)[0].tolist() == [1, 3] and metrics.topk_neighbours(hi, 2)[0].tolist() == [1, 2]
    assert metrics.topk_agreement(lo, hi, 2) < 1.0  # raw cosines: the noise decides the near-tie
    for x in (lo, hi):  # rounded to the search's decimals: a tie, the lower index first
        assert metrics.topk_neighbours(x, 2, exact.COS_DECIMALS)[0].tolist() == [1, 2]
    assert metrics.topk_agreement(lo, hi, 2, exact.COS_DECIMALS) == 1.0
    assert metrics.topk_agreement(lo[:1], hi[:1]) == 1.0  # one text: no neighbours


class _Fake:
    """An evaluator over 4 MatMuls a..d: cosines meet any target once `a` is excluded, top-10 needs a, b and c."""

    def __init__(self):
        self.nodes = ["a", "b", "c", "d"]
        self.points = {n: [i] for i, n in enumerate(self.nodes)}

    def __call__(self, gate_points, scales):
        excl = {n for n in self.nodes if self.points[n][0] not in set(gate_points)}
        return {"mean_cos": 0.999 if "a" in excl else 0.98, "min_cos": 0.995,
                "top10": 0.95 + 0.01 * len(excl & {"a", "b", "c"})}


def test_greedy_exclusion_keeps_going_until_top10_meets_its_target():
    ev = _Fake()
    target = {"mean_cos": 0.993, "min_cos": 0.99, "top10": 0.98}
    excl, trace, q = int8_search.greedy_exclusion(ev, ev.nodes, ev.points, None, ["a", "d", "b", "c"], target, progress=False)
    assert excl == ["a", "b", "c"] and q["top10"] == pytest.approx(0.98)
    assert [t["step"] for t in trace] == ["all quantized", "exclude a", "exclude d", "exclude b", "exclude c",
                                          "re-quantize b", "re-quantize d", "re-quantize a"]
    assert [t.get("kept") for t in trace[5:]] == [False, True, False]
    # without a top-10 target the cosines alone stop it at `a`
    excl, _, _ = int8_search.greedy_exclusion(ev, ev.nodes, ev.points, None, ["a", "d", "b", "c"],
                                              {"mean_cos": 0.993, "min_cos": 0.99}, progress=False)
    assert excl == ["a"]


def test_search_targets_every_floor_with_a_margin():
    s = int8_search.Int8Settings()
    assert set(s.floor) == {"mean_cos", "min_cos", "top10"} and s.margin_top10 > 0
    assert s.held_out == 128  # top-10 among as many texts as the evaluation texts: comparable with the floor's
