"""The benchmark machinery (hamfast.bench) on CPU: shapes, implementations, the JSON record, the
report. Nothing here asserts a timing."""
import json
import subprocess
import sys

import pytest
import torch

from hamfast import bench
from hamfast.models.inputs import min_input_size

RECORD_KEYS = {"bench", "layer", "input", "B", "G", "pass", "impl", "ms_median", "samples_per_s", "peak_mem_mb"}
HEADER_KEYS = {"device", "torch", "cuda", "date", "dtype", "records"}


def test_imports_without_monai_and_nibabel():
    # The GPU machine has neither; None in sys.modules makes any import of them fail.
    code = "import sys; sys.modules['monai'] = sys.modules['nibabel'] = None; import hamfast.bench"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layer_input_sizes_follow_cbrtiny():
    assert bench.layer_input_sizes(128) == [128, 61, 28, 11]
    assert bench.layer_input_sizes(240) == [240, 117, 56, 25]
    # the smallest valid input ends at 1x1 after the last block: conv 5x5 of the last layer input, then pool
    last = bench.layer_input_sizes(min_input_size())[-1]
    assert (last - 4 - 3) // 2 + 1 == 1


@pytest.mark.parametrize("batch,groups", [(16, 15), (64, 15), (16, 4), (5, 1)])
def test_spread_groups_is_even_and_shuffled(batch, groups):
    group = bench.spread_groups(batch, groups, torch.Generator().manual_seed(0))
    counts = torch.bincount(group, minlength=groups)
    assert group.shape == (batch,) and counts.sum() == batch
    assert int(counts.max() - counts.min()) <= 1


@pytest.mark.parametrize("impl", ["fused", "per_sample"])
@pytest.mark.parametrize("pass_", bench.PASSES)
def test_grouped_impls_agree_with_reference(impl, pass_):
    case = bench.ConvCase(2, 96, 13, 3, 5, 6, 4, pass_, torch.float64)
    inputs = bench.make_conv_inputs(case, impl, torch.Generator().manual_seed(0))
    expected = bench.CONV_IMPLS["reference"](inputs)
    out = bench.CONV_IMPLS[impl](inputs)
    assert out.shape == (6, 5, case.output_size, case.output_size)
    torch.testing.assert_close(out, expected)
    if pass_ == "fwd+bwd":
        wrt = (inputs.x, inputs.weight, inputs.bias)
        got = torch.autograd.grad(out, wrt, inputs.grad_out)
        want = torch.autograd.grad(expected, wrt, inputs.grad_out)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_bound_is_one_shared_weight_conv():
    case = bench.ConvCase(1, 96, 12, 2, 3, 4, 4, "fwd")
    inputs = bench.make_conv_inputs(case, "bound", torch.Generator().manual_seed(0))
    assert inputs.weight.shape[0] == 1
    torch.testing.assert_close(
        bench.CONV_IMPLS["bound"](inputs), torch.nn.functional.conv2d(inputs.x, inputs.weight[0], inputs.bias[0])
    )


def test_conv_case_flops():
    case = bench.ConvCase(1, 128, 128, 4, 64, 16, 15, "fwd")
    assert case.flops() == 2 * 16 * 64 * 4 * 25 * 124 * 124
    assert bench.ConvCase(1, 128, 128, 4, 64, 16, 15, "fwd+bwd").flops() == 3 * case.flops()


def test_mixed_batch_spreads_over_the_patterns():
    x, available, labels = bench.mixed_batch(30, 96, torch.Generator().manual_seed(0))
    assert x.shape == (30, 4, 96, 96) and labels.shape == (30,)
    codes = (available.long() * torch.tensor([1, 2, 4, 8])).sum(1)
    assert torch.equal(torch.bincount(codes, minlength=16), torch.tensor([0] + [2] * 15))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "dry.json"
    assert bench.main(["--dry-run", "--out", str(out), "--layers", "3,4", "--repeats", "2"]) == 0
    return json.loads(out.read_text())


