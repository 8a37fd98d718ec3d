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


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C reference framer cannot be checked here")
    exe = tmp_path_factory.mktemp("c") / "vectors_host"
    subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-o", str(exe),
                    str(FIRMWARE / "vectors_host.c"), str(FIRMWARE / "drsn_frame.c")], check=True)

    def run(lines: list[str]) -> list[str]:
        done = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
        return done.stdout.splitlines()
    return run


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
