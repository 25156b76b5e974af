"""What to do to images: the augmentation and test-time cropping settings a recipe carries."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Augment:
    """Data augmentation and test-time cropping.

    Attributes:
        pad_crop: zero-pad by this many pixels, then crop the input size at random (CIFAR: 4).
        flip: random horizontal flips.
        scale: (low, high): resize the shorter side to a random size in [low, high] first (ImageNet:
            256, 480).
        pca_std: std of AlexNet's PCA colour noise (ImageNet: 0.1); 0 for none.
        mean: "pixel" subtracts the training set's per-pixel mean, "none" nothing.
        test_crop: "center" or "ten" (corners, centre and their mirror images, softmax averaged).
        resize_to: the shorter side before test crops of image folders (default: input * 256/224).
    """

    pad_crop: int = 0
    flip: bool = False
    scale: tuple[int, int] | None = None
    pca_std: float = 0.0
    mean: str = "pixel"
    test_crop: str = "center"
    resize_to: int | None = None

    def augment(self) -> Augment:
        """Only the augmentation settings (of a recipe, which extends this class)."""
        return Augment(**{f.name: getattr(self, f.name) for f in fields(Augment)})
