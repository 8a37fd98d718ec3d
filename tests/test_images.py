"""Image sets: copies never straddle a split, splits are stratified and seeded, bad files are clear errors."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from edge.data.images import load_image_set, read_images, split_images
from edge.errors import DataError

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def data_root(cwru_dir):
    root = cwru_dir.parent
    if not (root / "xray" / "castings").is_dir():
        pytest.skip(f"X-ray data not found under {root}")
    return root


def _hashes(images, indices):
    return {images.items[i].sha256 for i in indices}


def test_castings_copies_never_sit_on_two_sides(data_root):
    images = load_image_set(data_root / "xray" / "castings")
    split = split_images(images, seed=0)
    assert images.duplicates_removed == 804 and len(images.items) == 2012          # measured on these files
    assert len({i.sha256 for i in images.items}) == len(images.items)
    train, val, test = (_hashes(images, split.indices(s)) for s in ("train", "val", "test"))
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(split.test) == 519          # of 562 published test images, after folding copies
    assert any("both sides of the published split" in n for n in images.notes)
    doc = split.describe(images)
    assert doc["counts"]["test"] == {"class_0": 264, "class_1": 255}
    assert all(f.startswith("test/") for f in doc["files"]["test"])


def test_fishbone_variants_of_one_patch_stay_on_one_side(data_root):
    images = load_image_set(data_root / "xray" / "fishbones")
    split = split_images(images, seed=0)
    groups = {s: {images.items[i].group for i in split.indices(s)} for s in ("train", "val", "test")}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert len(split.test) == 40
    x = read_images([images.items[i] for i in split.test[:4]])
    assert x.shape == (4, 1, 100, 100) and 0 <= x.min() and x.max() <= 1       # RGB files read as grey


def test_neu_split_is_stratified_and_seeded(data_root):
    images = load_image_set(data_root / "neu")
    assert len(images.classes) == 6
    a, b, c = split_images(images, seed=0), split_images(images, seed=0), split_images(images, seed=1)
    assert a.test == b.test and a.test != c.test
    counts = a.describe(images)["counts"]
    for split, share in (("test", 0.15), ("val", 0.15)):
        for n in counts[split].values():
            assert abs(n - share * 250) <= 2
    assert read_images([images.items[i] for i in a.test[:3]], size=64).shape == (3, 1, 64, 64)


def _write(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)


def test_any_folder_of_the_same_layouts_is_read(tmp_path):
    for k in range(6):
        _write(tmp_path / "flat" / f"ok_{k}.png", k)
        _write(tmp_path / "flat" / f"bad_{k}.png", 100 + k)
        _write(tmp_path / "dirs" / "ok" / f"{k}.png", k)
        _write(tmp_path / "dirs" / "bad" / f"{k}.png", 100 + k)
    flat, dirs = load_image_set(tmp_path / "flat"), load_image_set(tmp_path / "dirs")
    assert flat.classes == dirs.classes == ("bad", "ok") and len(flat.items) == len(dirs.items) == 12
    split = split_images(dirs, 0.2, 0.2, seed=3)
    assert sorted(split.train + split.val + split.test) == list(range(12))
    # what `train --data` takes: a data root, or any such folder (class folders alone were refused)
    from edge.train.images import load_task

    for folder in ("flat", "dirs"):
        images, _ = load_task("xray-castings", tmp_path / folder)
        assert images.root == tmp_path / folder and len(images.items) == 12


def test_bad_image_sets_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_set(tmp_path / "missing")
    _write(tmp_path / "one" / "a" / "1.png", 1)
    with pytest.raises(DataError, match="needs two or more"):
        load_image_set(tmp_path / "one")
    _write(tmp_path / "clash" / "a" / "1.png", 7)
    _write(tmp_path / "clash" / "b" / "1.png", 7)          # the same file under two classes
    _write(tmp_path / "clash" / "b" / "2.png", 9)
    _write(tmp_path / "clash" / "a" / "2.png", 5)
    clash = load_image_set(tmp_path / "clash")
    assert clash.conflicting_labels == 1 and len(clash.items) == 2 and "different classes" in clash.notes[0]
    (tmp_path / "clash" / "a" / "3.png").write_bytes(b"\x89PNG truncated")
    broken = load_image_set(tmp_path / "clash")
    with pytest.raises(DataError, match="not a readable image"):
        read_images(broken.items)


@pytest.fixture(scope="module")
def castings_run(data_root, tmp_path_factory):
    from edge.cli import main

    out = tmp_path_factory.mktemp("image-runs") / "castings"
    assert main(["train", "--task", "xray-castings", "--model", "resnet18", "--width", "8", "--depth", "1",
                 "--epochs", "2", "--seed", "0", "--threads", "1", "--data", str(data_root), "--out", str(out),
                 "-q"]) == 0
    return out


def test_image_run_trains_evaluates_and_leaves_test_images_alone(castings_run, tmp_path, capsys):
    from edge.cli import main

    split = json.loads((castings_run / "split.json").read_text())
    assert len(split["files"]["test"]) == 519 and not set(split["files"]["train"]) & set(split["files"]["test"])
    assert main(["evaluate", "--run", str(castings_run), "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 519 and result["split"] == "test" and 0.5 < result["accuracy"] <= 1
    assert main(["train", "--task", "neu", "--model", "drsn1d-cw", "--out", str(tmp_path / "x")]) == 2
    assert "not an image model" in capsys.readouterr().err


def test_an_image_run_is_scored_on_another_folder_without_the_images_it_learnt_from(castings_run, data_root,
                                                                                    tmp_path, capsys):
    """`evaluate --data` on a folder of new images used to refuse it unless it held the run's own split."""
    import shutil

    from edge.cli import main
    from edge.data.cwru import file_sha256

    source = data_root / "xray" / "castings"
    split = json.loads((castings_run / "split.json").read_text())
    assert [file_sha256(source / f) for f in split["files"]["val"]] == split["sha256"]["val"]
    for where in (data_root, data_root / "xray"):  # as `train --data` takes it: the task's folder is found
        assert main(["evaluate", "--run", str(castings_run), "--data", str(where), "--json", "--threads", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["split"] == "test"
    test = {label: [f for f in split["files"]["test"] if f"/{label}/" in f] for label in ("class_0", "class_1")}
    line3 = tmp_path / "line3"
    for label, files in (("class_0", test["class_0"][:4]), ("class_1", test["class_1"][:7])):
        (line3 / label).mkdir(parents=True)
        for k, f in enumerate(files):
            shutil.copy(source / f, line3 / label / f"part{k}.jpg")
    shutil.copy(source / test["class_1"][0], line3 / "class_1" / "again.jpg")  # a copy: scored once
    for k, f in enumerate(split["files"]["train"][:5] + split["files"]["val"][:2]):  # learnt from, renamed
        label = "class_1" if "/class_1/" in f else "class_0"
        shutil.copy(source / f, line3 / label / f"seen{k}.jpg")
    assert main(["evaluate", "--run", str(castings_run), "--data", str(line3), "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 11 and result["split"] is None and result["source"] == str(line3)
    assert result["report"]["support"] == {"class_0": 4, "class_1": 7}
    assert "7 images the run trained or validated on left out (by content)" in result["notes"]
    # a run from before the hashes were recorded reads them back from the folder it trained on
    older = tmp_path / "older"
    shutil.copytree(castings_run, older)
    del split["sha256"]
    (older / "split.json").write_text(json.dumps(split))
    assert main(["evaluate", "--run", str(older), "--data", str(line3), "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["report"] == result["report"]
    # one class is enough to score; a class the run does not know, or a split of another folder, is refused
    shutil.rmtree(line3 / "class_0")
    assert main(["evaluate", "--run", str(castings_run), "--data", str(line3), "--json", "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 7
    assert main(["evaluate", "--run", str(castings_run), "--data", str(line3), "--split", "val"]) == 2
    assert "is not the folder" in capsys.readouterr().err
    (line3 / "scratch").mkdir()
    shutil.copy(source / test["class_0"][5], line3 / "scratch" / "x.jpg")
    assert main(["evaluate", "--run", str(castings_run), "--data", str(line3)]) == 2
    assert "class folders or names scratch are not classes of the run" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_image_run_builds_an_int8_bundle_the_gateway_can_run(castings_run, target, tmp_path):
    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.export.build import BuildOptions, build_bundle

    pytest.importorskip(target)
    manifest = build_bundle(castings_run, tmp_path / "b", BuildOptions(target=target, precision="int8", calib_size=64,
                                                                       guard_drop=0.05), log=lambda *_: None)
    assert manifest["input"]["shape"] == ["N", 1, 32, 32] and manifest["input"]["layout"] == "N,C,H,W"
    assert manifest["preprocessing"]["input"] == "image" and manifest["preprocessing"]["tile_lines"] == 32
    assert manifest["reject_classes"] == ["class_1"] and manifest["accuracy"]["windows"] == 519
    backend = load_backend(open_bundle(tmp_path / "b"), threads=1)
    assert backend.infer(np.zeros((1, 1, 32, 32), np.float32)).shape == (1, 2)


def test_a_line_scan_tensorrt_bundle_takes_a_tiles_patches_in_one_batch(castings_run, tmp_path, capsys):
    """The runtime decides a tile's patches as one batch (20 across a 640-pixel line of 32-pixel patches); an
    engine built for the vibration profile (at most 8) would refuse it on the gateway.  ``compile-trt
    --max-batch`` widens the profile for a wider detector line."""
    from edge.cli import main
    from edge.export.build import BuildOptions, build_bundle

    manifest = build_bundle(castings_run, tmp_path / "trt", BuildOptions(target="tensorrt", precision="fp16"),
                            log=lambda *_: None)
    trt = manifest["tensorrt"]
    assert list(trt["build_settings"]["batch"]) == [1, 20, 64]
    assert "--optShapes=window:20x1x32x32 --maxShapes=window:64x1x32x32" in trt["trtexec"]
    assert main(["compile-trt", "--bundle", str(tmp_path / "trt"), "--max-batch", "100"]) == 2
    assert "--maxShapes=window:100x" in capsys.readouterr().err       # no TensorRT here: the line it would run


def test_an_ensemble_of_runs_outputs_their_mean_probability_and_builds_like_any_run(castings_run, data_root,
                                                                                    tmp_path, capsys):
    """`drsn-edge ensemble` packs runs of one split as one network: the softmax of its output is the mean of
    the members' softmax, `evaluate` scores it, and it builds into a bundle the gateway runs unchanged."""
    import torch

    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.cli import main
    from edge.export.build import BuildOptions, build_bundle
    from edge.train.images import image_logits, model_inputs_images, run_images
    from edge.train.runs import load_run

    second, out = tmp_path / "s1", tmp_path / "x2"
    assert main(["train", "--task", "xray-castings", "--model", "resnet18", "--width", "8", "--depth", "1",
                 "--epochs", "2", "--seed", "1", "--split-seed", "0", "--threads", "1", "--data", str(data_root),
                 "--out", str(second), "-q"]) == 0
    assert main(["ensemble", "--runs", str(castings_run), str(second), "--out", str(out), "--threads", "1"]) == 0
    assert "ensemble: " in capsys.readouterr().out
    members, ensemble = [load_run(p) for p in (castings_run, second)], load_run(out)
    x, y = run_images(ensemble, "test")
    norm = ensemble.config["preprocessing"]["normalization"]
    mean = np.mean([torch.softmax(torch.from_numpy(image_logits(r.load_model(), x, norm)), 1).numpy()
                    for r in members], axis=0)
    own = torch.softmax(torch.from_numpy(image_logits(ensemble.load_model(), x, norm)), 1).numpy()
    np.testing.assert_allclose(own, mean, atol=1e-5)
    assert main(["evaluate", "--run", str(out), "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "ensemble" and result["accuracy"] == pytest.approx(np.mean(mean.argmax(1) == y))
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["run"] for m in metrics["members"]] == [str(castings_run), str(second)]
    assert metrics["best_val_score"] == metrics["val_balanced_accuracy"]
    for target, precision in (("onnxruntime", "fp32"), ("openvino", "int8")):
        pytest.importorskip(target)
        manifest = build_bundle(out, tmp_path / target, BuildOptions(target=target, precision=precision,
                                                                     calib_size=64, guard_drop=0.05),
                                log=lambda *_: None)
        assert manifest["model"]["family"] == "ensemble" and manifest["accuracy"]["windows"] == 519
        scores = load_backend(open_bundle(tmp_path / target), threads=1).infer(model_inputs_images(x[:32], norm))
        probabilities = torch.softmax(torch.from_numpy(np.asarray(scores)), 1).numpy()
        if precision == "fp32":
            np.testing.assert_allclose(probabilities, mean[:32], atol=1e-4)
        else:
            assert np.mean(probabilities.argmax(1) == mean[:32].argmax(1)) >= 0.9


def test_an_ensemble_of_runs_that_do_not_belong_together_is_refused_before_anything_is_written(
        castings_run, tiny_run, tmp_path, capsys):
    """Two members, each once, one task and one split; an ensemble is not pruned or distilled whole."""
    import shutil

    from edge.cli import main

    resplit = tmp_path / "resplit"
    shutil.copytree(castings_run, resplit)
    split = json.loads((resplit / "split.json").read_text())
    split["files"]["train"].append(split["files"]["val"].pop())   # one validation image learnt by this member
    (resplit / "split.json").write_text(json.dumps(split))
    for runs, message in (([castings_run], "at least two runs"),
                          ([castings_run, castings_run], "is given twice"),
                          ([castings_run, tiny_run], "differ in task"),
                          ([castings_run, resplit], "were split differently"),
                          ([castings_run, tmp_path / "none"], "does not exist")):
        assert main(["ensemble", "--runs", *map(str, runs), "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x").exists()
    shutil.copytree(castings_run, tmp_path / "copy")
    assert main(["ensemble", "--runs", str(castings_run), str(tmp_path / "copy"), "--out", str(tmp_path / "x"),
                 "-q"]) == 0
    assert main(["ensemble", "--runs", str(tmp_path / "x"), str(castings_run), "--out", str(tmp_path / "y")]) == 2
    assert "is an ensemble already" in capsys.readouterr().err
    assert main(["prune", "--run", str(tmp_path / "x"), "--out", str(tmp_path / "p")]) == 2
    assert "is an ensemble: prune or distil its member runs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def castings_bundle(castings_run, tmp_path_factory):
    """The tiny castings run as an ONNX Runtime FP32 line-scan bundle (a 50 ms tile budget, for slow test hosts)."""
    from edge.export.build import BuildOptions, build_bundle

    bundle = tmp_path_factory.mktemp("image-bundles") / "ort"
    build_bundle(castings_run, bundle, BuildOptions(target="onnxruntime", precision="fp32", budget_ms=50,
                                                    guard_drop=0.05), log=lambda *_: None)
    return bundle


def test_line_scan_end_to_end_one_decision_per_patch_and_rejects_at_the_actuator(castings_run, castings_bundle,
                                                                                  data_root, tmp_path):
    """The X-ray belt on a real pty: every patch decided once, as offline; each REJECT at the right encoder count."""
    import sqlite3

    from conftest import stream_at_real_rate
    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.data.preprocess import normalize
    from firmware_bridge.sources import belt_source

    bundle = castings_bundle
    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=12, seed=1)
    lanes, distance = 20, 300
    sim, runtime, summary, log = stream_at_real_rate(belt, str(bundle), tmp_path, 1.0, overruns_tolerated=0,
                                                     linger_s=0.2, distance=distance)
    c = summary["counters"]
    assert c["decoder_lost_frames"] == 0 and c["deadline_fail_safe"] == 0 and c["late_decisions"] == 0
    assert c["decisions"] == 12 * lanes == c["assembler_units"] * lanes
    assert c["paced_sleeps"] >= 6 and c["pacing_overruns"] == 0   # slept through most tiles, stamped no line late
    rows = sqlite3.connect(log).execute(
        "SELECT span_start, span_end, lane, class, reject, fire_at FROM decisions ORDER BY decision_id").fetchall()
    by_patch = {(t["encoder_start"], t["lane"]): t for t in belt.truth}
    assert {(r[0], r[2]) for r in rows} == set(by_patch)                 # every patch exactly once
    # offline: the same patch images through the same bundle
    backend = load_backend(open_bundle(bundle), threads=1)
    images = read_images_from_truth(data_root / "xray", [by_patch[(r[0], r[2])] for r in rows])
    config = json.loads((castings_run / "config.json").read_text())
    assert config["preprocessing"]["normalization"] == "highpass-image"       # the castings' default, on the gateway
    offline = backend.infer(np.ascontiguousarray(normalize(images, "highpass-image"), dtype=np.float32)).argmax(1)
    classes = config["classes"]
    assert [r[3] for r in rows] == [classes[k] for k in offline]
    rejects = [r for r in rows if r[4]]
    assert 0 < len(rejects) < len(rows)
    assert all(r[5] == r[1] + distance for r in rejects)                # fires where the tile meets the actuator
    fired = sorted((r["fire_encoder"], r["lane"]) for r in sim.rejects)
    assert fired == sorted((r[1] + distance, r[2]) for r in rejects) and not any(r["late"] for r in sim.rejects)
    # The quality engineer's export of the rejects says what the actuator was told, lane by lane.
    exported = subprocess.run([sys.executable, "-m", "edge.cli", "decisions", "--log", str(log),
                               "--rejects", "--csv", "-"], capture_output=True, text=True, check=True).stdout
    assert sorted((int(r["fire_at"]), int(r["lane"])) for r in csv.DictReader(io.StringIO(exported))) == fired


def test_a_reject_the_device_refuses_as_too_late_is_logged_as_such(castings_bundle, data_root, tmp_path):
    """An actuator too close to the scanner: the device answers each REJECT that comes after its part has passed
    with a TOO_LATE NAK.  Only a counter used to say so; the log said "rejected" of parts that passed.  Each
    refused REJECT's row now says so."""
    from conftest import run_against
    from firmware_bridge.simulator import DeviceSimulator
    from firmware_bridge.sources import belt_source

    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=12, seed=1)
    with DeviceSimulator(belt, link="pty", speed=1.0) as sim:
        runtime, summary = run_against(sim, str(castings_bundle), tmp_path, 1.0, distance=1)
    c = summary["counters"]
    late = {r["decision_id"] for r in sim.rejects if r["late"]}
    assert len(late) == c["naks_too_late"] > 0 and c["rejects_sent"] == len(sim.rejects)
    rows = dict(sqlite3.connect(tmp_path / "log.db").execute(
        "SELECT decision_id, reject_command FROM decisions WHERE reject = 1").fetchall())
    assert {k for k, why in rows.items() if why == "too_late"} == late
    assert {k for k, why in rows.items() if why == "sent"} == {r["decision_id"] for r in sim.rejects} - late
    listing = subprocess.run([sys.executable, "-m", "edge.cli", "decisions", "--log", str(tmp_path / "log.db"),
                              "--last", "0"], capture_output=True, text=True, check=True).stdout
    assert f"too late for the device {len(late)}" in listing


def test_a_reject_lost_on_its_way_to_the_device_is_sent_again_and_fires_once(castings_bundle, data_root, tmp_path):
    """A REJECT corrupted on the wire is dropped by the device, unanswered: the gateway used to log it as sent,
    and the defective part passed.  Now a REJECT unanswered in time is sent again; the device fires it once; one
    never answered is logged as such."""
    from conftest import run_against
    from firmware_bridge.simulator import DeviceSimulator, Faults
    from firmware_bridge.sources import belt_source

    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=60, seed=1)   # 1.5 s of belt
    with DeviceSimulator(belt, link="pty", speed=1.0, faults=Faults(lose_rejects=0.3, seed=4)) as sim:
        runtime, summary = run_against(sim, str(castings_bundle), tmp_path, 2.0, distance=625)
    c = summary["counters"]
    fired = [r["decision_id"] for r in sim.rejects]
    assert len(fired) == len(set(fired)) and not any(r["late"] for r in sim.rejects)   # each fired once, in time
    assert sim.stats.rejects_lost > 10 and c["reject_resends"] >= sim.stats.rejects_lost - c["rejects_unanswered"]
    rows = dict(sqlite3.connect(tmp_path / "log.db").execute(
        "SELECT decision_id, reject_command FROM decisions WHERE reject = 1").fetchall())
    assert set(rows.values()) <= {"sent", "unanswered"} and len(rows) == c["rejects_sent"] > 30
    assert {k for k, why in rows.items() if why == "sent"} == set(fired)
    assert sum(why == "unanswered" for why in rows.values()) == c["rejects_unanswered"]


def test_a_runtime_stopped_mid_stream_decides_the_tiles_it_has_read_and_counts_the_lines_it_reads_after(
        castings_bundle, data_root, tmp_path):
    """Stopping mid-stream: every tile read is decided (by the model, or the fail-safe if still queued), and the
    lines read while the runtime hears the device's last answers are counted, not decided.  The decider used to
    wait out a keep-alive (0.5 s) after the reader stopped queueing: a stop cost half a second of lines."""
    import threading

    from edge.runtime.loop import Runtime, RuntimeSettings
    from firmware_bridge.simulator import DeviceSimulator
    from firmware_bridge.sources import belt_source

    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=12, seed=1)
    with DeviceSimulator(belt, link="pty", speed=1.0, loop=True) as sim:
        runtime = Runtime(str(castings_bundle), RuntimeSettings(port=sim.port, log_path=str(tmp_path / "log.db"),
                                                                http=None, distance=625))
        runtime.start()
        threading.Thread(target=sim.run, kwargs={"duration": 3.0}, daemon=True).start()
        try:
            summary = runtime.run(1.5)   # the belt streams on after the stop
        finally:
            runtime.close()
    c = summary["counters"]
    assert c["decisions"] == 20 * c["assembler_units"] > 20 * 30
    assert 0 < c["frames_after_stop"] < 450   # the lines of 0.36 s at most (1,250 a second), not 0.5 s and more


def test_a_gateway_started_again_with_a_new_log_has_its_rejects_fired_by_a_device_that_stayed_on(
        castings_bundle, data_root, tmp_path):
    """A gateway started again with a new decision log (the commissioning log cleared before production)
    numbers its decisions from 1 again.  The device, still on, remembered those ids from the first session,
    took the new REJECTs for ones sent again, answered them and fired none.  The gateway's HELLO now begins a
    session on the device: it forgets the ids, and every REJECT of either session fires once.  (Every patch
    is rejected: the gateway joins the belt mid-stream, where the tiny model's tiles straddle two images.)"""
    import threading

    from edge.runtime.loop import Runtime, RuntimeSettings
    from firmware_bridge.simulator import DeviceSimulator
    from firmware_bridge.sources import belt_source

    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=12, seed=1)
    sent = []
    with DeviceSimulator(belt, link="pty", speed=1.0, loop=True) as sim:
        threading.Thread(target=sim.run, kwargs={"duration": 4.0}, daemon=True).start()
        for session in ("commissioning", "production"):
            runtime = Runtime(str(castings_bundle), RuntimeSettings(
                port=sim.port, log_path=str(tmp_path / f"{session}.db"), http=None, distance=625, threshold=1e-6))
            try:
                counters = runtime.run(1.0)["counters"]
            finally:
                runtime.close()
            rows = sqlite3.connect(tmp_path / f"{session}.db").execute(
                "SELECT decision_id FROM decisions WHERE reject_command = 'sent'").fetchall()
            assert len(rows) == counters["rejects_sent"] == counters["acks"] > 10
            sent.append({k for k, in rows})
        sim.stop()
    assert sent[0] & sent[1]   # the production session's first ids were the commissioning session's
    assert sim.stats.reject_repeats == 0 and len(sim.rejects) == len(sent[0]) + len(sent[1])


def test_a_paced_line_scan_reader_survives_corruption_and_a_disconnect(castings_bundle, data_root, tmp_path, capsys):
    """Corrupted lines and an unplugged detector: every line counted, tiles resume, pacing never builds a backlog."""
    from conftest import run_against
    from firmware_bridge.simulator import DeviceSimulator, Faults
    from firmware_bridge.sources import belt_source

    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=4, seed=2)
    faults = Faults(corrupt=1e-5, disconnect_every=0.6, outage_s=0.2, seed=5)  # about one line in 75 hit
    with DeviceSimulator(belt, link="pty", speed=1.0, faults=faults, loop=True,
                         link_path=str(tmp_path / "tty")) as sim:
        runtime, summary = run_against(sim, str(castings_bundle), tmp_path, 2.0, distance=300)
    c = summary["counters"]
    assert summary["thread_failures"] == [] and sim.stats.disconnects >= 2 and c["reconnects"] >= 2
    assert c["decoder_rejected"] > 0 and c["assembler_gaps"] > 0            # a corrupted line breaks its tile
    assert c["data_frames"] + c["decoder_lost_frames"] <= sim.stats.frames_generated + 10
    assert c["data_frames"] > 0.7 * sim.stats.frames_generated
    assert c["decisions"] == 20 * c["assembler_units"] > 0                   # every tile that completed, decided
    assert c["paced_sleeps"] > 50 and c["pacing_backlogs"] == 0
    # the belt in those gaps: fail-safe REJECTs, every lane, where it reaches the actuator; belt that had passed
    # it when the stream went on, a row on every lane with no REJECT
    assert c["gap_fail_safe"] == 20 * (c["assembler_unseen_tiles"] + c["assembler_passed_spans"]) > 0
    db = sqlite3.connect(tmp_path / "log.db")
    gap_rows = db.execute("SELECT span_end, fire_at, reject, lane, reject_command FROM decisions "
                          "WHERE fail_safe = 'gap'").fetchall()
    db.close()
    passed = [row for row in gap_rows if row[4] == "passed"]
    assert len(gap_rows) == c["gap_fail_safe"] and len(passed) == 20 * c["assembler_passed_spans"]
    assert all(r and at == end + 300 for end, at, r, _, why in gap_rows if why != "passed")
    assert all(r and at is None for end, at, r, _, why in passed)
    assert {lane for *_, lane, _ in gap_rows} == set(range(20))
    assert "lines of belt never reached the gateway intact" in capsys.readouterr().err


def test_a_line_scan_device_back_at_another_rate_or_width_is_paced_for_it(castings_bundle, tmp_path):
    """The reader's sleeps follow the device's HELLO each time it says hello, and their counts go on."""
    from dataclasses import replace

    from edge.runtime.loop import Runtime, RuntimeSettings
    from edge.runtime.pacing import LINE_MAX_BUFFERED_BYTES
    from firmware_bridge.codec import encode_frame, line_frame_bytes
    from firmware_bridge.protocol import Hello, SensorKind

    runtime = Runtime(str(castings_bundle), RuntimeSettings(port="loop://", log_path=str(tmp_path / "l.db"),
                                                            http=None, distance=300))
    try:
        def say(hello: Hello):
            runtime._ingest(encode_frame(hello, 0), time.monotonic(), True)
            return runtime.pacer

        hello = Hello("belt", sensor=SensorKind.LINESCAN, bit_depth=16, rate_hz=1250.0, pixels=640)
        first = say(hello)
        assert first.rate_hz == 1250.0 and first.max_ahead == LINE_MAX_BUFFERED_BYTES // line_frame_bytes(hello) == 4
        first.backlogs, first.late_wakeups = 1, 2
        assert say(hello) is first                                   # the same stream: the same plan
        wider = say(replace(hello, pixels=2048))                     # 4 kB a line: one line a sleep
        assert wider.max_ahead == 1 and (wider.backlogs, wider.late_wakeups) == (1, 2)
        faster = say(replace(hello, pixels=2048, rate_hz=5000.0))
        assert faster.rate_hz == 5000.0 and faster.backlogs == 1
        assert runtime.counters()["pacing_backlogs"] == 1
    finally:
        runtime.close()


def test_the_line_scan_demo_scores_live_patches_of_the_run_s_test_images_only(castings_run, castings_bundle,
                                                                              tmp_path):
    """`drsn-edge demo` on an image run: a belt of its held-out images, every REJECT taken by the actuator in time."""
    log = tmp_path / "demo.db"
    from conftest import GATEWAY_CLI

    done = subprocess.run([sys.executable, "-c", GATEWAY_CLI, "demo", "--bundle", str(castings_bundle), "--run",
                           str(castings_run), "--seconds", "2", "--log", str(log), "--http", "off"],
                          capture_output=True, text=True, timeout=120)  # on a gateway: torch is not there
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "drawn from the run's 519 test images" in out and "actuator 625 encoder counts downstream" in out
    assert "naks 0" in out and "warning" not in done.stderr
    import sqlite3

    rows = sqlite3.connect(log).execute("SELECT reject, fire_at, span_end FROM decisions").fetchall()
    assert len(rows) >= 20 * 70 and all(fire == end + 625 for reject, fire, end in rows if reject)
    rejected = sum(reject for reject, _, _ in rows)
    assert f"rejects sent {rejected}, acked {rejected}," in out
    assert "live accuracy" in out and f"on {len(rows):,} patches of held-out images" in out


def test_a_run_of_the_other_kind_than_the_bundle_is_refused_before_anything_streams(castings_run, castings_bundle,
                                                                                    tiny_run, tmp_path, capsys):
    """Its held-out data is not what the bundle reads: the demo and the on-device calibration both say so."""
    from edge.cli import main
    from edge.export.build import BuildOptions, build_bundle

    vibration_bundle = tmp_path / "tiny-ort"
    build_bundle(tiny_run, vibration_bundle, BuildOptions(target="onnxruntime", precision="fp32"), log=lambda *_: None)
    for bundle, run, kind in ((castings_bundle, tiny_run, "line-scan"), (vibration_bundle, castings_run, "vibration")):
        expected = f"is a {kind} bundle, but run {run} trained"
        assert main(["demo", "--bundle", str(bundle), "--run", str(run), "--seconds", "1", "--http", "off",
                     "--log", str(tmp_path / "demo.db")]) == 2
        assert expected in capsys.readouterr().err
        assert main(["calibrate", "--on-device", "--bundle", str(bundle), "--runs", str(run), "--seconds", "1"]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "demo.db").exists()
    for command in (["demo", "--run"], ["calibrate", "--on-device", "--seconds", "1", "--runs"]):  # a mistyped run
        assert main([*command, str(tmp_path / "no-run"), "--bundle", str(castings_bundle)]) == 2
        captured = capsys.readouterr()
        assert f"run directory {tmp_path / 'no-run'} does not exist" in captured.err
        assert "measuring" not in captured.out  # refused before it says it measures anything


def test_a_belt_of_resized_images_shows_the_model_what_training_showed_it(data_root):
    """NEU's 200 px images on a belt for a 64 px model: each patch is the training resize, pixel for pixel."""
    from edge.data.images import ImageItem
    from firmware_bridge.sources import belt_source

    files = [(p, p.stem.rsplit("_", 1)[0]) for p in sorted((data_root / "neu").rglob("*.jpg"))[:12]]
    belt = belt_source(data_root / "neu", files=files, bands=2, seed=3, size=64)
    assert belt.rows.shape == (128, 640) and len(belt.truth) == 20
    for t in belt.truth:
        trained = read_images([ImageItem(data_root / "neu" / t["image"], t["label"], 0, None, "", "")], size=64)[0, 0]
        patch = belt.rows[t["encoder_start"]:t["encoder_end"] + 1, t["pixel_start"]:t["pixel_end"] + 1]
        assert np.array_equal(patch, np.rint(trained * 255).astype(np.uint8))


def test_a_belt_is_laid_from_any_folder_of_images_with_each_patch_s_class_from_its_folder(data_root, tmp_path):
    """The simulator read only the shipped X-ray and NEU layouts, and named a held-out image's class by a
    ``class_`` folder or its name: ``good/part_a.png`` was of class ``part``."""
    from PIL import Image

    from firmware_bridge.sources import belt_source, held_out_images

    source = sorted((data_root / "xray" / "castings" / "test" / "class_1").glob("*.jpg"))[:6]
    for label, files in (("good", source[:2]), ("bad", source[2:])):
        (tmp_path / "parts" / label).mkdir(parents=True)
        for k, f in enumerate(files):
            Image.open(f).save(tmp_path / "parts" / label / f"part_{chr(97 + k)}.png")
    belt = belt_source(tmp_path / "parts", "xray", bands=3, seed=0)
    assert {t["label"] for t in belt.truth} == {"good", "bad"} and len(belt.truth) == 3 * 20
    assert all(t["image"].startswith(t["label"] + "/") for t in belt.truth)
    doc = {"files": {"test": ["bad/part_a.png", "test/class_1/C21_0001.jpg", "images/crazing_12.jpg", "Sc_3.bmp"]}}
    assert [label for _, label in held_out_images(doc, tmp_path)] == ["bad", "class_1", "crazing", "Sc"]
    with pytest.raises(DataError, match="part_a.png: cannot tell its class"):
        belt_source(tmp_path / "parts" / "good", "xray")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images under"):
        belt_source(tmp_path / "empty", "xray")


def test_an_actuator_closer_than_the_budget_s_travel_is_named_when_the_device_says_its_line_rate(
        castings_bundle, data_root, tmp_path, capfd):
    from conftest import run_against
    from firmware_bridge.simulator import DeviceSimulator
    from firmware_bridge.sources import belt_source

    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=2, seed=1)
    with DeviceSimulator(belt, link="pty", speed=1.0) as sim:
        run_against(sim, str(castings_bundle), tmp_path, 0.5, distance=40)  # 32 ms of travel, a 50 ms budget
    said = capfd.readouterr().err
    assert "the actuator is 40 lines downstream, 32.0 ms of travel at the device's 1250 lines/s" in said
    assert "50 ms budget" in said


def test_on_device_calibration_streams_the_image_run_s_own_test_images(castings_run, castings_bundle):
    from calibration.on_device import _simulator_source
    from edge.bundle import open_bundle

    belt = _simulator_source(castings_bundle, open_bundle(castings_bundle), None, castings_run)
    test = set(json.loads((castings_run / "split.json").read_text())["files"]["test"])
    assert belt.rows.shape == (200 * 32, 640) and {t["image"] for t in belt.truth} <= test


def test_a_line_scan_bundle_is_run_or_installed_only_with_its_actuator_distance(castings_bundle, tmp_path, capsys):
    from edge.cli import main

    assert main(["run", "--bundle", str(castings_bundle), "--port", "loop://", "--log", str(tmp_path / "l.db"),
                 "--http", "off", "--duration", "1"]) == 2
    assert "needs --distance" in capsys.readouterr().err and not (tmp_path / "l.db").exists()  # refused first
    # a program that runs the runtime itself is refused as the command is (it used to get a warning and run)
    from edge.runtime.decisions import PolicyError
    from edge.runtime.loop import Runtime, RuntimeSettings

    with pytest.raises(PolicyError, match="needs --distance"):
        Runtime(castings_bundle, RuntimeSettings(port="loop://", log_path=str(tmp_path / "l.db"), http=None))
    assert not (tmp_path / "l.db").exists()
    root = tmp_path / "root"
    assert main(["install", "--bundle", str(castings_bundle), "--root", str(root)]) == 2
    assert "nothing was installed" in capsys.readouterr().err and not (root / "opt").exists()
    assert main(["install", "--bundle", str(castings_bundle), "--root", str(root), "--distance", "900",
                 "--max-consecutive", "5"]) == 0
    unit = (root / "etc/systemd/system/drsn-edge.service").read_text()
    assert " --distance 900 --max-consecutive 5" in unit
    assert main(["run", "--bundle", str(castings_bundle), "--port", "loop://", "--distance", "900", "--channel", "1",
                 "--log", str(tmp_path / "l.db"), "--http", "off", "--duration", "1"]) == 2
    assert "--channel 1 picks an accelerometer axis" in capsys.readouterr().err   # was ignored
    assert main(["install", "--bundle", str(castings_bundle), "--root", str(root), "--distance", "900",
                 "--channel", "1"]) == 2
    assert "nothing was installed" in capsys.readouterr().err



def test_the_overhead_floor_decides_every_patch_of_a_belt_as_offline_inference_does(castings_bundle, data_root,
                                                                                     tmp_path):
    """benchmarks/runtime_overhead_floor.py, line-scan: its bare loop must do the runtime's work, or the floor it
    reports would be the floor of something less: every patch of every tile decided once, on the same input as
    offline, logged, and each reject's REJECT written for the line where its tile meets the actuator."""
    import serial

    from conftest import ROOT
    from edge.backends import load_backend
    from edge.bundle import open_bundle
    from edge.data.preprocess import normalize
    from firmware_bridge.codec import FrameDecoder, encode_frame
    from firmware_bridge.protocol import Reject
    from firmware_bridge.sources import ACTUATOR_LINES, belt_source

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from runtime_overhead_floor import Floor, Read

    opened = open_bundle(castings_bundle)
    belt = belt_source(data_root / "xray", "xray", "castings", "test", bands=12, seed=1)
    floor = Floor(opened, tmp_path / "floor.db", belt)
    device = serial.serial_for_url("loop://", timeout=0)  # what the floor writes to the device comes back here
    frames = [encode_frame(message, seq, t_us, encoder) for seq, (message, t_us, encoder) in enumerate(belt.messages())]
    received = b""
    for k in range(0, len(frames), 5):  # reads of five lines, as the paced reader takes them
        floor.take(Read(b"".join(frames[k:k + 5]), time.monotonic()), device)
        received += device.read(device.in_waiting)  # the device takes its REJECTs as they come
    lanes = 20
    assert floor.units == 12 and floor.decisions == 12 * lanes and floor.frames == len(frames)
    rows = sqlite3.connect(tmp_path / "floor.db").execute(
        "SELECT decision_id, span_start, span_end, lane, class, reject, fire_at FROM decisions ORDER BY decision_id"
    ).fetchall()
    by_patch = {(t["encoder_start"], t["lane"]): t for t in belt.truth}
    assert [(r[1], r[3]) for r in rows] == sorted(by_patch)               # every patch once, tile by tile
    backend = load_backend(opened, threads=1)
    images = read_images_from_truth(data_root / "xray", [by_patch[(r[1], r[3])] for r in rows])
    offline = backend.infer(np.ascontiguousarray(normalize(images, "highpass-image"), dtype=np.float32)).argmax(1)
    classes = opened.manifest["classes"]
    assert [r[0] for r, k in zip(rows, offline) if r[4] != classes[k]] == []  # the decisions that differ
    rejects = [r for r in rows if r[5]]
    assert 0 < len(rejects) < len(rows)
    assert all(r[6] == r[2] + ACTUATOR_LINES for r in rejects)
    written = [f.message for f in FrameDecoder().feed(received) if isinstance(f.message, Reject)]
    assert [(m.decision_id, m.lane, m.at) for m in written] == [(r[0], r[3], r[6]) for r in rejects]
    assert set(floor.figures(1.0)["steps_cpu_us_per_unit"]) == {"decode", "assemble", "preprocess", "inference",
                                                                "decide", "write", "log"}


def read_images_from_truth(root, truth_rows):
    from edge.data.images import ImageItem, read_images

    return read_images([ImageItem(root / t["image"], t["label"], 0, None, "", "") for t in truth_rows])


def test_prune_and_distill_write_smaller_runs_scored_on_the_same_test_images(castings_run, tmp_path, capsys):
    """...and each says the machine it was trained on, not its source run's (trained elsewhere here)."""
    import shutil

    from edge.cli import main
    from edge.train.runs import training_environment

    source, pruned, student = tmp_path / "source", tmp_path / "pruned", tmp_path / "student"
    shutil.copytree(castings_run, source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(config | {"environment": {"processor": "another machine's"}}))
    assert main(["prune", "--run", str(source), "--method", "l1", "--rounds", "2", "--rate", "0.3",
                 "--epochs", "1", "--threads", "1", "--out", str(pruned), "-q"]) == 0
    history = json.loads((pruned / "metrics.json").read_text())["pruning"]
    assert [h["round"] for h in history] == [0, 1, 2] and history[2]["mflops"] < 0.6 * history[0]["mflops"]
    assert main(["distill", "--teacher", str(source), "--student", "resnet18", "--width", "4", "--depth", "1",
                 "--epochs", "1", "--threads", "1", "--out", str(student), "-q"]) == 0
    for run in (pruned, student):
        assert main(["evaluate", "--run", str(run), "--json", "--threads", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["images"] == 519
        assert json.loads((run / "config.json").read_text())["environment"] == training_environment()
    assert json.loads((student / "config.json").read_text())["compression"]["method"] == "rkd"


def test_calibration_sweeps_pruned_copies_of_an_image_run(castings_run, tmp_path):
    from calibration.sweep import SweepSettings, run_sweep

    settings = SweepSettings(runs=[str(castings_run)], backends=["onnxruntime"], precisions=["fp32"], snrs=[None],
                             prune_rates=[0.0, 0.5], prune_epochs=1, reference_eager=False, rounds=2, per_round=20,
                             overhead_seconds=2.0)
    doc = run_sweep(settings, tmp_path / "sweep", progress=False, log=lambda *_: None)
    rows = {r["run"].split("/")[-1]: r for r in doc["candidates"]}
    assert set(rows) == {"castings", "castings-p50"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["castings-p50"]["model_bytes"] < 0.5 * rows["castings"]["model_bytes"]
    assert doc["runtime_overhead"]["decisions"] > 0         # the runtime on a belt of real X-ray patches


def test_quarter_turns_give_the_square_s_symmetries_and_nothing_else():
    from edge.train.images import ImageTrainSettings, augment_images

    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 16      # no symmetry of its own
    settings = ImageTrainSettings(flips=False, rotations=True, max_shift=0, gain=0, noise=0)
    out = augment_images(np.repeat(image, 200, axis=0), settings, np.random.default_rng(0))
    turns = [np.rot90(image[0, 0], k) for k in range(4)]
    seen = [next(k for k, t in enumerate(turns) if np.array_equal(o[0], t)) for o in out]
    assert sorted(set(seen)) == [0, 1, 2, 3]                               # every turn, each image intact
    settings = ImageTrainSettings(flips=True, rotations=True, max_shift=0, gain=0, noise=0)
    out = augment_images(np.repeat(image, 400, axis=0), settings, np.random.default_rng(0))
    assert len({o.tobytes() for o in out}) == 8                            # with flips: all 8 symmetries


def test_magnification_unsharpness_and_grey_curve_jitter_change_what_they_say_and_nothing_else():
    from edge.train.images import ImageTrainSettings, augment_images

    only = dict(flips=False, max_shift=0, gain=0, noise=0)
    spot = np.zeros((1, 1, 32, 32), dtype=np.float32)
    spot[0, 0, 12:20, 12:20] = 1.0                                            # a flaw of 8 x 8 px at the centre
    many = np.repeat(spot, 64, axis=0)
    zoomed = augment_images(many, ImageTrainSettings(zoom=0.5, **only), np.random.default_rng(0))
    sizes = (zoomed > 0.5).sum(axis=(1, 2, 3))
    assert 25 <= sizes.min() < 64 < sizes.max() <= 144                      # shrunk and grown, by 1.5 at most
    assert all(o[0, 15:17, 15:17].min() > 0.5 for o in zoomed)              # about the centre
    blurred = augment_images(many, ImageTrainSettings(blur=1.5, **only), np.random.default_rng(0))
    assert np.allclose(blurred.sum(axis=(1, 2, 3)), 64.0, atol=1e-2)         # spread, none lost
    edges = blurred[:, 0, 12, 16]                                            # on the flaw's edge
    assert edges.min() < 0.9 and edges.max() > 0.99                          # some blurred, some sharp
    grey = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    curved = augment_images(np.repeat(grey, 32, axis=0), ImageTrainSettings(gamma=0.3, **only),
                            np.random.default_rng(0))
    assert np.all(np.diff(curved.reshape(32, -1), axis=1) >= 0)              # grey levels keep their order
    assert curved[:, 0, 0, 0].max() == 0 and np.allclose(curved[:, 0, -1, -1], 1)  # black and white stay
    assert curved[:, 0, 4, 0].min() < grey[0, 0, 4, 0] < curved[:, 0, 4, 0].max()
    plain = augment_images(many, ImageTrainSettings(**only), np.random.default_rng(0))
    assert np.array_equal(plain, many)                                       # all off by default


def test_mixup_and_the_line_jitters_train_images_from_the_command_line(data_root, tmp_path, capsys):
    from edge.cli import main
    from edge.models import build_model, model_config
    from edge.train.images import ImageTrainSettings, fit_images
    from edge.train.loop import Mixup

    import torch

    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 16, 16)).astype(np.float32)
    y = np.repeat([0, 1], 32)
    seen = []

    def trained(mixup: float) -> dict:
        torch.manual_seed(0)
        model = build_model(model_config("resnet18", width=4, depth=1, num_classes=2, input_size=16))
        model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().clone()) if m.training
                                        else None)
        settings = ImageTrainSettings(epochs=1, batch_size=64, mixup=mixup, flips=False, max_shift=0, gain=0,
                                      noise=0).for_task("neu")
        fit_images(model, x, y, x, y, settings, np.random.default_rng(1), num_classes=2, progress=False)
        return model.state_dict()

    plain, mixed = trained(0.0), trained(0.4)
    assert len(seen) == 2 and not all(torch.equal(a, b) for a, b in zip(plain.values(), mixed.values()))
    drawn = np.random.default_rng(1)
    drawn.permutation(64)                                        # the batch's order, then the mix of it
    mix = Mixup(64, 0.4, drawn)
    assert 0 < mix.lam < 1 and torch.allclose(seen[1], mix.mix(seen[0]))  # the plain batch, mixed with itself

    run = tmp_path / "jitters"
    assert main(["train", "--task", "xray-castings", "--mixup", "0.2", "--zoom-jitter", "0.2", "--blur-jitter", "1",
                 "--gamma-jitter", "0.3", "--sam", "0.05", "--width", "4", "--depth", "1", "--epochs", "1",
                 "--threads", "1", "--data", str(data_root), "--out", str(run), "-q"]) == 0
    training = json.loads((run / "config.json").read_text())["training"]
    assert (training["mixup"], training["zoom"], training["blur"], training["gamma"]) == (0.2, 0.2, 1.0, 0.3)
    assert training["sam"] == 0.05
    for option, value, said in (("--zoom-jitter", "1", "--zoom-jitter must be in [0, 1)"),
                                ("--blur-jitter", "nan", "--blur-jitter must be between 0 (off) and 8 px"),
                                ("--gamma-jitter", "-0.1", "--gamma-jitter must be between 0 (off) and 2"),
                                ("--mixup", "-1", "--mixup must be")):
        assert main(["train", "--task", "xray-castings", option, value, "--out", str(tmp_path / "bad")]) == 2
        assert said in capsys.readouterr().err
    assert main(["train", "--zoom-jitter", "0.2", "--out", str(tmp_path / "bad")]) == 2
    assert "--zoom-jitter: image training only" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_center_image_keeps_a_flaw_s_contrast_and_follows_the_run_everywhere(data_root, tmp_path, capsys):
    from edge.cli import main
    from edge.data.preprocess import normalize
    from edge.train.images import predict_images, run_images
    from edge.train.runs import load_run

    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    assert np.allclose(normalize(3 * x + 1, "center-image"), 3 * normalize(x, "center-image"), atol=1e-5)
    assert np.allclose(normalize(3 * x + 1, "zscore-image"), normalize(x, "zscore-image"), atol=1e-4)

    run, pruned = tmp_path / "center", tmp_path / "pruned"
    assert main(["train", "--task", "xray-castings", "--normalization", "center-image", "--rotations", "--width", "4",
                 "--depth", "1", "--epochs", "1", "--threads", "1", "--data", str(data_root), "--out", str(run),
                 "-q"]) == 0
    assert main(["prune", "--run", str(run), "--rounds", "1", "--epochs", "1", "--threads", "1", "--out", str(pruned),
                 "-q"]) == 0
    for path in (run, pruned):
        config = json.loads((path / "config.json").read_text())
        assert config["preprocessing"]["normalization"] == "center-image" and config["training"]["rotations"]
        assert config["training"]["sam"] == 0.0  # SAM is the vibration default only
        assert main(["evaluate", "--run", str(path), "--json", "--threads", "1"]) == 0
        scored = json.loads(capsys.readouterr().out)["accuracy"]
        images, labels = run_images(load_run(path), "test")
        model = load_run(path).load_model()
        assert scored == np.mean(predict_images(model, images, "center-image") == labels)
    for vibration_only in ("zscore", "spectrum", "envelope", "raw+envelope"):
        assert main(["train", "--task", "xray-castings", "--normalization", vibration_only,
                     "--out", str(tmp_path / "x")]) == 2
        assert "is for vibration windows" in capsys.readouterr().err


def test_highpass_keeps_a_small_flaw_and_drops_the_smooth_background():
    from scipy.ndimage import gaussian_filter

    from edge.data.preprocess import HIGHPASS_SIGMA, highpass, normalize

    rows, cols = np.mgrid[0:32, 0:32].astype(np.float32)
    shading = 0.3 + 0.4 * ((rows - 8) / 32) ** 2 + 0.2 * cols / 32          # a casting's slow thickness change
    flaw = 0.05 * np.exp(-((rows - 16) ** 2 + (cols - 20) ** 2) / (2 * 1.5 ** 2))   # a blow hole, 3 px across
    out = highpass(np.stack([shading, shading + flaw])[:, None])
    assert np.abs(out[0, 0, 8:24, 8:24]).max() < 0.01     # a 0.3-0.75 background: under a fifth of the flaw inside
    assert (out[1] - out[0])[0, 16, 20] > 0.6 * 0.05                        # most of the flaw's depth stays
    x = np.random.default_rng(0).random((3, 1, 32, 48)).astype(np.float32)
    sigma = (0, 0, HIGHPASS_SIGMA * 32, HIGHPASS_SIGMA * 48)
    assert np.allclose(highpass(x), x - gaussian_filter(x, sigma, mode="reflect", truncate=3.0), atol=1e-5)
    assert np.allclose(normalize(2 * x + 0.5, "highpass-image"), normalize(x, "highpass-image"), atol=1e-4)


def test_simulated_voids_brighten_flawless_images_into_flaws(data_root, tmp_path, capsys):
    from edge.cli import main
    from edge.train.images import VOID_CONTRAST, simulate_voids

    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (400, 1, 32, 32)).astype(np.float32)
    x[:50] = 1.0                                                     # saturated: a void cannot show there
    y = np.repeat([0, 1], 200)
    out, labels = simulate_voids(x, y, 0.5, rng)
    changed = np.flatnonzero(np.any(out != x, axis=(1, 2, 3)))
    flipped = np.flatnonzero(labels[:200] == 1)
    assert np.array_equal(changed, flipped) and (changed >= 50).all()        # saturated: no void to see
    assert 60 < changed.size < 100                                           # about half of the other 150
    assert np.array_equal(out[200:], x[200:]) and (labels[200:] == 1).all()   # flaws stay as they are
    assert (out >= x).all() and out.max() <= 1.0                             # brighter, never past full scale
    peak = (out[changed] / x[changed]).max(axis=(1, 2, 3)) - 1
    assert (peak > 0).all() and (peak <= VOID_CONTRAST[1] + 1e-5).all()
    assert np.array_equal(simulate_voids(x, y, 0.0, rng)[0], x)

    assert main(["train", "--task", "xray-castings", "--simulated-voids", "0.25", "--width", "4", "--depth", "1",
                 "--epochs", "1", "--threads", "1", "--data", str(data_root), "--out", str(tmp_path / "voids"),
                 "-q"]) == 0
    assert json.loads((tmp_path / "voids" / "config.json").read_text())["training"]["simulated_voids"] == 0.25
    assert main(["train", "--task", "neu", "--simulated-voids", "0.25", "--data", str(data_root),
                 "--out", str(tmp_path / "neu")]) == 2
    assert "two-class task" in capsys.readouterr().err


def test_an_image_run_can_keep_the_average_of_its_last_epochs_and_prunes_from_it(data_root, tmp_path, capsys):
    from edge.cli import main
    from edge.train.runs import load_run

    run, pruned = tmp_path / "avg", tmp_path / "avg-l1"
    assert main(["train", "--task", "xray-castings", "--average-epochs", "2", "--width", "4", "--depth", "1",
                 "--epochs", "2", "--threads", "1", "--data", str(data_root), "--out", str(run), "-q"]) == 0
    averaged = load_run(run)
    assert averaged.config["training"]["average_epochs"] == 2
    assert averaged.config["preprocessing"]["normalization"] == "highpass-image"     # the castings' defaults
    assert averaged.config["training"]["weight_decay"] == 0.05
    assert averaged.metrics["best_epoch"] == "average" and averaged.metrics["history"][-1]["epochs"] == [1, 2]
    assert main(["evaluate", "--run", str(run), "--json", "--threads", "1"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0        # the averaged weights reload
    # Fine-tuning after pruning keeps its best epoch: soft pruning and an average of weights do not mix.
    assert main(["prune", "--run", str(run), "--method", "asfp", "--rate", "0.3", "--epochs", "1", "--threads", "1",
                 "--out", str(pruned), "--rounds", "3", "-q"]) == 2  # ASFP has no rounds: not silently ignored
    assert "--rounds counts L1 pruning rounds" in capsys.readouterr().err
    assert main(["prune", "--run", str(run), "--method", "asfp", "--rate", "0.3", "--epochs", "1", "--threads", "1",
                 "--out", str(pruned), "-q"]) == 0
    assert main(["train", "--task", "xray-castings", "--average-epochs", "3", "--epochs", "2",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--average-epochs must be between 0 (off) and --epochs (2)" in capsys.readouterr().err


def test_an_image_student_learns_from_teachers_that_never_saw_its_validation_images(castings_run, data_root,
                                                                                   tmp_path, capsys):
    import torch

    from edge.cli import main
    from edge.train.runs import load_run
    from edge.train.teachers import ImageTeacherEnsemble, distillation_loss

    def train(out, *extra):
        return main(["train", "--task", "xray-castings", "--width", "4", "--depth", "1", "--epochs", "1",
                     "--threads", "1", "--data", str(data_root), "--out", str(out), "-q", *extra])

    assert train(tmp_path / "t1", "--seed", "1", "--split-seed", "0") == 0
    teachers = [str(castings_run), str(tmp_path / "t1")]           # seeds 0 and 1, both on split 0
    assert load_run(tmp_path / "t1").split["files"] == load_run(castings_run).split["files"]
    held_out = {name: load_run(castings_run).split["files"][name] for name in ("val", "test")}
    pair = ImageTeacherEnsemble.from_runs(teachers, ["class_0", "class_1"], 32, "highpass-image", held_out)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 1, 32, 32)).astype(np.float32))
    soft = pair.soft_targets(x, 2.0)
    torch.manual_seed(5)
    ImageTeacherEnsemble.from_runs(teachers, ["class_0", "class_1"], 32, "highpass-image", held_out)
    drawn_after_loading = torch.rand(4)
    torch.manual_seed(5)
    assert torch.equal(drawn_after_loading, torch.rand(4))  # the student's weights do not depend on its teachers'

    alone = ImageTeacherEnsemble.from_runs(teachers[:1], ["class_0", "class_1"], 32, "highpass-image",
                                           held_out).soft_targets(x, 2.0)
    assert torch.allclose(soft.sum(1), torch.ones(8)) and not torch.allclose(soft, alone)
    assert distillation_loss(2.0 * torch.log(soft), soft, 2.0).item() == pytest.approx(0.0, abs=1e-6)

    assert train(tmp_path / "student", "--seed", "2", "--split-seed", "0", "--teacher", teachers[0], "--teacher",
                 teachers[1], "--distill-weight", "1") == 0
    student = load_run(tmp_path / "student")
    assert student.config["training"]["teachers"] == teachers and student.config["training"]["split_seed"] == 0
    assert student.split["files"] == load_run(castings_run).split["files"]
    plain = tmp_path / "plain"
    assert train(plain, "--seed", "2", "--split-seed", "0") == 0
    assert student.metrics["history"][0]["loss"] != load_run(plain).metrics["history"][0]["loss"]

    # Seed 3 draws other validation images, some of which the teachers trained on: refused.
    assert train(tmp_path / "leaky", "--seed", "3", "--teacher", teachers[0]) == 2
    err = capsys.readouterr().err
    assert "trained on" in err and "of the student's validation images" in err and "--split-seed 0" in err
    assert train(tmp_path / "other-input", "--split-seed", "0", "--normalization", "zscore-image", "--teacher",
                 teachers[0]) == 2
    assert "normalised highpass-image, the student 32 px zscore-image" in capsys.readouterr().err
    assert not (tmp_path / "leaky").exists() and not (tmp_path / "other-input").exists()


def test_options_of_the_other_kind_of_task_are_refused_not_ignored(tmp_path, capsys):
    from edge.cli import main

    assert main(["train", "--task", "xray-castings", "--mixstyle", "0.5", "--loads", "1", "--out", str(tmp_path)]) == 2
    assert ("--loads, --mixstyle: vibration training only; the xray-castings task trains an image model and would "
            "ignore them") in capsys.readouterr().err
    for image_only in (["--rotations"], ["--simulated-voids", "0.25"], ["--class-weights", "gmean"], ["--size", "64"],
                       ["--split-seed", "0"]):
        assert main(["train", *image_only, "--out", str(tmp_path)]) == 2
        assert (f"{image_only[0]}: image training only; the cwru task trains a vibration model and would ignore "
                "it") in capsys.readouterr().err
    assert main(["train", "--task", "neu", "--weight-decay", "-0.1", "--out", str(tmp_path)]) == 2
    assert "--weight-decay must be 0 or more" in capsys.readouterr().err
    assert main(["train", "--task", "neu", "--band-jitter", "6", "--out", str(tmp_path)]) == 2
    assert "--band-jitter: vibration training only" in capsys.readouterr().err
    for beyond in ("-1", "nan", "41"):
        assert main(["train", "--band-jitter", beyond, "--out", str(tmp_path)]) == 2
        assert "--band-jitter must be between 0 (off) and 40 dB" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                                            # refused before anything is written


def test_a_task_s_defaults_fill_only_what_the_user_left_open():
    from edge.train.images import ImageTrainSettings

    neu, castings = ImageTrainSettings().for_task("neu"), ImageTrainSettings().for_task("xray-castings")
    assert (neu.normalization, neu.weight_decay, neu.epochs) == ("zscore-image", 5e-4, 30)
    assert (castings.normalization, castings.weight_decay, castings.epochs) == ("highpass-image", 0.05, 90)
    chosen = ImageTrainSettings(normalization="center-image", weight_decay=0.01, epochs=12).for_task("xray-castings")
    assert (chosen.normalization, chosen.weight_decay, chosen.epochs) == ("center-image", 0.01, 12)


def test_a_detector_that_changes_its_width_or_sends_lines_too_narrow_is_counted_not_fatal(castings_bundle, tmp_path,
                                                                                        capsys):
    """A LINE of another width in the middle of a tile used to stop the reader (the tile's lines could not be
    stacked), and one narrower than a patch too: the gateway restarted, and restarted again."""
    import threading

    from edge.runtime.loop import Runtime, RuntimeSettings
    from firmware_bridge.codec import encode_frame
    from firmware_bridge.protocol import Hello, Line, SampleFormat, SensorKind
    from firmware_bridge.transport import PtyPair

    pty = PtyPair()
    runtime = Runtime(castings_bundle, RuntimeSettings(port=pty.name, log_path=str(tmp_path / "log.db"), http=None,
                                                       distance=5000, paced_reads=False))
    runtime.start()
    decided = threading.Thread(target=lambda: runtime.run(4.0), daemon=True)
    decided.start()
    rng = np.random.default_rng(0)
    frames, encoder = [], 0
    for pixels, lines in ((640, 48), (320, 64), (16, 40)):  # 640 px, then the detector at 320 px, then 16 px
        frames.append(encode_frame(Hello("det", (1, 0, 0), SensorKind.LINESCAN, SampleFormat.UINT8, 1, 8, 1250.0,
                                         1.0, pixels), len(frames)))
        for _ in range(lines):
            frames.append(encode_frame(Line(rng.integers(0, 255, pixels, dtype=np.uint8), 8), len(frames),
                                       encoder * 800, encoder))
            encoder += 1
    threading.Thread(target=os.write, args=(pty.master_fd, b"".join(frames)), daemon=True).start()
    decided.join(timeout=30)
    runtime.close()
    pty.close()
    c = runtime.counters()
    assert runtime.thread_failures == [] and c["assembler_lines_unusable"] == 40
    db = sqlite3.connect(tmp_path / "log.db")
    lanes = db.execute("SELECT span_start, COUNT(*) FROM decisions GROUP BY span_start ORDER BY span_start").fetchall()
    assert lanes == [(0, 20), (48, 10), (80, 10)]  # a 640 px tile of 20 patches; the 320 px lines' two tiles of 10
    assert "lines of 16 px, too narrow" in capsys.readouterr().err and c["hello_mismatch"] == 1


def _decide_belt(bundle, tmp_path, frames: list[bytes], answer=None, seconds: float = 1.0,
                 after_first_reject: list[bytes] = (), before_run=None, **settings):
    """Hand ``frames`` to a runtime on a real pty in one read, before its decider starts (so every tile they
    complete waits for it), run it for ``seconds``; returns the runtime, the REJECTs it wrote to the device,
    and its log rows (span_start, lane, reject, reject_command, fire_at) in order.  ``answer(frame)`` plays
    the device: the ACK or NAK to send for each REJECT frame, or None to drop that frame unanswered; by
    default the device acknowledges every REJECT.  The device sends ``after_first_reject`` once it has
    read its first REJECT.  ``before_run(runtime)`` runs after the frames are handed over, before the
    runtime's threads start."""
    import select
    import threading

    from edge.runtime.loop import Runtime, RuntimeSettings
    from firmware_bridge.codec import FrameDecoder, encode_frame
    from firmware_bridge.protocol import Ack, Reject
    from firmware_bridge.transport import PtyPair

    pty = PtyPair()
    runtime = Runtime(bundle, RuntimeSettings(port=pty.name, log_path=str(tmp_path / "log.db"), http=None,
                                              budget_ms=1000, paced_reads=False, **settings))
    rejects, done = [], threading.Event()
    answer = answer or (lambda frame: Ack(int(Reject.TYPE), frame.seq))

    def device():
        decoder, seq = FrameDecoder(), 1000
        while not done.is_set():
            if not select.select([pty.master_fd], [], [], 0.05)[0]:
                continue
            for frame in decoder.feed(os.read(pty.master_fd, 65536)):
                if isinstance(frame.message, Reject):
                    rejects.append(frame.message)
                    if (reply := answer(frame)) is not None:
                        os.write(pty.master_fd, encode_frame(reply, seq))
                        seq += 1
                    if len(rejects) == 1 and after_first_reject:
                        os.write(pty.master_fd, b"".join(after_first_reject))

    listening = threading.Thread(target=device, daemon=True)
    try:
        runtime.start()
        listening.start()
        runtime._ingest(b"".join(frames), time.monotonic(), True)
        if before_run is not None:
            before_run(runtime)
        runtime.run(seconds)
    finally:
        runtime.close()
        done.set()
        listening.join(timeout=1.0)
    pty.close()
    rows = sqlite3.connect(tmp_path / "log.db").execute(
        "SELECT span_start, lane, reject, reject_command, fire_at FROM decisions ORDER BY decision_id").fetchall()
    return runtime, rejects, rows


def _belt_frames(tiles: list[int], first_seq: int = 0, device_id: str = "det") -> list[bytes]:
    """A 640 px detector's HELLO, then 32 random lines (one tile) from each encoder count in ``tiles``."""
    from firmware_bridge.codec import encode_frame
    from firmware_bridge.protocol import Hello, Line, SampleFormat, SensorKind

    rng = np.random.default_rng(0)
    frames = [encode_frame(Hello(device_id, (1, 0, 0), SensorKind.LINESCAN, SampleFormat.UINT8, 1, 8, 1250.0, 1.0, 640),
                           first_seq)]
    for first in tiles:
        frames += [encode_frame(Line(rng.integers(0, 255, 640, dtype=np.uint8), 8), first_seq + len(frames),
                                (first + k) * 800, first + k) for k in range(32)]
    return frames


def test_belt_lost_between_two_tiles_gets_the_fail_safe_unless_another_detector_came(castings_bundle, tmp_path):
    """Lines 1032-1099 never arrive: that belt was never inspected, so it gets the fail-safe (a REJECT on every
    lane, timed at the actuator) where it used to pass unchecked.  The same jump after another detector's
    HELLO is another encoder count, not lost belt."""
    from edge.runtime.decisions import REASON_FAIL_SAFE

    results = {}
    for name, second in (("same", "det"), ("other", "det-2")):
        (tmp_path / name).mkdir()
        frames = _belt_frames([1000]) + _belt_frames([1100], first_seq=33, device_id=second)
        runtime, rejects, _ = _decide_belt(castings_bundle, tmp_path / name, frames, distance=5000)
        results[name] = (runtime.counters(), {(r.at, r.lane) for r in rejects if r.reason == REASON_FAIL_SAFE})
    c, fail_safe = results["same"]
    assert c["assembler_lines_unseen"] == 68 and c["assembler_unseen_tiles"] == 3 and c["decisions"] == 100
    assert c["gap_fail_safe"] == 60 and fail_safe == {(end + 5000, lane) for end in (1063, 1095, 1099)
                                                      for lane in range(20)}
    c, fail_safe = results["other"]
    assert c["gap_fail_safe"] == 0 and not fail_safe and c["decisions"] == 40 and c["assembler_lines_unseen"] == 0


def test_belt_lost_in_a_gap_that_passed_the_actuator_is_logged_where_it_was_only_counted(castings_bundle, tmp_path,
                                                                                        capsys):
    """Lines 1032-1099 never arrive and the actuator is 10 lines on: by the time the stream goes on at 1100, the
    tile 1032-1063 has passed it.  Its parts went unchecked; the log said nothing of them, only a counter did.
    Now it holds a fail-safe row on every lane for that belt, whose REJECT did not fire (``passed``), and sends
    the device nothing for it."""
    from edge.cli import main
    from edge.runtime.decisions import REASON_FAIL_SAFE

    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, _belt_frames([1000, 1100]), distance=10)
    c = runtime.counters()
    assert c["assembler_lines_unseen"] == 68 and c["assembler_lines_unseen_passed"] == 32
    assert c["assembler_passed_spans"] == 1 and c["assembler_unseen_tiles"] == 2
    passed = [row for row in rows if row[3] == "passed"]
    assert sorted(lane for _, lane, *_ in passed) == list(range(20))
    assert all(start == 1032 and reject == 1 and fire_at is None for start, _, reject, _, fire_at in passed)
    assert c["rejects_passed"] == 20 and c["gap_fail_safe"] == 60 and c["decisions"] == 100
    assert {(r.at, r.lane) for r in rejects if r.reason == REASON_FAIL_SAFE} == {
        (end + 10, lane) for end in (1095, 1099) for lane in range(20)}                # nothing sent for 1032-1063
    assert main(["decisions", "--log", str(tmp_path / "log.db"), "--not-fired", "--last", "0"]) == 0
    assert "not fired: passed the actuator unchecked 20" in capsys.readouterr().out


def test_the_fail_safe_of_lost_belt_waits_for_the_deciders_spare_time_and_keeps_out_of_the_latency(
        castings_bundle, tmp_path):
    """A long outage leaves a tile of lost belt for every tile that fits between scanner and actuator.  Given
    the fail-safe all at once, they held up the tiles scanned after the outage past their budget; the decider
    now takes them only when no tile waits, soonest at the actuator first.  Nothing of theirs arrived, so their
    latency stays out of the percentiles held against the budget."""
    from edge.runtime.assembler import Unit
    from edge.runtime.loop import Runtime, RuntimeSettings
    from firmware_bridge.transport import PtyPair

    pty = PtyPair()
    runtime = Runtime(castings_bundle, RuntimeSettings(port=pty.name, log_path=str(tmp_path / "log.db"), http=None,
                                                       distance=5000, keepalive_s=0.05))
    try:
        lost = [Unit(np.zeros((20, 0, 32), np.float32), start, start + 31, 0, time.monotonic() - 1.0, 20, 0,
                     seen=False) for start in (100, 132, 164)]
        scanned = Unit(np.zeros((20, 32, 32), np.float32), 200, 231, 0, time.monotonic(), 20, 0)
        assert runtime._enqueue_all([*lost, scanned]) == 1                 # the first lost tile wakes the decider
        assert list(runtime._unseen) == lost[1:] and runtime._queue.qsize() == 2
        order = [runtime._next_unit() for _ in range(4)]
        assert order == [lost[0], scanned, lost[1], lost[2]]               # queued first, then the spare time
        assert runtime._next_unit() is None                                # a keep-alive's wait, then nothing
        for unit in lost:
            runtime._finish_tile(unit, [runtime.policy.fail_safe("gap")] * 20)
        assert runtime.counters()["gap_fail_safe"] == 60 and runtime.metrics.latency_summary()["n"] == 0
        assert runtime.metrics.recent[0]["span"] == "164-195"              # shown on the status page all the same
    finally:
        runtime.close()
        pty.close()


def test_the_fail_safe_of_lost_belt_waits_while_the_device_is_behind_with_rejects_unless_its_part_is_near(
        castings_bundle, tmp_path):
    """After a long outage, the thousands of fail-safe REJECTs of the lost belt filled the link's buffer, and
    the REJECTs of the tiles scanned meanwhile waited behind them.  A tile of lost belt now waits while 32
    REJECTs await the device's answer; within 0.6 s of the actuator, while 64 do; within 0.1 s it goes whatever
    the backlog (as does one whose REJECTs name an encoder count from before the device restarted: none is
    sent).  Just after a reconnect, before the device's HELLO, the one before the outage gives the line rate:
    without it every tile went at once, and after a 3 s outage with the actuator 0.5 s on, the write of the
    last one's REJECTs held a tile scanned meanwhile past its budget."""
    from edge.runtime.assembler import Unit
    from edge.runtime.loop import (UNSEEN_DUE_S, UNSEEN_LAST_S, UNSEEN_NEAR_REJECTS_IN_FLIGHT,
                                   UNSEEN_REJECTS_IN_FLIGHT, Runtime, RuntimeSettings)
    from edge.runtime.reject_ledger import InFlight
    from firmware_bridge.protocol import Hello, Reject, SensorKind
    from firmware_bridge.transport import PtyPair

    pty = PtyPair()
    runtime = Runtime(castings_bundle, RuntimeSettings(port=pty.name, log_path=str(tmp_path / "log.db"), http=None,
                                                       distance=5000, keepalive_s=0.05))
    try:
        runtime.device_hello = Hello("belt", sensor=SensorKind.LINESCAN, rate_hz=1250.0, pixels=640)
        runtime.assembler.push(np.zeros(640, np.uint16), 3000, 0, time.monotonic())   # the scanner is at 3,000
        lost = [Unit(np.zeros((20, 0, 32), np.float32), start, start + 31, 0, time.monotonic(), 20, 0, seen=False)
                for start in (100, 132)]   # their parts reach the actuator at 5,131 and 5,163: 1.7 s away
        runtime._unseen.extend(lost)
        behind = [InFlight(k, Reject(k, lane=k % 20, at=9000), time.monotonic())
                  for k in range(UNSEEN_REJECTS_IN_FLIGHT)]
        runtime.rejects_in_flight.sent(1, behind)
        assert runtime._next_unit() is None and list(runtime._unseen) == lost   # held back for a keep-alive
        c = runtime.counters()                                                  # on the status page
        assert c["unseen_tiles_waiting"] == 2 and c["rejects_in_flight"] == UNSEEN_REJECTS_IN_FLIGHT
        scanned = Unit(np.zeros((20, 32, 32), np.float32), 3000, 3031, 0, time.monotonic(), 20, 0)
        runtime._queue.put(scanned)
        assert runtime._next_unit() is scanned                                  # a scanned tile goes first
        runtime.rejects_in_flight.answered(1)                                   # the device reads on
        assert runtime._next_unit() is lost[0]
        runtime.rejects_in_flight.sent(100, behind[:1])                         # behind again
        assert runtime._next_unit() is None
        due = 5163 - int(UNSEEN_DUE_S * 1250) + 1                              # the scanner nears the last part
        runtime.assembler.push(np.zeros(640, np.uint16), due, 0, time.monotonic())
        assert runtime._next_unit() is lost[1] and not runtime._unseen          # it goes: fewer than 64 behind
        runtime.rejects_in_flight.sent(200, behind[:UNSEEN_NEAR_REJECTS_IN_FLIGHT - UNSEEN_REJECTS_IN_FLIGHT])
        runtime._device_before_outage, runtime.device_hello = runtime.device_hello, None  # a reconnect, no HELLO yet
        near = Unit(np.zeros((20, 0, 32), np.float32), 100, 131, 0, time.monotonic(), 20, 0, seen=False)
        runtime._unseen.append(near)                                            # its part: 0.57 s from the actuator
        assert runtime._next_unit() is None                                     # 64 behind: it waits
        last = 5131 - int(UNSEEN_LAST_S * 1250) + 1
        runtime.assembler.push(np.zeros(640, np.uint16), last, 0, time.monotonic())
        assert runtime._next_unit() is near                                     # its last moment: it goes
        before_restart = Unit(np.zeros((20, 0, 32), np.float32), 7000, 7031, 0, time.monotonic(), 20, 0, seen=False)
        runtime._unseen.append(before_restart)
        runtime.assembler.push(np.zeros(640, np.uint16), 10, 0, time.monotonic())     # the device counts anew
        assert runtime.assembler.encoder_epoch == 1
        assert len(runtime.rejects_in_flight) == UNSEEN_NEAR_REJECTS_IN_FLIGHT
        assert runtime._next_unit() is before_restart                           # it sends no REJECT: no wait
    finally:
        runtime.close()
        pty.close()


def test_a_tile_scanned_before_the_device_restarted_sends_no_reject_on_the_new_encoder_count(castings_bundle,
                                                                                             tmp_path, capsys):
    """A device that restarts counts its encoder from 0 again.  A tile scanned before, still waiting for the
    decider, used to send its REJECTs at its old encoder count: the device fired them at whatever part stood
    there on the new count, much later.  They cannot be timed any more: they are logged, counted and said."""
    before, after = _belt_frames([70_000]), _belt_frames([0])   # the device restarted: HELLO and numbers from 0
    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, before + after, distance=5000, threshold=1e-6)
    c = runtime.counters()
    assert c["decoder_device_restarts"] == c["assembler_encoder_restarts"] == 1 and c["decisions"] == 40
    assert sorted({r.at for r in rejects}) == [31 + 5000] and len(rejects) == 20 == c["rejects_sent"]
    assert c["rejects_untimed"] == 20
    assert rows == [(70_000, lane, 1, "untimed", None) for lane in range(20)] + \
        [(0, lane, 1, "sent", 31 + 5000) for lane in range(20)]
    assert capsys.readouterr().err.count("scanned before the device restarted") == 1


