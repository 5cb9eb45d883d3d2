"""Support augmentation (runtime/support_augment.py): exact turns and mirrors, the group a spec
generates, masks turned with their images, the threshold leaving copies out, the config key."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_foct.runtime.config import config_from_dict
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.methods import SupportSet, make_params
from edge_foct.runtime.preprocess import Preprocessor
from edge_foct.runtime.support_augment import IDENTITY, NAMED, Transform, support_augment
from edge_foct.runtime.threshold import calibrate

ALL = [Transform(r, m) for m in (False, True) for r in range(4)]


def test_transforms_are_exact_turns_and_mirrors(rng):
    img = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)  # (H, W, 3), H != W
    by = {t.name: t.apply(img) for t in ALL}
    assert by["id"].shape == (5, 7, 3) and np.array_equal(by["id"], img)
    assert by["rot90"].shape == (7, 5, 3) and np.array_equal(by["rot90"], np.rot90(img))
    assert np.array_equal(by["rot180"], img[::-1, ::-1]) and np.array_equal(by["rot270"], np.rot90(img, -1))
    assert np.array_equal(by["flip"], img[:, ::-1]) and np.array_equal(by["vflip"], img[::-1])
    assert np.array_equal(by["rot90-flip"], np.rot90(img)[:, ::-1]) and by["rot90-flip"].shape == (7, 5, 3)
    assert np.array_equal(by["rot90-flip"], img.transpose(1, 0, 2)[::-1, ::-1])  # the anti-transpose
    assert len({v.tobytes() + bytes(v.shape) for v in by.values()}) == 8  # 8 different images
    assert all(v.flags.c_contiguous for v in by.values())


def test_then_is_composition(rng):
    a = rng.random((4, 4))
    for s, t in itertools.product(ALL, ALL):
        assert np.array_equal(s.then(t).apply(a), t.apply(s.apply(a))), (s.name, t.name)


@pytest.mark.parametrize("spec,names", [
    ("none", ["id"]), ("flip", ["id", "flip"]), ("rot180", ["id", "rot180"]),
    ("rot180+flip", ["id", "rot180", "flip", "vflip"]), ("rot90", ["id", "rot90", "rot180", "rot270"]),
    ("rot90+flip", ["id", "rot90", "rot180", "rot270", "flip", "rot90-flip", "vflip", "rot270-flip"]),
    ("FLIP+rot180", ["id", "rot180", "flip", "vflip"]),
])
def test_a_spec_is_the_group_its_generators_make(spec, names):
    aug = support_augment(spec)
    assert [t.name for t in aug.transforms] == names and aug.transforms[0] == IDENTITY and len(aug) == len(names)
    assert set(NAMED) >= {"none", "rot90", "rot180", "flip", "rot90+flip"}


def test_images_keys_sources_are_source_major(rng):
    imgs = [rng.integers(0, 255, (6, 6, 3), dtype=np.uint8) for _ in range(3)]
    aug = support_augment("rot90")
    out = aug.images(imgs)
    assert len(out) == 12 and out[0] is imgs[0] and np.array_equal(out[5], np.rot90(imgs[1]))
    assert aug.keys(["a", "b"])[:5] == ["a", ("augment", "a", "rot90"), ("augment", "a", "rot180"),
                                        ("augment", "a", "rot270"), "b"]
    assert aug.sources(3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert support_augment("none").images(imgs) == imgs


def test_turns_commute_with_the_square_preprocessor(rng):
    """The network sees the turned crop: crop(t(image)) == t(crop(image)), aspect 1: exactly for the
    half turn and the mirrors, to one grey level for a quarter turn (OpenCV's fixed-point resize
    rounds its row and column passes differently); the half turn and the mirrors also at aspect 2
    (a quarter turn of a non-square input is refused)."""
    img = rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)  # a non-square frame
    square = Preprocessor(80, 64)
    for t in ALL:
        a, b = square.crop_rgb(t.apply(img)).astype(int), t.apply(square.crop_rgb(img)).astype(int)
        assert np.abs(a - b).max() <= (1 if t.turns % 2 else 0), t.name
        assert (a != b).mean() < 0.15, t.name
    already = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)  # nothing to resize: every turn exact
    for t in ALL:
        assert np.array_equal(square.crop_rgb(t.apply(already)), t.apply(square.crop_rgb(already))), t.name
    wide = Preprocessor(80, 64, aspect=2.0)
    for t in support_augment("rot180+flip").transforms:
        assert np.array_equal(wide.crop_rgb(t.apply(img)), t.apply(wide.crop_rgb(img))), t.name


def test_masks_turn_with_their_images(rng):
    grid = (4, 4)
    fg = rng.random((2, 16)) > 0.5  # (K, Q)
    aug = support_augment("rot90+flip")
    turned = aug.masks(fg, grid)
    assert turned.shape == (16, 16) and turned.dtype == bool
    for i, t in enumerate(aug.transforms):
        assert np.array_equal(turned[8 + i].reshape(grid), t.apply(fg[1].reshape(grid)))
    assert aug.masks(None, grid) is None
    s = aug.support_set(rng.random((16, 16, 3)).astype(np.float32), fg, grid)
    assert s.foreground.shape == (16, 16) and s.sources.tolist() == [0] * 8 + [1] * 8
    assert s.subset([0, 9]).sources.tolist() == [0, 1]


@pytest.mark.parametrize("spec", ["rot45", "", "rot90+", "none+flip", "mirror"])
def test_a_bad_spec_is_one_line(spec):
    with pytest.raises(EdgeFoctError) as e:
        support_augment(spec)
    assert "\n" not in str(e.value) and "rot90+flip" in str(e.value) and repr(spec) in str(e.value)


def test_a_quarter_turn_of_a_non_square_input_is_refused():
    assert len(support_augment("rot180+flip", aspect=2.5)) == 4
    with pytest.raises(EdgeFoctError, match="quarter turn does not fit a non-square input"):
        support_augment("rot90", aspect=2.5)


def test_the_threshold_is_learnt_from_the_originals(rng):
    """Copies that happen to match the jittered views (a symmetric part turned) would pull every
    support statistic down (leave-one-out and self-view scores ~0); the threshold is learnt from the
    originals alone, so it equals the one without augmentation, at 1 and 2 shots."""
    grid, q, d = (3, 3), 9, 8
    a, b = rng.random((2, q, d)).astype(np.float32)
    va, vb = a + 0.3, b + 0.3  # (Q, D): the "views" of a and b, and copies that equal them
    views = np.stack([np.stack([va, va]), np.stack([vb, vb])])  # (K=2, V=2, Q, D)
    params = make_params("patchcore", {"coreset_ratio": 1.0})  # every patch in memory: exact matches
    plain = calibrate("patchcore", params, SupportSet(np.stack([a, b]), None, grid), views)
    copies = SupportSet(np.stack([a, va, b, vb]), None, grid, sources=np.array([0, 0, 1, 1]))
    aug = calibrate("patchcore", params, copies, views)
    leaky = calibrate("patchcore", params, SupportSet(copies.features, None, grid), views[[0, 0, 1, 1]])
    assert min(plain.self_samples) > 0.5 and min(plain.samples) > 0.5 and max(leaky.self_samples) < 1e-3
    assert aug == plain
    one = SupportSet(np.stack([a, va]), None, grid, sources=np.array([0, 0]))
    assert calibrate("patchcore", params, one, views[:1]) == calibrate(
        "patchcore", params, SupportSet(a[None], None, grid), views[:1])
    assert np.array_equal(copies.originals().features, np.stack([a, b])) and copies.originals().sources is None


def test_config_reads_support_augment():
    assert config_from_dict({}).support.augment == "none"
    assert config_from_dict({"support": {"augment": "rot180"}}).support.augment == "rot180"
    assert config_from_dict({"support": {"augment": "rot90+flip"}}).to_json()["support"] == {"augment": "rot90+flip"}
    with pytest.raises(EdgeFoctError, match=r"cfg: \[support\] augment 'spin'"):
        config_from_dict({"support": {"augment": "spin"}}, "cfg")
    with pytest.raises(EdgeFoctError, match="quarter turn"):
        config_from_dict({"support": {"augment": "rot90"}, "input": {"aspect": 2.0}}, "cfg")
    with pytest.raises(EdgeFoctError, match=r"\[support\] has unknown key"):
        config_from_dict({"support": {"rotate": True}}, "cfg")
