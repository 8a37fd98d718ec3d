"""X-ray castings: does averaging a model over flipped copies of each patch (test-time flips) help?

Scores each given castings run on its validation images (balanced accuracy, the score
that chooses) and its deduplicated test images, with the softmax of the patch alone and
averaged over its flips: left-right (2 views), every flip (4) and every flip and transpose
(8).  A tile would cost the gateway as many inferences as views, so a view set has to
earn that on validation.  The choice is made on validation alone: the view set with the
best mean validation score, the plain patch on a tie; test figures are for the record.
Writes benchmarks/results/images_castings_flips.json.

    python benchmarks/images_castings_variants.py --work runs/castings-flips --seeds 0,1 \\
        --candidate epochs90:normalization=highpass-image,weight_decay=0.05,epochs=90
    python benchmarks/images_castings_flips.py runs/castings-flips/castings-w16-epochs90-s*
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from images_castings_variants import softmax_scores  # noqa: E402
from results_file import write_results  # noqa: E402


def _transposed(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


FLIPS = [lambda x: x, lambda x: x[..., ::-1], lambda x: x[..., ::-1, :], lambda x: x[..., ::-1, ::-1]]
VIEW_SETS = {"patch alone": FLIPS[:1], "left-right flip": FLIPS[:2], "every flip": FLIPS,
             "every flip and transpose": FLIPS + [lambda x, f=f: f(_transposed(x)) for f in FLIPS]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="trained castings run directories")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "images_castings_flips.json")
    args = parser.parse_args()

    from edge.train.images import balanced_accuracy

    rows = []
    for run in args.runs:
        for name, views in VIEW_SETS.items():
            (pv, yv), (pt, yt) = (softmax_scores(run, split, views) for split in ("val", "test"))
            rows.append({"run": run.name, "views": name, "inferences_per_patch": len(views),
                         "val_balanced_accuracy": balanced_accuracy(yv, pv.argmax(1)),
                         "test_accuracy": float(np.mean(pt.argmax(1) == yt)),
                         "test_wrong": int(np.sum(pt.argmax(1) != yt)), "test_images": int(yt.size)})
            print(f"{run.name} {name:<26} validation {100 * rows[-1]['val_balanced_accuracy']:.2f}%  "
                  f"test {100 * rows[-1]['test_accuracy']:.2f}% ({rows[-1]['test_wrong']} wrong)", flush=True)
    means = {name: {k: float(np.mean([r[k] for r in rows if r["views"] == name]))
                    for k in ("val_balanced_accuracy", "test_accuracy")} for name in VIEW_SETS}
    chosen = max(VIEW_SETS, key=lambda name: means[name]["val_balanced_accuracy"])  # the first of a tie
    doc = {"what": "castings runs scored with the softmax averaged over flipped copies of each patch",
           "chosen_on": "mean balanced accuracy on each run's validation images; test never chooses",
           "chosen": chosen, "means": means, "rows": rows}
    write_results(doc, args.out)
    for name, m in means.items():
        print(f"{name:<26} validation {100 * m['val_balanced_accuracy']:.2f}%  test {100 * m['test_accuracy']:.2f}%")
    print(f"chosen on validation: {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
