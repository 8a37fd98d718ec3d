"""Gateway side (never imports torch): `run`, `demo`, `install`, `rollback`, `compile-trt`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from edge.cli.common import (add_trusted_keys, class_names, http_address, log_size_mb, non_negative_int, port_spec,
                             positive_float, positive_int, realtime_priority, stream_rate, thread_count)
from edge.errors import DrsnEdgeError
from edge.runtime.decision_log import NOT_FIRED_WHY, WAL_LIMIT_BYTES
from edge.runtime.realtime import DEFAULT_SERVICE_PRIORITY

WAL_MB = WAL_LIMIT_BYTES / 1e6  # the decision log's write-ahead log, beside --log-max-mb
LOCKOUT_HELP = ("reject lockout: after N rejects in a row on one lane (one actuator), hold that lane's REJECTs "
                "until it decides a pass; held ones are logged and counted (default 0: off)")


def _add_compile_trt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile-trt", help="build the TensorRT engine of a bundle, on the Jetson or GPU host",
                       description="Build a TensorRT engine from a bundle's ONNX on this device (engines are "
                                   "not portable). Without TensorRT or CUDA it says so and prints the trtexec line.")
    p.add_argument("--bundle", type=Path, required=True, help="a verified tensorrt bundle directory")
    p.add_argument("--workspace-mb", type=int, default=256, help="builder workspace (256 MiB)")
    p.add_argument("--dla-core", type=int, default=None, help="DLA core (AGX/NX); falls back to the GPU")
    p.add_argument("--no-gpu-fallback", action="store_true", help="fail instead of falling back from DLA")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: next to the bundle)")
    p.add_argument("--max-batch", type=positive_int, default=None, metavar="N",
                   help="largest batch the engine takes (default: the bundle's profile; a line-scan bundle's "
                        "covers a 2,048-pixel line). Raise it for a wider detector line")
    p.set_defaults(func=_cmd_compile_trt)


def _cmd_compile_trt(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle
    from edge.compile.tensorrt import build_engine, device_build_settings, engine_path_for

    if Path(args.bundle).is_file():
        raise DrsnEdgeError(f"{args.bundle} is an archive: the engine is written beside the bundle's directory, so "
                            "give the directory (the installed /opt/drsn-edge/current, or the build's dist/NAME)")
    bundle = open_bundle(args.bundle)
    trt = bundle.manifest.get("tensorrt")
    if not trt:
        raise DrsnEdgeError(f"{args.bundle} is a bundle for {bundle.manifest['backend']['name']}, not tensorrt: "
                            "build one with `drsn-edge build --target tensorrt`")
    settings = device_build_settings(bundle.path, bundle.manifest, workspace_mb=args.workspace_mb,
                                     dla_core=args.dla_core, gpu_fallback=not args.no_gpu_fallback,
                                     timing_cache=args.timing_cache, max_batch=args.max_batch)
    info = build_engine(bundle.path / trt["onnx_file"], engine_path_for(bundle.path, bundle.manifest), settings)
    print(json.dumps(info, indent=2))
    return 0


EPILOG_RUN = """\
examples:
  drsn-edge run --bundle /opt/drsn-edge/current --port usb:0483:5740 --budget-ms 5
  drsn-edge run --bundle dist/drsn-ov-int8 --port /dev/pts/7 --on-miss reject --log decisions.db --duration 60

