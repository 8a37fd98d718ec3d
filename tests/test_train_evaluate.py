"""Tiny seeded trainings on the real load-0 records: run files, determinism, honest evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.cli import main
from edge.errors import RunError
from edge.train.runs import load_run
from edge.train.vibration import evaluate_cwru, format_evaluation, train_cwru

from conftest import TINY, tiny_settings as _settings


def test_run_directory_holds_plain_tensors_and_descriptions(tiny_run):
    state = torch.load(tiny_run / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    run = load_run(tiny_run)
    assert run.config["model"]["name"] == "drsn1d-cw" and run.config["classes"][0] == "normal"
    assert run.config["preprocessing"]["window"] == 1024
    assert {row["split"] for row in run.split["segments"]} == {"train", "val", "test"}
    assert len(run.metrics["history"]) == 3 and run.metrics["train_seconds"] > 0
    machine = run.config["environment"]  # a seeded run's weights are the same on this machine, not on every one
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and machine["processor"]
    assert machine["torch"] == torch.__version__ and machine["numpy"] == np.__version__
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "model name" in cpuinfo:  # the model, not only the architecture
        assert machine["processor"] in cpuinfo and machine["processor"] != machine["machine"]


def test_training_is_deterministic_with_a_seed(cwru_dir, tiny_run, tmp_path):
    train_cwru(cwru_dir, tmp_path / "again", settings=_settings(), **TINY)
    first = torch.load(tiny_run / "model.pt", weights_only=True)
    again = torch.load(tmp_path / "again" / "model.pt", weights_only=True)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_evaluation_scores_only_held_out_windows_and_learns(tiny_run):
    result = evaluate_cwru(tiny_run, snrs=[None, 0.0])
    assert set(result["accuracy_by_snr"]) == {"none", "0"}
    assert result["accuracy"] == result["accuracy_by_snr"]["none"]
    assert result["accuracy"] > 0.8  # 120 tiny steps already beat chance (0.1) by far
    split = load_run(tiny_run).split["segments"]
    for source in result["sources"]:
        assert source["origin"] == "held-out test segment"
        test_seg = next(s for s in split if s["file"] == source["file"] and s["split"] == "test")
        assert (source["start"], source["stop"]) == (test_seg["start"], test_seg["stop"])
    table = format_evaluation(result)
    assert "confusion matrix" in table and "macro-F1" in table


def test_records_never_seen_contribute_all_their_windows(tiny_run):
    result = evaluate_cwru(tiny_run, loads=(1,), snrs=[None])
    origins = {s["file"]: s["origin"] for s in result["sources"]}
    assert origins["97.mat"] == "held-out test segment"   # normal of load 0 stands in for load 1
    assert origins["106.mat"] == "unseen record (all windows)"
    unseen = next(s for s in result["sources"] if s["file"] == "106.mat")
    assert unseen["start"] == 0 and unseen["windows"] > 500


def test_cli_evaluate_json(tiny_run, capsys):
    assert main(["evaluate", "--run", str(tiny_run), "--snr", "-4,none", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["accuracy_by_snr"]) == {"-4", "none"} and 0 <= doc["accuracy"] <= 1


def train_tiny_cli(cwru_dir, out, *extra: str):
    """`drsn-edge train` of a tiny plain ResNet-1D on load 0, one short epoch; returns the run."""
    assert main(["train", "--model", "resnet1d", "--data", str(cwru_dir), "--out", str(out), "--loads", "0",
                 "--window", "400", "--epochs", "1", "--steps", "5", "--width", "4", "--depth", "1",
                 "--snr-train", "none", "--threads", "1", "-q", *extra]) == 0
    return load_run(out)


def test_cli_train_writes_a_run(cwru_dir, tmp_path, capsys):
    assert train_tiny_cli(cwru_dir, tmp_path / "cli").config["model"]["shrinkage"] == "none"
    assert main(["train", "--normalization", "center-image", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "vibration windows take zscore, spectrum, envelope, raw+envelope, none" in capsys.readouterr().err
    assert main(["train", "--model", "dca-cnn", "--normalization", "raw+envelope", "--out", str(tmp_path / "x"),
                 "-q"]) == 2
    assert "dca-cnn reads one" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_cli_instance_norm_shapes_the_model_and_is_refused_where_it_cannot_be(cwru_dir, tmp_path, capsys):
    run = train_tiny_cli(cwru_dir, tmp_path / "ibn", "--instance-norm", "1")
    assert run.config["model"]["instance_norm"] == 1
    assert train_tiny_cli(cwru_dir, tmp_path / "plain").config["model"]["instance_norm"] == 0
    for arguments, said in [(["--instance-norm", "4"], "--instance-norm 4: instance_norm must be between 0 and the "
                                                       "3 stages, got 4"),
                            (["--instance-norm", "-1"], "must be between 0 and the 3 stages, got -1"),
                            (["--width", "1", "--instance-norm", "1"], "width must be >= 2"),
                            (["--model", "dca-cnn", "--instance-norm", "1"], "dca-cnn has no residual stages"),
                            (["--task", "neu", "--instance-norm", "1"], "--instance-norm: vibration training only")]:
        assert main(["train", "--out", str(tmp_path / "x"), "-q", *arguments]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_mixup_trains_on_convex_pairs_and_is_recorded(cwru_dir, tmp_path, capsys):
    from edge.train.loop import Mixup

    mix = Mixup(64, 0.2, np.random.default_rng(3))
    assert 0.0 <= mix.lam <= 1.0 and sorted(mix.partner.tolist()) == list(range(64))
    again = Mixup(64, 0.2, np.random.default_rng(3))
    assert (mix.lam, mix.partner.tolist()) == (again.lam, again.partner.tolist())
    x = torch.arange(64.0)
    assert torch.allclose(mix.mix(x), mix.lam * x + (1 - mix.lam) * x[mix.partner])
    logits, target = torch.randn(64, 3), torch.randint(0, 3, (64,))
    ce = torch.nn.CrossEntropyLoss()
    assert torch.isclose(mix.loss(ce, logits, target),
                         mix.lam * ce(logits, target) + (1 - mix.lam) * ce(logits, target[mix.partner]))
    rng = np.random.default_rng(3)
    off = Mixup(64, 0.0, rng)  # off: the batch and the loss as they are, and the random stream untouched
    assert off.mix(x) is x and torch.equal(off.loss(ce, logits, target), ce(logits, target))
    assert rng.random() == np.random.default_rng(3).random()
    assert train_tiny_cli(cwru_dir, tmp_path / "mixup", "--mixup", "0.2").config["training"]["mixup"] == 0.2
    assert main(["train", "--out", str(tmp_path / "r"), "--mixup", "-1", "-q"]) == 2
    assert "--mixup must be" in capsys.readouterr().err


def test_mixstyle_mixes_early_feature_statistics_in_training_only_and_leaves_the_network_plain(cwru_dir, tmp_path,
                                                                                               capsys):
    from edge.models import build_model, model_config
    from edge.train.mixstyle import MixStyle

    torch.manual_seed(0)
    model = build_model(model_config("drsn1d-cw", width=4, depth=1))
    x = torch.randn(8, 1, 512) * torch.linspace(0.5, 4.0, 8).reshape(8, 1, 1)  # windows of different levels
    model.eval()
    plain = model(x)
    styles = MixStyle(model, p=1.0)
    assert len(styles.handles) == 1 + len(model.units) - model.config.depth  # stem and every stage but the last
    assert torch.equal(model(x), plain)                                       # eval: untouched
    model.train()
    styled = []
    model.stem.register_forward_hook(lambda m, i, out: styled.append(out))  # runs after MixStyle's hook
    model(x)
    own = model.stem[2](model.stem[1](model.stem[0](x)))  # the stem's output without hooks, same batch statistics
    own_mu, mixed_mu = own.mean(dim=-1), styled[0].mean(dim=-1)
    assert not torch.allclose(mixed_mu, own_mu, atol=1e-4)                  # styles were swapped
    # Each window's mean is a mix of two windows' means: within the batch's range, channel by channel.
    assert (mixed_mu >= own_mu.min(dim=0).values - 1e-4).all() and (mixed_mu <= own_mu.max(dim=0).values + 1e-4).all()
    styles.remove()
    model.eval()
    fresh = build_model(model.config)  # the same weights and statistics, never hooked
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    assert torch.equal(model(x), fresh(x)) and not styles.handles
    run = train_tiny_cli(cwru_dir, tmp_path / "mixstyle", "--mixstyle", "0.5")
    assert run.config["training"]["mixstyle"] == 0.5 and run.config["training"]["sam"] == 0.0  # SAM gives way
    for bad in ("-0.1", "1.5", "nan"):
        assert main(["train", "--out", str(tmp_path / "r"), "--mixstyle", bad, "-q"]) == 2
        assert "--mixstyle must be a share of batches in [0, 1]" in capsys.readouterr().err
    assert main(["train", "--model", "dca-cnn", "--mixstyle", "0.5", "--out", str(tmp_path / "r"), "-q"]) == 2
    assert "dca-cnn has none" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_label_smoothing_reaches_the_loss_and_is_recorded(cwru_dir, tmp_path, capsys):
    plain = train_tiny_cli(cwru_dir, tmp_path / "plain")
    smoothed = train_tiny_cli(cwru_dir, tmp_path / "smooth", "--label-smoothing", "0.3")
    assert plain.config["training"]["label_smoothing"] == 0.0
    assert smoothed.config["training"]["label_smoothing"] == 0.3
    # Same seed, same batches: only the targets differ, so the epoch's mean loss must too.
    first = [run.metrics["history"][0]["loss"] for run in (plain, smoothed)]
    assert first[0] != first[1]
    for bad in ("1", "-0.1"):
        assert main(["train", "--out", str(tmp_path / "r"), "--label-smoothing", bad, "-q"]) == 2
        assert "--label-smoothing must be in [0, 1)" in capsys.readouterr().err
    assert main(["train", "--task", "neu", "--out", str(tmp_path / "r"), "--label-smoothing", "2", "-q"]) == 2
    assert "--label-smoothing must be in [0, 1)" in capsys.readouterr().err


def test_weight_average_is_the_mean_of_the_offered_weights_with_batchnorm_measured_again():
    from edge.train.loop import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 5), torch.nn.BatchNorm1d(3))
    snapshots = []
    average = WeightAverage(net)
    for epoch in (1, 2, 3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append({k: v.clone() for k, v in net.named_parameters()})
        average.offer(net, epoch)
    batches = [torch.randn(8, 1, 32) * 3 + 1 for _ in range(4)]
    average.finish(net, batches)
    assert average.epochs == [1, 2, 3] and not net.training
    for name, value in net.named_parameters():
        torch.testing.assert_close(value, sum(s[name] for s in snapshots) / 3)
    with torch.no_grad():  # BatchNorm's statistics: the mean over the batches, of the averaged network's conv
        conv = torch.cat([net[0](b) for b in batches])
    torch.testing.assert_close(net[1].running_mean, conv.mean(dim=(0, 2)), rtol=1e-4, atol=1e-5)


def test_sam_steps_with_the_gradient_at_the_worst_nearby_weights_and_counts_the_batch_once():
    """SAM's update is plain SGD's with the gradient taken at w + rho * g / |g|; the weights are put back
    first, and BatchNorm's running statistics move once per batch, as without SAM."""
    from edge.train.loop import step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    start = {k: v.clone() for k, v in net.state_dict().items()}

    def batch_loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(x), y)

    def gradients() -> list[torch.Tensor]:
        net.zero_grad()
        batch_loss().backward()
        return [p.grad.clone() for p in net.parameters()]

    rho, lr = 0.5, 0.1
    g = gradients()
    norm = torch.linalg.vector_norm(torch.cat([v.flatten() for v in g]))
    with torch.no_grad():
        for p, gp in zip(net.parameters(), g):
            p.add_(rho * gp / norm)
    worst = gradients()
    net.load_state_dict(start)
    plain_statistics = net[1].running_mean.clone()
    with torch.no_grad():
        net(x)  # one plain training pass: where BatchNorm's running mean should end up
    once = net[1].running_mean.clone()
    assert not torch.equal(once, plain_statistics)
    net.load_state_dict(start)

    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    loss = step(net, optimizer, schedule, batch_loss, sam=rho)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(
        torch.func.functional_call(net, start, (x,)), y).item(), rel=1e-6)
    for (name, value), gw in zip(net.named_parameters(), worst):
        torch.testing.assert_close(value, start[name] - lr * gw)
    # Not the plain gradient (the first layer's bias has none either way: BatchNorm removes its mean).
    assert any(not torch.allclose(gw, gp) for gw, gp in zip(worst, g))
    torch.testing.assert_close(net[1].running_mean, once)
    assert int(net[1].num_batches_tracked) == 1

    net.load_state_dict(start)  # rho 0 is the plain step: the gradient where the weights are
    step(net, optimizer, schedule, batch_loss, sam=0.0)
    for (name, value), gp in zip(net.named_parameters(), g):
        torch.testing.assert_close(value, start[name] - lr * gp)


