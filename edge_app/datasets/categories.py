"""What an evaluation data set is made of: categories of train (good) and test images.

Shared by the readers (mvtec.py: MVTec layout; visa.py: VisA; elpv.py: ELPV) so that none
of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestImage:
    path: Path
    defective: bool
    defect_type: str  # "good" or the folder name
    mask: Path | None  # ground-truth mask file, None when absent (pixel metrics skip the image)
    mask_nonzero: bool = False  # a label mask (VisA): every non-zero pixel is a defect; else pixel > 127


@dataclass(frozen=True)
class Category:
    name: str
    root: Path
    train: tuple[Path, ...]
    test: tuple[TestImage, ...]

    @property
    def has_masks(self) -> bool:
        return any(t.mask is not None for t in self.test if t.defective)