Latency is measured from the arrival of a window's last sample to its decision being
written to the port. A window that cannot be decided within --budget-ms gets the
--on-miss decision at once; overload sheds the oldest window with the same fail-safe.
Every decision is a row in the SQLite log (WAL); /metrics (Prometheus), /status.json
and a live page are served on --http (loopback by default). On a gateway that runs
other software, --realtime-priority 40 keeps it from delaying the reader and decider
(the service written by `drsn-edge install` does this).
"""


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="classify a live serial stream within a latency budget (the gateway runtime)",
                       description="The gateway runtime: frames in, decisions and timed REJECTs out.",
                       epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    _runtime_arguments(p)
    p.add_argument("--port", type=port_spec, required=True,
                   help="device path, usb:VID:PID[:SERIAL], socket://HOST:PORT or a pty")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S", help="stop after S seconds (default: run)")
    p.set_defaults(func=_cmd_run)


def _runtime_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory or .tar.gz")
    p.add_argument("--budget-ms", type=positive_float, default=None, help="latency budget (default: the bundle's)")
    p.add_argument("--log", default="decisions.db", help="SQLite decision log (default decisions.db)")
    p.add_argument("--log-max-mb", type=log_size_mb, default=2048.0, metavar="MB",
                   help="keep the decision log within MB megabytes by deleting its oldest rows, counted as "
                        "log_retired (default 2048: about a week of vibration windows, hours of a line-scan's "
                        f"patches; 0: unbounded); the write-ahead log beside it (LOG-wal) takes about {WAL_MB:g} MB "
                        "more")
    p.add_argument("--distance", type=int, default=0, metavar="COUNTS",
                   help="line-scan: encoder counts from the scanner to the reject actuator; required for a "
                        "line-scan bundle (demo: the simulated belt's 625, half a metre)")
    p.add_argument("--max-consecutive", type=non_negative_int, default=0, metavar="N",
                   help=LOCKOUT_HELP)
    add_trusted_keys(p, "public key file (from `drsn-edge keygen`); repeatable; the bundle must be signed with "
                        "one of them")
    p.add_argument("--realtime-priority", type=realtime_priority, default=0, metavar="P",
                   help="run the reader and decider threads under SCHED_FIFO at priority P (1-99), so no "
                        "ordinary process delays a decision; needs root or CAP_SYS_NICE (default 0: off)")
    _policy_arguments(p, service=False)


#: The runtime options that ``install`` passes on to the service as given (it checks the others itself).
SERVICE_OPTIONS = ("http", "threads", "read_every_frame")


def _policy_arguments(p: argparse.ArgumentParser, service: bool) -> None:
    """How the runtime decides and shows itself: options of `run` and `demo`, and of `install`, which writes
    those given into the service's unit (``service``: nothing given means the runtime's default)."""
    p.add_argument("--on-miss", choices=["reject", "pass", "hold"], default=None,
                   help="decision for a window not decided in time (default: the bundle's, reject)")
    p.add_argument("--reject-classes", type=class_names, default=None,
                   help="comma-separated (default: the bundle's)")
    p.add_argument("--threshold", type=float, default=None,
                   help="reject when the reject classes' total probability reaches this (default: argmax)")
    p.add_argument("--http", type=http_address, default=None if service else "127.0.0.1:9108", metavar="HOST:PORT",
                   help="status page and metrics address, or off (default 127.0.0.1:9108, loopback only)")
    p.add_argument("--threads", type=thread_count, default=None if service else 1,
                   help="inference threads (default 1)")
    p.add_argument("--channel", type=non_negative_int, default=None if service else 0, metavar="AXIS",
                   help="vibration: which axis of the device's stream feeds the model, counted from 0 in the "
                        "order the device sends them (default 0); the one the model was trained on")
    p.add_argument("--read-every-frame", action="store_true",
                   help="wake for every frame instead of sleeping until a window or tile can nearly complete "
                        "(more CPU, same latency; pacing overruns are counted as pacing_overruns)")


def _service_options(args: argparse.Namespace) -> list[str]:
    """The ``SERVICE_OPTIONS`` given to ``install``, as `drsn-edge run` arguments for the unit."""
    out: list[str] = []
    for name in SERVICE_OPTIONS:
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value not in (None, False):
            out += [flag, str(value)]
    return out


def _runtime_settings(args: argparse.Namespace, port: str):
    from edge.runtime.loop import RuntimeSettings

    return RuntimeSettings(port=port, budget_ms=args.budget_ms, on_miss=args.on_miss,
                           reject_classes=args.reject_classes,
                           threshold=args.threshold, log_path=args.log, log_max_mb=args.log_max_mb,
                           http=None if args.http == "off" else args.http, distance=args.distance,
                           max_consecutive=args.max_consecutive, threads=args.threads, trusted_keys=args.trusted_keys,
                           paced_reads=not args.read_every_frame, realtime_priority=args.realtime_priority,
                           channel_index=args.channel)


def _print_summary(summary: dict) -> None:
    from edge.runtime.metrics import latency_scope

    lat = summary["latency"]
    c = summary["counters"]
    over = f" ({latency_scope(lat)})" if lat.get("window") else ""
    latency = (f"latency{over} p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms "
               f"against a {summary['budget_ms']:g} ms budget" if lat.get("n") else
               f"no latency: nothing was decided ({summary['budget_ms']:g} ms budget)")
    rare = {"no signal": c["no_signal_fail_safe"], "non-finite output": c["non_finite_fail_safe"],
            "belt lost on the link": c["gap_fail_safe"], "shutdown": c["shutdown_fail_safe"]}
    fail_safe = f"deadline {c['deadline_fail_safe']}, overload {c['overload_fail_safe']}"
    fail_safe += "".join(f", {why} {n}" for why, n in rare.items() if n)  # named when they happened
    print(f"decisions {c['decisions']} in {summary['seconds']:.0f} s; {latency}; fail-safe: {fail_safe}; "
          f"late {c['late_decisions']}")
    if summary["device"] is None and not c["decoder_frames"]:  # a wrong port, cable or power
        print("no device was heard on the port: not one frame in all that time; check --port against "
              "`drsn-edge ports`, the cable, and that the device is powered and streaming")
    if c["pacing_late_wakeups"]:  # tells a miss the machine caused from one of the model or the settings
        print(f"the gateway held the runtime up {c['pacing_late_wakeups']} times (its reader woke late from a timed "
              "sleep): windows that arrive meanwhile can miss the budget whatever the model; give the runtime a core "
              "of its own or --realtime-priority")
    reject_troubles = {NOT_FIRED_WHY["lockout"]: c["lockouts"], NOT_FIRED_WHY["not_written"]: c["rejects_not_written"],
                       NOT_FIRED_WHY["untimed"]: c["rejects_untimed"], NOT_FIRED_WHY["passed"]: c["rejects_passed"],
                       NOT_FIRED_WHY["unanswered"]: c["rejects_unanswered"], "sent again": c["reject_resends"],
                       "sent once the device was back": c["rejects_sent_after_outage"]}
    after_stop = f" ({c['frames_after_stop']} after the stop, not decided)" if c["frames_after_stop"] else ""
    print(f"frames {c['decoder_frames']}{after_stop}, rejected {c['decoder_rejected']}, "
          f"lost {c['decoder_lost_frames']}; "
          f"outages {c['link_outages']}; rejects sent {c['rejects_sent']}, acked {c['acks']}, naks {c['naks']}"
          + "".join(f", {why} {n}" for why, n in reject_troubles.items() if n))
    if c.get("assembler_seconds_undecided"):  # vibration: the machine went unwatched for that long
        print(f"signal never decided: {c['assembler_seconds_undecided']:.2f} s at {c['assembler_gaps']} gaps in the "
              "stream (frames lost or corrupted on the link, or a device that restarted): no window held it, so the "
              "machine went unwatched then (assembler_seconds_undecided); check the cable and the device's power")
    reopened = f", started again {c['log_reopened']} times where it was deleted or moved" if c["log_reopened"] else ""
    print(f"log: {c['log_written']} rows written, {c['log_retired']} oldest retired to keep it within "
          f"--log-max-mb, {c['log_failed']} not written{reopened}")


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle
    from edge.runtime.loop import Runtime

    bundle = open_bundle(args.bundle, trusted_keys=args.trusted_keys)
    runtime = Runtime(bundle, _runtime_settings(args, args.port))  # settings that cannot work are refused here
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    if runtime.server:
        print(f"run: status page {runtime.server.address}/ , metrics {runtime.server.address}/metrics", flush=True)
    try:
        summary = runtime.run(args.duration)
    except KeyboardInterrupt:
        runtime.stop()
        summary = runtime.summary(0)
    finally:
        runtime.close()
    _print_summary(summary)
    return 1 if summary["thread_failures"] else 0  # the runtime said which thread failed, on stderr


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on real data: simulator on a pty -> runtime -> live accuracy",
                       description="Stream a run's held-out data at real rate from the device simulator over a real "
                                   "pty, run the gateway runtime against it, and score the live decisions. A "
                                   "vibration run streams its held-out CWRU segments; an image run streams a belt of "
                                   "its test images line by line, with the reject actuator 625 encoder counts "
                                   "downstream unless --distance says otherwise.",
                       epilog="examples:\n"
                              "  drsn-edge demo --bundle dist/drsn-openvino-int8 --run runs/drsn --seconds 60\n"
                              "  drsn-edge demo --bundle dist/castings-ov-int8 --run runs/castings --seconds 10\n"
                              "  drsn-edge decisions --log decisions.db --rejects     # then read what it decided",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _runtime_arguments(p)
    p.add_argument("--run", type=Path, required=True, help="the training run the bundle was built from")
    p.add_argument("--data", type=Path, default=None, help="the run's data folder (default: where it trained)")
    p.add_argument("--seconds", type=positive_float, default=60.0, help="how long to stream (default 60)")
    p.add_argument("--rate", type=stream_rate, default=1.0, help="realtime (default), xN or max")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle
    from edge.run_files import read_run_files
    from edge.runtime.decisions import settings_problem
    from edge.runtime.simulated import check_run_fits_bundle, run_with_simulator, simulator_settings

    run = read_run_files(args.run)  # what the run held out; the gateway has no torch to load its network
    config = run["config.json"]
    data = args.data or Path(config["data"]["path"])
    bundle = open_bundle(args.bundle, trusted_keys=args.trusted_keys)
    linescan = bundle.kind == "linescan"
    check_run_fits_bundle(args.bundle, bundle, args.run, run)
    settings = simulator_settings(_runtime_settings(args, ""), linescan)
    if problem := settings_problem(bundle.kind, settings.distance, settings.channel_index):
        raise DrsnEdgeError(f"{problem}; nothing was run")
    source, what = (_belt_of_run(args, run, data) if linescan else _records_of_run(run, data))

    def announce(port, runtime):
        actuator = f", actuator {runtime.settings.distance} encoder counts downstream" if linescan else ""
        print(f"demo: simulator streaming {what} on {port}; runtime on {runtime.manifest['backend']['name']} "
              f"{runtime.manifest['precision']}{actuator}", flush=True)

    session = run_with_simulator(bundle, settings, source, args.seconds, args.rate, announce)
    summary = session.summary
    _print_summary(summary)
    if linescan:
        _print_linescan_score(args, session, source, bundle.manifest["reject_classes"])
    else:
        _print_vibration_score(args, session, source)
    print(f"device streamed {session.frames_streamed} data frames; the runtime received "
          f"{summary['counters']['data_frames']}, lost {summary['counters']['decoder_lost_frames']}")
    if session.interrupted:
        print(f"demo: interrupted after {summary['seconds']:.0f} of {args.seconds:g} s (the device streamed on "
              f"until it heard, so it sent frames the runtime no longer read)", file=sys.stderr)
        return 130
    return 1 if summary["thread_failures"] else 0


def _records_of_run(run: dict[str, dict], data: Path):
    """The run's held-out CWRU segments, as an accelerometer streams them."""
    from edge.runtime.simulated import held_out_records

    source = held_out_records(run, data)
    return source, f"the held-out segments of {len(source.truth)} records"


