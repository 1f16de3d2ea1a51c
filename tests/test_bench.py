"""The bench in its tiny preset on the CPU (library and CLI), its timing window, and the fast path it measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from melanoma_lit.bench import Window, autocast_dtype, run_bench
from melanoma_lit.errors import ConfigError, DataError
from melanoma_lit.train import train
from tests.conftest import REPO_ROOT, SMALL_SYNTHETIC

TINY = ("debug=bench_tiny", *SMALL_SYNTHETIC)
# debug=bench_tiny: batch 8 and 3 timed steps for training, eval batch 4 and 2 timed steps, 2 + 1 originals
EXPECTED_IMAGES = {"ceiling": 24, "loader": 24, "loop": 24, "validation": 8, "prediction": 8, "prepare": 3}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On a small runner shared with other jobs, OpenMP threads spinning against them make each CPU step ~10x
    slower; these tests check wiring and counts, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_report(report: dict[str, Any]) -> None:
    stages = report["stages"]
    assert set(EXPECTED_IMAGES) <= set(stages) <= {*EXPECTED_IMAGES, "ceiling_compiled"}
    for name, stage in stages.items():
        assert stage["images"] == EXPECTED_IMAGES[name.removesuffix("_compiled")], name
        assert stage["seconds"] > 0 and stage["images_per_second"] == pytest.approx(stage["images"] / stage["seconds"])
    ratio = stages["loop"]["images_per_second"] / stages["ceiling"]["images_per_second"]
    assert report["loop_to_ceiling"] == pytest.approx(ratio, rel=1e-12)
    on_cpu = report["setup"]["device"] == "cpu"
    assert (report["peak_gpu_memory_mib"] is None) == on_cpu
    assert report["setup"]["backbone"] == "resnet18" and report["setup"]["input_size"] == [32, 32]


def test_tiny_bench_times_every_stage_and_writes_bench_json(compose_config, tmp_path: Path) -> None:
    report = run_bench(compose_config("bench", *TINY), command="test")
    _check_report(report)
    assert report["compile_gain"] is None
    assert json.loads((tmp_path / "run" / "bench.json").read_text()) == report
    assert report["setup"]["optimizer"] == "adamw" and report["setup"]["data"]["train"] > 0


def test_bench_stages_times_only_the_stages_named(compose_config) -> None:
    report = run_bench(compose_config("bench", *TINY, "bench.stages=[loader]"))
    assert set(report["stages"]) == {"loader"} and report["stages"]["loader"]["images"] == EXPECTED_IMAGES["loader"]
    assert report["loop_to_ceiling"] is None
    with pytest.raises(ConfigError, match=r"bench\.stages=\['lodaer'\]"):
        run_bench(compose_config("bench", *TINY, "bench.stages=[lodaer]"))


def test_the_tiny_preset_shrinks_the_bench_knobs(compose_config) -> None:
    """Debug presets are merged inside train.yaml's defaults list: bench.yaml's own knobs must come before them."""
    full, tiny = compose_config("bench"), compose_config("bench", *TINY)
    assert (full.bench.steps, full.bench.warmup_steps, len(full.bench.originals)) == (50, 10, 2)
    assert (tiny.bench.steps, tiny.bench.warmup_steps, tiny.bench.eval_steps) == (3, 1, 2)
    assert [original.n for original in tiny.bench.originals] == [2, 1] and tiny.data.batch_size == 8
    assert full.task_name == tiny.task_name == "bench" and not full.callbacks  # callbacks=none: nothing to time


def test_cli_prints_the_numbers_it_writes(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [*TINY, f"paths.cache_dir={cache_dir}"]
    result = subprocess.run(
        [sys.executable, "-m", "melanoma_lit.bench", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "bench.json").read_text())
    _check_report(report)
    assert report["command"] == " ".join(["python -m melanoma_lit.bench", *overrides])
    for stage in report["stages"].values():
        assert f"{stage['images_per_second']:,.1f}" in result.stdout
    assert f"training loop / model ceiling: {report['loop_to_ceiling']:.3f}" in result.stdout


@pytest.mark.slow  # compiling forward and backward: about a minute on 2 CPU cores without a warm inductor cache
def test_compile_times_a_compiled_ceiling_and_reports_its_gain(compose_config) -> None:
    report = run_bench(compose_config("bench", *TINY, "bench.compile=true"))
    compiled, eager = (report["stages"][name]["images_per_second"] for name in ("ceiling_compiled", "ceiling"))
    assert report["stages"]["ceiling_compiled"]["images"] == EXPECTED_IMAGES["ceiling"]
    assert report["compile_gain"] == pytest.approx(compiled / eager, rel=1e-12)


def test_window_counts_only_the_steps_after_warm_up() -> None:
    window = Window(warmup=2, steps=3, device=torch.device("cpu"))
    assert [window.tick(images) for images in (100, 100, 1, 2, 3, 100)] == [False, False, False, False, True, True]
    timed = window.result()
    assert (timed.images, timed.steps) == (6, 3) and timed.seconds > 0


def test_a_window_that_never_closed_says_what_to_lower() -> None:
    window = Window(warmup=2, steps=3, device=torch.device("cpu"))
    window.tick(8)
    with pytest.raises(DataError, match=r"bench\.warmup_steps"):
        window.result()


def test_bad_knobs_and_untimed_precisions_are_refused(compose_config) -> None:
    with pytest.raises(ConfigError, match=r"bench\.steps=0"):
        run_bench(compose_config("bench", *TINY, "bench.steps=0"))
    with pytest.raises(ConfigError, match="16-mixed"):
        autocast_dtype("16-mixed")


def test_training_steps_read_nothing_back_from_the_device(compose_train, monkeypatch) -> None:
    """Reading a tensor's value (``.item()``) waits for the GPU's queue: once per step, the GPU idles between steps.

    Lightning turns progress-bar values into Python numbers after every batch, so a per-step value logged with
    ``prog_bar=True`` did exactly that. The optimisers' own ``.item()`` calls read CPU step counters, and the
    dataset draws the per-sample augmentation seed from the CPU RNG (in the loader's workers, here in-process).
    """
    steps = 8
    reads = []
    item = torch.Tensor.item

    def counted_item(tensor: torch.Tensor) -> Any:
        if not sys._getframe(1).f_globals.get("__name__", "").startswith(("torch.", "melanoma_lit.data.")):
            reads.append(tensor)
        return item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    cfg = compose_train(
        "debug=limit",
        "data.input_size=32",
        *SMALL_SYNTHETIC,
        "data.batch_size=4",
        "scheduler=none",
        f"trainer.limit_train_batches={steps}",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=100",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
    )
    train(cfg)
    assert len(reads) < steps / 4