def test_a_reject_unanswered_when_the_device_restarted_is_not_sent_again_on_the_new_encoder_count(castings_bundle,
                                                                                                   tmp_path, capsys):
    """A device that restarts loses the REJECTs it was given; those it had not answered were sent again at
    their old encoder count, which the device, counting from 0 again, fired at whatever part stood there.
    Now they are not sent again: logged as untimed, counted and said, as for a tile decided after the restart."""
    from firmware_bridge.protocol import Ack, Reject

    def restarting(frame):   # the REJECTs of the tile before the restart go unanswered: it restarts meanwhile
        return None if frame.message.at == 70_031 + 5000 else Ack(int(Reject.TYPE), frame.seq)

    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, _belt_frames([70_000]), answer=restarting,
                                          after_first_reject=_belt_frames([0]), distance=5000, threshold=1e-6)
    c = runtime.counters()
    assert c["decoder_device_restarts"] == c["assembler_encoder_restarts"] == 1 and c["decisions"] == 40
    assert [r.at for r in rejects] == [70_031 + 5000] * 20 + [31 + 5000] * 20   # none sent again at 75,031
    assert c["rejects_sent"] == 40 and c["reject_resends"] == 0 and c["rejects_untimed"] == 20 and c["acks"] == 20
    assert rows == [(70_000, lane, 1, "untimed", 70_031 + 5000) for lane in range(20)] + \
        [(0, lane, 1, "sent", 31 + 5000) for lane in range(20)]
    assert capsys.readouterr().err.count("scanned before the device restarted") == 1


