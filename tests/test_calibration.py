"""Calibration: Pareto and budget logic (property tests), and a tiny real sweep through real backends."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.candidates import CalibrationError, expand_grid
from calibration.pareto import choose_for_budget, dominates, pareto_front

points = st.lists(st.fixed_dictionaries({"accuracy": st.floats(0, 1), "p99_ms": st.floats(0.01, 50)}),
                  min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(points=points)
def test_front_is_exactly_the_undominated_points(points):
    front = pareto_front(points)
    assert front, "a non-empty set always has a front"
    for p in front:
        assert not any(dominates(q, p) for q in points)
    for p in points:
        assert any(f is p for f in front) or any(dominates(f, p) for f in front)
    assert [p["p99_ms"] for p in front] == sorted(p["p99_ms"] for p in front)


@settings(max_examples=300, deadline=None)
@given(points=points, budget=st.floats(0.05, 60), margin=st.floats(0, 0.9), overhead=st.floats(0, 5),
       floor=st.one_of(st.none(), st.floats(0, 1)))
def test_budget_choice_fits_and_is_never_dominated(points, budget, margin, overhead, floor):
    choice = choose_for_budget(points, budget, margin, overhead, floor)
    limit = budget * (1 - margin) - overhead
    fitting = [p for p in points if p["p99_ms"] <= limit and (floor is None or p["accuracy"] >= floor)]
    if choice.chosen is None:
        assert not fitting and len(choice.nearest) == min(3, len(points))
        return
    assert choice.chosen["p99_ms"] <= limit
    assert floor is None or choice.chosen["accuracy"] >= floor
    assert not any(dominates(q, choice.chosen) for q in points)
    assert choice.chosen["accuracy"] == max(p["accuracy"] for p in fitting)


def test_budget_and_margin_are_checked():
    with pytest.raises(ValueError, match="budget"):
        choose_for_budget([{"accuracy": 1, "p99_ms": 1}], 0)
    with pytest.raises(ValueError, match="margin"):
        choose_for_budget([{"accuracy": 1, "p99_ms": 1}], 1, margin=1.5)


def test_grid_leaves_out_what_cannot_exist_and_says_why():
    candidates, notes = expand_grid(["runs/a", "runs/b"], ["openvino", "onnxruntime", "pytorch"], ["fp16", "int8"],
                                    [1, 2], [1], [64, 256], ["minmax", "entropy"])
    keys = [c.key() for c in candidates]
    assert len(keys) == len(set(keys))
    assert not any(c.backend == "onnxruntime" and c.precision == "fp16" for c in candidates)
    assert not any(c.backend == "pytorch" for c in candidates)      # eager runs in fp32 only
    assert any("no FP16 kernels" in n for n in notes) and any("fp32 only" in n for n in notes)
    ov_int8 = [c for c in candidates if c.backend == "openvino" and c.precision == "int8"]
    assert {c.calib_method for c in ov_int8} == {None}                # NNCF chooses its own ranges
    assert len(ov_int8) == 2 * 2 * 2                                  # runs x sizes x threads
    ort_int8 = [c for c in candidates if c.backend == "onnxruntime"]
    assert len(ort_int8) == 2 * 2 * 2 * 2                             # runs x sizes x methods x threads
    with pytest.raises(CalibrationError, match="unknown backend"):
        expand_grid(["runs/a"], ["tflite"], ["fp32"], [1], [1], [256], ["minmax"])
    with pytest.raises(CalibrationError, match="share a directory name"):
        expand_grid(["x/a", "y/a"], ["openvino"], ["fp32"], [1], [1], [256], ["minmax"])


@pytest.fixture(scope="module")
def tiny_sweep(tiny_run, cwru_dir, tmp_path_factory):
    """Two tiny real models x fp32/int8 x ONNX Runtime/OpenVINO, timed, with the runtime's overhead measured."""
    from calibration.sweep import SweepSettings, run_sweep
    from edge.train.vibration import train_cwru

    from conftest import TINY, tiny_settings

    pytest.importorskip("openvino")
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("calib")
    other = root / "plain"
    train_cwru(cwru_dir, other, settings=tiny_settings(), **(TINY | {"model_name": "resnet1d"}))
    sweep = SweepSettings(runs=[str(tiny_run), str(other)], snrs=[None, -4.0], rounds=2, per_round=50,
                          overhead_seconds=3.0)
    out = root / "sweep"
    return run_sweep(sweep, out, progress=False, log=lambda *_: None), out, sweep


