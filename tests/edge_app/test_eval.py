"""`edge-foct eval` on the built-in demo data with the random backbone (small and fast)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge_foct.edge_app.datasets import elpv
from edge_foct.edge_app.cli import cli
from edge_foct.edge_app.datasets.mvtec import load_category
from edge_foct.edge_app.evaluation.runner import parse_methods
from edge_foct.edge_app.evaluation.protocol import SplitResult, split_metrics
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.threshold import family_for

METRICS = ("image_auroc", "pixel_auroc", "image_f1_max", "pixel_f1_max", "aupro", "seconds_per_image",
           "false_alarm_rate", "miss_rate", "threshold", "stream_false_alarm_rate", "stream_miss_rate",
           "error", "oracle_error", "oracle_threshold", "oracle_false_alarm_rate", "oracle_miss_rate")


def _eval(data: Path, backbone: Path, out: Path, *extra: str):
    res = CliRunner().invoke(cli, ["eval", "--data", str(data), "--backbone", str(backbone), "--size", "64",
                                   "--views", "2", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return json.loads((out / "results.json").read_text()), res.output


def test_eval_on_demo_data(demo_category, random_backbone, tmp_path):
    got, output = _eval(demo_category.parent, random_backbone, tmp_path, "--methods", "patchcore",
                        "--shots", "1", "2", "--splits", "2", "--seed", "3")
    recs = got["records"]
    assert [(r["category"], r["shots"], r["method"]) for r in recs] == [("demo_part", 1, "patchcore"),
                                                                       ("demo_part", 2, "patchcore")]
    for r in recs:
        assert r["n_test"] == 8 and r["n_defective"] == 4 and r["splits"] == 2 and r["notes"] == []
        assert [len(s) for s in r["support"]] == [r["shots"]] * 2
        # the rule that learnt each split's threshold (runtime/threshold.py's shipped family for the shots)
        assert r["threshold_rules"] == {family_for(r["shots"], 0): 2}
        for k in METRICS:
            m = r["metrics"][k]
            assert len(m["per_split"]) == 2 and m["mean"] == pytest.approx(np.mean(m["per_split"]))
            assert m["std"] == pytest.approx(np.std(m["per_split"], ddof=1))
        for k in ("image_auroc", "pixel_auroc", "image_f1_max", "pixel_f1_max", "aupro"):
            assert all(0.0 <= v <= 1.0 for v in r["metrics"][k]["per_split"])
    assert got["run"]["shots"] == [1, 2] and got["run"]["machine"]["cores"] >= 1
    assert "untrained" in got["run"]["warnings"][0]
    table = (tmp_path / "results.md").read_text()
    assert table.count("| demo_part |") == 2 and "AUPRO@0.3" in table and table in output
    assert "@oracle" in table
    for r in recs:  # the oracle (picked on the test set) is never worse than the learnt threshold
        m = r["metrics"]
        assert all(o <= e + 1e-9 for o, e in zip(m["oracle_error"]["per_split"], m["error"]["per_split"]))
    for k in (1, 2):
        assert cv2.imread(str(tmp_path / "plots" / f"demo_part-{k}shot.png")) is not None


def test_eval_is_reproducible_and_seeded(demo_category, random_backbone, tmp_path):
    args = ("--methods", "patchcore", "--shots", "1", "--splits", "2")
    a, _ = _eval(demo_category, random_backbone, tmp_path / "a", *args, "--seed", "0")
    b, _ = _eval(demo_category, random_backbone, tmp_path / "b", *args, "--seed", "0")
    key = lambda g: [g["records"][0]["metrics"][k]["per_split"] for k in ("image_auroc", "aupro")]  # noqa: E731
    assert key(a) == key(b) and a["records"][0]["support"] == b["records"][0]["support"]


def test_category_without_masks_skips_pixel_metrics(demo_category, random_backbone, tmp_path):
    cat = tmp_path / "data" / "nomask"
    shutil.copytree(demo_category, cat, ignore=shutil.ignore_patterns("ground_truth"))
    got, _ = _eval(cat, random_backbone, tmp_path / "out", "--shots", "1", "--splits", "1")
    r = got["records"][0]
    assert "pixel_auroc" not in r["metrics"] and "aupro" not in r["metrics"]
    assert r["notes"] == ["pixel metrics skipped: the category has no ground-truth masks"]
    assert r["metrics"]["image_auroc"]["mean"] is not None


def test_split_metrics_reads_concentration_and_admissions():
    labels = np.array([False, False, True, True, True])
    diags = [{"concentration": 0.2, "admitted": 3}, {"concentration": 0.4, "admitted": 0},
             {"concentration": 0.6, "admitted": 1}, {"concentration": 0.8}, {"concentration": 1.0, "admitted": 2}]
    r = SplitResult("x", 0, np.array([0.1, 0.5, 0.4, 0.9, 0.8]), np.zeros((5, 2, 2), np.float32), 0.45, diags, 0.01)
    m = split_metrics(r, labels, None, (16, 16))
    assert m["concentration"] == pytest.approx(0.6)
    assert (m["admitted_defective"], m["admitted_good"]) == (2, 1)
    assert m["false_alarm_rate"] == pytest.approx(0.5) and m["miss_rate"] == pytest.approx(1 / 3)
    assert m["image_auroc"] == pytest.approx(5 / 6) and "pixel_auroc" not in m
    assert "stream_miss_rate" not in m  # no stream verdicts recorded
    # oracle: good 0.1, 0.5; defects 0.4, 0.9, 0.8 -> a threshold at 0.5 flags only 0.9/0.8: 0 + 1/3
    assert m["error"] == pytest.approx(0.5 + 1 / 3)
    assert m["oracle_threshold"] == pytest.approx(0.5)
    assert m["oracle_error"] == pytest.approx(1 / 3) and m["oracle_false_alarm_rate"] == 0.0
    r.stream_flags = np.array([True, False, False, True, True])
    m = split_metrics(r, labels, None, (16, 16))
    assert m["stream_false_alarm_rate"] == pytest.approx(0.5) and m["stream_miss_rate"] == pytest.approx(1 / 3)


def test_stream_verdicts_follow_the_serving_rule(demo_category, random_backbone):
    """run_split's stream verdicts = StreamThreshold fed the scores in stream order (as serve does)."""
    from edge_foct.edge_app.datasets.mvtec import load_category
    from edge_foct.edge_app.evaluation.protocol import FeatureStore, MethodSpec, draw_split, run_split
    from edge_foct.runtime.backbone import Backbone
    from edge_foct.runtime.preprocess import Preprocessor
    from edge_foct.runtime.threshold import StreamParams

    cat = load_category(demo_category)
    store = FeatureStore(Backbone.load(random_backbone), Preprocessor(64, 64))
    r = run_split(cat, store, MethodSpec("patchcore"), 2, 0, 1, views=2)
    _, order = draw_split(cat, 2, 0, 1)
    assert r.stream_flags is not None and r.stream_flags.shape == (len(cat.test),)
    # replay: before the calibration frames are in, the stream rule is the learnt threshold itself
    warm = min(StreamParams().frames, len(order))
    first = order[:warm]
    assert np.array_equal(r.stream_flags[first], r.image_scores[first] > r.threshold)


