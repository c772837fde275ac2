"""Generated training photos: scenes and photo backgrounds (``scenes``), drawn cars per position
(``cars``) and dealer banners (``banners``). The public names below are the generator's API."""

from .scenes import (
    OTHER,
    POSITIONS,
    SIZES,
    Sample,
    photos_in,
    render,
    render_sample,
    samples,
    to_jpeg,
    write_calibration_set,
    write_dataset,
    write_photo_testset,
)

__all__ = [
    "OTHER",
    "POSITIONS",
    "SIZES",
    "Sample",
    "photos_in",
    "render",
    "render_sample",
    "samples",
    "to_jpeg",
    "write_calibration_set",
    "write_dataset",
    "write_photo_testset",
]
