"""The gateway side never imports torch, directly or through another module."""

from __future__ import annotations

import subprocess
import sys

from conftest import BLOCK_TORCH

GATEWAY_MODULES = ["edge", "edge.errors", "edge.data.preprocess", "firmware_bridge", "firmware_bridge.protocol",
                   "firmware_bridge.codec", "firmware_bridge.transport", "firmware_bridge.simulator",
                   "firmware_bridge.sources", "firmware_bridge.vectors", "edge.bundle", "edge.backends",
                   "edge.backends.onnxruntime_backend", "edge.backends.openvino_backend",
                   "edge.backends.tensorrt_backend", "edge.compile.tensorrt", "edge.runtime.loop",
                   "edge.runtime.simulated", "edge.runtime.realtime", "edge.runtime.log_reader",
                   "edge.runtime.scoring", "edge.cli", "edge.cli.compression", "edge.cli.training",
                   "edge.cli.bundles", "edge.model_names", "edge.run_files", "edge.train.settings",
                   "edge.data.images", "edge.cli.gateway", "edge.cli.decisions", "edge.cli.device",
                   "calibration.cli", "calibration.on_device",
                   "calibration.probe", "calibration.latency", "calibration.pareto"]

IMPORT_ALL = BLOCK_TORCH + """
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print("ok")
"""


def test_gateway_modules_import_without_torch():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, *GATEWAY_MODULES], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_blocker_really_blocks():
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, "edge.models"], capture_output=True, text=True)
    assert done.returncode != 0 and "torch is not available" in done.stderr


def test_the_whole_cli_parser_builds_without_torch():
    """`drsn-edge run` on a gateway builds every subcommand's parser: none may reach for torch."""
    script = BLOCK_TORCH + "from edge.cli import build_parser\nbuild_parser()\nprint(\"ok\")"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
