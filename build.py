#!/usr/bin/env python3
"""Build entry point: a training run in, a verified bundle out.  Same as `drsn-edge build`.

    python build.py --run runs/NAME --target openvino|tensorrt|onnxruntime --precision fp32|fp16|int8 \\
        [--calib-size N] [--max-drop 0.5] [--key keys/NAME.key] --out dist/NAME
"""

import sys

from edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