def test_tiny_sweep_measures_every_candidate_through_real_backends(tiny_sweep):
    doc, out, _ = tiny_sweep
    rows = doc["candidates"]
    assert len(rows) == 2 * (2 * 2 + 1)                                   # (2 backends x 2 precisions + eager) x 2 runs
    for r in rows:
        if r["status"] != "ok":      # only the INT8 guard may refuse a (badly trained, tiny) model, and says so
            assert r["precision"] == "int8" and r["status"] == "failed" and "pt lower" in r["reason"], r
            continue
        assert 0 < r["accuracy"] <= 1 and set(r["accuracy_by_snr"]) == {"none", "-4"}
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] and r["peak_rss_mb"] > 10
    ok = [r for r in rows if r["status"] == "ok" and not r["reference_only"]]
    assert {r["backend"] for r in ok} == {"openvino", "onnxruntime"}
    assert doc["pareto_front"] and all(k in {r["key"] for r in ok} for k in doc["pareto_front"])
    assert doc["runtime_overhead"]["source"] == "measured with the real runtime"
    assert doc["runtime_overhead"]["decisions"] > 0
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "Pareto front" in page and all(r["bundle_key"].split("-")[0] in page for r in ok)
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["device"]["cores"] and saved["device"]["versions"]["openvino"]
    from edge.host import processor_name  # the same name a training run records of its machine

    assert saved["device"]["cpu"] == processor_name()


def test_an_interrupted_sweep_resumes_without_measuring_again(tiny_sweep):
    from calibration.sweep import run_sweep

    _, out, sweep = tiny_sweep
    log = out / "results.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])   # cut mid-record
    doc = run_sweep(sweep, out, progress=False, log=lambda *_: None)
    after = log.read_text().splitlines()
    assert len(after) == len(lines)              # only the cut record was measured again
    assert all(json.loads(line) for line in after)
    assert len(doc["candidates"]) == 10


def test_budget_choice_from_the_cli_prints_the_build_command(tiny_sweep, capsys):
    from edge.cli import main

    doc, out, _ = tiny_sweep
    fastest = min(r["p99_ms"] for r in doc["candidates"] if r["status"] == "ok" and not r["reference_only"])
    budget = 100.0 * (fastest + doc["runtime_overhead"]["overhead_ms"])
    assert main(["calibrate", "--out", str(out), "--budget-ms", f"{budget:.3f}"]) == 0
    text = capsys.readouterr().out
    assert "chosen" in text and "python build.py --run" in text and "naive choice" in text
    assert main(["calibrate", "--out", str(out), "--budget-ms", "0.0001"]) == 1
    assert "nothing fits" in capsys.readouterr().out


def test_choosing_without_a_sweep_is_a_clear_error(tmp_path, capsys):
    from edge.cli import main

    assert main(["calibrate", "--out", str(tmp_path / "none"), "--budget-ms", "1"]) == 2
    assert "run a sweep first" in capsys.readouterr().err


def test_a_sweep_of_a_run_that_is_not_there_stops_before_anything_is_written(tiny_run, tmp_path, capsys):
    """Before, each of its candidates failed in turn, said only "failed to build or score", and the sweep ended 0."""
    from edge.cli import main

    out = tmp_path / "sweep"
    assert main(["calibrate", "--runs", str(tiny_run), str(tmp_path / "runs" / "nope"), "--out", str(out),
                 "--overhead-ms", "1"]) == 2
    assert "run directory" in capsys.readouterr().err and not out.exists()
    assert main(["calibrate", "--out", str(out), "--min-accuracy", "0.98"]) == 2
    assert "give --budget-ms too" in capsys.readouterr().err


def test_on_device_measures_a_bundle_under_the_runtime_and_recommends_a_budget(tiny_sweep, cwru_dir, capsys):
    from edge.cli import main

    doc, _, _ = tiny_sweep
    bundle = next(r["bundle"] for r in doc["candidates"] if r["status"] == "ok" and r["backend"] == "onnxruntime")
    assert main(["calibrate", "--bundle", bundle, "--on-device", "--seconds", "3", "--data", str(cwru_dir)]) == 0
    text = capsys.readouterr().out
    assert "simulator on a pty" in text and "recommended: --budget-ms" in text and "--on-miss reject" in text
    # Three seconds are a few dozen decisions: their p99.9 is their slowest one, and the output says so.
    assert re.search(r"caution: the p99\.9 of \d+ decisions is their slowest 1: measure 10,000 decisions or more "
                     r"\(--seconds \d+ at this stream's \d+ decisions a second\)", text), text
