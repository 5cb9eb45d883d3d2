"""``edge-foct demo``: the main job on an embedded default, end to end, offline.

Writes the built-in demo product (or uses ``--data``, an MVTec-layout category folder), fits a
bank on ``--shots`` images of ``train/good``, predicts every image of ``test/`` in a fixed
order, and prints what it found, with the image AUROC.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from edge_foct.edge_app.fitting import run_fit
from edge_foct.edge_app.commands.options import INPUT_SIZE, METHOD, POSITIVE_INT, PRESET_HELP, methods_epilog
from edge_foct.edge_app.predicting import predict_images
from edge_foct.edge_app.commands.run_options import engine_option, start_threads, threads_option
from edge_foct.edge_app.datasets.demo_product import write_demo_dataset
from edge_foct.edge_app.evaluation.metrics import auroc
from edge_foct.edge_app.inspect_session import open_session
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.image_io import list_images


@click.command("demo", epilog=methods_epilog())
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An MVTec-layout category folder (train/good, test/*). Default: the built-in demo part.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("edge-foct-demo"),
              show_default=True, help="Output folder (data/, bank/, predict/); git-ignored in this repository.")
@click.option("--backbone", default=None,
              help="Feature ONNX. Default: $EDGE_FOCT_BACKBONE, the user cache, WideResNet-50-2 when its "
                   "weights are on this machine, else EfficientNet-Lite0 (installed with edge-foct).")
@click.option("--method", type=METHOD, default="patchcore", show_default=True, help="Method; see below.")
@click.option("--preset", default=None, help=PRESET_HELP)
@click.option("--shots", type=POSITIVE_INT, default=2, show_default=True, help="Support images drawn from train/good.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw.")
@click.option("--size", type=INPUT_SIZE, default=256, show_default=True, help="Input size (resize = crop), a multiple of 16.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Calibrate the threshold on the train/good images not used as support.")
@click.option("--download", is_flag=True, help="Allow torchvision to download WideResNet-50-2 weights.")
@engine_option
@threads_option
def command(data, out, backbone, method, preset, shots, seed, size, calibrate, download, engine, threads) -> None:
    """Fit on a few good images and inspect a test set, in one command."""
    plan = start_threads(threads)
    category = data if data is not None else write_demo_dataset(out / "data", n_train=12)  # 2 support + 10 calibration
    train, test = category / "train" / "good", category / "test"
    if not train.is_dir() or not test.is_dir():
        raise EdgeFoctError(f"{category}: expected train/good and test/ folders (MVTec layout)")
    # the train/good images not drawn as support calibrate the threshold (fit --calibrate): a user
    # always has a few more photos of good parts than the memory needs
    bank = run_fit([str(train)], backbone, out / "bank", shots, seed, None, method, preset, size, None,
                   calibrate=[str(train)] if calibrate and len(list_images([str(train)])) > shots else None,
                   download=download, force=True, engine=engine, plan=plan)  # the demo's own folder: refitted each run
    paths = [p for d in sorted(q for q in test.iterdir() if q.is_dir()) for p in list_images(d)]
    session = open_session(bank, engine=engine, plan=plan)
    records = predict_images(session, paths, out / "predict")
    ok = [r for r in records if "error" not in r]
    labels = np.array([Path(r["path"]).parent.name != "good" for r in ok])
    scores = np.array([r["image_score"] for r in ok])
    flagged = np.array([r["defective"] for r in ok])
    t = session.bank.manifest["threshold"]
    click.echo(f"\nedge-foct demo: {session.bank.method_name} on {category.name}, {shots}-shot, "
               f"threshold {session.inspector.threshold:.4g} (rule {t['rule']}, {len(t.get('calibration', []))} "
               f"calibration images)")
    bb = session.bank.manifest["backbone"]
    click.echo(f"  backbone       : {bb['id']} ({'pretrained' if bb.get('pretrained') else 'UNTRAINED'}, "
               f"from {session.bank.manifest.get('backbone_source', '?')})")
    click.echo(f"  good parts     : {int((~labels).sum()):4d}, flagged {int(flagged[~labels].sum())} (false alarms)")
    click.echo(f"  defective parts: {int(labels.sum()):4d}, flagged {int(flagged[labels].sum())} (caught)")
    click.echo(f"  image AUROC    : {auroc(labels, scores):.3f}")
    med = np.median([r["timings_ms"]["total"] for r in ok])
    click.echo(f"  median latency : {med:.1f} ms/image on this CPU")
    click.echo(f"  results        : {out / 'predict' / 'results.jsonl'} (maps/, overlays/ beside it)")
    thr_warning = session.bank.manifest["threshold"].get("warning")
    if thr_warning:
        click.echo(f"  WARNING        : {thr_warning}")
    if session.warning:
        click.echo(f"  WARNING        : {session.warning}")
        click.echo("  next           : give it ImageNet features: `edge-foct prepare-backbone MODEL.onnx --out bb.onnx`"
                   " (a classification ONNX, e.g. MobileNetV2), then `edge-foct demo --backbone bb.onnx`,"
                   " or set EDGE_FOCT_BACKBONE")
