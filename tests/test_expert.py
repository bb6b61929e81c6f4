"""Expert-in-the-loop rules (`supernet.expert`): every rule keeps the architecture valid and is
idempotent, the rules do what they say on hand-checked cases, mined rules reproduce the architecture
they were mined from, and bad specs stop with one message."""

import jax
import numpy as np
import pytest

from hwmodel import ACCELERATORS, analytic
from supernet import expert as E
from supernet.spaces import make_space
from supernet.spaces.mobile import BLOCK_TYPES

KW = dict(blocks_per_stage=(1, 2, 2), base_widths=(16, 24, 40), stage_strides=(1, 2, 2), head_width=64)
RAW, CURATED = make_space("mobile-raw", **KW), make_space("mobile-curated", **KW)
SPECS = ["fuse", "fuse(stages=(0,))", "no_depthwise", "fuse_where_it_pays", "align_widths", "even_widths",
         "even_widths(factor=0.75)", "multiplier(value=0.5)", "stage_widths(factors=(1.0, 1.25, 0.5))"]


@pytest.mark.parametrize("space", [RAW, CURATED], ids=lambda s: s.name)
@pytest.mark.parametrize("spec", SPECS)
def test_every_rule_keeps_the_architecture_valid_and_is_idempotent(space, spec):
    rule = E.parse_rule(spec)
    for a in [space.baseline_arch()] + list(space.validate_batch(space.sample(jax.random.key(0), 4))):
        once = rule.apply(space, a)
        assert space.validate(once.arch) is not None
        assert all(c.rule == rule.name for c in once.changes)
        changed = {space.decisions[d].name for d in np.flatnonzero(once.arch != a)}
        assert changed == {c.decision for c in once.changes}  # it says what it changed, all of it
        twice = rule.apply(space, once.arch)
        assert twice.changes == () and (twice.arch == once.arch).all(), spec


def test_align_widths_puts_every_stage_on_a_multiple_of_p_and_is_a_no_op_when_curated():
    a = RAW.validate(RAW.decode("mult=0.75|w=14-30-50|ibn:k3:e1,ibn:k3:e6,ibn:k3:e6,ibn:k3:e6,ibn:k3:e6"))
    out = E.apply_rules(RAW, a, ["align_widths"])
    assert RAW.stage_widths(a).tolist() == [11, 23, 38]  # round(0.75 x w), half up
    assert RAW.stage_widths(out.arch).tolist() == [16, 16, 32]  # nearest multiples of 16 (23 -> 16, 38 -> 32)
    assert E.apply_rules(CURATED, CURATED.baseline_arch(), ["align_widths"]).changes == ()


def test_fuse_rules_change_only_block_types_and_fuse_where_it_pays_lowers_latency():
    base = RAW.baseline_arch()
    early = E.apply_rules(RAW, base, ["fuse(stages=(0, 1))"]).arch
    types = [BLOCK_TYPES[t] for t in early[RAW.type_ids]]
    assert types == ["fused", "fused", "fused", "ibn", "ibn"]
    assert (np.delete(early, RAW.type_ids) == np.delete(base, RAW.type_ids)).all()
    assert (E.apply_rules(RAW, base, ["no_depthwise"]).arch == E.apply_rules(RAW, base, ["fuse"]).arch).all()
    npu = ACCELERATORS["npu"]
    lat = lambda a: float(analytic.latency_ms(npu, RAW.layers(a)))  # noqa: E731
    paid = E.apply_rules(RAW, base, ["fuse_where_it_pays(accelerator='npu')"])
    assert paid.changes and lat(paid.arch) < lat(base)
    for b in range(RAW.num_blocks):  # at the fixed point no single further fusion pays
        if paid.arch[RAW.type_ids[b]] == BLOCK_TYPES.index("ibn"):
            trial = paid.arch.copy()
            trial[RAW.type_ids[b]] = BLOCK_TYPES.index("fused")
            assert lat(trial) >= lat(paid.arch)


@pytest.mark.parametrize("floor", [0.0, 1.0, 1.5])
def test_best_fusion_is_the_brute_force_optimum_under_a_flops_floor(floor):
    """Against every IBN / fused assignment of the 5 blocks, costed on the whole layer table."""
    import itertools
    from hwmodel.layers import total_flops
    npu = ACCELERATORS["npu"]
    base = CURATED.baseline_arch()
    min_flops = floor * float(total_flops(CURATED.layers(base)))
    best = None
    for types in itertools.product([BLOCK_TYPES.index("ibn"), BLOCK_TYPES.index("fused")], repeat=CURATED.num_blocks):
        a = base.copy()
        a[CURATED.type_ids] = types
        t = CURATED.layers(a)
        if float(total_flops(t)) >= min_flops * (1 - 1e-6):
            ms = float(analytic.latency_ms(npu, t))
            best = ms if best is None else min(best, ms)
    arch, ms = E.best_fusion(CURATED, base, min_flops)
    assert ms == pytest.approx(best, rel=1e-5)
    assert float(total_flops(CURATED.layers(arch))) >= min_flops * (1 - 1e-6)
    assert (np.delete(arch, CURATED.type_ids) == np.delete(base, CURATED.type_ids)).all()
    if floor == 1.0:  # fusing adds FLOPs, so MobileNetV2's floor admits fusing where it pays
        assert ms < float(analytic.latency_ms(npu, CURATED.layers(base)))


def test_best_fusion_says_the_most_flops_reachable():
    base = CURATED.baseline_arch()
    with pytest.raises(ValueError, match="the most reachable is"):
        E.best_fusion(CURATED, base, min_flops=1e15)