def test_cli_sam_is_the_vibration_default_recorded_and_refused_where_it_cannot_be(cwru_dir, tmp_path, capsys):
    plain = train_tiny_cli(cwru_dir, tmp_path / "plain", "--sam", "0")
    sharp = train_tiny_cli(cwru_dir, tmp_path / "sam")
    assert sharp.config["training"]["sam"] == 0.2 and plain.config["training"]["sam"] == 0.0
    # Same seed, same split, same settings but rho: the weights differ only by where each step's gradient was taken.
    assert plain.split == sharp.split
    assert {k: v for k, v in plain.config["training"].items() if k != "sam"} == \
        {k: v for k, v in sharp.config["training"].items() if k != "sam"}
    weights = [torch.load(run.path / "model.pt", weights_only=True) for run in (plain, sharp)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for bad, said in ((["--sam", "-0.1"], "--sam must be 0 (off) or a positive radius"),
                      (["--sam", "nan"], "--sam must be 0 (off)"),
                      (["--sam", "0.05", "--mixstyle", "0.5"], "use one or the other")):
        assert main(["train", "--out", str(tmp_path / "r"), *bad, "-q"]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "r").exists()
    # Settings that ask for both, from a script rather than the CLI, are refused before any step.
    from edge.errors import DataError
    from edge.train.settings import TrainSettings
    from edge.train.trainer import fit
    with pytest.raises(DataError, match="set sam to 0 to train with mixstyle"):
        fit(torch.nn.Linear(1, 1), None, None, None, TrainSettings(mixstyle=0.5), np.random.default_rng(0))


def test_cli_average_epochs_keeps_the_average_and_says_so(cwru_dir, tmp_path, capsys):
    run = train_tiny_cli(cwru_dir, tmp_path / "avg", "--epochs", "2", "--average-epochs", "2",
                         "--weight-decay", "0.001")
    assert run.config["training"]["average_epochs"] == 2 and run.config["training"]["weight_decay"] == 0.001
    assert run.metrics["best_epoch"] == "average" and run.metrics["history"][-1]["epochs"] == [1, 2]
    assert main(["evaluate", "--run", str(tmp_path / "avg"), "--json", "--threads", "1"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0  # the averaged weights reload
    for bad in ("-1", "3"):
        assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "2", "--average-epochs", bad, "-q"]) == 2
        assert "--average-epochs must be between 0 (off) and --epochs (2)" in capsys.readouterr().err
    assert main(["train", "--model", "dca-cnn", "--data", str(cwru_dir), "--out", str(tmp_path / "d"), "--loads",
                 "0", "--epochs", "1", "--steps", "2", "--average-epochs", "1", "-q"]) == 2
    assert "not dca-cnn" in capsys.readouterr().err


def test_a_student_learns_from_its_teachers_softened_outputs(cwru_dir, tmp_path, capsys):
    from edge.train.teachers import TeacherEnsemble, distillation_loss

    teacher = train_tiny_cli(cwru_dir, tmp_path / "teacher")
    raw_teacher = train_tiny_cli(cwru_dir, tmp_path / "raw", "--normalization", "none", "--seed", "1")
    ensemble = TeacherEnsemble.from_runs([teacher.path, raw_teacher.path], teacher.config["classes"], 400)
    assert ensemble.normalizations == ["zscore", "none"]
    windows = np.random.default_rng(0).normal(size=(8, 400)).astype(np.float32)
    soft = ensemble.soft_targets(windows, 2.0)
    alone = TeacherEnsemble.from_runs([teacher.path], teacher.config["classes"], 400).soft_targets(windows, 2.0)
    assert torch.allclose(soft.sum(1), torch.ones(8)) and not torch.allclose(soft, alone)
    # A student that already gives the teachers' softened distribution has nothing left to learn.
    assert distillation_loss(2.0 * torch.log(soft), soft, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.zeros(8, soft.shape[1]), soft, 2.0).item() > 1e-4

    student = train_tiny_cli(cwru_dir, tmp_path / "student", "--teacher", str(teacher.path),
                             "--teacher", str(raw_teacher.path), "--distill-weight", "1")
    assert student.config["training"]["teachers"] == [str(teacher.path), str(raw_teacher.path)]
    assert student.metrics["history"][0]["loss"] != teacher.metrics["history"][0]["loss"]

    assert main(["train", "--model", "resnet1d", "--data", str(cwru_dir), "--out", str(tmp_path / "bad"),
                 "--loads", "0", "--window", "512", "--epochs", "1", "--steps", "1", "--width", "4", "--depth", "1",
                 "--teacher", str(teacher.path), "-q"]) == 2
    assert "reads windows of 400 samples, the student 512" in capsys.readouterr().err
    assert main(["train", "--task", "neu", "--out", str(tmp_path / "r"), "--teacher", str(teacher.path), "-q"]) == 2
    assert "is not an image run" in capsys.readouterr().err


def test_a_vibration_ensemble_scores_its_members_and_itself_on_validation_and_builds_like_one_run(
        cwru_dir, tmp_path, capsys):
    """`drsn-edge ensemble` serves vibration runs too, of two networks: each member's validation accuracy and
    the mean softmax's are recorded, and the ensemble evaluates and builds as any run."""
    from edge.export.build import BuildOptions, build_bundle
    from edge.train.evaluate import logits
    from edge.train.vibration import run_split_windows

    a = train_tiny_cli(cwru_dir, tmp_path / "a")
    b = train_tiny_cli(cwru_dir, tmp_path / "b", "--model", "drsn1d-cw", "--seed", "1")
    assert main(["ensemble", "--runs", str(a.path), str(b.path), "--out", str(tmp_path / "x"), "-q"]) == 0
    x = load_run(tmp_path / "x")
    pre = x.config["preprocessing"]
    windows, y = run_split_windows(x.config, "val", pre["hops"]["val"])
    probabilities = [torch.softmax(torch.from_numpy(logits(r.load_model(), windows, pre["normalization"])), 1)
                     for r in (a, b)]
    mean = (probabilities[0] + probabilities[1]) / 2
    assert x.metrics["val_accuracy"] == pytest.approx(float(np.mean(mean.argmax(1).numpy() == y)))
    assert [m["val_accuracy"] for m in x.metrics["members"]] == [
        pytest.approx(float(np.mean(p.argmax(1).numpy() == y))) for p in probabilities]
    assert main(["evaluate", "--run", str(x.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "ensemble"
    manifest = build_bundle(x.path, tmp_path / "bundle", BuildOptions(target="onnxruntime", precision="fp32"),
                            log=lambda *_: None)
    assert manifest["model"]["family"] == "ensemble"
    assert [m["name"] for m in manifest["model"]["config"]["members"]] == ["resnet1d", "drsn1d-cw"]


def test_a_vibration_student_refuses_a_teacher_that_learned_what_it_holds_out(cwru_dir, tmp_path, capsys):
    """A teacher trained on the student's validation or test stretch of a record, or on another rate, is
    refused before any step; one trained on another load as well is taken, and the student says so."""
    import dataclasses

    from edge.data.splits import SplitSpec
    from edge.train.vibration import WindowSettings

    student = ["train", "--model", "resnet1d", "--data", str(cwru_dir), "--loads", "0", "--window", "400",
               "--epochs", "1", "--steps", "2", "--width", "4", "--depth", "1", "--threads", "1"]
    tiny = dict(TINY, model_name="resnet1d", windows=WindowSettings(length=400), width=4)
    settings = dataclasses.replace(_settings(), epochs=1, steps_per_epoch=2)
    # The same records cut 85 / 5 / 10: its training stretch runs into the student's validation and test.
    train_cwru(cwru_dir, tmp_path / "late", split=SplitSpec(0.85, 0.05, 0.10), settings=settings, **tiny)
    assert main([*student, "--teacher", str(tmp_path / "late"), "--out", str(tmp_path / "s1"), "-q"]) == 2
    said = capsys.readouterr().err
    assert "teacher " + str(tmp_path / "late") + " trained on samples 0-" in said
    assert "where the student validates on" in said and "train the teacher with the student's split" in said
    assert not (tmp_path / "s1").exists()

    train_tiny_cli(cwru_dir, tmp_path / "fast", "--rate", "24000", "--steps", "2")
    assert main([*student, "--teacher", str(tmp_path / "fast"), "--out", str(tmp_path / "s2"), "-q"]) == 2
    assert "reads the 24000 Hz signal, the student 12000" in capsys.readouterr().err

    wider = train_tiny_cli(cwru_dir, tmp_path / "wider", "--loads", "0,1", "--steps", "2")
    assert main([*student, "--teacher", str(wider.path), "--out", str(tmp_path / "s3")]) == 0
    out = capsys.readouterr().out
    learned = sorted({s["file"] for s in wider.split["segments"] if s["load_hp"] == 1})
    assert f"note: teacher {wider.path} also trained on {len(learned)} record(s) this run does not" in out
    assert learned[0] in out and load_run(tmp_path / "s3").config["training"]["teachers"] == [str(wider.path)]


def test_a_run_in_out_is_replaced_only_when_asked_and_only_once_the_new_one_is_whole(cwru_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    out = tmp_path / "line3"
    first = train_tiny_cli(cwru_dir, out)
    files = {name: (out / name).read_bytes() for name in ("model.pt", "config.json", "split.json", "metrics.json")}
    assert main(["train", "--data", str(cwru_dir), "--out", str(out), "--loads", "0", "--seed", "1", "-q"]) == 2
    assert f"{out} already holds a run" in capsys.readouterr().err
    for command in (["prune", "--run", str(out)], ["distill", "--teacher", str(out)]):
        assert main([*command, "--out", str(out), "-q"]) == 2
        assert "add --overwrite to replace it" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in files} == files

    # a save interrupted after the model is written leaves the earlier run whole, and nothing beside it
    saved, real_save = [], torch.save

    def save(obj, f, *args, **kwargs):
        saved.append(f)
        return real_save(obj, f, *args, **kwargs)

    def interrupted(self, text, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("edge.train.runs.torch.save", save)
    monkeypatch.setattr("pathlib.Path.write_text", interrupted)
    assert main(["train", "--model", "resnet1d", "--data", str(cwru_dir), "--out", str(out), "--overwrite",
                 "--loads", "0", "--window", "400", "--epochs", "1", "--steps", "5", "--width", "4", "--depth", "1",
                 "--snr-train", "none", "--seed", "1", "--threads", "1", "-q"]) == 130
    monkeypatch.undo()
    assert saved == [out / "model.pt.tmp"]
    assert {name: (out / name).read_bytes() for name in files} == files and sorted(out.iterdir()) == \
        sorted(out / name for name in files)

    second = train_tiny_cli(cwru_dir, out, "--overwrite", "--seed", "1")
    assert second.config["training"]["seed"] == 1 != first.config["training"]["seed"]
    assert (out / "model.pt").read_bytes() != files["model.pt"]


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drsn-edge train: error:") and "does not exist" in err and "Traceback" not in err
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "drsn-edge train --out" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--snr-train", "10:-6", "-q"]) == 2
    assert "LO above HI" in capsys.readouterr().err


def test_a_run_says_where_it_trained_and_a_gpu_that_is_not_there_is_refused_before_anything_is_written(
        tiny_run, cwru_dir, tmp_path, capsys):
    assert load_run(tiny_run).config["training"]["device"] == "cpu"
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, on any host
    out = tmp_path / "r"
    for command in (["train", "--data", str(cwru_dir)], ["prune", "--run", str(tiny_run)],
                    ["distill", "--teacher", str(tiny_run)]):
        assert main([*command, "--device", missing, "--out", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"drsn-edge {command[0]}: error: --device {missing}: this ") and "GPU" in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["train", "--device", "gpu", "--out", str(out), "-q"]) == 2
    assert "--device gpu: not a device; use cpu, cuda, cuda:N or auto" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("script, extra", [
    ("robustness_cwru.py", ["--out"]), ("robustness_nested.py", ["--candidate", "default:", "--out"]),
    ("images_accuracy.py", ["--out"]), ("images_castings_variants.py", ["--out"]),
    ("images_compression.py", ["--skip-pruning", "--distillation-out"])])
def test_a_benchmark_that_trains_refuses_a_gpu_that_is_not_there_before_its_first_run(script, extra, tmp_path):
    """Each of its runs would fail alike, in a worker each: it is said once, as a usage error."""
    missing = f"cuda:{torch.cuda.device_count()}"
    done = _benchmark(script, [*extra, str(tmp_path / "out.json"), "--device", missing], tmp_path)
    assert f"{script}: error: --device {missing}: this " in done.stderr


@pytest.mark.parametrize("script, extra", [
    ("accuracy_cwru.py", []), ("robustness_cwru.py", []), ("robustness_nested.py", ["--candidate", "default:"]),
    ("robustness_ensemble.py", []), ("robustness_adabn.py", [])])
def test_a_benchmark_refuses_an_snr_list_that_cannot_be_before_any_work(script, extra, tmp_path):
    """The nested choice read its SNR lists only after its inner trainings: a typo cost half an hour."""
    done = _benchmark(script, [*extra, "--snr=-4,loud", "--out", str(tmp_path / "out.json")], tmp_path)
    assert f"{script}: error: argument --snr: SNR list expects dB values or 'none', got 'loud'" in done.stderr


def test_the_castings_variants_refuse_a_candidate_they_could_not_train_before_any_run(tmp_path):
    """Teachers, seeds, a starting run or a network that is not there are said before hours of runs."""
    for student, said in (("teachers=b@0", "teachers=b@0: 'b' is not a candidate named before its student"),
                          ("teachers=a@1", "teachers=a@1: candidate a has no run of seed '1' (its seeds: 0)"),
                          ("teachers=a@x", "teachers=a@x: candidate a has no run of seed 'x' (its seeds: 0)"),
                          ("seeds=0;one", "seeds=0;one: whole numbers between ';' expected"),
                          ("from=b,l1_rounds=1", "from=b must be a candidate named before it"),
                          ("from=a,l1_rounds=1,seeds=1", "from=a must be a candidate named before it"),
                          ("model=resnet34", "model=resnet34: choose one of resnet18, drsn2d, sarsn")):
        done = _benchmark("images_castings_variants.py", ["--candidate", "a:seeds=0", "--candidate", f"s:{student}",
                                                          "--out", str(tmp_path / "out.json")], tmp_path)
        assert f"images_castings_variants.py: error: candidate s: {said}" in done.stderr
    done = _benchmark("images_castings_variants.py", ["--seeds", "0,x", "--out", str(tmp_path / "out.json")], tmp_path)
    assert "error: argument --seeds: '0,x' is not a comma-separated list of integers (0,1,2)" in done.stderr


@pytest.mark.parametrize("script, option, value, what", [
    ("robustness_cwru.py", "--seeds", "0,x", "integers"), ("robustness_nested.py", "--folds", "1,two", "integers"),
    ("accuracy_cwru.py", "--seeds", "1.5", "integers"), ("calibration_cwru.py", "--sizes", "32,big", "integers"),
    ("linescan_pacing_ab.py", "--rates", "1,fast", "numbers"),
    ("log_wal_growth.py", "--limits-mb", "16,lots", "numbers"),
    ("images_compression.py", "--asfp-rates", "0.1,x", "numbers")])
def test_a_benchmark_refuses_a_list_it_cannot_read_before_any_work(script, option, value, what, tmp_path):
    """Seeds, folds, sizes and rates are read as the arguments are, so a typo is a usage error naming the list,
    not a traceback after the first hours of runs."""
    done = _benchmark(script, [option, value, "--out", str(tmp_path / "out.json")], tmp_path)
    assert done.returncode == 2
    assert f"{script}: error: argument {option}: '{value}' is not a comma-separated list of {what}" in done.stderr
    assert not (tmp_path / "out.json").exists()


def test_the_nested_choice_refuses_to_score_every_fold_of_a_candidate_it_was_not_given(tmp_path):
    done = _benchmark("robustness_nested.py", ["--candidate", "default:", "--every-fold", "sam",
                                               "--out", str(tmp_path / "out.json")], tmp_path)
    assert "robustness_nested.py: error: --every-fold sam: not a --candidate" in done.stderr
    # "default" names the defaults, whose outer runs are robustness_cwru.py's: settings there would overwrite them.
    done = _benchmark("robustness_nested.py", ["--candidate", "default:sam=0", "--out", str(tmp_path / "out.json")],
                      tmp_path)
    assert "--candidate default: is the training defaults and takes no settings" in done.stderr


def test_the_nested_choice_trains_each_inner_load_once_and_scores_it_on_every_inner_pair():
    """Load 1 is a training load of folds 0 and 2: its run trains once and serves both, where the same seeded
    training ran twice."""
    import sys
    from itertools import permutations

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness_nested import inner_plan

    every = inner_plan([0, 1, 2])
    assert every == {0: (1, 2), 1: (0, 2), 2: (0, 1)}
    for fold in (0, 1, 2):                               # every inner pair of every fold is scored
        for a, b in permutations([x for x in (0, 1, 2) if x != fold], 2):
            assert b in every[a]
    # One fold asked: only its training loads train, scored on every other load too, so that the run a later
    # call for the other folds needs is the same one, in the same folder.
    assert inner_plan([0]) == {1: (0, 2), 2: (0, 1)}
    assert inner_plan([2, 0]) == every


def test_a_student_of_the_nested_choice_learns_from_a_teacher_trained_before_inner_runs_were_shared(tmp_path):
    """Inner runs used to be trained once per fold and named by their one test load; such a run is the same
    training as today's, and a student named after it must find it rather than stop for a missing teacher."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness_nested import resolve

    ask = {"teachers": "sam20;speed20"}
    (tmp_path / "drsn1d-cw+sam20-train1-test2-s0").mkdir()          # before: one run per fold
    (tmp_path / "drsn1d-cw+speed20-train1-test02-s0").mkdir()       # now: one run, scored on both
    teachers = resolve(ask, tmp_path, "drsn1d-cw", (1,), (0, 2), 0, inner=True)["teachers"]
    assert teachers == [str(tmp_path / "drsn1d-cw+sam20-train1-test2-s0"),
                        str(tmp_path / "drsn1d-cw+speed20-train1-test02-s0")]
    # Neither there: the current name, which the check for missing teachers then reports.
    assert resolve({"teachers": "other"}, tmp_path, "drsn1d-cw", (1,), (0, 2), 0, inner=True)["teachers"] == [
        str(tmp_path / "drsn1d-cw+other-train1-test02-s0")]


def test_a_logged_run_stands_for_a_run_asked_now_only_if_it_trained_with_the_same_settings(capsys):
    """The robustness logs are keyed by model, seed and fold: a run logged before a default changed (SAM), or by
    a quick --epochs look, must be trained again rather than reported as the default's."""
    import dataclasses
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness_cwru import fresh_rows, trained_as_asked, training_settings

    def row(settings, seed=1, overrides=None):
        return {"seed": seed, "overrides": overrides or {}, "settings": json.loads(json.dumps(
            dataclasses.asdict(settings)))}

    now = row(training_settings(1, {}, None, None))
    assert now["settings"]["sam"] == 0.2 and trained_as_asked(now, 1, {}, None, None)
    assert not trained_as_asked(row(training_settings(1, {"sam": 0.05}, None, None)), 1, {}, None, None)
    before_sam = row(training_settings(1, {"sam": 0.0}, None, None))
    del before_sam["settings"]["sam"]                    # logged before the setting existed: trained without it
    assert not trained_as_asked(before_sam, 1, {}, None, None)
    assert trained_as_asked(before_sam, 1, {"sam": 0.0}, None, None)
    quick = row(training_settings(1, {}, 2, 5))
    assert not trained_as_asked(quick, 1, {}, None, None) and trained_as_asked(quick, 1, {}, 2, 5)
    assert not trained_as_asked(now, 2, {}, None, None)  # another seed
    long = row(training_settings(1, {}, None, None), overrides={"window": 4096})
    assert not trained_as_asked(long, 1, {}, None, None) and trained_as_asked(long, 1, {"window": 4096}, None, None)
    ibn = row(training_settings(1, {}, None, None), overrides={"instance_norm": 2})  # another model, same training
    assert not trained_as_asked(ibn, 1, {}, None, None) and trained_as_asked(ibn, 1, {"instance_norm": 2}, None, None)
    assert not trained_as_asked({"seed": 1, "overrides": {}}, 1, {}, None, None)  # no settings: nothing to trust

    kept = fresh_rows([now, before_sam, quick], lambda r: None if r is quick else {}, None, None)
    assert kept == [now, quick]                          # a row nobody asks for is left as it is
    assert "1 logged runs trained with other settings than asked now (an earlier default, or other " \
           "--epochs/--steps): not taken for them" in capsys.readouterr().out
    assert fresh_rows([now], lambda r: {}, None, None) == [now] and capsys.readouterr().out == ""


def _benchmark(script: str, arguments: list[str], tmp_path):
    """Run a benchmark script that must refuse its arguments: a usage error, nothing written."""
    import subprocess
    import sys

    from conftest import ROOT

    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *arguments, "--work", str(work)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert not work.exists() and not (tmp_path / "out.json").exists()
    return done


def test_incomplete_run_is_reported(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_run / "config.json").read_text())
    with pytest.raises(RunError, match="incomplete .*model.pt"):
        load_run(broken)


def test_a_damaged_model_file_is_named_not_a_traceback(tiny_run, tmp_path, capsys):
    """A model.pt cut short by a copy, or one that belongs to another network: evaluate and build say which."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.pt").write_bytes((tiny_run / "model.pt").read_bytes()[:1000])
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"run {run}: model.pt cannot be read" in err and "Traceback" not in err
    assert main(["build", "--run", str(run), "--target", "onnxruntime", "--out", str(tmp_path / "b")]) == 2
    assert "model.pt cannot be read" in capsys.readouterr().err and not (tmp_path / "b").exists()
    state = torch.load(tiny_run / "model.pt", weights_only=True)
    torch.save({k: v for k, v in list(state.items())[1:]}, run / "model.pt")  # a tensor short
    assert main(["evaluate", "--run", str(run)]) == 2
    assert f"run {run}: model.pt does not fit the network in config.json" in capsys.readouterr().err

@pytest.mark.parametrize("arguments", [
    ["run", "--bundle", "b", "--port", "p", "--budget-ms", "-1"],
    ["run", "--bundle", "b", "--port", "p", "--budget-ms", "nan"],
    ["run", "--bundle", "b", "--port", "p", "--duration", "0"],
    ["install", "--bundle", "b.tar.gz", "--budget-ms", "0"],
    ["build", "--run", "r", "--target", "openvino", "--out", "o", "--budget-ms", "-5"],
    ["demo", "--bundle", "b", "--run", "r", "--seconds", "0"],
    ["demo", "--bundle", "b", "--run", "r", "--seconds", "-5"],
    ["calibrate", "--out", "c", "--budget-ms", "0"],
    ["calibrate", "--out", "c", "--margin", "1.5"],
    ["calibrate", "--bundle", "b", "--on-device", "--seconds", "0"],
    ["simulate", "--source", "cwru", "--duration", "-1"],
    ["prune", "--run", "r", "--method", "l1", "--rate", "1.5", "--out", "o"],
    ["prune", "--run", "r", "--method", "l1", "--rate", "0", "--out", "o"],
    ["distill", "--teacher", "t", "--out", "o", "--distance-weight", "-5"],
    ["build", "--run", "r", "--target", "openvino", "--out", "o", "--max-drop", "-1"],
    ["calibrate", "--out", "c", "--overhead-ms", "-3"],
    ["calibrate", "--out", "c", "--overhead-seconds", "0"],
    ["calibrate", "--out", "c", "--min-accuracy", "98"],
    ["simulate", "--source", "cwru", "--disconnect-every", "-1"],
    ["simulate", "--source", "cwru", "--outage", "-1"],
    ["simulate", "--source", "cwru", "--late-ms", "nan"],
    ["simulate", "--source", "cwru", "--link", "tcp", "--tcp-port", "70000"],
    ["run", "--bundle", "b", "--port", "p", "--max-consecutive", "-3"],
])
def test_a_budget_or_a_duration_that_cannot_be_is_refused_before_anything_runs(arguments, capsys):
    """A zero or negative budget would give every window the fail-safe; a demo of -5 s would stream nothing
    and report success; a pruning rate of 1.5 has no filters to keep; a minimum accuracy of 98 (not 0.98)
    no model reaches."""
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2 and "error: argument --" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, said", [
    ("--lr", "-1", "--lr must be a positive learning rate"), ("--lr", "0", "--lr must be a positive"),
    ("--clean-fraction", "2", "--clean-fraction must be a share in [0, 1]"),
    ("--weight-decay", "nan", "--weight-decay must be 0 or more"),
    ("--distill-temperature", "nan", "--distill-temperature above 0"), ("--mixup", "nan", "--mixup must be")])
def test_a_training_setting_that_cannot_be_is_refused_before_training(option, value, said, tmp_path, capsys):
    """--lr -1 ended in a traceback from the optimiser; --lr 0 and --clean-fraction 2 trained for nothing."""
    assert main(["train", "--out", str(tmp_path / "r"), option, value, "-q"]) == 2
    assert said in capsys.readouterr().err and not (tmp_path / "r").exists()

@pytest.mark.parametrize("arguments", [
    ["train", "--out", "{blocked}/run"],
    ["prune", "--run", "r", "--method", "l1", "--out", "{blocked}/run"],
    ["distill", "--teacher", "t", "--student", "resnet18", "--out", "{blocked}/run"],
    ["build", "--run", "r", "--target", "openvino", "--out", "{blocked}/dist/b"],
    ["calibrate", "--runs", "r", "--out", "{blocked}/calib"],
    ["keygen", "{blocked}/keys/line3"],
    ["simulate", "--source", "cwru", "--truth", "{blocked}/truth.json"],
    ["simulate", "--source", "cwru", "--rejects", "{blocked}/rejects.jsonl"],
])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(arguments, tmp_path, capsys):
    """A training or a sweep of many minutes must not end in a traceback because its --out was mistyped:
    a file where a folder must be is named at once."""
    blocked = tmp_path / "notes.txt"
    blocked.write_text("a file, not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(blocked=blocked) for a in arguments])
    assert exit_info.value.code == 2
    assert f"{blocked} is a file, not a folder" in capsys.readouterr().err


def test_a_file_the_system_refuses_is_one_line_naming_it(cwru_dir, tmp_path, capsys):
    """Whatever no check foresaw (here a folder given where the ground truth's file goes) still ends in one
    line that names the file, not a traceback."""
    truth = tmp_path / "truth"
    truth.mkdir()
    assert main(["simulate", "--source", "cwru", "--data", str(cwru_dir), "--truth", str(truth)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drsn-edge simulate: error:") and f"{truth}: Is a directory" in err

@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["datasets"], ["simulate"], ["ports"]])
def test_help_teaches(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: drsn-edge" in out
    if command in (["train"], ["evaluate"], ["simulate"]):
        assert "examples:" in out


def test_datasets_lists_and_checks_cwru(cwru_dir, capsys):
    assert main(["datasets", "--data", str(cwru_dir.parent), "--check"]) == 0
    out = capsys.readouterr().out
    assert "cwru: 28 records" in out and "every file present and matching its sha256 (records.csv)" in out


def test_a_copy_without_its_list_of_hashes_is_not_called_matching_and_a_cut_record_shows(cwru_dir, tmp_path,
                                                                                         capsys):
    """--check used to say every file matched its sha256 where there was no list to compare them with."""
    copy = tmp_path / "cwru"
    copy.mkdir()
    for record in ("97.mat", "105.mat", "118.mat"):
        shutil.copy(cwru_dir / record, copy / record)
    assert main(["datasets", "--data", str(tmp_path), "--check"]) == 0
    assert "no list of hashes beside the files (records.csv, SHA256SUMS), so none was compared; every record " \
        "opens" in capsys.readouterr().out
    (copy / "105.mat").write_bytes((cwru_dir / "105.mat").read_bytes()[:1000])  # a copy cut short
    assert main(["datasets", "--data", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM cwru:" in out and "105.mat: not a readable MATLAB file" in out and "matching" not in out



def test_noise_at_an_snr_does_not_depend_on_the_other_snrs_asked():
    from edge.train.evaluate import noisy_copies

    x = np.random.default_rng(0).standard_normal((4, 1024)).astype(np.float32)
    alone = dict(noisy_copies(x, [-4.0], seed=7))[-4.0]
    among = dict(noisy_copies(x, [None, 0.0, -4.0], seed=7))[-4.0]
    other_seed = dict(noisy_copies(x, [-4.0], seed=8))[-4.0]
    assert np.array_equal(alone, among) and not np.array_equal(alone, other_seed)


def test_dca_cnn_trains_in_two_phases_and_reloads(cwru_dir, tmp_path):
    import dataclasses

    out = tmp_path / "dca"
    metrics = train_cwru(cwru_dir, out, settings=dataclasses.replace(_settings(), epochs=4),
                         **(TINY | {"model_name": "dca-cnn"}))
    phases = [h["phase"] for h in metrics["history"]]
    assert phases == ["branches"] * 2 + ["fused"] * 2 and metrics["best_epoch"] in (3, 4)
    assert metrics["dca"]["rank"] == 9
    model = load_run(out).load_model()
    assert float(model.fusion.time_weight.abs().sum()) > 0 and model.phase == "fused"
    result = evaluate_cwru(out, snrs=[None], threads=1)
    assert result["accuracy"] > 0.3   # ten classes: chance is 0.1


def test_adabn_measures_batchnorm_on_one_half_of_a_recording_and_scores_the_other(tiny_run, cwru_load0):
    """The AdaBN benchmark: no sample is in both halves, the adapted copy's statistics are those of the
    adaptation windows, and the stored model is left as trained."""
    import sys

    from conftest import ROOT
    from edge.data.preprocess import model_input
    from edge.data.splits import cut_windows

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from robustness_adabn import adapted, halves

    window, hop = 256, 96
    rng = np.random.default_rng(0)
    spans = [int(n) for n in rng.integers(window, 4000, size=20)] + [window, 2 * window]
    sources = [{"start": 7, "stop": 7 + n, "windows": (n - window) // hop + 1} for n in spans]
    first, second = halves(sources, hop, window)
    starts = np.concatenate([np.arange(s["windows"]) * hop for s in sources])
    middles = np.concatenate([np.full(s["windows"], n // 2) for s, n in zip(sources, spans)])
    assert first.size and second.size
    assert np.all(starts[first] + window <= middles[first]) and np.all(starts[second] >= middles[second])
    across = (starts < middles) & (starts + window > middles)  # only these are in neither half
    assert sorted([*first, *second]) == list(np.flatnonzero(~across))

    model = load_run(tiny_run).load_model()
    stored = {k: v.clone() for k, v in model.state_dict().items()}
    windows = cut_windows(cwru_load0.records[3].signal[:20000], 1024, 512).astype(np.float32)
    copy = adapted(model, windows, "zscore")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stored.items())
    changed = {k for k, v in copy.state_dict().items() if not torch.equal(v, stored[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    with torch.no_grad():
        stem = copy.stem[0](torch.from_numpy(model_input(windows, "zscore")))
    torch.testing.assert_close(copy.stem[1].running_mean, stem.mean(dim=(0, 2)), rtol=1e-4, atol=1e-5)
    assert not copy.training
