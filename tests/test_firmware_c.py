"""The C99 reference framer, compiled with the host compiler, against the shared vectors and the Python codec."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.codec import FrameDecoder, encode_frame
from firmware_bridge.protocol import Heartbeat, Line
from firmware_bridge.vectors import VECTORS_FILE

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_bridge" / "firmware"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def compiled_host(directory: Path, *defines: str):
    """The host checker built with the host compiler (``defines``: ``NAME=VALUE`` as a firmware project would set
    them), as a function from command lines to result lines."""
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C reference framer cannot be checked here")
    exe = directory / "vectors_host"
    subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", *(f"-D{d}" for d in defines),
                    "-o", str(exe), str(FIRMWARE / "vectors_host.c"), str(FIRMWARE / "drsn_frame.c")], check=True)

    def run(lines: list[str]) -> list[str]:
        done = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
        return done.stdout.splitlines()
    return run


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return compiled_host(tmp_path_factory.mktemp("c"))


def test_c_builds_every_shared_vector_byte_for_byte(host):
    rows = [line.split() for line in VECTORS_FILE.read_text().splitlines()]
    out = host([f"B {r[1]} {r[2]} {r[3]} {r[4]} {r[5]}" for r in rows])
    assert out == [r[6] for r in rows]


def test_c_parses_what_python_builds(host):
    rows = [line.split() for line in VECTORS_FILE.read_text().splitlines()]
    out = host([f"P {r[6]}" for r in rows])
    assert out == [f"{r[1]} {r[2]} {r[3]} {r[4]} {r[5]}" for r in rows]


def test_c_and_python_agree_on_cobs_block_boundaries(host):
    rng = np.random.default_rng(0)
    lines, expected = [], []
    for n in (0, 1, 229, 230, 231, 484, 485, 486, 739, 740, 1000, 4096):
        for fill in ("zeros", "sevens", "random"):
            px = {"zeros": np.zeros(n, np.uint8), "sevens": np.full(n, 7, np.uint8),
                  "random": rng.integers(0, 256, n).astype(np.uint8)}[fill]
            wire = encode_frame(Line(px, 8), n, 1, 2)
            payload = Line(px, 8).pack().hex()
            lines.append(f"B 3 {n} 1 2 {payload}")
            expected.append(wire.hex())
    assert host(lines) == expected


def test_c_rejects_corruption_and_counts_oversize_input(host):
    wire = bytearray(encode_frame(Heartbeat(1), 9))
    wire[10] ^= 0x04
    assert host([f"P {wire.hex()}"]) == ["ERR -4"]  # DRSN_E_CRC
    good = encode_frame(Heartbeat(1), 9)
    stream = good + bytes([0x41]) * 9000 + good
    assert host([f"R {stream.hex()}"]) == [f"F {len(good) - 2}", f"F {len(good) - 2}", "END 1"]
    assert len(FrameDecoder().feed(stream)) == 2


def test_c_crc32c_check_value(host):
    assert host(["C 313233343536373839"]) == ["e3069283"]


def test_c_remembers_the_latest_rejects_taken_as_the_simulated_device_does(tmp_path):
    """The protocol asks a device to fire a REJECT sent again (its answer lost) once, answering it as before,
    and to forget the decision ids it remembers when a gateway's HELLO begins a session; the reference framer
    gave firmware nothing for it.  Built with a ring of 8, it is given what the simulated device is given in
    ``test_a_device_remembers_its_latest_rejects_not_every_one``, with the same outcome: of 20 REJECTs, a
    repeat of the latest is known, the first is long forgotten and new; a repeat keeps its first answer."""
    small = compiled_host(tmp_path, "DRSN_REMEMBERED_REJECTS=8")
    too_late = 5  # NAK reason
    out = small([f"J {k} 0" for k in range(1, 20)] + [f"J 20 {too_late}", "J 20 0", "J 1 0", "J 14 0", "J 13 0"])
    assert out[:20] == ["new"] * 20
    # Remembered after 1 came again: 14-20 and 1, as the simulated device holds them; 13 was pushed out by 1.
    assert out[20:] == [f"repeat {too_late}", "new", "repeat 0", "new"]
    assert small(["J 7 0", "J 7 0", "H", "J 7 0"]) == ["new", "repeat 0", "cleared", "new"]


def test_c_remembers_4096_rejects_by_default(host):
    out = host(["H"] + [f"J {k} 0" for k in range(1, 4098)] + ["J 2 0", "J 1 0", "J 4097 0"])
    assert out[1:4098] == ["new"] * 4097
    assert out[4098:] == ["repeat 0", "new", "repeat 0"]
