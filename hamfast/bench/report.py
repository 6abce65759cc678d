"""Ratio tables and the issue-10 performance targets, read off result files."""
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


# Issue 10's targets (ratios measured in one run on an H100 or H200).
WHOLE_STACK_BATCHES = (16, 64, 256)
WHOLE_STACK_TO_BOUND = 1.5  # fused / bound, whole conv stack fwd+bwd, 128 px, G = 15
LAYER_TO_BOUND = 2.0  # fused / bound, every layer fwd+bwd, B >= 64
HAM_SPEEDUP = {16: 2.0, 64: 1.5}  # fused / reference samples/s of the HAM training step
MOONSHOT_TO_BOUND = 1.1  # grouping costs nothing


def target_checks(data: dict) -> list[dict]:
    """The performance targets of issue 10, read from a result (every conv dtype it holds).

    Returns:
        ``[{"target": str, "status": "pass" | "FAIL" | "missing", "measured": str}]``; the
        moonshot's status is reported the same way but is a direction, not a requirement.
    """
    ms = _ms_by_case(data["records"])
    dtypes = sorted({key[0] for key in ms}, key=lambda d: (d != "float32", d))
    checks = []
    for dtype in dtypes:
        for batch in WHOLE_STACK_BATCHES:
            whole = ms.get((dtype, 128, batch, 15, "fwd+bwd", "all"), {})
            to_bound = _ratio(whole.get("fused"), whole.get("bound"))
            vs = {other: _ratio(whole.get(other), whole.get("fused")) for other in _COMPARED}
            known = None not in (to_bound, *vs.values())
            checks.append(_check(
                f"whole conv stack fwd+bwd, {dtype}, 128 px, B={batch}, G=15: fused <= {WHOLE_STACK_TO_BOUND}x bound "
                "and faster than reference and per_sample",
                (to_bound <= WHOLE_STACK_TO_BOUND and min(vs.values()) > 1) if known else None,
                f"{_fmt(to_bound, 2)}x bound, {_fmt(vs['reference'], 2)}x faster than reference, "
                f"{_fmt(vs['per_sample'], 2)}x faster than per_sample",
            ))
        to_bound = {
            key: _ratio(by_impl.get("fused"), by_impl.get("bound"))
            for key, by_impl in ms.items()
            if key[0] == dtype and key[2] >= 64 and key[4] == "fwd+bwd" and key[5] != "all"
        }
        measured = [(ratio, key) for key, ratio in to_bound.items() if ratio is not None]
        worst = max(measured, default=None)
        checks.append(_check(
            f"conv fwd+bwd, {dtype}, every layer, B >= 64: fused <= {LAYER_TO_BOUND}x bound",
            None if worst is None or len(measured) < len(to_bound) else worst[0] <= LAYER_TO_BOUND,
            "–" if worst is None else
            f"worst {worst[0]:.2f}x (input {worst[1][1]}, B={worst[1][2]}, G={worst[1][3]}, layer {worst[1][5]}), "
            f"{len(measured)} of {len(to_bound)} cases measured",
        ))
    for (input_size, batch, groups), by_impl in sorted(_ham_records(data["records"]).items()):
        if batch not in HAM_SPEEDUP:
            continue
        fused, reference = by_impl.get("fused", {}), by_impl.get("reference", {})
        speedup = _ratio(fused.get("samples_per_s"), reference.get("samples_per_s"))
        peaks = fused.get("peak_mem_mb"), reference.get("peak_mem_mb")
        memory_ok = None if None in peaks else peaks[0] <= peaks[1]
        checks.append(_check(
            f"HAM step, {input_size} px, B={batch}, mixed (G={groups}): fused >= {HAM_SPEEDUP[batch]}x reference "
            "samples/s, peak memory not above reference",
            None if speedup is None else speedup >= HAM_SPEEDUP[batch] and memory_ok is not False,
            f"{_fmt(speedup, 2)}x, peak {_fmt(peaks[0], 1)} vs {_fmt(peaks[1], 1)} MiB",
        ))
    moonshot = [
        (_ratio(ms.get((dtype, 128, batch, 15, "fwd+bwd", "all"), {}).get("fused"),
                ms.get((dtype, 128, batch, 15, "fwd+bwd", "all"), {}).get("bound")), dtype, batch)
        for dtype in dtypes for batch in WHOLE_STACK_BATCHES
    ]
    moonshot = [m for m in moonshot if m[0] is not None]
    worst = max(moonshot, default=None)
    checks.append(_check(
        f"moonshot, grouping costs nothing: whole conv stack fwd+bwd, 128 px, G=15, fused <= {MOONSHOT_TO_BOUND}x bound",
        None if worst is None else worst[0] <= MOONSHOT_TO_BOUND,
        "–" if worst is None else "; ".join(f"{d} B={b}: {r:.2f}x" for r, d, b in moonshot),
    ))
    return checks


_HEADER_KEYS = {"device": str, "torch": str, "date": str, "config": dict, "ham_step": dict, "records": list}
_RECORD_KEYS = {"conv": ("input", "B", "G", "pass", "layer", "impl", "ms_median"),
                "ham_step": ("input", "B", "G", "impl", "samples_per_s", "peak_mem_mb")}


def result_problem(data) -> Optional[str]:
    """Why ``data`` (parsed JSON) is not a ``hamfast bench`` result that the tables can read, or None."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    for key, kind in _HEADER_KEYS.items():
        if not isinstance(data.get(key), kind):
            return f"no {key!r} ({kind.__name__})"
    if not isinstance(data["config"].get("preset"), str) or not isinstance(data["ham_step"].get("widths"), list):
        return "no config.preset or ham_step.widths"
    for i, record in enumerate(data["records"]):
        keys = _RECORD_KEYS.get(record.get("bench")) if isinstance(record, dict) else None
        if keys is None:
            return f"record {i} is not a conv or ham_step record"
        missing = [k for k in keys if k not in record]
        if missing:
            return f"record {i} lacks {missing}"
    return None


def load_result(path) -> dict:
    """Read one result file written by ``hamfast bench --out``.

    Raises:
        ValueError: one line naming the file: missing, unreadable, not JSON (e.g. truncated), or
            not a bench result.
    """
    import json

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise ValueError(f"--table {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--table {path}: not a text file (a result of `hamfast bench --out` is JSON)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--table {path}: not valid JSON (truncated or damaged?): {exc}") from None
    problem = result_problem(data)
    if problem:
        raise ValueError(f"--table {path} is not a result of `hamfast bench --out`: {problem}")
    return data


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
    return f"{head}{skipped}\n\n{ratio_tables(data)}\n\nTargets (issue 10, ratios in one run on an H100 or H200):\n\n{targets}\n"