def test_dry_run_writes_the_schema(dry_run):
    assert HEADER_KEYS <= dry_run.keys()
    assert dry_run["complete"] and dry_run["config"]["preset"] == "dry-run"
    records = dry_run["records"]
    conv = [r for r in records if r["bench"] == "conv"]
    ham = [r for r in records if r["bench"] == "ham_step"]
    impls = [i for i in bench.IMPLS if i != "fused" or not bench.fused_unavailable(torch.device("cpu"))]
    assert len(conv) == 2 * 2 * len(impls)  # layers 3-4 x 2 passes
    assert {r["impl"] for r in ham} <= set(bench.HAM_BACKENDS) and ham
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert r["pass"] in bench.PASSES and r["impl"] in bench.IMPLS and r["dtype"] == "float32"
        assert r["ms_median"] > 0 and r["samples_per_s"] > 0 and r["repeats"] == 2
        assert r["peak_mem_mb"] is None  # CPU: no allocator statistics
    assert all(r["layer"] in (3, 4) for r in conv) and all(r["layer"] is None for r in ham)


def test_table_of_a_dry_run(dry_run, tmp_path, capsys):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(dry_run))
    assert bench.main(["--table", str(path)]) == 0
    text = capsys.readouterr().out
    assert "| float32 | 96 | 4 | 3 | fwd+bwd | 4 |" in text and "Targets" in text


def test_table_merges_split_runs(dry_run, tmp_path, capsys):
    layer3 = dict(dry_run, records=[r for r in dry_run["records"] if r["layer"] != 4])
    layer4 = dict(dry_run, records=[r for r in dry_run["records"] if r["layer"] == 4], complete=False)
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, part in zip(paths, (layer3, layer4)):
        path.write_text(json.dumps(part))
    assert bench.main(["--table", *map(str, paths)]) == 0
    text = capsys.readouterr().out
    assert "| fwd+bwd | 3 |" in text and "| fwd+bwd | 4 |" in text and "INCOMPLETE" in text


def _conv_record(impl, ms, layer, batch):
    return {
        "bench": "conv", "layer": layer, "input": 128, "B": batch, "G": 15, "pass": "fwd+bwd", "impl": impl,
        "dtype": "float32", "ms_median": ms, "samples_per_s": None if ms is None else batch / ms * 1e3,
        "peak_mem_mb": None,
    }


def _ham_record(impl, samples_per_s, peak_mem_mb):
    return {
        "bench": "ham_step", "layer": None, "input": 128, "B": 16, "G": 15, "pass": "fwd+bwd", "impl": impl,
        "dtype": "float32", "ms_median": 16 / samples_per_s * 1e3, "samples_per_s": samples_per_s,
        "peak_mem_mb": peak_mem_mb,
    }


def _synthetic_result():
    """B=16: every impl on every layer; B=64: per_sample ran out of memory on layer 4."""
    ms = {16: {"fused": 1.0, "reference": 6.0, "per_sample": 3.0, "bound": 0.5},
          64: {"fused": 2.0, "reference": 5.0, "per_sample": 3.0, "bound": 1.5}}
    records = [
        _conv_record(impl, None if (batch, layer, impl) == (64, 4, "per_sample") else t, layer, batch)
        for batch in ms for layer in (1, 2, 3, 4) for impl, t in ms[batch].items()
    ]
    records += [_ham_record("fused", 900.0, 100.0), _ham_record("reference", 300.0, 120.0)]
    return {"device": "test", "torch": "x", "cuda": None, "date": "d", "dtype": "float32",
            "config": {"preset": "full"}, "complete": True, "ham_step": {"widths": [64, 128, 256, 512]},
            "records": records}


def test_ratio_table_has_a_whole_network_row():
    table = bench.ratio_tables(_synthetic_result())
    # B=16: fused 4 ms, reference 24, per_sample 12, bound 2 over the four layers
    assert "| float32 | 128 | 16 | 15 | fwd+bwd | all | 4.000 | 24.000 | 12.000 | 2.000 | 6.00 | 3.00 | 2.00 |" in table
    # B=64: per_sample ran out of memory on layer 4, so it has no whole-network time
    assert "| float32 | 128 | 64 | 15 | fwd+bwd | all | 8.000 | 20.000 | – | 6.000 | 2.50 | – | 1.33 |" in table
    assert "| 128 | 16 | 15 | 900.0 | 300.0 | 3.00 | 100.0 | 120.0 |" in table


