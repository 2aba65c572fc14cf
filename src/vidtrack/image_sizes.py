"""Which model input sizes each SAM 2-family backend accepts (``TrackingConfig.image_size``, ``--image-size``).

One torch-free rule per family, shared by the command line (checked before anything heavy is imported) and the
loader (checked before any weights are read):

* ``sam2`` (SAM 2.1, Hiera): a multiple of 32 from 64 on -- the trunk downsamples by 4 in its patch embedding
  and by 2 at each of its three later stages;
* ``edgetam``: a multiple of 256 -- its spatial perceiver cuts the S/16 memory map into 16x16 windows;
* ``sam3-tracker``: a multiple of 14 from 112 on -- the ViT's patches are 14 px (1008 px = 72x72 patches).
"""

from __future__ import annotations

from vidtrack.errors import InputError

__all__ = ["IMAGE_SIZE_RULES", "check_image_size"]

# family -> (step, smallest, examples, why)
IMAGE_SIZE_RULES: dict[str, tuple[int, int, str, str]] = {
    "sam2": (32, 64, "512 or 1024", "SAM 2.1's Hiera trunk downsamples by 32"),
    "edgetam": (256, 256, "512 or 1024", "EdgeTAM's perceiver cuts the S/16 memory map into 16x16 windows"),
    "sam3-tracker": (14, 112, "504 or 1008", "the SAM 3 tracker's ViT has 14 px patches"),
}


def check_image_size(value: object, backend: str = "sam2", what: str = "image size") -> None:
    """Raise one :class:`InputError` line when ``value`` (None = the checkpoint's own size) does not fit
    ``backend``'s rule (:data:`IMAGE_SIZE_RULES`)."""
    if value is None:
        return
    step, smallest, examples, why = IMAGE_SIZE_RULES.get(backend, IMAGE_SIZE_RULES["sam2"])
    if isinstance(value, bool) or not isinstance(value, int) or value < smallest or value % step:
        raise InputError(f"{what} must be a multiple of {step} from {smallest} on for {backend} (e.g. {examples}: "
                         f"{why}); got {value!r}")
