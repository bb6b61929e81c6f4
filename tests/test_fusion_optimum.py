"""`experiments.fusion_optimum`: the exact optimum of the fused-IBN searches under the capacity floor."""

import json

import pytest

from experiments import fusion_optimum

CONFIG = "experiments/configs/detection/person_centernet.py:v3,smoke"


def test_rows_per_multiplier_meet_the_floor_and_never_lose_to_the_baseline(tmp_path, capsys):
    out = str(tmp_path / "opt")
    rows = fusion_optimum.main(["--config", CONFIG, "--out", out])
    reachable = [r for r in rows if r["reachable"]]
    assert [r["multiplier"] for r in rows] == sorted(r["multiplier"] for r in rows) and reachable
    for r in reachable:
        assert r["flops_ratio"] >= 1 - 1e-6
    full = next(r for r in reachable if r["multiplier"] == 1.0)
    assert full["latency_ms"] <= full["baseline_ms"] and full["cut_pct"] >= 0  # the baseline itself qualifies
    assert json.load(open(out + ".json")) == rows
    with pytest.raises(SystemExit) as e:  # results are never overwritten
        fusion_optimum.main(["--config", CONFIG, "--out", out])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err


def test_an_override_picks_the_accelerator_and_a_typo_stops(capsys):
    p32 = fusion_optimum.main(["--config", CONFIG, "--config.cost.accelerator=npu-p32"])
    assert {r["accelerator"] for r in p32 if r["reachable"]} == {"npu-p32"}
    npu = fusion_optimum.main(["--config", CONFIG])
    assert [r["baseline_ms"] for r in p32 if r["reachable"]] != [r["baseline_ms"] for r in npu if r["reachable"]]
    with pytest.raises(SystemExit) as e:
        fusion_optimum.main(["--config", CONFIG, "--config.cost.acelerator=npu"])
    assert e.value.code == 2 and "acelerator" in capsys.readouterr().err