def test_rejects_decided_while_the_device_was_gone_are_written_once_it_is_back_unless_it_restarted(
        castings_bundle, tmp_path, capsys):
    """A line-scan REJECT names the encoder count where its part meets the actuator.  Those decided while the
    USB link was down were logged as not written and never sent: their parts passed.  Now they are written once
    the same device is back and streaming on the same count (the device fires them, or answers TOO_LATE), and
    not if its count began again.  So are those written just before the link dropped whose answer never came:
    they were given up as unanswered when sending them again failed."""
    import select
    import threading

    from conftest import wait_until
    from edge.runtime.loop import Runtime, RuntimeSettings
    from firmware_bridge.codec import FrameDecoder, encode_frame
    from firmware_bridge.protocol import Ack, Hello, Reject
    from firmware_bridge.transport import PtyPair

    link = tmp_path / "sensor"
    device = {"pty": PtyPair(link), "next_line": None, "mute": False}
    rejects, done = [], threading.Event()

    def play_device():
        decoder, seq, fd = FrameDecoder(), 10_000, None
        while not done.is_set():
            if device["pty"].master_fd != fd:
                decoder, fd = FrameDecoder(), device["pty"].master_fd
            if fd < 0 or not select.select([fd], [], [], 0.02)[0]:
                time.sleep(0.01)
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                continue
            for frame in decoder.feed(data):
                reply = []
                if isinstance(frame.message, Reject):
                    rejects.append(frame.message)
                    reply = [] if device["mute"] else [Ack(int(Reject.TYPE), frame.seq)]
                elif isinstance(frame.message, Hello) and frame.message.request and device["next_line"] is not None:
                    hello_and_line = _belt_frames([device["next_line"]], seq)[:2]  # its HELLO, then a line
                    os.write(fd, b"".join(hello_and_line))
                    seq += 2
                for message in reply:
                    os.write(fd, encode_frame(message, seq))
                    seq += 1

    # Every patch a reject; the belt between the tiles this device plays (lost in its outages) gets the
    # fail-safe, here a pass, so that the REJECTs the device reads are those of the tiles it was sent.
    runtime = Runtime(castings_bundle, RuntimeSettings(
        port=str(link), log_path=str(tmp_path / "log.db"), http=None, budget_ms=1000, paced_reads=False,
        distance=5000, threshold=1e-6, on_miss="pass"))
    listening = threading.Thread(target=play_device, daemon=True)
    running = threading.Thread(target=runtime.run, args=(60.0,), daemon=True)

    def sent() -> set[tuple[int, int]]:  # (decision id, encoder count) of the REJECTs the device read, once each
        return {(r.decision_id, r.at) for r in rejects}  # a busy machine may delay an ACK: sent again, same id

    def rows_of(first_line: int, column: str = "reject_command") -> list:
        db = sqlite3.connect(tmp_path / "log.db")
        try:
            return [r[0] for r in db.execute(f"SELECT {column} FROM decisions WHERE span_start = ? AND "
                                             "fail_safe IS NULL", (first_line,))]
        finally:
            db.close()

    def fired_at(first_line: int) -> set[tuple[int, int]]:  # what the device should read of the tile there
        return {(k, first_line + 31 + 5000) for k in rows_of(first_line, "decision_id")}

    def unplug_and_decide(first_line: int) -> None:
        device["pty"].close()
        wait_until(lambda: not runtime.port.connected, 5.0)
        runtime._ingest(b"".join(_belt_frames([first_line])[1:]), time.monotonic(), True)  # lines read before
        wait_until(lambda: rows_of(first_line) == ["not_written"] * 20, 10.0)

    try:
        runtime.start()
        listening.start()
        running.start()
        os.write(device["pty"].master_fd, b"".join(_belt_frames([1000])))
        wait_until(lambda: len(sent()) == 20, 10.0)
        # the link drops as a tile is decided; the device comes back on the same count
        unplug_and_decide(2000)
        device["next_line"] = 2100
        device["pty"] = PtyPair(link)
        wait_until(lambda: rows_of(2000) == ["sent"] * 20, 10.0)
        assert sent() == fired_at(1000) | fired_at(2000)
        # REJECTs written, read, not yet answered when the link drops; a second to unplug in, however busy the host
        runtime.rejects_in_flight.timeout_s = 1.0
        device["mute"] = True
        runtime._ingest(b"".join(_belt_frames([2500])[1:]), time.monotonic(), True)
        wait_until(lambda: len(sent()) == 60, 10.0)
        device["pty"].close()
        wait_until(lambda: len(runtime.awaiting_device) == 20, 10.0)  # sending them again failed
        device["next_line"], device["mute"] = 2600, False
        device["pty"] = PtyPair(link)
        wait_until(lambda: not runtime.awaiting_device and not len(runtime.rejects_in_flight), 10.0)
        assert rows_of(2500) == ["sent"] * 20
        assert sorted(r.decision_id for r in rejects if r.at == 2531 + 5000) == sorted(rows_of(2500, "decision_id") * 2)
        # again, but the device restarted meanwhile: its count begins at 0, where those counts name other parts
        unplug_and_decide(3000)
        device["next_line"] = 0
        device["pty"] = PtyPair(link)
        wait_until(lambda: rows_of(3000) == ["untimed"] * 20, 10.0)
        time.sleep(0.3)
        assert len(sent()) == 60  # none of the tile scanned before the restart
        c = runtime.counters()
    finally:
        runtime.stop()
        running.join(timeout=10.0)
        runtime.close()
        done.set()
        listening.join(timeout=1.0)
        device["pty"].close()
    assert c["rejects_sent_after_outage"] == 40 and c["rejects_not_written"] == 0 and c["rejects_untimed"] == 20
    assert c["rejects_sent"] == 60 and c["acks"] == 60 and c["reconnects"] == 3
    assert c["reject_resends"] == 20 and c["rejects_unanswered"] == 0
    assert "scanned before the device restarted" in capsys.readouterr().err


