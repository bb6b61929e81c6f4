"""The `expert` stage: the expert-in-the-loop arm (`supernet.expert`). It starts from the space's
baseline (MobileNetV2), applies the rules mined from another run's found architecture
(`expert.mine_from`, a workdir) and then the rules named in `expert.rules`, and hands the result on
(e.g. to `retrain`), with no search: the article's "rules alone" arm next to full NAS. Before an
`evolve` stage it is rules + NAS: the rules' network seeds the population (`evolve.warm_start`),
and with `expert.hold=True` every decision a rule set is also held at the rules' choice, so the
search decides only the rest (the expert fixes the multiplier, NAS the blocks)."""

from __future__ import annotations

import json
import os
from typing import Any

from supernet import expert
from supernet.spaces import make_space
from supernet.spaces.mobile import MobileSpace
from experiments.config import ConfigError
from experiments.context import STAGES, Context


def mined_rules(workdir: str) -> list[str]:
    """The rules (spec strings) implied by the architecture in `workdir`'s `results.json`, decoded in
    the space that run recorded (it may be another task's: another input size or class count)."""
    res, cfg = (os.path.join(workdir, f) for f in ("results.json", "config.json"))
    for path in (res, cfg):
        if not os.path.isfile(path):
            raise ConfigError(f"expert.mine_from: {path} is missing; point it at a finished run's workdir")
    with open(res) as f:
        arch = json.load(f)["architecture"]
    with open(cfg) as f:
        sc = json.load(f)["config"]["space"]
    space = make_space(sc["name"], **sc.get("kwargs", {}))
    if not isinstance(space, MobileSpace):
        raise ConfigError(f"expert.mine_from: {workdir} searched {space.name!r}; rules are mined from the mobile spaces")
    return expert.describe(expert.mine(space, space.decode(arch)))


@STAGES.register("expert")
def stage_expert(ctx: Context) -> dict[str, Any]:
    ec = ctx.cfg.expert
    rules = (mined_rules(ec.mine_from) if ec.mine_from else []) + list(ec.rules)
    out = expert.apply_rules(ctx.space, ctx.space.baseline_arch(), rules)
    ctx.arch = out.arch
    for c in out.changes:
        print(f"expert: {c}")
    res = {"arch": ctx.space.encode(out.arch), "rules": rules, "changes": [str(c) for c in out.changes], "held": []}
    if ec.hold:  # checked (`experiments.checks`): a later evolve and no conflict with space.free / remove
        ctx.mask = expert.hold(ctx.space, out, ctx.mask)
        res["held"] = [ctx.space.decisions[d].name for d in sorted(out.decided)]
        res["mask"] = ctx.mask.allowed.tolist()  # what a resumed run restores before its evolve
        print(f"expert: the search holds {len(res['held'])} decisions at the rules' choices "
              f"({ctx.mask.size:.3g} architectures left)")
    return res
