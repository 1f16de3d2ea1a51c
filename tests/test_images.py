"""Decoding: every mode and orientation a dermoscopy folder holds loads as RGB uint8; bad files name themselves."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma_lit.data.images import load_rgb
from melanoma_lit.errors import DataError
from tests.conftest import REPO_ROOT


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA"])
def test_modes_load_as_rgb(tmp_path: Path, mode: str) -> None:
    suffix = ".jpg" if mode in ("L", "CMYK") else ".png"
    path = _save(Image.new(mode, (40, 30)), tmp_path / f"x{suffix}")
    array = load_rgb(path)
    assert array.shape == (30, 40, 3) and array.dtype == np.uint8


def test_sixteen_bit_png_scales_to_eight_bits(tmp_path: Path) -> None:
    data = np.full((10, 12), 65535, dtype=np.uint16)
    data[:, :6] = 0
    path = _save(Image.fromarray(data), tmp_path / "deep.png")
    array = load_rgb(path)
    assert array.shape == (10, 12, 3)
    assert array[0, 0].tolist() == [0, 0, 0] and array[0, -1].tolist() == [255, 255, 255]


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = _save(image, tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(path).shape == (40, 20, 3)


@pytest.fixture(scope="module")
def huge_original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JPEG the size of the largest ISIC 2017 originals, 6688x4439 (89 MB decoded)."""
    image = Image.new("RGB", (6688, 4439), (120, 80, 60))
    return _save(image, tmp_path_factory.mktemp("huge") / "huge.jpg", quality=50)


def test_huge_original_decodes_reduced(huge_original: Path) -> None:
    """A 6688x4439 ISIC 2017 original decodes at 1/8 scale when a 300 px shorter side suffices."""
    assert load_rgb(huge_original, min_side=300).shape == (555, 836, 3)
    assert load_rgb(huge_original, min_side=556).shape == (1110, 1672, 3)  # 1/8 would be too small: 1/4


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux's /proc")
def test_huge_original_decodes_within_a_few_megabytes(huge_original: Path) -> None:
    """Peak resident memory of each decode, in a fresh process: a loader worker with a batch of originals stays
    small, where a full decode costs hundreds of megabytes."""
    script = textwrap.dedent(
        f"""
        from melanoma_lit.data.images import load_rgb
        def kib(key):
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
        for side in (300, None):
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # the peak (VmHWM) starts again from the current size
            before = kib("VmRSS")
            load_rgb({str(huge_original)!r}, min_side=side)
            print(kib("VmHWM") - before)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    reduced_kib, full_kib = map(int, result.stdout.split())
    assert reduced_kib < 16 * 1024 < 85 * 1024 < full_kib, (reduced_kib, full_kib)


@pytest.mark.parametrize(
    "content", [b"", b"this is not an image", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"], ids=["empty", "text", "truncated"]
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ISIC_0000001.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"ISIC_0000001\.jpg"):
        load_rgb(path)


def test_truncated_real_jpeg_raises(tmp_path: Path) -> None:
    good = _save(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), tmp_path / "good.jpg"
    )
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.jpg.*corrupt"):
        load_rgb(cut)


def test_missing_file_says_how_to_skip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="allow_missing"):
        load_rgb(tmp_path / "absent.jpg")
