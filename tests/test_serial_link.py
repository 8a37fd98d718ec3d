"""The simulator and the transports end to end, through real ptys and TCP loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from firmware_bridge.codec import FrameDecoder, encode_frame
from firmware_bridge.protocol import Ack, Heartbeat, Hello, Line, NakReason, Reject, RejectMode, Samples
from firmware_bridge.simulator import DeviceProcess, DeviceSimulator, Faults
from firmware_bridge.sources import belt_source, cwru_source
from firmware_bridge.transport import PortError, PtyPair, ReconnectingPort, open_port, parse_vid_pid, resolve_port


@pytest.fixture(scope="module")
def cwru_stream(cwru_dir):
    return cwru_source(cwru_dir, loads=(0,))


@pytest.fixture(scope="module")
def xray_dir(cwru_dir):
    path = cwru_dir.parent / "xray"
    if not (path / "castings").is_dir():
        pytest.skip(f"X-ray data not found at {path}")
    return path


def receive(port, sim_thread, decoder, timeout=30.0, until=None):
    """Read frames until the simulator has finished and the port is quiet (or ``until`` holds)."""
    frames, quiet_since, deadline = [], None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = port.read(65536)
        if data:
            frames += decoder.feed(data)
            quiet_since = None
        elif not sim_thread.is_alive():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.3:
                break
        if until and until(frames):
            break
    return frames


def start(sim, **kwargs):
    thread = threading.Thread(target=sim.run, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_cwru_samples_arrive_intact_and_requests_are_answered(cwru_stream):
    with DeviceSimulator(cwru_stream, link="pty", speed=None) as sim:
        port = open_port(sim.port)
        port.write(encode_frame(Hello(request=True), 0) + encode_frame(Heartbeat(0), 1)
                   + encode_frame(Reject(77, RejectMode.AFTER_US, 2, 1, 8_000), 2))
        time.sleep(0.2)  # let the device answer before it streams
        thread = start(sim, max_frames=500)
        decoder = FrameDecoder()
        frames = receive(port, thread, decoder)
        port.close()
    samples = [f for f in frames if isinstance(f.message, Samples)]
    assert len(samples) == 500 and decoder.stats.rejected == 0 and decoder.stats.lost_frames == 0
    received = np.concatenate([f.message.data[:, 0] for f in samples])
    assert np.array_equal(received, cwru_stream.signals[0][:500 * 120, 0])  # the real 97.mat samples, in order
    hellos = [f.message for f in frames if isinstance(f.message, Hello)]
    assert hellos == [cwru_stream.hello] and hellos[0].rate_hz == 12000.0
    assert any(isinstance(f.message, Ack) and f.message.acked_seq == 2 for f in frames)
    assert sim.stats.heartbeats_answered == 1
    assert sim.rejects[0]["decision_id"] == 77 and sim.rejects[0]["mode"] == "after_us"
    assert [samples[i + 1].timestamp_us - samples[i].timestamp_us for i in range(3)] == [10_000] * 3


def test_a_device_in_its_own_process_streams_every_frame_it_counts(cwru_stream):
    """The demo's and benchmarks' device: out of the gateway's process, its counts brought back on close."""
    with DeviceProcess(cwru_stream, link="pty", speed=None) as device:
        port = open_port(device.port)
        device.stream(duration=0.5)
        decoder = FrameDecoder()
        frames, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any(isinstance(f.message, Heartbeat) for f in frames):
            frames += decoder.feed(port.read(65536))  # the closing heartbeats follow the last samples
        stats = device.close()
        port.close()
    samples = [f for f in frames if isinstance(f.message, Samples)]
    assert stats.frames_generated == len(samples) == stats.frames_sent - 3 > 100  # less the closing heartbeats
    assert decoder.stats.lost_frames == 0
    received = np.concatenate([f.message.data[:, 0] for f in samples])
    assert np.array_equal(received[:12_000], cwru_stream.signals[0][:12_000, 0])  # the real 97.mat samples


def test_a_device_process_that_cannot_start_says_why(cwru_stream):
    with pytest.raises(RuntimeError, match="device simulator failed.*link must be 'pty' or 'tcp'"):
        DeviceProcess(cwru_stream, link="usb")


