"""Decode any dermoscopy image file into an RGB uint8 array, cheaply and correctly oriented."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from melanoma_lit.errors import DataError

# Originals such as the 6688x4439 ISIC 2017 images are 30 megapixels; above this PIL
# refuses to open as a decompression bomb, which they are not.
Image.MAX_IMAGE_PIXELS = 200_000_000


def load_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Return an RGB uint8 HxWx3 array, EXIF-rotated.

    ``min_side`` lets JPEGs decode at a reduced scale (libjpeg DCT scaling) while keeping the
    shorter side at least that long: huge originals then cost a fraction of a full decode.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            # libjpeg decodes at 1/2, 1/4 or 1/8 (sides rounded up); PIL picks the largest reduction r with
            # size // request >= r, so the request is the reduced size rounded down
            fits = [r for r in (8, 4, 2) if min_side and math.ceil(min(width, height) / r) >= min_side]
            if image.format == "JPEG" and fits:
                image.draft("RGB", (width // fits[0], height // fits[0]))
            elif image.format == "JPEG" and image.mode in ("RGB", "L") and (decoded := _fast_jpeg(path)) is not None:
                return decoded
            ImageOps.exif_transpose(image, in_place=True)  # a copy only where the image is rotated
            return _to_rgb_array(image)
    except FileNotFoundError as error:
        raise DataError(
            f"{path}: image file not found. Re-download it, or set data.allow_missing=true to skip missing images."
        ) from error
    except PermissionError as error:
        raise DataError(
            f"{path}: cannot read the file: permission denied ({error.strerror}). The image may be fine: give this "
            "user read permission (chmod a+r), or run as a user who can read it."
        ) from error
    except IsADirectoryError as error:
        raise DataError(f"{path}: a folder, not an image file. Remove it from the image list.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: cannot decode image ({error}). The file is corrupt, truncated or not an image: "
            "re-download it, or remove it from the dataset."
        ) from error


def _fast_jpeg(path: str | Path) -> np.ndarray | None:
    """A whole RGB or gray JPEG through OpenCV, twice as fast as PIL on the small images a loader reads most (the
    resize cache's, ISIC 2018's), with the same pixels (both are libjpeg-turbo) and the EXIF turn applied; None
    where PIL must decide: a file not ending in the JPEG end marker (truncated?) or one OpenCV cannot decode."""
    data = np.fromfile(path, dtype=np.uint8)
    if data[-2:].tobytes() != _JPEG_END:
        return None
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


_JPEG_END = b"\xff\xd9"


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