def test_options_take_space_and_comma_separated_values(demo_category, random_backbone, tmp_path):
    got, _ = _eval(demo_category, random_backbone, tmp_path, "--methods", "patchcore,patchcore",
                   "--shots", "2,1", "--splits", "1")
    assert [(r["shots"], r["method"]) for r in got["records"]] == [(1, "patchcore")] * 2 + [(2, "patchcore")] * 2


def test_bad_method_and_preset_are_one_line_errors():
    with pytest.raises(EdgeFoctError, match="unknown method 'nope'"):
        parse_methods(["nope"])
    with pytest.raises(EdgeFoctError, match="no preset 'fast'"):
        parse_methods(["patchcore/fast"])
    assert [s.label for s in parse_methods(["all"])] == sorted(s.label for s in parse_methods(["all"]))


def test_too_many_shots_is_refused(demo_category, random_backbone, tmp_path):
    res = CliRunner().invoke(cli, ["eval", "--data", str(demo_category), "--backbone", str(random_backbone),
                                   "--shots", "9", "--out", str(tmp_path)])
    assert isinstance(res.exception, EdgeFoctError) and "only 4 train/good" in str(res.exception)


def test_elpv_labels_and_layout(tmp_path, monkeypatch):
    src, rows = elpv._labels()  # the installed package's own label file
    assert len(rows) == 2624 and {r[1] for r in rows} == {0.0, 1 / 3, 2 / 3, 1.0}
    fake = tmp_path / "src"
    fake.mkdir()
    small = []
    for i, (prob, kind) in enumerate([(0.0, "mono")] * 5 + [(1 / 3, "mono"), (2 / 3, "mono"), (1.0, "mono")]):
        cv2.imwrite(str(fake / f"cell{i}.png"), np.full((32, 32), 30 * i, np.uint8))
        small.append((f"cell{i}.png", prob, kind))
    monkeypatch.setattr(elpv, "_labels", lambda: (fake, small))
    root = elpv.write_elpv_layout(tmp_path / "layout", n_train=2)
    cat = load_category(root / "elpv_mono")
    assert len(cat.train) == 2 and not cat.has_masks
    assert sorted((t.defect_type, t.defective) for t in cat.test) == [("defective", True)] * 2 + [("good", False)] * 3
    summary = json.loads((root / "layout.json").read_text())
    assert summary["categories"]["elpv_mono"]["left_out_uncertain"] == 1