def test_one_percent_corruption_loses_frames_countably_and_never_delivers_a_bad_one(cwru_stream):
    expected = [m.pack() for m, _, _ in cwru_stream.messages()][:3000]
    with DeviceSimulator(cwru_stream, link="pty", speed=None, faults=Faults(corrupt=0.01, seed=5)) as sim:
        port = open_port(sim.port)
        thread = start(sim, max_frames=3000)
        decoder = FrameDecoder()
        frames = receive(port, thread, decoder)
        port.close()
    data_frames = [f for f in frames if isinstance(f.message, Samples)]
    for frame in data_frames:
        assert frame.message.pack() == expected[frame.seq]  # bit-exact, at the right place in the stream
    assert sim.stats.frames_corrupted > 2000
    # Every frame sent is either delivered or counted lost: gaps in the sequence numbers, plus those
    # before the first frame that got through (the device numbers from 0); the clean closing
    # heartbeats close the count.
    lost = decoder.stats.lost_frames + frames[0].seq
    assert len(frames) + lost == sim.stats.frames_sent
    assert lost == sim.stats.frames_corrupted


def test_dropped_frames_are_counted_as_sequence_gaps(cwru_stream):
    with DeviceSimulator(cwru_stream, link="pty", speed=None, faults=Faults(drop=0.05, seed=2)) as sim:
        port = open_port(sim.port)
        thread = start(sim, max_frames=1000)
        decoder = FrameDecoder()
        receive(port, thread, decoder)
        port.close()
    assert sim.stats.frames_dropped > 20 and decoder.stats.lost_frames == sim.stats.frames_dropped


def test_device_unplug_is_survived_and_counted(cwru_stream, tmp_path):
    link = tmp_path / "ttyDRSN"
    faults = Faults(disconnect_every=0.4, outage_s=0.3)
    with DeviceSimulator(cwru_stream, link="pty", speed=5.0, faults=faults, link_path=str(link)) as sim:
        decoder = FrameDecoder()
        port = ReconnectingPort(str(link), retry_s=0.05, on_reconnect=decoder.reset_sequence)
        thread = start(sim, duration=1.6)
        per_open: dict[int, int] = {}
        while thread.is_alive():
            frames = decoder.feed(port.read())
            per_open[port.stats.opens] = per_open.get(port.stats.opens, 0) + len(frames)
        port.close()
    assert sim.stats.disconnects >= 2
    assert port.stats.outages >= 2 and port.stats.outage_seconds > 0.2
    assert sum(1 for n in per_open.values() if n > 50) >= 3  # frames kept coming after every replug
    # the sensor went on while the link was down (0.3 s of every 0.7 s): those frames are lost, not sent in a burst
    assert 0.25 < sim.stats.frames_lost_offline / sim.stats.frames_generated < 0.6


def test_tcp_link_and_line_scan_belt(xray_dir):
    source = belt_source(xray_dir, "gdxray", "castings", "test", bands=3, seed=1)
    assert source.hello.pixels == 640 and len(source.truth) == 60
    with DeviceSimulator(source, link="tcp", speed=None) as sim:
        port = open_port(sim.port)
        thread = start(sim)
        decoder = FrameDecoder()
        frames = receive(port, thread, decoder)
        # After the belt has passed encoder 95: a reject for encoder 10 is too late, one for 500 is not.
        port.write(encode_frame(Reject(1, RejectMode.AT_ENCODER, 4, 1, 10), 0)
                   + encode_frame(Reject(2, RejectMode.AT_ENCODER, 5, 1, 500), 1))
        replies = receive(port, thread, decoder, timeout=5, until=lambda got: len(got) >= 2)
        port.close()
    assert [type(r.message).__name__ for r in replies] == ["Nak", "Ack"]
    assert replies[0].message.code == NakReason.TOO_LATE and replies[0].message.acked_seq == 0
    assert [(r["decision_id"], r["lane"], r["fire_encoder"], r["late"]) for r in sim.rejects] == \
        [(1, 4, 10, True), (2, 5, 500, False)]
    lines = [f for f in frames if isinstance(f.message, Line)]
    assert len(lines) == 96 and [f.encoder for f in lines] == list(range(96))
    assert np.array_equal(np.stack([f.message.pixels for f in lines]), source.rows)
    tile = source.truth[21]  # band 1, lane 1
    assert (tile["encoder_start"], tile["pixel_start"]) == (32, 32)


