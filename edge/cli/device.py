"""The sensor side: `simulate` (the device simulator) and `ports` (what is plugged in)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from edge.cli.common import (given_options, non_negative_float, output_path, positive_float, positive_int, probability,
                             remember_defaults, stream_rate, tcp_port)
from edge.errors import DrsnEdgeError


EPILOG_SIMULATE = """\
examples:
  drsn-edge simulate --source cwru --data ../shared/data/cwru --link pty
  drsn-edge simulate --source xray --data ../shared/data/xray --link tcp --rate x10 --corrupt 0.001
  drsn-edge simulate --source cwru --link pty --link-path /tmp/sensor --disconnect-every 5 --loop

It prints the port to open (a pty such as /dev/pts/7, or socket://127.0.0.1:PORT),
then streams: CWRU at 12 kHz in SAMPLES blocks of 10 ms; X-ray or NEU images as a
conveyor belt of patches side by side, one LINE per row at 1,250 lines/s with an
increasing encoder count.  Like a USB device, it sends nothing while no gateway
has its pty open: what falls due then is lost and counted (give --start-on-hello to
wait for the gateway, or --link-path and start the gateway on that path first).  It
answers HELLO and HEARTBEAT, acknowledges every REJECT and appends it to --rejects
with the encoder position it would fire at.
--truth writes the ground truth (label of every record span or tile).
"""


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="a sensor device on a real pty or TCP port, streaming real data",
                       description="Device simulator: streams real data over the drsn-edge wire protocol.",
                       epilog=EPILOG_SIMULATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=["cwru", "xray", "gdxray", "neu"],
                   help="what the device streams: cwru vibration, xray (alias gdxray) patches on a belt, neu images")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder (default: cwru/, xray/ or neu/ under $DRSN_EDGE_DATA or ../shared/data); "
                        "images: also any folder of them in class folders or named <class>_<n>")
    p.add_argument("--link", default="pty", choices=["pty", "tcp"], help="pty pair (default) or TCP loopback")
    p.add_argument("--rate", type=stream_rate, default=1.0, help="realtime (default), xN (N times faster) or max")
    p.add_argument("--corrupt", type=probability, default=0.0, help="probability of a bit flip per byte")
    p.add_argument("--drop", type=probability, default=0.0, help="probability of dropping a frame")
    p.add_argument("--disconnect-every", type=positive_float, default=None, metavar="S",
                   help="disconnect every S seconds of streaming (USB unplug); --outage sets how long")
    p.add_argument("--outage", type=non_negative_float, default=0.5, metavar="S",
                   help="seconds away per disconnect (0.5); frames due meanwhile are lost, as the sensor scans on")
    p.add_argument("--restart-every", type=positive_float, default=None, metavar="S",
                   help="restart the device every S seconds of streaming (a watchdog reset on a UART that stays "
                        "open): frame numbers, clock and encoder count begin again at 0, after an unprompted HELLO")
    p.add_argument("--lose-rejects", type=probability, default=0.0, metavar="P",
                   help="probability that a REJECT from the gateway is lost on the wire (neither answered nor "
                        "fired): the gateway must send it again")
    p.add_argument("--late", type=probability, default=0.0, metavar="P",
                   help="probability that a frame leaves --late-ms behind its schedule; the frames after it "
                        "follow in a burst, as from a busy device or USB hub")
    p.add_argument("--late-ms", type=non_negative_float, default=30.0, metavar="MS", help="how late such a frame is (30)")
    p.add_argument("--link-path", default=None,
                   help="pty: keep this symlink pointing at the current pty (stable across disconnects)")
    p.add_argument("--tcp-port", type=tcp_port, default=0, help="tcp: port on 127.0.0.1 (default: any free)")
    p.add_argument("--loop", action="store_true", help="start over when the data ends")
    p.add_argument("--start-on-hello", action="store_true", help="stream only once the gateway has said HELLO")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--rejects", type=output_path, default=None, help="append every REJECT received here (JSON lines)")
    p.add_argument("--truth", type=output_path, default=None, help="write the stream's ground truth here (JSON)")
    p.add_argument("--loads", default=None, help="cwru: motor loads streamed, in order (default 0; with --held-out, "
                                                 "every load the run read)")
    p.add_argument("--channels", type=_cwru_channels, default=None, metavar="DE[,FE[,BA]]",
                   help="cwru: the accelerometers the device streams, one axis each, in this order (default DE, "
                        "the drive end, or with --held-out the one the run trained on; the runtime's --channel "
                        "picks one by its place here)")
    p.add_argument("--held-out", type=Path, default=None, metavar="RUN",
                   help="stream only what this training run held out: its records' test segments (cwru), or "
                        "its test images at the model's size (xray, neu)")
    p.add_argument("--subset", default="castings", choices=["castings", "fishbones"], help="xray set (default castings)")
    p.add_argument("--split", default="test", choices=["train", "test"],
                   help="images: the side of a published split (train/ and test/ folders) laid on the belt "
                        "(default test)")
    p.add_argument("--lanes", type=positive_int, default=None, help="images: patches across the belt")
    p.add_argument("--bands", type=positive_int, default=20, help="images: rows of patches along the belt")
    p.add_argument("--bit-depth", type=int, default=8, choices=[8, 12, 16], help="images: line bit depth")
    p.add_argument("--seed", type=int, default=0, help="seed for belt layout and faults")
    p.set_defaults(func=_cmd_simulate)
    remember_defaults(p, SOURCE_OPTIONS)


#: Options only some sources read; given for another, they are refused rather than silently ignored.
SOURCE_OPTIONS = ("loads", "channels", "subset", "split", "lanes", "bands", "bit_depth")


def _refuse_options_the_source_ignores(args: argparse.Namespace) -> None:
    if args.source == "cwru":
        ignored, what = ("subset", "split", "lanes", "bands", "bit_depth"), "CWRU vibration records"
    elif args.held_out:
        ignored, what = ("loads", "channels", "subset", "split"), f"the test images of run {args.held_out}"
    elif args.source == "neu":
        ignored, what = ("loads", "channels", "subset", "split"), "NEU images (one folder, no published split)"
    else:
        ignored, what = ("loads", "channels"), "X-ray images"
    given = given_options(args, ignored)
    if given:
        raise DrsnEdgeError(f"{', '.join(given)}: not read when the device streams {what}")


def _cwru_channels(value: str) -> tuple[str, ...]:
    """``DE,FE`` as ("DE", "FE"): CWRU's accelerometers, as a device with several axes streams them."""
    from edge.data.cwru import CHANNELS

    names = tuple(name.strip().upper() for name in value.split(","))
    unknown = [name for name in names if name not in CHANNELS]
    if unknown or not 1 <= len(names) <= 3:
        raise argparse.ArgumentTypeError(f"{value!r}: give one to three of {', '.join(CHANNELS)}, comma-separated")
    return names


def _cmd_simulate(args: argparse.Namespace) -> int:
    from edge.data.catalog import default_data_root, missing_data
    from edge.data.cwru import parse_loads
    from edge.run_files import read_run_files
    from firmware_bridge.simulator import DeviceSimulator, Faults
    from firmware_bridge.sources import belt_source, cwru_source

    _refuse_options_the_source_ignores(args)
    folder = {"cwru": "cwru", "xray": "xray", "gdxray": "xray", "neu": "neu"}[args.source]
    data = args.data or default_data_root() / folder
    if (args.data or not args.held_out) and not data.is_dir():
        raise missing_data(data, given=bool(args.data))
    run = read_run_files(args.held_out) if args.held_out else None
    if run and (run["config.json"]["preprocessing"].get("input") == "image") == (args.source == "cwru"):
        raise DrsnEdgeError(f"--held-out {args.held_out} is {'a vibration' if args.source != 'cwru' else 'an image'} "
                            f"run: give --source {'cwru' if args.source != 'cwru' else 'xray or neu'}")
    loads = parse_loads(args.loads) if args.loads else None
    if args.source == "cwru" and run:
        from edge.runtime.simulated import held_out_records

        source = held_out_records(run, args.data, args.channels, loads)
    elif args.source == "cwru":
        source = cwru_source(data, loads=loads or (0,), channels=args.channels or ("DE",))
    elif run:
        from edge.runtime.simulated import held_out_belt

        source = held_out_belt(run, args.bands, args.data, args.lanes, args.seed, args.bit_depth)
    else:
        try:
            source = belt_source(data, args.source, args.subset, args.split, args.lanes, args.bands, args.seed,
                                 args.bit_depth)
        except (FileNotFoundError, ValueError) as exc:
            raise DrsnEdgeError(str(exc)) from exc
    if args.truth:
        args.truth.write_text(json.dumps({"hello": source.hello.__dict__ | {
            "sensor": source.hello.sensor.name, "sample_format": source.hello.sample_format.name},
            "truth": source.truth}, indent=1, default=str) + "\n")
    faults = Faults(args.corrupt, args.drop, args.disconnect_every, args.outage, args.seed, args.late, args.late_ms,
                    args.restart_every, args.lose_rejects)
    sim = DeviceSimulator(source, link=args.link, speed=args.rate, faults=faults, link_path=args.link_path,
                          tcp_port=args.tcp_port, rejects_path=str(args.rejects) if args.rejects else None,
                          loop=args.loop, start_on_hello=args.start_on_hello, keep_rejects=False)
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    print(f"simulate: {args.source} device on {sim.port}", flush=True)
    try:
        stats = sim.run(duration=args.duration)
    except KeyboardInterrupt:
        stats = sim.stats
    finally:
        sim.close()
    print("simulate: " + json.dumps(stats.to_dict()), flush=True)
    return 0


def _add_ports(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ports", help="list serial ports (USB VID:PID, serial number) a device could be on",
                       description="List serial ports as pyserial sees them. Open a USB device by id with "
                                   "--port usb:VID:PID[:SERIAL], which survives re-enumeration after an unplug.")
    p.add_argument("--usb", default=None, metavar="VID[:PID]", help="only USB devices with this id (hex)")
    p.set_defaults(func=_cmd_ports)


def _cmd_ports(args: argparse.Namespace) -> int:
    from serial.tools import list_ports

    from firmware_bridge.transport import find_usb_ports, parse_vid_pid

    ports = find_usb_ports(*parse_vid_pid(args.usb)) if args.usb else sorted(list_ports.comports(),
                                                                             key=lambda p: p.device)
    if not ports:
        print("no serial ports found" + (f" with USB id {args.usb}" if args.usb else ""))
        return 1
    for port in ports:
        usb = f"usb:{port.vid:04x}:{port.pid:04x}" + (f":{port.serial_number}" if port.serial_number else "") \
            if port.vid is not None else "-"
        print(f"{port.device:<24}{usb:<36}{port.description}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_simulate(sub)
    _add_ports(sub)