def _belt_of_run(args: argparse.Namespace, run: dict[str, dict], data: Path):
    """A belt long enough for --seconds at the nominal line rate, of the run's test images only."""
    from edge.runtime.simulated import held_out_belt
    from firmware_bridge.sources import LINE_RATE_HZ

    bands = int(args.seconds * LINE_RATE_HZ / run["config.json"]["preprocessing"]["size"]) + 1
    belt = held_out_belt(run, bands, data)
    tested = len(run["split.json"]["files"]["test"])
    return belt, (f"a belt of {len(belt.truth)} patches drawn from the run's {tested} test images "
                  f"({belt.rows.shape[1]} px, {LINE_RATE_HZ:g} lines/s)")


def _print_vibration_score(args: argparse.Namespace, session, source) -> None:
    from edge.runtime.scoring import score_vibration

    score = score_vibration(args.log, source.truth, since_id=session.first_decision_id)
    acc = score["accuracy"]
    print(f"live accuracy {100 * acc:.2f}% on {score['scored']} windows of held-out data "
          f"({score['straddling_records']} windows straddling two records not scored, "
          f"{score['fail_safe']} fail-safe)" if acc is not None else "no decision to score")


def _print_linescan_score(args: argparse.Namespace, session, source, bundle_reject_classes: list[str]) -> None:
    from edge.runtime.scoring import score_linescan

    reject_classes = args.reject_classes or bundle_reject_classes
    s = score_linescan(args.log, source.truth, reject_classes, since_id=session.first_decision_id)
    if s["accuracy"] is None:
        print("no patch decision to score")
        return
    print(f"live accuracy {100 * s['accuracy']:.2f}% on {s['scored']:,} patches of held-out images "
          f"({s['fail_safe']} fail-safe, {s['unmatched']} decisions on tiles that cut across two bands)")
    print(f"defective patches rejected {s['defects_rejected']:,} of {s['defects']:,}; good patches rejected "
          f"{s['good_rejected']:,} of {s['good']:,}; REJECTs sent {session.summary['counters']['rejects_sent']:,}, "
          f"acknowledged by the device {session.summary['counters']['acks']:,}")


