"""Ratio tables and the issue-6 performance targets, read off result files."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence


from hamfast.bench.config import IMPLS


_COMPARED = ("reference", "per_sample")


def _ms_by_case(records: Iterable[dict]) -> dict[tuple, dict[str, Optional[float]]]:
    """Conv records as ``{(dtype, input, B, G, pass, layer): {impl: ms_median}}``, with layer
    ``"all"`` holding the whole-network sum where all four layers have a time."""
    table: dict[tuple, dict[str, Optional[float]]] = {}
    for r in records:
        if r["bench"] == "conv":
            key = (r.get("dtype", "float32"), r["input"], r["B"], r["G"], r["pass"], r["layer"])
            table.setdefault(key, {})[r["impl"]] = r["ms_median"]
    for key in sorted({k[:5] for k in table}):
        per_layer = [table.get(key + (layer,)) for layer in (1, 2, 3, 4)]
        if None in per_layer:
            continue
        impls = set().union(*per_layer)
        table[key + ("all",)] = {
            impl: sum(ms[impl] for ms in per_layer) if all(ms.get(impl) for ms in per_layer) else None
            for impl in impls
        }
    return table


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator and denominator else None


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _sort_key(key: tuple) -> tuple:
    return key[:5] + ((5,) if key[5] == "all" else (key[5],))


def _conv_table(records: list[dict]) -> str:
    lines = [
        "| dtype | input | B | G | pass | layer | fused ms | reference ms | per_sample ms | bound ms "
        "| reference / fused | per_sample / fused | fused / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, ms in sorted(_ms_by_case(records).items(), key=lambda kv: _sort_key(kv[0])):
        fused = ms.get("fused")
        cells = [str(k) for k in key] + [_fmt(ms.get(impl)) for impl in IMPLS]
        cells += [_fmt(_ratio(ms.get(other), fused), 2) for other in _COMPARED]
        cells.append(_fmt(_ratio(fused, ms.get("bound")), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ham_records(records: Iterable[dict]) -> dict[tuple, dict[str, dict]]:
    """HAM-step records as ``{(input, B, G): {backend: record}}``."""
    table: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if r["bench"] == "ham_step":
            table.setdefault((r["input"], r["B"], r["G"]), {})[r["impl"]] = r
    return table


def _ham_table(records: list[dict]) -> str:
    lines = [
        "| input | B | G | fused samples/s | reference samples/s | fused / reference "
        "| fused peak MiB | reference peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, by_impl in sorted(_ham_records(records).items()):
        fused, reference = by_impl.get("fused", {}), by_impl.get("reference", {})
        cells = [str(k) for k in key] + [
            _fmt(fused.get("samples_per_s"), 1),
            _fmt(reference.get("samples_per_s"), 1),
            _fmt(_ratio(fused.get("samples_per_s"), reference.get("samples_per_s")), 2),
            _fmt(fused.get("peak_mem_mb"), 1),
            _fmt(reference.get("peak_mem_mb"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_tables(data: dict) -> str:
    """Markdown: the conv table (ms per impl and ratios per case, plus a whole-network row
    ``layer = all`` per (dtype, input, B, G, pass)) and the HAM-step table."""
    records = data["records"]
    widths = data["ham_step"]["widths"]
    return (
        "Conv layers (ms = median per call; reference / fused and per_sample / fused > 1: fused is faster; "
        "fused / bound: how far fused is from the ungrouped conv).\n\n"
        + _conv_table(records)
        + f"\n\nHAM training step (float32, widths {widths}, samples spread over 15 patterns).\n\n"
        + _ham_table(records)
    )


def _check(description: str, ok: Optional[bool], measured: str) -> dict:
    status = "missing" if ok is None else "pass" if ok else "FAIL"
    return {"target": description, "status": status, "measured": measured}


def target_checks(data: dict) -> list[dict]:
    """The performance targets of issue 6, read from a float32 result.

    Returns:
        ``[{"target": str, "status": "pass" | "FAIL" | "missing", "measured": str}]``.
    """
    ms = _ms_by_case(data["records"])
    whole = {batch: ms.get(("float32", 128, batch, 15, "fwd+bwd", "all"), {}) for batch in (16, 64)}
    checks = []
    speedup = _ratio(whole[16].get("reference"), whole[16].get("fused"))
    checks.append(_check(
        "whole-network conv fwd+bwd, 128 px, B=16, G=15: fused >= 5x faster than reference",
        None if speedup is None else speedup >= 5, f"{_fmt(speedup, 2)}x",
    ))
    vs_ref = _ratio(whole[64].get("reference"), whole[64].get("fused"))
    vs_per_sample = _ratio(whole[64].get("per_sample"), whole[64].get("fused"))
    checks.append(_check(
        "whole-network conv fwd+bwd, 128 px, B=64, G=15: fused >= 2x faster than reference and faster than per_sample",
        None if vs_ref is None or vs_per_sample is None else vs_ref >= 2 and vs_per_sample > 1,
        f"{_fmt(vs_ref, 2)}x vs reference, {_fmt(vs_per_sample, 2)}x vs per_sample",
    ))
    to_bound = {
        key: _ratio(by_impl.get("fused"), by_impl.get("bound"))
        for key, by_impl in ms.items()
        if key[0] == "float32" and key[2] >= 64 and key[4] == "fwd+bwd" and key[5] != "all"
    }
    measured = [(ratio, key) for key, ratio in to_bound.items() if ratio is not None]
    worst = max(measured, default=None)
    checks.append(_check(
        "conv fwd+bwd, every layer, B >= 64: fused within 1.5x of bound",
        None if worst is None or len(measured) < len(to_bound) else worst[0] <= 1.5,
        "–" if worst is None else
        f"worst {worst[0]:.2f}x (input {worst[1][1]}, B={worst[1][2]}, G={worst[1][3]}, layer {worst[1][5]}), "
        f"{len(measured)} of {len(to_bound)} cases measured",
    ))
    for (input_size, batch, groups), by_impl in sorted(_ham_records(data["records"]).items()):
        fused, reference = by_impl.get("fused", {}), by_impl.get("reference", {})
        speedup = _ratio(fused.get("samples_per_s"), reference.get("samples_per_s"))
        peaks = fused.get("peak_mem_mb"), reference.get("peak_mem_mb")
        memory_ok = None if None in peaks else peaks[0] <= peaks[1]
        checks.append(_check(
            f"HAM step, {input_size} px, B={batch}, mixed (G={groups}): fused >= 2x reference samples/s, "
            "peak memory not above reference",
            None if speedup is None else speedup >= 2 and memory_ok is not False,
            f"{_fmt(speedup, 2)}x, peak {_fmt(peaks[0], 1)} vs {_fmt(peaks[1], 1)} MiB",
        ))
    return checks


def merge_results(results: Sequence[dict]) -> dict:
    """One result from several runs (e.g. a full run split by input size): the first one's header,
    everyone's records and skips, complete only if all are."""
    merged = dict(results[0])
    merged["records"] = [r for result in results for r in result["records"]]
    merged["skipped"] = [s for result in results for s in result.get("skipped", [])]
    merged["complete"] = all(result.get("complete") for result in results)
    return merged


def format_report(data: dict) -> str:
    """Markdown for a result: where it ran, the ratio tables and the target checks."""
    head = (
        f"{data['device']}, torch {data['torch']}, CUDA {data['cuda']}, {data['date']}, "
        f"preset {data['config']['preset']}{'' if data.get('complete') else ' (INCOMPLETE run)'}"
    )
    skipped = "".join(
        f"\n- skipped {s['bench']} {s['impl']} {s['dtype']}: {s['note']}" for s in data.get("skipped", [])
    )
    targets = "\n".join(f"- [{c['status']}] {c['target']}: {c['measured']}" for c in target_checks(data))
    return f"{head}{skipped}\n\n{ratio_tables(data)}\n\nTargets (issue 6, set for an H100):\n\n{targets}\n"