def test_target_checks():
    checks = {c["target"].split(":")[0]: c for c in bench.target_checks(_synthetic_result())}
    # B=16: fused 4 ms over the stack, bound 2, reference 24, per_sample 12
    b16 = checks["whole conv stack fwd+bwd, float32, 128 px, B=16, G=15"]
    assert b16["status"] == "FAIL" and "2.00x bound, 6.00x faster than reference, 3.00x faster than per_sample" in b16["measured"]
    assert checks["whole conv stack fwd+bwd, float32, 128 px, B=64, G=15"]["status"] == "missing"
    assert checks["whole conv stack fwd+bwd, float32, 128 px, B=256, G=15"]["status"] == "missing"
    bound = checks["conv fwd+bwd, float32, every layer, B >= 64"]
    assert bound["status"] == "pass" and "worst 1.33x" in bound["measured"]
    ham = checks["HAM step, 128 px, B=16, mixed (G=15)"]
    assert ham["status"] == "pass" and "3.00x" in ham["measured"]
    moonshot = checks["moonshot, grouping costs nothing"]
    assert moonshot["status"] == "FAIL" and "float32 B=16: 2.00x" in moonshot["measured"]


def test_target_checks_per_dtype_and_thresholds():
    data = _synthetic_result()
    data["records"] += [dict(r, dtype="bfloat16", ms_median=r["ms_median"] and r["ms_median"] / 2)
                        for r in data["records"] if r["bench"] == "conv" and r["B"] == 16]
    for r in data["records"]:  # bf16 B=16: make fused 1.4x bound
        if r["dtype"] == "bfloat16" and r["impl"] == "bound":
            r["ms_median"] = 0.5 / 1.4
    checks = {c["target"].split(":")[0]: c for c in bench.target_checks(data)}
    assert checks["whole conv stack fwd+bwd, bfloat16, 128 px, B=16, G=15"]["status"] == "pass"
    assert checks["conv fwd+bwd, bfloat16, every layer, B >= 64"]["status"] == "missing"
    assert "bfloat16 B=16: 1.40x" in checks["moonshot, grouping costs nothing"]["measured"]


def test_quick_preset_adds_bf16_only_on_the_target_cases():
    cfg = bench.BenchConfig(**dict(bench.PRESETS["quick"], preset="quick"))
    cases = list(bench.conv_cases(cfg))
    bf16 = [c for c in cases if c.dtype == torch.bfloat16]
    assert {(c.groups, c.pass_) for c in bf16} == {(15, "fwd+bwd")}
    assert len(bf16) == 2 * 4  # B in {16, 64} x 4 layers
    assert len(cases) - len(bf16) == 2 * 2 * 4 * 2  # float32: B x G x layers x passes


def test_fused_records_carry_explain(dry_run):
    fused = [r for r in dry_run["records"] if r["bench"] == "conv" and r["impl"] == "fused"]
    if bench.fused_unavailable(torch.device("cpu")):
        pytest.skip("no compiled op")
    assert fused and all(r["explain"].startswith("hamfast.grouped_conv2d on cpu, float32: B=4, G=3") for r in fused)
    assert all("grad-weight: " in r["explain"] for r in fused)
    assert not any("explain" in r for r in dry_run["records"] if r["impl"] != "fused")


def test_a_failing_case_is_recorded_not_raised(monkeypatch):
    def out_of_memory(inputs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3 GiB")

    monkeypatch.setitem(bench.CONV_IMPLS, "per_sample", out_of_memory)
    cfg = bench.BenchConfig(**bench.PRESETS["dry-run"])
    case = next(bench.conv_cases(cfg))
    record = bench.run_conv_case(case, "per_sample", cfg, torch.device("cpu"))
    assert record["ms_median"] is None and record["note"] == "out of memory"


def test_an_unsupported_impl_is_skipped_with_a_note(monkeypatch, tmp_path):
    def unsupported(inputs):
        raise TypeError("bfloat16 is not supported")

    monkeypatch.setitem(bench.CONV_IMPLS, "bound", unsupported)
    out = tmp_path / "r.json"
    argv = ["--dry-run", "--out", str(out), "--benches", "conv", "--layers", "4", "--passes", "fwd",
            "--impls", "reference,bound", "--repeats", "1"]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert [r["impl"] for r in result["records"]] == ["reference"]
    assert result["skipped"] == [
        {"bench": "conv", "impl": "bound", "dtype": "float32", "note": "TypeError: bfloat16 is not supported"}
    ]


def test_a_run_needs_out_and_known_names(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--dry-run"])
    with pytest.raises(SystemExit):
        bench.main(["--dry-run", "--out", "x.json", "--impls", "fused,magic"])
    assert "magic" in capsys.readouterr().err