def test_mined_rules_reproduce_the_architecture_and_transfer_to_another_task():
    found = CURATED.decode("mult=0.75|w=16-32-32|fused:k3:e1,fused:k3:e6,fused:k3:e6,ibn:k3:e6,ibn:k3:e6")
    rules = E.mine(CURATED, found)
    assert E.describe(rules)[0] == "fuse(stages=(0, 1))"
    again = E.apply_rules(CURATED, CURATED.baseline_arch(), rules)
    assert (again.arch == found).all()
    # the spec strings read back to the same rules
    assert (E.apply_rules(CURATED, CURATED.baseline_arch(), E.describe(rules)).arch == found).all()
    # another task (100 classes at 64 px): the same decisions on its own baseline, no search
    other = make_space("mobile-curated", num_classes=100, input_size=64, **KW)
    moved = E.apply_rules(other, other.baseline_arch(), rules).arch
    assert other.encode(moved) == CURATED.encode(found)
    # an architecture the rules cannot express (a kernel of 5): reproduced up to that decision
    odd = CURATED.decode("mult=0.75|w=16-32-32|fused:k5:e1,fused:k3:e6,fused:k3:e6,ibn:k3:e6,ibn:k3:e6")
    back = E.apply_rules(CURATED, CURATED.baseline_arch(), E.mine(CURATED, odd)).arch
    assert np.flatnonzero(back != odd).tolist() == [CURATED.kernel_ids[0]]


def test_hold_fixes_what_the_rules_set_and_nothing_else():
    """`expert.hold`: every decision a rule set (changed or confirmed) allows only the rules'
    choice, every other decision keeps the choices it had; a choice the mask excludes stops."""
    full = CURATED.full_mask().allowed
    out = E.apply_rules(CURATED, CURATED.baseline_arch(), ["multiplier(value=0.5)", "fuse(stages=(0,))"])
    stage0 = CURATED.type_ids[CURATED.block_stage == 0].tolist()
    assert out.decided == frozenset([CURATED.mult_id, *stage0])
    m = E.hold(CURATED, out).allowed
    for d in range(CURATED.num_decisions):
        if d in out.decided:
            assert np.flatnonzero(m[d]).tolist() == [out.arch[d]]
        else:
            assert np.array_equal(m[d], full[d])
    # a rule that confirms what the architecture has (the baseline's multiplier 1.0) still holds it
    again = E.apply_rules(CURATED, CURATED.baseline_arch(), ["multiplier(value=1.0)"])
    assert again.changes == () and again.decided == frozenset([CURATED.mult_id])
    with pytest.raises(ValueError, match="the rules set width_multiplier = 0.5, which the search space"):
        E.hold(CURATED, out, CURATED.mask(remove={"width_multiplier": ["0.5"]}))


def test_bad_rules_stop_with_one_message():
    with pytest.raises(KeyError, match="unknown expert rule 'fuze'; valid names: align_widths"):
        E.parse_rule("fuze")
    with pytest.raises(ValueError, match="takes \\['stages'\\], not \\['stage'\\]"):
        E.parse_rule("fuse(stage=1)")
    with pytest.raises(ValueError, match="must look like name or name"):
        E.parse_rule("fuse stages=1")
    with pytest.raises(ValueError, match="name its arguments"):
        E.parse_rule("multiplier(0.5)")
    with pytest.raises(ValueError, match="not one of the space's multipliers"):
        E.apply_rules(RAW, RAW.baseline_arch(), ["multiplier(value=0.6)"])
    with pytest.raises(ValueError, match="no stage \\[7\\]"):
        E.apply_rules(RAW, RAW.baseline_arch(), ["fuse(stages=(7,))"])
    with pytest.raises(TypeError, match="act on the mobile spaces"):
        E.parse_rule("fuse").apply(make_space("nb201"), np.zeros(6, np.int32))


def test_expert_stage_carries_mined_rules_from_another_workdir(tmp_path):
    """The launcher's `expert` arm: rules mined from another run's workdir, applied to this run's
    baseline, no search; a bad rule or a missing workdir stops before any work."""
    import json

    from experiments.config import ConfigError, load_config
    from experiments.pipeline import launch, prepare
    cfg = load_config("experiments/configs/mobile/npu.py:expert,smoke")
    found = "mult=0.75|w=8-16|fused:k3:e1,fused:k3:e6,fused:k3:e6"
    src = tmp_path / "search"
    src.mkdir()
    (src / "results.json").write_text(json.dumps({"architecture": found}))
    (src / "config.json").write_text(json.dumps({"config": {"space": {"name": cfg.space.name,
                                                                       "kwargs": dict(cfg.space.kwargs)}}}))
    cfg.stages = ["expert"]
    cfg.expert.rules = ()
    cfg.expert.mine_from = str(src)
    prepare(cfg, quiet=True)
    res = launch(cfg, str(tmp_path / "expert"))
    assert res["architecture"] == found
    assert res["stages"]["expert"]["rules"][0] == "fuse(stages=(0, 1))"
    cfg.expert.mine_from = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="results.json is missing"):
        prepare(cfg, quiet=True)
    cfg.expert.mine_from, cfg.expert.rules = "", ("fuse(stage=0)",)
    with pytest.raises(ConfigError, match="expert.rules: expert rule 'fuse' takes"):
        prepare(cfg, quiet=True)
    cfg.expert.rules, cfg.expert.hold = ("multiplier(value=0.5)",), True
    with pytest.raises(ConfigError, match="expert.hold fixes the rules' decisions for a later 'evolve'"):
        prepare(cfg, quiet=True)
    cfg.expert.hold = False
    cfg.expert.rules, cfg.stages = (), ["expert", "single_shot"]
    with pytest.raises(ConfigError, match="'expert' is an arm of its own"):
        prepare(cfg, quiet=True)