def test_a_reject_the_device_is_too_busy_to_take_is_sent_again(castings_bundle, tmp_path):
    """A device whose REJECT queue is full answers NAK BUSY: a wide defect sends one REJECT per lane at once.
    The runtime used to log those as refused, and their parts passed; it now sends each again once the answer
    timeout has passed, and logs it as sent when the device takes it."""
    from firmware_bridge.protocol import Ack, Nak, NakReason, Reject

    refused_once: set[int] = set()

    def busy_first(frame):
        if frame.message.decision_id in refused_once:
            return Ack(int(Reject.TYPE), frame.seq)
        refused_once.add(frame.message.decision_id)
        return Nak(int(Reject.TYPE), frame.seq, int(NakReason.BUSY))

    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, _belt_frames([0]), answer=busy_first,
                                          distance=5000, threshold=1e-6)
    c = runtime.counters()
    assert c["decisions"] == 20 and c["naks"] == 20 and c["reject_resends"] == 20 and c["acks"] == 20
    assert sorted(r.decision_id for r in rejects) == sorted(2 * list(refused_once)) and len(refused_once) == 20
    assert rows == [(0, lane, 1, "sent", 31 + 5000) for lane in range(20)]


@pytest.mark.parametrize("device_answers", [True, False], ids=["answers_the_second_send", "never_answers"])
def test_rejects_written_as_the_runtime_stops_are_followed_until_the_device_answers(castings_bundle, tmp_path,
                                                                                     device_answers):
    """A SIGTERM stopped the reader with the decider: the last REJECTs (those of the tiles decided as it stopped,
    and the fail-safe ones of the tiles still queued) were logged as sent though no answer was heard, and one
    lost on the wire was never sent again.  Now the runtime hears the device out, as long as the ledger allows
    (3 sends 100 ms apart), before it stops; one never answered is logged so."""
    from edge.runtime.metrics import render_page
    from firmware_bridge.protocol import Ack, Reject

    seen: set[int] = set()

    def second_send_only(frame):  # the first send of each REJECT is lost on the wire
        if frame.message.decision_id in seen:
            return Ack(int(Reject.TYPE), frame.seq) if device_answers else None
        seen.add(frame.message.decision_id)
        return None

    began = time.monotonic()
    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, _belt_frames([0, 32, 64]),
                                          answer=second_send_only, seconds=0.0, distance=5000, threshold=1e-6,
                                          on_miss="reject")
    c = runtime.counters()
    assert time.monotonic() - began < 5.0
    assert c["decisions"] == 60 == len(seen) and c["rejects_sent"] == 60
    assert c["reject_resends"] >= 60 and len(rejects) == 60 + c["reject_resends"]   # every REJECT sent again
    if device_answers:
        assert c["acks"] == 60 and c["rejects_unanswered"] == 0 and {row[3] for row in rows} == {"sent"}
    else:
        assert c["rejects_unanswered"] == 60 and {row[3] for row in rows} == {"unanswered"}
        page = render_page(runtime.metrics.status({}))  # the status page says so of the rows it shows too
        assert page.count("<td>unanswered</td>") == 50 and "<td>yes</td>" not in page