def test_foreground_methods_get_masks_and_log_their_rules(demo_category, random_backbone, tmp_path):
    from edge_foct.runtime.methods import METHODS

    fg_methods = sorted(n for n, c in METHODS.items() if c.uses_foreground)
    if not fg_methods:
        pytest.skip("no registered method uses foreground masks")
    got, _ = _eval(demo_category, random_backbone, tmp_path, "--methods", fg_methods[0], "--shots", "2",
                   "--splits", "2")
    fg = got["records"][0]["foreground"]
    assert "make_foreground" in fg["source"] and sum(fg["rules"].values()) == 2 * 2
    # the judge's decision per split is in the record and the table says how many splits used the mask
    used = got["records"][0]["metrics"]["foreground_split_used"]["per_split"]
    assert len(used) == 2 and set(used) <= {0.0, 1.0}
    assert f"| {int(sum(used))}/2 |" in (tmp_path / "results.md").read_text()


def test_worker_processes_give_the_results_of_one_process(demo_category, random_backbone, tmp_path):
    """--jobs 2 (forked workers, one BLAS thread each) = --jobs 1, up to float rounding, for an
    offline, a transductive and an online method, records in the same order."""
    args = ("--methods", "patchcore", "patchcore+", "foct/edge", "--shots", "1", "2", "--splits", "2")
    one, _ = _eval(demo_category, random_backbone, tmp_path / "one", *args, "--jobs", "1")
    two, _ = _eval(demo_category, random_backbone, tmp_path / "two", *args, "--jobs", "2")
    assert one["run"]["jobs"] == 1 and two["run"]["jobs"] == 2
    assert [(r["shots"], r["method"]) for r in one["records"]] == [(r["shots"], r["method"]) for r in two["records"]]
    for a, b in zip(one["records"], two["records"]):
        assert a["support"] == b["support"] and a.get("foreground") == b.get("foreground")
        for k in ("image_auroc", "pixel_auroc", "aupro", "threshold", "admitted_defective"):
            if k in a["metrics"]:
                np.testing.assert_allclose(a["metrics"][k]["per_split"], b["metrics"][k]["per_split"], rtol=1e-4)