def test_a_device_remembers_its_latest_rejects_not_every_one(cwru_stream):
    """The simulated device kept every REJECT it ever received, in a list and by decision id, so a device left
    streaming for days grew without bound.  Like firmware, it now remembers the latest decision ids (enough
    for a REJECT sent again to fire once) and, for a device left running, keeps no list."""
    with DeviceSimulator(cwru_stream, link="pty", speed=None, keep_rejects=False, held_ids=8) as sim:
        port = open_port(sim.port)
        again = [20, 1]   # the latest decision, still remembered; the first, long forgotten
        port.write(b"".join(encode_frame(Reject(k, RejectMode.AFTER_US, 0, 1, 8_000), k) for k in range(1, 21))
                   + b"".join(encode_frame(Reject(k, RejectMode.AFTER_US, 0, 1, 8_000), 20 + n)
                              for n, k in enumerate(again, 1)))
        decoder, answers, give_up = FrameDecoder(), [], time.monotonic() + 5
        while len(answers) < 22 and time.monotonic() < give_up:
            answers += [f.message for f in decoder.feed(port.read(4096)) if isinstance(f.message, Ack)]
        port.close()
    assert [a.acked_seq for a in answers] == list(range(1, 23))   # every send answered
    assert sim.stats.rejects == 21 and sim.stats.reject_repeats == 1 and sim.rejects == []
    assert list(sim._held) == [14, 15, 16, 17, 18, 19, 20, 1]


def test_the_device_reads_rejects_while_its_stream_waits_for_a_gateway_that_is_behind(cwru_stream):
    """The simulated device sent its stream and its answers under one lock, which its reader also took to look a
    REJECT up: while a frame waited for a gateway that had fallen behind (up to 2 s), the device read nothing,
    and the gateway's REJECT writes waited in turn, each side for the other.  A UART receives while it
    transmits: the reader now goes on reading, and the answer follows the stream once the gateway reads."""
    from conftest import wait_until

    with DeviceSimulator(cwru_stream, link="pty", speed=None) as sim:
        port = open_port(sim.port)
        thread = start(sim, max_frames=3000)
        sent = -1
        while sent != sim.stats.frames_sent:  # the gateway reads nothing: the kernel's buffer fills, a write waits
            sent = sim.stats.frames_sent
            time.sleep(0.05)
        assert sim.stats.frames_lost_offline == 0  # the first write to wait: the device waits up to 2 s
        port.write(encode_frame(Reject(5, RejectMode.AFTER_US, 0, 1, 8_000), 0))
        wait_until(lambda: sim.stats.rejects == 1, 1.0)
        frames = receive(port, thread, FrameDecoder(), until=lambda got: any(isinstance(f.message, Ack)
                                                                            for f in got))
        sim.stop()
        thread.join(timeout=5.0)
        port.close()
    assert [f.message.acked_seq for f in frames if isinstance(f.message, Ack)] == [0]


def test_a_read_woken_with_nothing_to_read_is_not_taken_for_an_unplugged_device():
    """pyserial calls a read that select() woke and that then finds nothing "device disconnected".  Another
    program reading the same port causes exactly that; each such read used to count as an outage (110 in 2 s
    here), with a reopen that flushed the bytes waiting in the kernel.  Here a second reader of the port takes
    bytes from under the gateway's: no outage, the wake-ups counted, and the bytes sent after it has gone all
    arrive."""
    from conftest import second_reader

    pty = PtyPair()
    port = ReconnectingPort(pty.name)
    streaming = threading.Event()
    streaming.set()

    def device():
        while streaming.is_set():
            os.write(pty.master_fd, b"x" * 50)
            time.sleep(0.001)

    sending = threading.Thread(target=device)
    sending.start()
    give_up = time.monotonic() + 20
    try:
        with second_reader(pty.name):
            while port.stats.empty_wakeups < 5 and time.monotonic() < give_up:
                port.read()
    finally:
        streaming.clear()
        sending.join()
    assert port.stats.empty_wakeups >= 5 and port.stats.outages == 0 and port.stats.opens == 1
    os.write(pty.master_fd, b"after the second reader")
    got = b""
    while not got.endswith(b"after the second reader") and time.monotonic() < give_up + 5:
        got += port.read()
    assert got.endswith(b"after the second reader") and port.stats.outages == 0
    port.close()
    pty.close()


def test_loop_url_and_usb_lookup_errors():
    port = open_port("loop://")
    port.write(encode_frame(Heartbeat(3), 1))
    assert FrameDecoder().feed(port.read(100))[0].message == Heartbeat(3)
    assert parse_vid_pid("0483:5740") == (0x0483, 0x5740)
    with pytest.raises(PortError, match="VID"):
        parse_vid_pid("st:micro")
    with pytest.raises(PortError, match="no USB serial device dead:beef connected"):
        resolve_port("usb:dead:beef")
    with pytest.raises(PortError, match="cannot open /nonexistent/tty"):
        open_port("/nonexistent/tty")