def _add_install(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install", help="verify a bundle and make it the gateway's current one",
                       description="Install a bundle under ROOT/opt/drsn-edge with an atomic 'current' switch, "
                                   "keep the previous one for rollback, copy the trusted keys beside it, and "
                                   "write the systemd unit (drsn-edge.service: the runtime on --port, its decision "
                                   "log in /var/lib/drsn-edge, run by --python).",
                       epilog="examples:\n"
                              "  sudo .venv/bin/drsn-edge install --bundle drsn-openvino-int8.tar.gz "
                              "--trusted-key line3.pub --port usb:0483:5740\n"
                              "  sudo systemctl daemon-reload && sudo systemctl enable --now drsn-edge\n"
                              "  sudo .venv/bin/drsn-edge rollback && sudo systemctl daemon-reload "
                              "&& sudo systemctl restart drsn-edge\n\n"
                              "See docs/deployment.md for a whole gateway, Jetson or NUC.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle .tar.gz or directory")
    p.add_argument("--root", type=Path, default=Path("/"), help="file system root (default /)")
    add_trusted_keys(p, "public key file (from `drsn-edge keygen`) the bundle must be signed with; repeatable; "
                        "copied to ROOT/opt/drsn-edge/keys, where the service reads it (default: the keys the "
                        "installed service trusts, if any)")
    p.add_argument("--port", type=port_spec, default="usb:0483:5740",
                   help="serial port the service opens (default usb:0483:5740)")
    p.add_argument("--budget-ms", type=positive_float, default=None, help="latency budget (default: the bundle's)")
    p.add_argument("--distance", type=int, default=None, metavar="COUNTS",
                   help="line-scan: encoder counts from the scanner to the reject actuator (required for a line-scan "
                        "bundle)")
    p.add_argument("--max-consecutive", type=non_negative_int, default=0, metavar="N",
                   help=LOCKOUT_HELP)
    p.add_argument("--log-max-mb", type=log_size_mb, default=None, metavar="MB",
                   help="bound of the service's decision log: its oldest rows are deleted beyond it (default: the "
                        f"runtime's, 2048; 0: unbounded), plus about {WAL_MB:g} MB of write-ahead log")
    p.add_argument("--python", default=None, metavar="PATH",
                   help="the Python the service runs, one whose environment holds drsn-edge and the bundle's "
                        "backend (default: the one running this command; give it when --root is another system)")
    p.add_argument("--keep", type=non_negative_int, default=3, metavar="N",
                   help="installed bundles to keep, current and previous among them; older ones are removed with "
                        "their TensorRT engines (default 3; 0: keep all)")
    p.add_argument("--realtime-priority", type=realtime_priority, default=DEFAULT_SERVICE_PRIORITY, metavar="P",
                   help=f"SCHED_FIFO priority of the service's reader and decider threads "
                        f"(default {DEFAULT_SERVICE_PRIORITY}; 0: ordinary scheduling)")
    _policy_arguments(p, service=True)
    p.set_defaults(func=_cmd_install)
    p = sub.add_parser("rollback", help="return to the previously installed bundle")
    p.add_argument("--root", type=Path, default=Path("/"), help="file system root (default /)")
    p.set_defaults(func=_cmd_rollback)