def test_openvino_distances_in_process_and_numpy_in_workers_agree(demo_category, random_backbone, tmp_path):
    """--engine openvino: the methods' distance GEMM runs on OpenVINO in the eval process (as serve
    runs it) and on NumPy in forked workers (OpenVINO's pool does not survive a fork); same numbers."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-foct[openvino]')")
    args = ("--methods", "patchcore", "foct/edge", "--shots", "2", "--splits", "2", "--engine", "openvino:f32")
    one, _ = _eval(demo_category, random_backbone, tmp_path / "one", *args, "--jobs", "1")
    two, _ = _eval(demo_category, random_backbone, tmp_path / "two", *args, "--jobs", "2")
    assert one["run"]["backbone"]["distances"] == "openvino"
    assert two["run"]["backbone"]["distances"] == "openvino (numpy in --jobs workers)"
    for a, b in zip(one["records"], two["records"]):
        for k in ("image_auroc", "pixel_auroc", "threshold", "admitted_defective"):
            if k in a["metrics"]:
                np.testing.assert_allclose(a["metrics"][k]["per_split"], b["metrics"][k]["per_split"], rtol=1e-4)


def test_split_supports_are_distinct_when_possible():
    """Five splits of 2 shots among 16 images are five different support sets (seed 0 once drew 3)."""
    from edge_foct.edge_app.datasets.mvtec import Category
    from edge_foct.edge_app.evaluation.protocol import draw_split

    for n, shots in ((16, 1), (16, 2), (8, 4), (3, 2)):
        cat = Category("c", Path("/nonexistent"), tuple(Path(f"g{i}.png") for i in range(n)), ())
        for seed in range(5):
            sets = [tuple(draw_split(cat, shots, s, seed)[0]) for s in range(5)]
            assert all(len(set(x)) == shots for x in sets)
            assert len(set(sets)) == min(5, math.comb(n, shots)), (n, shots, seed, sets)
            assert sets == [tuple(draw_split(cat, shots, s, seed)[0]) for s in range(5)]  # reproducible
def test_eval_records_engine_and_thread_plan_and_engines_agree(demo_category, random_backbone, tmp_path):
    """--engine / --threads reach the run record; OpenVINO f32 ranks the images as ONNX Runtime does,
    and benchmarks/engine_parity.py says so."""
    args = ("--methods", "patchcore", "--shots", "2", "--splits", "2", "--threads", "1")
    ort_run, _ = _eval(demo_category, random_backbone, tmp_path / "ort", *args, "--engine", "cpu")
    run = ort_run["run"]
    assert run["backbone"]["engine"].startswith("onnxruntime") and "(1 threads, no spin)" in run["backbone"]["engine"]
    assert run["backbone"]["precision"] == "f32" and run["backbone"]["engine_choice"].endswith("(asked for)")
    assert (run["threads"]["engine"], run["threads"]["blas"], run["threads"]["source"]) == (1, 1, "--threads 1")
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-foct[openvino]')")
    ov_run, _ = _eval(demo_category, random_backbone, tmp_path / "ov", *args, "--engine", "openvino:f32")
    ov_backbone = ov_run["run"]["backbone"]
    assert ov_backbone["engine"].startswith("openvino") and ov_backbone["precision"] == "f32"
    auc = lambda g: g["records"][0]["metrics"]["image_auroc"]["per_split"]  # noqa: E731
    assert auc(ov_run) == auc(ort_run)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from engine_parity import parity
    finally:
        sys.path.pop(0)
    rows, md = parity([ort_run, ov_run])
    assert rows[0]["others"][0]["delta_points"] == 0 and "openvino" in md and " (!) |" not in md
    with pytest.raises(SystemExit, match="differ in"):
        parity([ort_run, {**ov_run, "run": {**ov_run["run"], "seed": 1}}])


def test_patchcore_plus_online_preset_is_gated_at_the_learnt_threshold(demo_category, random_backbone, tmp_path):
    """eval streams the test images through patchcore+/online with the gate at the learnt threshold:
    admissions are counted, and no image the threshold flags ever enters."""
    got, _ = _eval(demo_category, random_backbone, tmp_path, "--methods", "patchcore+/online", "--shots", "2",
                   "--splits", "1")
    (rec,) = got["records"]
    m = rec["metrics"]
    assert rec["method"] == "patchcore+/online" and "admitted_good" in m and "admitted_defective" in m
    # an admitted image scored at or below the threshold: admissions never exceed the images passed
    passed_good = round((1 - m["false_alarm_rate"]["mean"]) * (rec["n_test"] - rec["n_defective"]))
    passed_def = round(m["miss_rate"]["mean"] * rec["n_defective"])
    assert m["admitted_good"]["mean"] <= passed_good and m["admitted_defective"]["mean"] <= passed_def


def test_max_test_subset_is_seeded_balanced_per_label_and_recorded(demo_category, random_backbone, tmp_path):
    """`eval --max-test N`: N/2 good + N/2 defective test images (a short label: all of it, the other
    fills up), the same images for a seed, others for another seed, in results.json and the table header."""
    from edge_foct.edge_app.datasets.categories import Category, TestImage
    from edge_foct.edge_app.evaluation.protocol import limit_test_set

    def cat(good: int, bad: int) -> Category:
        test = [TestImage(Path(f"g{i}.png"), False, "good", None) for i in range(good)]
        test += [TestImage(Path(f"d{i}.png"), True, "crack", None) for i in range(bad)]
        order = np.random.default_rng(5).permutation(len(test))
        return Category("c", Path("/nonexistent"), (), tuple(test[i] for i in order))

    big = cat(568, 369)
    a = limit_test_set(big, 200, 0)
    assert sum(not t.defective for t in a.test) == 100 and sum(t.defective for t in a.test) == 100
    assert a.test == limit_test_set(big, 200, 0).test  # deterministic for a seed
    assert a.test != limit_test_set(big, 200, 1).test  # another seed, another subset
    assert [t for t in big.test if t in set(a.test)] == list(a.test)  # kept in the test set's order
    assert len(set(a.test)) == 200
    assert len(limit_test_set(big, 201, 0).test) == 201
    few = cat(3, 40)  # 3 good: all kept, defects fill up to N
    b = limit_test_set(few, 10, 0)
    assert sum(not t.defective for t in b.test) == 3 and sum(t.defective for t in b.test) == 7
    assert limit_test_set(few, 100, 0) is few  # N not below the test set: unchanged
    with pytest.raises(EdgeFoctError, match="at least 2"):
        limit_test_set(few, 1, 0)

    got, output = _eval(demo_category, random_backbone, tmp_path / "a", "--shots", "1", "--splits", "1",
                        "--max-test", "4", "--seed", "2")
    run, rec = got["run"], got["records"][0]
    assert run["max_test"] == 4 and run["test_images"] == {"demo_part": {"scored": [2, 2], "of": [4, 4]}}
    assert rec["n_test"] == 4 and rec["n_defective"] == 2
    table = (tmp_path / "a" / "results.md").read_text()
    assert table.startswith("Test sets: a seeded per-label subset (--max-test 4, seed 2; good + defective scored "
                            "of all): demo_part 2 + 2 of 4 + 4.") and table in output
    full, _ = _eval(demo_category, random_backbone, tmp_path / "b", "--shots", "1", "--splits", "1")
    assert full["run"]["max_test"] is None and (tmp_path / "b" / "results.md").read_text().startswith("| category")
    res = CliRunner().invoke(cli, ["eval", "--data", str(demo_category), "--backbone", str(random_backbone),
                                   "--max-test", "1", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "Invalid value for '--max-test'" in res.output
