"""The resize cache: sizes, idempotence, interruption, path swapping, and the prepare entry point."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma_lit.data.cache import TEMP_SUFFIX, cached_path, prepare_cache, use_cache
from melanoma_lit.data.images import load_rgb
from melanoma_lit.data.table import normalise_table
from melanoma_lit.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SIDE = 64
SOURCE = "gen"


def _picture(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, asymmetric picture: a wrong rotation or a scrambled resize shows in its pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    red = 255 * x / max(width - 1, 1)
    green = 255 * (y / max(height - 1, 1)) ** 2
    blue = np.full_like(red, rng.integers(0, 256))
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))


def _table(paths: list[Path], source: str = SOURCE) -> pd.DataFrame:
    frame = pd.DataFrame({"image_id": [p.stem for p in paths], "path": [str(p) for p in paths], "source": source})
    return normalise_table(frame, [])


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _cache_files(cache: Path) -> list[Path]:
    """The cached images: every file but the lock each side's writer holds (one per side, checked here)."""
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    locks = [p for p in files if p.parent == cache / "resized" and p.suffix == ".lock"]
    assert all((p.parent / p.name.removeprefix(".").removesuffix(".lock")).is_dir() for p in locks)
    return [p for p in files if p not in locks]


@pytest.fixture
def originals(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """30 decodable images of every awkward kind, 2 corrupt files: (folder, good paths, corrupt paths)."""
    folder = tmp_path / "originals"
    folder.mkdir()
    sizes = [(40, 30), (64, 64), (64, 200), (100, 80), (300, 200), (200, 300), (640, 480), (1024, 768), (257, 65)]
    good = []
    for index in range(26):
        width, height = sizes[index % len(sizes)]
        path = folder / f"img_{index:02d}.jpg"
        _picture(width, height, index).save(path, quality=90)
        good.append(path)
    _picture(3000, 2000, 100).save(folder / "huge.jpg", quality=90)
    _picture(500, 400, 101).convert("L").save(folder / "gray.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait after a 90 degree turn
    _picture(400, 200, 102).save(folder / "rotated.jpg", quality=90, exif=exif)
    rgba = _picture(50, 40, 103).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    good += [folder / name for name in ("huge.jpg", "gray.jpg", "rotated.jpg", "alpha.png")]
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    whole = (folder / "img_07.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return folder, good, [folder / "garbage.jpg", folder / "truncated.jpg"]


def _expected_shape(original: np.ndarray, side: int) -> tuple[int, int]:
    height, width = original.shape[:2]
    scale = min(1.0, side / min(height, width))
    return round(height * scale), round(width * scale)


def test_prepare_writes_every_image_at_side_and_collects_corrupt_files(originals, tmp_path):
    folder, good, corrupt = originals
    before = _snapshot(folder)
    cache = tmp_path / "cache"
    report = prepare_cache(_table(good + corrupt), cache, SIDE, workers=2, progress=True)

    assert (report.total, report.written, report.skipped) == (32, 30, 0)
    assert sorted(path for path, _ in report.corrupt) == sorted(map(str, corrupt))
    assert all("cannot decode" in reason for _, reason in report.corrupt)
    assert report.images_per_second > 0
    for path in good:
        original = load_rgb(path)
        cached = load_rgb(cached_path(cache, SIDE, SOURCE, path.stem))
        assert cached.shape[:2] == _expected_shape(original, SIDE), path.name
        same_size = np.asarray(Image.fromarray(original).resize(cached.shape[1::-1], Image.Resampling.BOX))
        assert np.abs(same_size.astype(int) - cached.astype(int)).mean() < 6, path.name
    assert load_rgb(cached_path(cache, SIDE, SOURCE, "rotated")).shape[:2] == (128, 64)
    assert filecmp.cmp(folder / "img_00.jpg", cached_path(cache, SIDE, SOURCE, "img_00"), shallow=False)
    assert len(_cache_files(cache)) == 30
    assert _snapshot(folder) == before


def test_second_run_writes_nothing_and_leaves_files_untouched(originals, tmp_path):
    _, good, corrupt = originals
    table = _table(good + corrupt)
    prepare_cache(table, tmp_path / "cache", SIDE, workers=1, progress=False)
    before = _snapshot(tmp_path / "cache")

    again = prepare_cache(table, tmp_path / "cache", SIDE, workers=2, progress=False)

    assert (again.written, again.skipped, len(again.corrupt)) == (0, 30, 2)
    assert _snapshot(tmp_path / "cache") == before


def test_leftovers_of_an_interrupted_run_are_removed_and_the_run_completes(originals, tmp_path):
    _, good, _ = originals
    table = _table(good)
    cache = tmp_path / "cache"
    prepare_cache(table, cache, SIDE, workers=1, progress=False)
    first, second, third = (cached_path(cache, SIDE, SOURCE, p.stem) for p in good[:3])
    first.unlink()
    first.with_name(f"{first.name}.4242{TEMP_SUFFIX}").write_bytes(good[0].read_bytes()[:100])
    half = second.read_bytes()
    second.unlink()
    second.with_name(f"{second.name}.4243{TEMP_SUFFIX}").write_bytes(half[: len(half) // 2])
    third.write_bytes(b"")  # renamed into place, but the data never reached the disk

    report = prepare_cache(table, cache, SIDE, workers=1, progress=False)

    assert (report.written, report.skipped, report.corrupt) == (3, len(good) - 3, [])
    assert not list(cache.rglob(f"*{TEMP_SUFFIX}"))
    assert len(_cache_files(cache)) == len(good)
    for path in _cache_files(cache):
        with Image.open(path) as image:
            image.load()


def test_a_killed_run_leaves_only_whole_files_and_the_rerun_finishes(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    picture = _picture(480, 360, 0)
    for index in range(200):
        picture.save(folder / f"img_{index:03d}.jpg", quality=90)
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import pandas as pd
        from melanoma_lit.data.cache import prepare_cache
        from melanoma_lit.data.table import normalise_table
        paths = sorted(Path({str(folder)!r}).glob("*.jpg"))
        table = normalise_table(pd.DataFrame({{"image_id": [p.stem for p in paths], "path": [str(p) for p in paths],
                                               "source": "many"}}), [])
        prepare_cache(table, {str(cache)!r}, 300, workers=2, progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    output = cache / "resized" / "s300" / "many"
    wait_for_cached_images(process, output, 10, timeout=120)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, pool workers included, as a scheduler would
    process.wait()
    _wait_until_gone(process.pid)
    finished = sorted(p for p in output.iterdir() if p.suffix == ".jpg")
    assert 10 <= len(finished) < 200, "the run was not caught half-way"

    report = prepare_cache(_table(sorted(folder.glob("*.jpg")), "many"), cache, 300, workers=2)

    assert (report.skipped, report.written, report.corrupt) == (len(finished), 200 - len(finished), [])
    assert not list(output.glob(f"*{TEMP_SUFFIX}"))
    for path in sorted(output.iterdir()):
        assert load_rgb(path).shape == (300, 400, 3), path.name


def wait_for_cached_images(process: subprocess.Popen, folder: Path, count: int, timeout: float) -> None:
    """Until ``folder`` holds ``count`` finished images, the process ends or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if folder.is_dir() and sum(1 for path in folder.iterdir() if path.suffix == ".jpg") >= count:
            return
        time.sleep(0.01)


def _wait_until_gone(group: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_use_cache_swaps_only_cached_paths_preferring_the_smallest_sufficient_side(originals, tmp_path):
    _, good, _ = originals
    table = _table(good)
    cache = tmp_path / "cache"
    prepare_cache(table.iloc[:10], cache, SIDE, workers=1, progress=False)
    prepare_cache(table.iloc[5:20], cache, 2 * SIDE, workers=1, progress=False)
    original_paths = table["path"].copy()

    swapped, count = use_cache(table, cache, SIDE)

    assert count == 20
    assert table["path"].equals(original_paths)
    expected = [str(cached_path(cache, SIDE, SOURCE, p.stem)) for p in good[:10]]
    expected += [str(cached_path(cache, 2 * SIDE, SOURCE, p.stem)) for p in good[10:20]]
    assert swapped["path"].tolist() == expected + original_paths.tolist()[20:]
    assert use_cache(table, cache, SIDE + 1)[1] == 15
    assert use_cache(table, cache, 2 * SIDE + 1)[1] == 0
    assert use_cache(table.assign(source="other"), cache, SIDE)[1] == 0
    assert use_cache(table, tmp_path / "no_cache", SIDE)[1] == 0


def test_ids_that_are_not_file_names_get_distinct_files_inside_the_cache(originals, tmp_path):
    _, good, _ = originals
    ids = ["folder:Train/melanoma/a.jpg", "folder:Train/nevus/a.jpg", "../../escape", "ISIC_0000001"]
    table = normalise_table(pd.DataFrame({"image_id": ids, "path": [str(p) for p in good[:4]], "source": "folder"}), [])
    cache = tmp_path / "cache"
    targets = [cached_path(cache, SIDE, "folder", image_id) for image_id in ids]

    assert len(set(targets)) == 4
    assert all(t.parent == cache / "resized" / f"s{SIDE}" / "folder" for t in targets)
    assert targets[3].name == "ISIC_0000001.jpg"
    assert prepare_cache(table, cache, SIDE, workers=1, progress=False).written == 4
    assert use_cache(table, cache, SIDE)[0]["path"].tolist() == [str(t) for t in targets]


def test_a_cache_that_would_write_into_the_originals_folder_is_refused(tmp_path):
    cache = tmp_path / "data"
    folder = cache / "resized" / f"s{SIDE}" / SOURCE
    folder.mkdir(parents=True)
    paths = [folder / f"img_{i}.jpg" for i in range(3)]
    for index, path in enumerate(paths):
        _picture(300, 200, index).save(path)
    before = _snapshot(cache)

    with pytest.raises(ConfigError, match=r"paths\.cache_dir"):
        prepare_cache(_table(paths), cache, SIDE, workers=1, progress=False)
    assert _snapshot(cache) == before


@pytest.mark.parametrize(("side", "workers", "quality"), [(8, 1, 95), (SIDE, 0, 95), (SIDE, 1, 0), (SIDE, 1, 101)])
def test_impossible_options_are_config_errors(tmp_path, side, workers, quality):
    _picture(300, 200, 0).save(tmp_path / "one.jpg")
    with pytest.raises(ConfigError):
        prepare_cache(_table([tmp_path / "one.jpg"]), tmp_path / "cache", side, workers=workers, quality=quality)
    assert not (tmp_path / "cache").exists()


def _isic2017_table(shared_data: Path) -> pd.DataFrame:
    root = shared_data / "isic2017"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return _table(sorted(root.glob("*/*.jpg")), "isic2017")


def _check_real_cache(table: pd.DataFrame, cache: Path) -> None:
    before = _snapshot(Path(table["path"].iloc[0]).parents[1])
    report = prepare_cache(table, cache, 224, progress=False)
    assert (report.total, report.written, report.skipped, report.corrupt) == (len(table), len(table), 0, [])
    for image_id in table["image_id"].iloc[:: max(1, len(table) // 20)]:
        assert load_rgb(cached_path(cache, 224, "isic2017", image_id)).shape == (224, 224, 3)
    again = prepare_cache(table, cache, 224, progress=False)
    assert (again.written, again.skipped) == (0, len(table))
    assert use_cache(table, cache, 224)[1] == len(table)
    assert _snapshot(Path(table["path"].iloc[0]).parents[1]) == before


def test_real_isic2017_all_images(shared_data, tmp_path):
    table = _isic2017_table(shared_data)
    assert len(table) == 2750
    _check_real_cache(table, tmp_path / "cache")


@pytest.fixture
def compose_prepare(compose_config, tmp_path: Path):
    return lambda *overrides: compose_config("prepare", f"paths.cache_dir={tmp_path / 'cache'}", *overrides)


def test_prepare_config_composes_like_train(compose_prepare):
    cfg = compose_prepare("data=isic2017", "data.root=/somewhere/isic2017", "backbone=densenet201")

    assert cfg.task_name == "prepare"
    assert (cfg.data.name, cfg.data.sources[0].root) == ("isic2017", "/somewhere/isic2017")
    assert cfg.backbone.name == "densenet201"
    assert (cfg.prepare.side, cfg.prepare.sizes, cfg.prepare.workers, cfg.prepare.quality) == (None, None, None, 95)


@pytest.mark.parametrize(
    ("overrides", "side"),
    [
        ((), 280),
        (("backbone=inception_v3",), 374),
        (("data.input_size=384",), 480),
        (("prepare.sizes=[224,299]",), 374),
        (("backbone=inception_v3", "prepare.side=300"), 300),
    ],
)
def test_the_cache_side_comes_from_side_sizes_or_backbone(compose_prepare, overrides, side):
    from melanoma_lit.prepare import resolve_side

    assert resolve_side(compose_prepare(*overrides)) == side


def test_side_and_sizes_together_are_a_config_error(compose_prepare):
    from melanoma_lit.prepare import resolve_side

    with pytest.raises(ConfigError, match="not both"):
        resolve_side(compose_prepare("prepare.side=300", "prepare.sizes=[224]"))


def test_run_prepare_caches_the_configured_data_and_writes_its_report(compose_prepare, tmp_path):

    from melanoma_lit.data.build import DataSpec, load_pool
    from melanoma_lit.prepare import run_prepare

    cfg = compose_prepare("data=synthetic", "data.synthetic.n=40", "data.synthetic.size=96", "prepare.side=64")
    report = run_prepare(cfg, progress=False)

    assert (report.total, report.written, report.skipped, report.corrupt) == (40, 40, 0, [])
    assert json.loads((tmp_path / "run" / "prepare.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    pool, _ = load_pool(DataSpec.from_config(cfg.data))
    swapped, count = use_cache(pool, tmp_path / "cache", 64)
    assert count == 40
    assert all(load_rgb(path).shape == (64, 64, 3) for path in swapped["path"])
    assert run_prepare(cfg, progress=False).skipped == 40


def test_the_entry_point_prints_a_summary_and_writes_prepare_json(compose_prepare, tmp_path):
    command = [
        sys.executable,
        "-m",
        "melanoma_lit.prepare",
        "data=synthetic",
        "data.synthetic.n=30",
        "data.synthetic.size=96",
        "prepare.side=48",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "images/s" in result.stdout
    assert "written" in result.stdout

    assert json.loads((tmp_path / "run" / "prepare.json").read_text())["written"] == 30


@pytest.mark.slow
def test_run_prepare_on_real_isic2017_with_its_test_set(compose_prepare, shared_data):
    from melanoma_lit.prepare import run_prepare

    root = shared_data / "isic2017"
    cfg = compose_prepare("data=isic2017", f"data.root={root}", "data.test=isic2017_test", "prepare.side=224")
    report = run_prepare(cfg, progress=False)

    assert (report.total, report.written, report.corrupt) == (2750, 2750, [])
