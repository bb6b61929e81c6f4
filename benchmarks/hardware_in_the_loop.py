"""Hardware in the loop: checks of the export and measurement path, one JSON object.

Sections (`--sections`, comma-separated; more land with the measurement backends):
- `export`: for `--num` random architectures per space (cells whose output is a constant skipped) (full-size NAS-Bench-201, FBNet-CIFAR-100,
  mobile-curated; BatchNorm with non-trivial running statistics), the max relative difference
  `max |ONNX Runtime - JAX| / max |JAX|` of the logits on one batch (target <= 1e-4), and the
  seconds per export (`supernet.export.to_onnx`, jax2onnx plus the explicit-graph pass).
- `surrogate_vs_counts`: on the NAS-Bench-201 `pixel3` and `eyeriss` columns and the five FBNet
  devices, at N = 10 and 50 training architectures (seeds 0-2), test Spearman of the surrogate
  (`hwmodel.fit.fit_space`, dead code chosen by leave-one-out) and of the per-operation-count
  least-squares baseline (how often each choice occurs, plus an intercept).

- `zigzag`: per ZigZag description (`--descriptions`), `--networks` mobile-curated networks measured
  (`experiments.measure`, 2 workers; CSVs in `--workdir`, resumed on rerun) with their wall time;
  the surrogate fitted on `--train` of them, per layer and on whole networks, for latency and
  energy (candidate features: op-group statistics with and without the analytic `npu` latency,
  and op counts, chosen by leave-one-out error), scored on the rest (Spearman, MAPE; targets >= 0.99 and <= 3 %); the analytic model
  before and after `hwmodel.calibrate` (from the description's own spec and from `npu`).
- `onnxruntime`: the same networks measured twice on ONNX Runtime (1 thread, batch 1): the noise
  floor (Spearman between the passes), the surrogate fitted on `--train` (within 0.02 of the
  floor, MAPE <= 5 %), the analytic `mobile-cpu` preset before and after calibration.
- `fusion`: MobileNetV2-1.0 at 224 px (ImageNet strides) and 32 px (CIFAR strides) in the raw
  mobile space; for each block, the share of the network's latency saved by replacing that IBN
  alone with a fused IBN (same kernel, expansion), under the analytic presets, the analytic model
  calibrated on each ZigZag description (the registered `zigzag-<description>` presets), ZigZag
  itself and ONNX Runtime on this CPU; the sum over the blocks where fusing helps (the article:
  35 % on its accelerator, from early blocks), and the Pearson correlation of each model's
  block-by-block gains with ZigZag's.
- `onnx_models`: ZigZag's shipped MobileNetV2 and ResNet-18 ONNX files turned into layer tables
  (`hwmodel.onnx_graph`, as `python -m experiments.cost` does): MACs, params, analytic latency,
  and on each description ZigZag's own ONNX flow (Conv and Gemm nodes only, stock mapping) next
  to our translation of the same nodes, and our totals over every row with stock and depthwise
  mappings.

Example (about 5 minutes on the 2-core CPU):
    python benchmarks/hardware_in_the_loop.py --num 20 --out benchmarks/results/hardware_in_the_loop_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from hwmodel import layers as L  # noqa: E402
from hwmodel.profile import backend_description  # noqa: E402

SPACES = ("nb201", "fbnet-cifar100", "mobile-curated")


def export_check(name: str, num: int, seed: int) -> dict:
    import onnxruntime as ort
    from supernet import make_space, make_supernet
    from supernet.export import to_onnx

    space = make_space(name)
    net = make_supernet(space, rngs=nnx.Rngs(seed))
    s = space.input_size
    x = np.asarray(jax.random.normal(jax.random.key(seed), (2, s, s, 3)), np.float32)
    errs, secs = [], []
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    archs = np.asarray(space.sample(jax.random.key(seed + 1), 4 * num))
    archs = archs[~space.is_constant(archs)][:num]  # a cut-off cell's logits are all 0: no relative error
    for arch in archs:
        sub = net.derive(arch)
        sub.train()
        sub(jnp.asarray(x))  # running statistics away from their initial (0, 1)
        t0 = time.perf_counter()
        model = to_onnx(sub, x.shape)
        secs.append(time.perf_counter() - t0)
        sub.eval()
        want = np.asarray(sub(jnp.asarray(x)))
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        errs.append(float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    return {"num": num, "max_rel_err": max(errs), "median_rel_err": float(np.median(errs)),
            "export_seconds_median": float(np.median(secs)), "meets_1e-4": max(errs) <= 1e-4}


def surrogate_vs_counts(data_dir: str) -> dict:
    from scipy import stats

    from experiments.fit_surrogate import load_latency_csv
    from hwmodel import fit as F
    from supernet import make_space
    from hwmodel.surrogate import fit_baseline

    nb201, fbnet = make_space("nb201"), make_space("fbnet-cifar100")
    nb_path = os.path.join(data_dir, "nas-bench-201", "nb201_cifar10.csv")
    fb_dir = os.path.join(data_dir, "latency", "fbnet_cifar100")
    tasks = [(nb201, nb_path, col, col) for col in ("pixel3_latency_ms", "eyeriss_latency_ms")]
    tasks += [(fbnet, os.path.join(fb_dir, f"{dev}.csv"), None, f"fbnet:{dev}")
              for dev in ("pixel3", "eyeriss", "1080ti_1", "gold_6226", "titan_rtx_32")]
    out = {}
    for space, path, col, label in tasks:
        archs, y = load_latency_csv(path, space, col)
        counts = np.stack([(archs == k).sum(1) for k in range(int(space.max_choices))], 1).astype(np.float64)
        for n in (10, 50):
            rows = []
            for seed in range(3):
                tr, te = F.split(len(y), n, seed)
                s = F.fit_space(space, archs[tr], y[tr])
                x = F.features_of(space, archs[te], s.config, dead_code=s.dead_code)
                pred = x @ np.asarray(s.coef, np.float64) + float(s.intercept)
                base = fit_baseline(counts[tr], y[tr], relative=False)(counts[te])  # plain least squares
                rows.append((stats.spearmanr(pred, y[te])[0], stats.spearmanr(base, y[te])[0],
                             s.dead_code))
            out[f"{label}@{n}"] = {"surrogate_spearman": [round(float(r[0]), 4) for r in rows],
                                 "op_counts_spearman": [round(float(r[1]), 4) for r in rows],
                                 "dead_code": [r[2] for r in rows],
                                 "worst_gap": round(float(min(r[0] - r[1] for r in rows)), 4)}
    return out


def _measure(workdir: str, backend: str, num: int, per_layer: bool, tag: str, workers: int = 2) -> dict:
    """Runs (or resumes) `python -m experiments.measure` into the workdir; wall time of this call."""
    from experiments import measure as measure_cli
    out = os.path.join(workdir, f"{tag}.csv")
    before = max(0, _rows(out))
    argv = ["--space", "mobile-curated", "--backend", backend, "--num", str(num), "--seed", "0",
            "--out", out] + (["--per-layer", os.path.join(workdir, f"{tag}_layers.csv")] if per_layer else [])
    argv += ["--workers", str(workers)] if backend.startswith("zigzag") else []
    t0 = time.perf_counter()
    measure_cli.main(argv)
    sec = time.perf_counter() - t0
    new = _rows(out) - before
    return {"csv": out, "networks_measured_now": new, "seconds": round(sec, 1),
            "seconds_per_network": round(sec / new, 3) if new else None}


def _rows(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)


def _fit(csv_path: str, column: str, train: int, layers: str | None, accelerators: str = "npu") -> dict:
    import contextlib
    import io

    from experiments import fit_surrogate
    argv = ["--space", "mobile-curated", "--data", csv_path, "--column", column, "--train-size", str(train),
            "--seed", "0", "--json", "--accelerators", accelerators] + (["--per-layer", layers] if layers else [])
    with contextlib.redirect_stdout(io.StringIO()):
        r = fit_surrogate.main(argv)
    return {k: round(r[k], 4) for k in ("spearman", "mape")} | {"features": r.get("features")}


def _analytic_vs(space, archs: np.ndarray, y: np.ndarray, train: int, starts: dict) -> dict:
    """Analytic model vs measured latency on the test networks, before and after calibration."""
    from hwmodel import analytic
    from hwmodel.calibrate import calibrate
    from hwmodel.fit import ranking_metrics, split
    tr, te = split(len(y), train, 0)
    tables = jax.vmap(space.layers)(jnp.asarray(archs))
    take = lambda idx: jax.tree.map(lambda v: v[idx], tables)  # noqa: E731
    out = {}
    for label, spec in starts.items():
        before = ranking_metrics(np.asarray(analytic.latency_ms(spec, take(te))), y[te])
        cal = calibrate(spec, take(tr), y[tr])
        after = ranking_metrics(np.asarray(analytic.latency_ms(cal, take(te))), y[te])
        out[label] = {"before": {k: round(before[k], 4) for k in ("spearman", "mape")},
                      "after": {k: round(after[k], 4) for k in ("spearman", "mape")},
                      "calibrated": {"clock_hz": cal.clock_hz, "dram_bytes_per_s": cal.dram_bytes_per_s,
                                     "layer_overhead_s": cal.layer_overhead_s,
                                     "vector_lanes": cal.vector_lanes,
                                     "depthwise_efficiency": cal.depthwise_efficiency},
                      "array": [spec.mac_rows, spec.mac_cols, spec.cores]}
    return out


def zigzag_section(workdir: str, descriptions: list[str], num: int, train: int) -> dict:
    from experiments.fit_surrogate import load_latency_csv
    from hwmodel import ACCELERATORS
    from hwmodel.simulator import analytic_spec
    from supernet import make_space
    space = make_space("mobile-curated")
    out = {}
    for d in descriptions:
        tag = f"zigzag_{d}"
        m = _measure(workdir, f"zigzag:{d}", num, True, tag)
        layers = os.path.join(workdir, f"{tag}_layers.csv")
        # analytic features: `npu` and the description's calibrated preset (calibrated on the same 50
        # training networks, seed-0 split, never on the test ones)
        fits = {f"{col}/{mode}": _fit(m["csv"], col, train, layers if mode == "per_layer" else None,
                                      accelerators=f"npu,zigzag-{d}")
                for col in ("latency_ms", "energy_mj") for mode in ("per_layer", "whole_network")}
        archs, y = load_latency_csv(m["csv"], space)
        out[d] = {"measure": m, "surrogate_fit_on": train, "surrogate": fits,
                  "targets_met": all(v["spearman"] >= 0.99 and v["mape"] <= 3.0 for v in fits.values()),
                  "analytic": _analytic_vs(space, archs, y, train,
                                           {"from_description": analytic_spec(d), "npu": ACCELERATORS["npu"]})}
        out[d]["analytic"]["registered_preset"] = _preset_vs(space, archs, y, train, ACCELERATORS[f"zigzag-{d}"])
    return out


def _preset_vs(space, archs: np.ndarray, y: np.ndarray, train: int, spec) -> dict:
    """A registered (already calibrated) preset on the test networks, as-is."""
    from hwmodel import analytic
    from hwmodel.fit import ranking_metrics, split
    _, te = split(len(y), train, 0)
    pred = np.asarray(jax.vmap(lambda a: analytic.latency_ms(spec, space.layers(a)))(jnp.asarray(archs[te])))
    m = ranking_metrics(pred, y[te])
    return {"name": spec.name, "spearman": round(m["spearman"], 4), "mape": round(m["mape"], 4)}


def onnxruntime_section(workdir: str, num: int, train: int) -> dict:
    from scipy import stats

    from experiments.fit_surrogate import load_latency_csv
    from hwmodel import ACCELERATORS
    from supernet import make_space
    space = make_space("mobile-curated")
    a = _measure(workdir, "onnxruntime", num, True, "ort_a")
    b = _measure(workdir, "onnxruntime", num, False, "ort_b")
    archs, ya = load_latency_csv(a["csv"], space)
    _, yb = load_latency_csv(b["csv"], space)
    floor = float(stats.spearmanr(ya, yb)[0])
    fits = {"per_layer": _fit(a["csv"], "latency_ms", train, os.path.join(workdir, "ort_a_layers.csv"),
                              "mobile-cpu"),
            "whole_network": _fit(a["csv"], "latency_ms", train, None, "mobile-cpu")}
    return {"measure": {"pass_a": a, "pass_b": b}, "noise_floor_spearman": round(floor, 4),
            "pass_to_pass_mape": round(float(100 * np.mean(np.abs(yb - ya) / ya)), 3),
            "surrogate_fit_on": train, "surrogate": fits,
            "targets_met": {k: v["spearman"] >= floor - 0.02 and v["mape"] <= 5.0 for k, v in fits.items()},
            "analytic": _analytic_vs(space, archs, ya, train, {"mobile-cpu": ACCELERATORS["mobile-cpu"]})}


def mobilenetv2(px: int):
    """MobileNetV2-1.0 (Sandler et al. 2018, Table 2) in the raw mobile space at `px` pixels, and
    the architecture with block `b` fused (same kernel and expansion), for every block."""
    from supernet import make_space
    kw = dict(input_size=224, stem_stride=2, stage_strides=(1, 2, 2, 2, 1, 2, 1), num_classes=1000) \
        if px == 224 else dict(input_size=px)
    space = make_space("mobile-raw", **kw)
    types = ["ibn:k3:e1"] + ["ibn:k3:e6"] * (space.num_blocks - 1)
    base = f"mult=1.0|w={'-'.join(map(str, space.base_widths))}|"
    archs = [space.decode(base + ",".join(types))]
    for b in range(space.num_blocks):
        t = list(types)
        t[b] = t[b].replace("ibn", "fused")
        archs.append(space.decode(base + ",".join(t)))
    return space, archs


def fusion_section(descriptions: list[str]) -> dict:
    """Latency gain of fusing each MobileNetV2 block alone, per cost model, at 224 and 32 px."""
    from hwmodel import ACCELERATORS, analytic
    from hwmodel.measure import make_backend
    # the analytic model calibrated on each ZigZag description (registered presets, see accelerators.py)
    specs = {n: ACCELERATORS[n] for n in ("npu", "npu-p32", "edgetpu", "mobile-cpu")} | \
        {f"zigzag-{d}": ACCELERATORS[f"zigzag-{d}"] for d in descriptions}
    out = {}
    for px in (224, 32):
        space, archs = mobilenetv2(px)
        lat = {}
        for name, spec in specs.items():
            lat[f"analytic:{name}"] = [float(analytic.latency_ms(spec, space.layers(a))) for a in archs]
        for d in descriptions:
            b = make_backend(f"zigzag:{d}", workers=2)
            b.prefetch([space.layers(a) for a in archs])
            lat[f"zigzag:{d}"] = [b.measure(space.layers(a)).latency_ms for a in archs]
            b.close()
        ort = make_backend("onnxruntime", repeats=20)
        lat["onnxruntime"] = [ort.measure(space.layers(a), layers=False).latency_ms for a in archs]
        res = {}
        for name, v in lat.items():
            v = np.asarray(v)
            gain = 100 * (v[0] - v[1:]) / v[0]  # % of the network saved by fusing block b alone
            res[name] = {"mobilenetv2_ms": round(float(v[0]), 4),
                         "gain_pct_by_block": [round(float(g), 2) for g in gain],
                         "gain_pct_fusing_every_helpful_block": round(float(gain[gain > 0].sum()), 2),
                         "blocks_that_help": [int(b) for b in np.flatnonzero(gain > 0)]}
        for name, r in res.items():  # block-by-block agreement with each simulated description
            r["pearson_gain_vs_zigzag"] = {d: round(float(np.corrcoef(r["gain_pct_by_block"],
                                                                       res[f"zigzag:{d}"]["gain_pct_by_block"])[0, 1]), 3)
                                           for d in descriptions}
        out[f"{px}px"] = res
    return out


def onnx_models_section(descriptions: list[str]) -> dict:
    """ZigZag's shipped ONNX models costed by `experiments.cost`'s path, next to ZigZag's own totals."""
    import zigzag

    from hwmodel import ACCELERATORS, analytic
    from hwmodel.layers import OpKind
    from hwmodel.measure import make_backend
    from hwmodel.onnx_graph import computing_rows, layer_table
    from hwmodel.simulator import zigzag_onnx_totals
    import onnx
    out = {}
    for name in ("mobilenetv2", "resnet18"):
        model = onnx.load(os.path.join(os.path.dirname(zigzag.__file__), "inputs", "workload", f"{name}.onnx"),
                          load_external_data=False)
        t = layer_table(model)
        rows = computing_rows(t)
        conv = np.isin(np.asarray(t.op), [OpKind.CONV, OpKind.DWCONV, OpKind.LINEAR])
        res = {"macs": float(np.sum(np.asarray(L.macs(t)))), "params": float(L.total_params(t)),
               "rows": int(len(rows))}
        for p in ("npu", "edgetpu"):
            res[f"analytic:{p}_ms"] = round(float(analytic.latency_ms(ACCELERATORS[p], t)), 4)
        for d in descriptions:
            t0 = time.perf_counter()
            cyc, pj = zigzag_onnx_totals(model, d)
            own_s = time.perf_counter() - t0
            stock = make_backend(f"zigzag:{d}", depthwise_mapping=False, workers=2)
            ms = stock.measure_rows(t, rows)
            stock.close()
            ours = make_backend(f"zigzag:{d}", workers=2)
            mo = ours.measure_rows(t, rows)
            ours.close()
            res[f"zigzag:{d}"] = {
                "zigzag_own_flow": {"cycles": cyc, "energy_mj": pj * 1e-9, "seconds": round(own_s, 1)},
                "ours_conv_gemm_stock_mapping": {"cycles": float(ms.layer_latency_ms[conv].sum() * 1e6),
                                                 "energy_mj": float(ms.layer_energy_mj[conv].sum())},
                "ours_all_rows_stock_mapping": {"latency_ms": ms.latency_ms, "energy_mj": ms.energy_mj},
                "ours_all_rows_depthwise_mapping": {"latency_ms": mo.latency_ms, "energy_mj": mo.energy_mj}}
        out[name] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="export,surrogate_vs_counts")
    p.add_argument("--num", type=int, default=20, help="architectures per space (export)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.environ.get("HWNAS_DATA_DIR", "../shared/data"))
    p.add_argument("--out", default=None, help="also write the JSON here (refuses to overwrite)")
    p.add_argument("--workdir", default="workdirs/hardware_in_the_loop",
                   help="measurement CSVs (kept; a rerun resumes and reuses them)")
    p.add_argument("--networks", type=int, default=300, help="mobile-curated networks per backend")
    p.add_argument("--train", type=int, default=50, help="networks the surrogate is fitted on")
    p.add_argument("--descriptions", default="edge_tpu_like,tesla_npu_like", help="ZigZag descriptions")
    args = p.parse_args()
    if args.out and os.path.exists(args.out):
        p.exit(2, f"error: {args.out} exists; choose another --out\n")
    sections = [s for s in args.sections.split(",") if s]
    valid = ("export", "surrogate_vs_counts", "zigzag", "onnxruntime", "fusion", "onnx_models")
    unknown = set(sections) - set(valid)
    if unknown:
        p.exit(2, f"error: unknown sections {sorted(unknown)}; valid: {', '.join(valid)}\n")
    os.makedirs(args.workdir, exist_ok=True)
    res = {"device": backend_description(), "sections": {}}
    t0 = time.perf_counter()
    if "export" in sections:
        res["sections"]["export"] = {name: export_check(name, args.num, args.seed) for name in SPACES}
    if "surrogate_vs_counts" in sections:
        if not os.path.isdir(args.data_dir):
            p.exit(2, f"error: data folder {args.data_dir!r} not found (--data-dir or HWNAS_DATA_DIR)\n")
        res["sections"]["surrogate_vs_counts"] = surrogate_vs_counts(args.data_dir)
    if "zigzag" in sections:
        res["sections"]["zigzag"] = zigzag_section(args.workdir, args.descriptions.split(","), args.networks,
                                                   args.train)
    if "onnxruntime" in sections:
        res["sections"]["onnxruntime"] = onnxruntime_section(args.workdir, args.networks, args.train)
    if "fusion" in sections:
        res["sections"]["fusion"] = fusion_section(args.descriptions.split(","))
    if "onnx_models" in sections:
        res["sections"]["onnx_models"] = onnx_models_section(args.descriptions.split(","))
    res["seconds"] = time.perf_counter() - t0
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "x") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