def _cmd_install(args: argparse.Namespace) -> int:
    from edge.bundle.install import HOME, install, linked, prune, service_keys
    from edge.bundle.package import MANIFEST

    was_current = linked(args.root, "current")
    target = install(args.bundle, args.root, args.trusted_keys, args.port, args.budget_ms, args.python,
                     realtime_priority=args.realtime_priority, log_max_mb=args.log_max_mb, distance=args.distance,
                     max_consecutive=args.max_consecutive, on_miss=args.on_miss,
                     reject_classes=args.reject_classes,
                     threshold=args.threshold, channel=args.channel, run_options=_service_options(args))
    if target.resolve() == was_current:  # a reinstall, e.g. for another port: no switch, previous kept
        previous = linked(args.root, "previous")
        print(f"{target.name} was already current: its service unit was written again with these settings; "
              f"previous -> {previous.name if previous else '(none)'}.")
    else:
        print(f"installed {target}; current -> {target.name}.")
    trusted = service_keys(args.root)  # what the new unit verifies with: given, or kept from the one before
    if trusted and not args.trusted_keys:
        print(f"signed by a key the service already trusted ({', '.join(k.name for k in trusted)}); it still does")
    elif not trusted:
        print("warning: not signed by a trusted key: its files were checked against its manifest, not who built "
              "it; give --trusted-key PUB to accept only bundles signed with your key (`drsn-edge keygen`)",
              file=sys.stderr)
    removed = prune(args.root, args.keep)
    if removed:
        print(f"removed {len(removed)} older bundle(s), keeping {args.keep}: {', '.join(d.name for d in removed)}")
    if json.loads((target / MANIFEST).read_text()).get("tensorrt"):  # verified by install: no second hashing
        print("A TensorRT bundle: build its engine on this device first: "
              f"drsn-edge compile-trt --bundle {Path('/') / HOME / 'current'}")
    print("Restart the service: systemctl daemon-reload && systemctl restart drsn-edge")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from edge.bundle.install import rollback, unit_copy

    target = rollback(args.root)
    print(f"current -> {target.name}; " + ("the service unit it was installed with is back." if
                                          unit_copy(target).is_file() else
                                          "its service unit was not kept (an earlier drsn-edge installed it): the "
                                          "unit keeps the latest install's settings (port, budget, classes)."))
    print("Restart the service: systemctl daemon-reload && systemctl restart drsn-edge")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_compile_trt(sub)
    _add_run(sub)
    _add_demo(sub)
    _add_install(sub)