def test_a_reader_held_up_does_not_send_again_what_the_device_answered_meanwhile(castings_bundle, tmp_path):
    """The reader used to look for REJECTs due again before reading the device's answers: held up longer than
    the answer timeout (a stall of the host), it sent again every REJECT whose ACK was already waiting."""
    def hold_up_the_reader(runtime):
        unit = runtime._queue.get_nowait()
        runtime._finish_tile(unit, [runtime.policy.fail_safe("deadline")] * unit.lanes)  # 20 REJECTs written
        time.sleep(0.3)   # the reader is held up; the device answers all 20 meanwhile

    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, _belt_frames([0]), seconds=0.3,
                                          before_run=hold_up_the_reader, distance=5000, on_miss="reject")
    c = runtime.counters()
    assert c["rejects_sent"] == 20 == c["acks"] and sorted(r.decision_id for r in rejects) == list(range(1, 21))
    assert c["reject_resends"] == 0 and c["answers_late"] == 0


def test_the_reject_lockout_counts_each_lane_s_rejects_in_a_row_and_logs_what_it_held(castings_bundle, tmp_path,
                                                                                       capsys):
    """Lane k feeds actuator k.  The lockout used to count rejects in a row across the lanes of a tile: a wide
    defect over three patches held the third patch's REJECT under `--max-consecutive 2`, and the log showed it
    as rejected like any other.  Now each lane counts its own parts; what was held is logged, counted, said."""
    runtime, rejects, rows = _decide_belt(castings_bundle, tmp_path, _belt_frames([0, 32, 64]), distance=5000,
                                          threshold=1e-6, max_consecutive=2)
    c = runtime.counters()
    assert c["decisions"] == 60 and len(rejects) == 40 == c["rejects_sent"] and c["lockouts"] == 20
    assert sorted({(r.at, r.lane) for r in rejects}) == [(end + 5000, lane) for end in (31, 63) for lane in range(20)]
    assert rows == [(start, lane, 1, "sent" if start < 64 else "lockout", start + 31 + 5000 if start < 64 else None)
                    for start in (0, 32, 64) for lane in range(20)]
    assert capsys.readouterr().err.count("rejected 2 in a row: the lockout holds") == 1


