"""Image and pixel AUROC from `edge-foct predict` outputs (scikit-learn's metrics).

    python benchmarks/auroc_from_predict.py OUT/results.jsonl --gt DATA/metal_plate/ground_truth

Labels: an image is defective unless its folder is `good`. Masks: GT/<folder>/<stem>_mask.png,
resized and centre-cropped like the network input (resize/crop read from the bank manifest the
predict run used). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from edge_foct.edge_app.render import MAP_UNIT
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.image_io import read_mask
from edge_foct.runtime.preprocess import Preprocessor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--gt", type=Path, default=None, help="ground_truth folder (pixel AUROC)")
    ap.add_argument("--bank", type=Path, default=None, help="bank folder (default: ../bank beside OUT)")
    a = ap.parse_args()
    recs = [json.loads(l) for l in a.results.read_text().splitlines()]
    recs = [r for r in recs if "error" not in r]
    labels = np.array([Path(r["path"]).parent.name != "good" for r in recs])
    scores = np.array([r["image_score"] for r in recs])
    out = {"images": len(recs), "defective": int(labels.sum()), "image_auroc": float(roc_auc_score(labels, scores))}
    if a.gt is not None:
        pix_s, pix_y = [], []
        for r in recs:
            amap = cv2.imread(str(a.results.parent / r["map"]), cv2.IMREAD_UNCHANGED).astype(np.float32)
            amap *= r["threshold"] / MAP_UNIT
            crop = amap.shape[0]
            p = Path(r["path"])
            gt_path = a.gt / p.parent.name / f"{p.stem}_mask.png"
            if p.parent.name == "good" or not gt_path.is_file():
                gt = np.zeros(amap.shape, bool)
            else:
                mask = read_mask(gt_path)
                if not mask.any():
                    continue  # all-zero masks of defective images are skipped for pixel scores
                resize = crop
                bank = a.bank or a.results.parent.parent / "bank"
                if (bank / "manifest.json").is_file():
                    resize = Bank.load(bank).input_size[0]
                gt = Preprocessor(resize, crop).crop_mask(mask)
            pix_s.append(amap.ravel())
            pix_y.append(gt.ravel())
        out["pixel_auroc"] = float(roc_auc_score(np.concatenate(pix_y), np.concatenate(pix_s)))
    for k, v in out.items():
        print(f"{k:12s} {v:.4f}" if isinstance(v, float) else f"{k:12s} {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