def test_a_write_nobody_takes_is_counted_not_raised_and_gives_up_within_a_tenth_of_a_second():
    """The decider writes the REJECTs: a device that stops reading held it (and every tile behind it) for 1 s."""
    port = ReconnectingPort("loop://")  # loop:// holds 4,096 bytes; nobody reads them here
    frame = encode_frame(Heartbeat(1), 0)
    written = [port.write(frame) for _ in range(4096 // len(frame))]
    started = time.monotonic()
    assert all(written) and not port.write(frame)
    assert 0.05 <= time.monotonic() - started < 0.5
    assert port.stats.write_timeouts == 1 and port.stats.outages == 0
    port.close()


def test_simulate_command_prints_its_port_and_streams(cwru_dir, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "simulate", "--source", "cwru", "--data",
                             str(cwru_dir), "--rate", "x20", "--duration", "3", "--rejects", str(rejects)],
                            stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("simulate: cwru device on /dev/pts/")
        port = open_port(first.rsplit(" ", 1)[1].strip())
        port.write(encode_frame(Reject(5, RejectMode.AT_ENCODER, 0, 3, 1000), 0))
        decoder = FrameDecoder()
        deadline = time.monotonic() + 10
        frames = []
        while time.monotonic() < deadline and len(frames) < 50:
            frames += decoder.feed(port.read(65536))
        port.close()
        assert sum(isinstance(f.message, Samples) for f in frames) >= 40
    finally:
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert '"decision_id": 5' in rejects.read_text()


def test_simulate_refuses_a_missing_held_out_run_before_it_opens_a_port(cwru_dir, tmp_path, capsys):
    """A mistyped ``--held-out`` gets the run loader's clear error, not a traceback."""
    from edge.cli import main

    assert main(["simulate", "--source", "cwru", "--data", str(cwru_dir), "--held-out", str(tmp_path / "no-run"),
                 "--link", "pty"]) == 2
    captured = capsys.readouterr()
    assert f"run directory {tmp_path / 'no-run'} does not exist" in captured.err
    assert "device on" not in captured.out

def test_simulate_streams_the_accelerometers_asked_for_in_their_order(cwru_dir, tmp_path, capsys):
    from edge.cli import main

    truth = tmp_path / "truth.json"
    assert main(["simulate", "--source", "cwru", "--data", str(cwru_dir), "--channels", "fe,DE", "--truth",
                 str(truth), "--duration", "0.2"]) == 0
    assert json.loads(truth.read_text())["hello"]["channels"] == 2
    with pytest.raises(SystemExit):
        main(["simulate", "--source", "cwru", "--channels", "DE,XY"])
    assert "give one to three of DE, FE, BA" in capsys.readouterr().err

def test_a_runs_held_out_segments_stream_from_every_load_axis_and_rate_it_trained_on(cwru_dir, tmp_path, capsys):
    """`simulate --held-out` streamed load 0 only (its --loads default) and always the drive end: a run of
    loads 1-2 failed in a ValueError, and a fan-end run was streamed the drive end, scored live on an axis
    it never read."""
    from dataclasses import replace

    from conftest import TINY, tiny_settings
    from edge.cli import main
    from edge.run_files import read_run_files
    from edge.runtime.simulated import held_out_records
    from edge.train.vibration import train_cwru
    from firmware_bridge.sources import held_out_spans

    run_dir = tmp_path / "fan-end"
    train_cwru(cwru_dir, run_dir, settings=replace(tiny_settings(), epochs=1), **(TINY | {"loads": (1, 2),
                                                                                          "channel": "FE"}))
    run = read_run_files(run_dir)
    spans = held_out_spans(run["split.json"])
    truth = tmp_path / "truth.json"
    assert main(["simulate", "--source", "cwru", "--held-out", str(run_dir), "--truth", str(truth),
                 "--duration", "0.1", "--rate", "max"]) == 0
    streamed = json.loads(truth.read_text())["truth"]
    assert {t["file"] for t in streamed} == set(spans)     # normal is load 0's 97.mat, the only one this copy has
    records = run["config.json"]["data"]["records"]
    assert {t["load_hp"] for t in streamed} == {r["load_hp"] for r in records} == {0, 1, 2}
    fan_end = held_out_records(run)
    assert fan_end.hello.channels == 1 and fan_end.truth == streamed
    drive_end = cwru_source(cwru_dir, loads=(1, 2), channels=("DE",), spans=spans)
    first_fan = cwru_source(cwru_dir, loads=(1, 2), channels=("FE",), spans=spans)
    assert all(np.array_equal(a, b) for a, b in zip(fan_end.signals, first_fan.signals))
    assert not np.array_equal(fan_end.signals[0], drive_end.signals[0])
    assert main(["simulate", "--source", "cwru", "--held-out", str(run_dir), "--loads", "0"]) == 2
    assert "the run holds no segments of load 0: it read loads 1,2" in capsys.readouterr().err
    two = tmp_path / "two.json"
    assert main(["simulate", "--source", "cwru", "--held-out", str(run_dir), "--loads", "2", "--channels", "DE,FE",
                 "--truth", str(two), "--duration", "0.1", "--rate", "max"]) == 0
    doc = json.loads(two.read_text())
    assert doc["hello"]["channels"] == 2 and {t["load_hp"] for t in doc["truth"]} == {0, 2}


@pytest.mark.parametrize("extra, message", [
    (["--source", "cwru", "--bands", "3"], "--bands: not read when the device streams CWRU vibration records"),
    (["--source", "cwru", "--subset", "fishbones", "--bit-depth", "12"], "--subset, --bit-depth: not read"),
    (["--source", "neu", "--split", "train"], "--split: not read when the device streams NEU images"),
    (["--source", "xray", "--loads", "1"], "--loads: not read when the device streams X-ray images"),
])
def test_an_option_the_source_would_not_read_is_refused_not_ignored(extra, message, capsys):
    from edge.cli import main

    assert main(["simulate", *extra, "--duration", "0.1"]) == 2
    assert message in capsys.readouterr().err


def test_a_data_folder_that_is_not_there_says_what_to_change(tmp_path, monkeypatch, capsys):
    """A --data path that is wrong is named as the thing to check; only the default asks for --data."""
    from edge.cli import main

    missing = tmp_path / "no-data"
    for command in (["simulate", "--source", "cwru", "--duration", "0.1"], ["datasets"]):
        assert main([*command, "--data", str(missing)]) == 2
        assert f"data folder {missing} does not exist; check the path given to --data" in capsys.readouterr().err
        monkeypatch.setenv("DRSN_EDGE_DATA", str(missing))
        assert main(command) == 2
        assert "give --data, or set $DRSN_EDGE_DATA to the folder that holds" in capsys.readouterr().err
        monkeypatch.delenv("DRSN_EDGE_DATA")


def test_a_port_another_process_holds_is_refused_and_says_who_may_hold_it(cwru_stream):
    """Two readers of one serial device would each get part of its frames: a runtime started by hand beside
    the installed service must be told, not share the stream."""
    with DeviceSimulator(cwru_stream, link="pty", speed=None) as sim:
        first = open_port(sim.port)
        with pytest.raises(PortError, match="in use by another process.*systemctl stop drsn-edge"):
            open_port(sim.port)
        first.close()
        open_port(sim.port).close()  # free again once the first reader has closed it

def test_looped_stream_keeps_time_and_encoder_increasing(xray_dir):
    source = belt_source(xray_dir, "gdxray", "castings", "test", bands=1, seed=2)  # 32 lines a lap
    with DeviceSimulator(source, link="pty", speed=None, loop=True) as sim:
        port = open_port(sim.port)
        thread = start(sim, max_frames=80)
        frames = receive(port, thread, FrameDecoder())
        port.close()
    lines = [f for f in frames if isinstance(f.message, Line)]
    assert [f.encoder for f in lines] == list(range(80))
    assert all(b.timestamp_us - a.timestamp_us == 800 for a, b in zip(lines, lines[1:]))


def test_the_device_sends_nothing_while_nobody_has_its_port_open(cwru_stream):
    """A pty keeps what is written to it until its port is opened, then hands it over at once: a burst of
    stale frames no USB device sends, as its data goes nowhere while the host has the port closed."""
    with DeviceSimulator(cwru_stream, link="pty", speed=1.0) as sim:
        thread = start(sim, max_frames=60)
        time.sleep(0.3)                                          # 30 frames due, and nobody listening
        assert sim.stats.frames_sent == 0 and sim.stats.frames_lost_offline >= 20
        port = open_port(sim.port)
        frames = receive(port, thread, FrameDecoder())
        port.close()
    samples = [f for f in frames if isinstance(f.message, Samples)]
    assert samples and samples[0].seq >= 20                      # the stream from the moment the port opened
    assert [f.seq for f in samples] == list(range(samples[0].seq, 60))  # then every one of the 60
    assert sim.stats.frames_lost_offline == samples[0].seq       # those before: lost, and counted


def test_device_can_wait_for_the_gateways_hello(cwru_stream):
    with DeviceSimulator(cwru_stream, link="pty", speed=None, start_on_hello=True) as sim:
        port = open_port(sim.port)
        thread = start(sim, max_frames=50)
        time.sleep(0.3)
        assert sim.stats.frames_generated == 0 and port.read(65536) == b""
        port.write(encode_frame(Hello(request=True), 0))
        frames = receive(port, thread, FrameDecoder())
        port.close()
    assert sum(isinstance(f.message, Samples) for f in frames) == 50 and isinstance(frames[0].message, Hello)


def test_read_waiting_takes_what_arrived_without_waiting_and_survives_a_vanished_device():
    pty = PtyPair()
    port = ReconnectingPort(pty.name, timeout=0.5)
    try:
        started = time.monotonic()
        assert port.read_waiting() == b"" and time.monotonic() - started < 0.1  # nothing there: no wait
        os.write(pty.master_fd, b"\x00abc\x00")
        time.sleep(0.05)
        assert port.read_waiting() == b"\x00abc\x00"
    finally:
        pty.close()
    assert port.read_waiting() == b"" and port.stats.outages == 1  # the device went away: counted, no exception
    port.close()


def test_closing_the_link_does_not_close_the_port_under_a_call_in_another_thread():
    """Shutdown while the reader is still inside a call: the reader closes the port as it leaves."""
    pty = PtyPair()
    port = ReconnectingPort(pty.name, retry_s=0.01)
    seen = {}

    def reader_call(serial_port):
        closer = threading.Thread(target=port.close)
        closer.start()
        closer.join()
        seen["open_while_in_use"] = serial_port.is_open
        seen["port"] = serial_port
        return serial_port.in_waiting                 # pyserial on a port closed under it: TypeError

    try:
        assert port._use(reader_call, None) == 0
        assert seen["open_while_in_use"] is True and not seen["port"].is_open and not port.connected
        assert port.stats.outages == 0
    finally:
        port.close()
        pty.close()


def test_a_write_while_the_device_is_gone_fails_at_once_and_a_read_waits_before_trying_again(tmp_path):
    """A REJECT written while the device was away held the decider up for the port's retry interval (0.2 s):
    every tile queued behind it missed its budget once the device was back.  A reader's loop must still
    wait, so that it does not spin while the device is gone."""
    link = tmp_path / "sensor"
    pty = PtyPair(link)
    port = ReconnectingPort(str(link), retry_s=0.5)
    try:
        assert port.write(b"\x00x\x00")
        pty.close()                                    # unplugged
        link.unlink()
        started = time.monotonic()
        writes = [port.write(b"\x00x\x00") for _ in range(5)]
        assert writes == [False] * 5 and time.monotonic() - started < 0.4
        started = time.monotonic()
        assert port.read() == b"" and time.monotonic() - started >= 0.5
    finally:
        port.close()


def test_a_device_one_thread_finds_gone_is_not_closed_under_the_other():
    """The decider's write finds the device gone while the reader is inside a call on the same port."""
    pty = PtyPair()
    port = ReconnectingPort(pty.name, retry_s=0.01)
    seen = {}

    def reader_call(serial_port):
        pty.close()                                   # unplugged
        writer = threading.Thread(target=lambda: seen.update(wrote=port.write(b"\x00x\x00")))
        writer.start()
        writer.join()
        seen["open_while_in_use"] = serial_port.is_open
        try:
            return serial_port.in_waiting             # pyserial on a port closed under it: TypeError
        except OSError:
            return 0
        finally:
            seen["port"] = serial_port

    try:
        assert port._use(reader_call, b"") in (0, b"")
        assert seen["wrote"] is False and seen["open_while_in_use"] is True
        assert not seen["port"].is_open               # closed by the last thread out
        assert port.stats.outages == 1 and not port.connected
        assert port.read() == b"" and port.stats.outages == 1  # still gone: no second outage, no exception
    finally:
        port.close()