def test_options_of_the_other_kind_of_run_are_refused_and_an_image_run_s_held_out_belt_is_streamed(
        castings_run, tiny_run, tmp_path, capsys):
    """`evaluate` used to ignore --snr and --loads for an image run, and `simulate --held-out` ended in a KeyError
    for one; an image run's held-out belt now streams, as a vibration run's held-out segments do."""
    from edge.cli import main

    assert main(["evaluate", "--run", str(castings_run), "--snr", "-4,none", "--loads", "1"]) == 2
    assert "--loads, --snr: vibration runs only" in capsys.readouterr().err
    assert main(["simulate", "--source", "cwru", "--held-out", str(castings_run), "--duration", "0.1"]) == 2
    assert "is an image run: give --source xray or neu" in capsys.readouterr().err
    assert main(["simulate", "--source", "xray", "--held-out", str(tiny_run), "--duration", "0.1"]) == 2
    assert "is a vibration run: give --source cwru" in capsys.readouterr().err
    truth = tmp_path / "truth.json"
    assert main(["simulate", "--source", "xray", "--held-out", str(castings_run), "--bands", "2", "--duration",
                 "0.1", "--truth", str(truth)]) == 0
    test = set(json.loads((castings_run / "split.json").read_text())["files"]["test"])
    streamed = {t["image"] for t in json.loads(truth.read_text())["truth"]}
    assert len(streamed) == 2 * 20 and streamed <= test
    assert main(["simulate", "--source", "xray", "--held-out", str(castings_run), "--bands", "2", "--lanes", "3",
                 "--bit-depth", "12", "--duration", "0.1", "--truth", str(truth)]) == 0
    doc = json.loads(truth.read_text())
    assert len(doc["truth"]) == 2 * 3 and doc["hello"]["bit_depth"] == 12   # were ignored for a run's belt
    assert main(["simulate", "--source", "xray", "--held-out", str(castings_run), "--split", "train"]) == 2
    assert "--split: not read when the device streams the test images of run" in capsys.readouterr().err


def test_a_starting_state_is_taken_when_it_fits_and_refused_in_one_line_when_it_does_not(castings_run, tiny_run,
                                                                                       data_root, tmp_path, capsys):
    """--init-state of bytes that are no checkpoint ended in a KeyError, one of another network in torch's page
    of missing keys."""
    from edge.cli import main

    common = ["train", "--task", "xray-castings", "--model", "resnet18", "--width", "8", "--depth", "1", "--epochs",
              "1", "--threads", "1", "--data", str(data_root), "-q"]
    junk = tmp_path / "junk.pt"
    junk.write_text("junk\n")
    assert main([*common, "--out", str(tmp_path / "a"), "--init-state", str(junk)]) == 2
    assert f"--init-state {junk} cannot be read as a state dict of tensors (not a file torch.save wrote)" \
        in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "b"), "--init-state", str(tiny_run / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the resnet18 asked for (Missing key(s) in state_dict: " in err and ", the first " in err
    assert len(err) < 400 and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main([*common, "--out", str(tmp_path / "c"), "--init-state", str(castings_run / "model.pt")]) == 0
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["training"]["init_state"] == str(castings_run / "model.pt")
