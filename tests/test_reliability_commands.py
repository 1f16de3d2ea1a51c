"""Misuse of the commands, by category (issue 18): every bad value or path stops at once with one paragraph and
exit code 2, no traceback, and nothing written or lost on disk.

Most cases call the commands' Hydra entry points in this process (``invoke``: the same ``hydra.main`` a user
runs, without a torch import per case); a few go through the real command line (``run_command``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from melanoma_lit.errors import ConfigError
from melanoma_lit.runs.checks import RULES, check_config
from tests.conftest import run_command

COMMANDS = ("train", "evaluate", "predict")
# Values that no numeric knob accepts (besides the out-of-range ones per rule below).
NONSENSE = (math.nan, math.inf, -math.inf, 1e30, -7, "abc", True, [1, 2])
# Knobs where 0 is nonsensical too (the others read 0 as "off").
ZERO_IS_NONSENSE = (
    "data.batch_size",
    "data.eval_batch_size",
    "data.input_size",
    "data.num_folds",
    "data.synthetic.n",
    "data.synthetic.size",
    "model.tta",
    "optimizer.lr",
    "optimizer.layer_decay",
    "scheduler.factor",
    "trainer.max_epochs",
    "trainer.accumulate_grad_batches",
    "trainer.log_every_n_steps",
    "tta",
    "batch_size",
)


def invoke(command: str, *arguments: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``python -m melanoma_lit.<command> ARGUMENTS`` in this process: its exit code and stderr."""
    import importlib

    module = importlib.import_module(f"melanoma_lit.{command}")
    argv, sys.argv = sys.argv, [f"melanoma_lit.{command}", *arguments]
    GlobalHydra.instance().clear()
    capsys.readouterr()
    try:
        module.run(module.main, command)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


def assert_one_paragraph(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    text = err.strip()
    assert text.startswith("Error: ") and "\n" not in text, err
    for part in expected:
        assert part in text, (part, text)


def numeric_knobs(cfg) -> list[str]:
    return [key for key, rule in RULES.items() if rule.kind in ("int", "float") and _present(cfg, key)]


def _present(cfg, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return node is not None and leaf in node


# --- 1. config values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_numeric_knob_refuses_nonsense(compose_config, command: str) -> None:
    """Each numeric knob of the command, set to 0 (where 0 means nothing), negative, nan, +-inf, huge, a word, a
    bool or a list: a ConfigError naming the key and value, never another exception, never accepted."""
    overrides = ("ckpt=x.ckpt", "input=x") if command == "predict" else ("ckpt=x.ckpt",) * (command == "evaluate")
    cfg = compose_config(command, *overrides)
    check_config(cfg, command)  # the defaults pass
    knobs = numeric_knobs(cfg)
    assert len(knobs) >= (40 if command == "train" else 3), knobs
    for key in knobs:
        values = NONSENSE + ((0,) if key in ZERO_IS_NONSENSE else ())
        for value in values:
            broken = cfg.copy()
            OmegaConf.update(broken, key, value, merge=False)
            with pytest.raises(ConfigError) as caught:
                check_config(broken, command)
                pytest.fail(f"{key}={value!r} accepted")
            message = str(caught.value)
            assert message.startswith(f"{key}=") and " must be " in message, message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(sorted(k for k, r in RULES.items() if r.kind in ("int", "float"))),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12), st.text()),
)
@example(key="trainer.limit_predict_batches", value=1.5)  # found by a random run: a fraction is at most 1
@example(key="trainer.limit_predict_batches", value=2.0)
def test_a_numeric_knob_takes_exactly_its_range(key: str, value) -> None:
    """Any value: accepted iff a finite number of the right kind inside the knob's range, else a ConfigError."""
    rule = RULES[key]
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, value, force_add=True)
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    inside = number and (rule.kind == "float" or float(value).is_integer())
    if inside and rule.low is not None:
        inside = value > rule.low if rule.open_low else value >= rule.low
    if inside and rule.high is not None:
        inside = value < rule.high if rule.open_high else value <= rule.high
    if inside and key.startswith("trainer.limit_") and value > 1:  # above 1: a number of batches, so whole
        inside = float(value).is_integer()
    if inside:
        check_config(cfg, "train")
    else:
        with pytest.raises(ConfigError):
            check_config(cfg, "train")


def test_enumerated_knobs_and_relations(compose_config) -> None:
    cfg = compose_config("train")
    for key, value in (
        ("optimizer.name", "adamm"),
        ("scheduler.name", "step"),
        ("model.head.pool", "mean"),
        ("monitor_mode", "maximum"),
        ("trainer.accelerator", "gpux"),
        ("data.pin_memory", "yes"),
        ("augment.scale", [0.0, 1.0]),
        ("augment.ratio", [2.0, 1.0]),
        ("data.fold", -1),
        ("data.fold", "first"),
        ("trainer.min_epochs", 30),
    ):
        broken = cfg.copy()
        OmegaConf.update(broken, key, value, merge=False)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_config(broken, "train")
    check_config(compose_config("train", "optimizer=sgd", "scheduler=onecycle", "optimizer.name=AdamW"), "train")
    check_config(compose_config("train", "debug=fast_dev_run", "data.fold=[0,1]"), "train")


def test_bad_values_stop_the_commands_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's members and others, through each command's Hydra entry point: exit 2, one paragraph, and no
    run folder made."""
    run_dir = tmp_path / "run"
    cases = [
        ("train", ["data.batch_size=0"], "data.batch_size=0"),
        ("train", ["data.num_workers=-1"], "data.num_workers=-1"),
        ("train", ["optimizer.lr=nan"], "optimizer.lr=nan"),
        ("train", ["trainer.max_epochs=0"], "trainer.max_epochs=0"),
        ("train", ["data.input_size=0"], "data.input_size=0"),
        ("train", ["optimizer.weight_decay=-1e-4"], "optimizer.weight_decay=-0.0001"),
        ("train", ["augment.hflip=1.5"], "augment.hflip=1.5"),
        ("train", ["model.head.dropout=1"], "model.head.dropout=1"),
        ("train", ["trainer.accumulate_grad_batches=inf"], "trainer.accumulate_grad_batches=inf"),
        ("evaluate", ["ckpt=x.ckpt", "tta=0"], "tta=0"),
        ("evaluate", ["ckpt=x.ckpt", "data.batch_size=many"], "data.batch_size='many'"),
        ("predict", ["ckpt=x.ckpt", "input=x", "batch_size=-8"], "batch_size=-8"),
        ("predict", ["ckpt=x.ckpt", "input=x", "num_workers=1e9"], "num_workers="),
        ("predict", ["ckpt=x.ckpt", "input=x", "format=isic2016"], "format='isic2016'"),
        ("export", ["ckpt=x.ckpt", "tolerance=0"], "tolerance=0"),
        ("explain", ["ckpt=x.ckpt", "batch_size=0"], "batch_size=0"),
    ]
    for command, arguments, expected in cases:
        code, err = invoke(command, *arguments, f"hydra.run.dir={run_dir}", capsys=capsys)
        assert_one_paragraph(code, err, expected, "must be")
        assert not run_dir.exists(), (command, arguments)


def test_bad_values_through_the_real_command_line(tmp_path: Path) -> None:
    for command, arguments, expected in (
        ("train", ["optimizer.lr=inf"], "optimizer.lr=inf"),
        ("predict", ["ckpt=x.ckpt", "input=x", "batch_size=0"], "batch_size=0"),
    ):
        result = run_command(command, *arguments, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        assert_one_paragraph(result.returncode, result.stderr, expected)
        assert not (tmp_path / "run").exists()


# --- 2. paths ------------------------------------------------------------------------------------------------


def test_bad_paths_are_named_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unreadable checkpoints (truncated, text, not a training checkpoint) in every command that loads one, a
    run folder given to any of them, a missing ckpt=, and output paths that cannot be written."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"\xff\xd8 not really")
    whole = tmp_path / "whole.pt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text("these are my notes\n")
    plain = tmp_path / "plain.ckpt"
    torch.save([1, 2, 3], plain)
    run = tmp_path / "some-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_text("not a checkpoint")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")

    inference = {
        "evaluate": [],
        "predict": [f"input={images}"],
        "export": [],
        "explain": [f"input={images}"],
    }
    for ckpt, expected in (
        (truncated, "cannot be read"),
        (text, "cannot be read"),
        (plain, "not a melanoma_lit training checkpoint"),
        (run, "cannot be read"),  # a run folder: resolved the same way by every command
    ):
        for command, arguments in inference.items():
            out = tmp_path / f"out-{command}-{ckpt.stem}"
            code, err = invoke(command, f"ckpt={ckpt}", *arguments, f"hydra.run.dir={out}", capsys=capsys)
            assert_one_paragraph(code, err, "checkpoint", expected)
            left = sorted(
                p.name
                for p in out.rglob("*")
                if ".hydra" not in p.parts and p.suffix != ".log" and not p.name.startswith(".run.lock")
            )
            record = json.loads((out / "job.json").read_text())  # the job's record (SweepRecorder): a failed start
            assert record["status"] == "failed" and expected in record["error"], (command, record)
            left.remove("job.json")
            assert left == [], (command, ckpt, left)
    for command, arguments in inference.items():
        code, err = invoke(command, *arguments, f"hydra.run.dir={tmp_path / 'x'}", capsys=capsys)
        assert_one_paragraph(code, err, "ckpt is not set", "ckpt=<")
    code, err = invoke("predict", f"ckpt={text}", f"hydra.run.dir={tmp_path / 'y'}", capsys=capsys)
    assert_one_paragraph(code, err, "input is not set")

    unwritable = [f"hydra.run.dir={a_file / 'run'}", f"hydra.run.dir={Path('/proc/melanoma-lit-run')}"]
    for command in ("train", "evaluate", "prepare"):
        for argument in unwritable:
            extra = ["ckpt=x.ckpt"] if command == "evaluate" else []
            code, err = invoke(command, *extra, argument, capsys=capsys)
            assert_one_paragraph(code, err, "hydra.run.dir=", "Point hydra.run.dir at")
    code, err = invoke(
        "predict",
        f"ckpt={whole}",
        f"input={images}",
        f"predictions_file={a_file / 'p.csv'}",
        f"hydra.run.dir={tmp_path / 'z'}",
        capsys=capsys,
    )
    assert_one_paragraph(code, err, "predictions_file=", "is a file, not a folder")
    for command in ("export", "evaluate", "explain"):
        extra = [f"input={images}"] if command == "explain" else []
        code, err = invoke(
            command,
            f"ckpt={whole}",
            *extra,
            f"paths.output_dir={a_file / 'out'}",
            f"hydra.run.dir={tmp_path / 'w'}",
            capsys=capsys,
        )
        assert_one_paragraph(code, err, "paths.output_dir=", "is a file, not a folder")
    assert a_file.read_text() == "x"


# --- 4. never delete what is not ours -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["isic2019", "isic2017", "folder"])
def test_regenerating_a_synthetic_set_keeps_what_the_user_added(tmp_path: Path, layout: str) -> None:
    """Files added to a generated set (beside the CSVs, among the images, in a new subfolder, even one named like
    an image of the set's) stop a regeneration with their names, and nothing is deleted; the set alone is
    regenerated, its own files only."""
    from melanoma_lit.data.synthetic import COMPLETE_MARKER, ensure_synthetic, generate
    from melanoma_lit.errors import DataError

    out = tmp_path / "set"
    generate(out, n=6, size=32, layout=layout, workers=1, progress=False)
    images = sorted(p for p in out.rglob("*.jpg"))
    image_folder = images[0].parent
    added = [
        out / "my-notes.txt",
        image_folder / "ISIC_9999999.jpg",  # named like the generator's images, but not in its manifest
        out / "mine" / "deep" / "photo.png",
    ]
    for number, path in enumerate(added):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"user file {number}")
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        with pytest.raises(DataError) as caught:
            ensure_synthetic(out, n=4, size=32, layout=layout, seed=3, progress=False)
        assert path.relative_to(out).as_posix() in str(caught.value) and "nothing was deleted" in str(caught.value)
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        path.unlink()
    # without the additions: regenerated in place, and an empty folder of the user's is left alone
    (out / "mine" / "empty").mkdir()
    ensure_synthetic(out, n=4, size=32, layout=layout, seed=3, progress=False)
    assert len(list(out.rglob("*.jpg"))) == 4 and (out / COMPLETE_MARKER).is_file()
    assert (out / "mine" / "empty").is_dir()


# --- 3. one owner per run folder ------------------------------------------------------------------------------


def test_a_second_command_in_a_held_run_folder_stops_and_names_the_first(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real train holds its run folder: a train, evaluate or prepare started in it meanwhile stops at once,
    naming the first (PID, host) and writing nothing there; the first finishes as if alone."""
    import os
    import signal
    import socket
    import subprocess
    import time

    from tests.conftest import REPO_ROOT, SMALL_SYNTHETIC

    run = tmp_path / "shared-run"
    arguments = ["debug=fast_dev_run", "data.input_size=32", *SMALL_SYNTHETIC, f"paths.cache_dir={cache_dir}"]
    first = subprocess.Popen(
        [sys.executable, "-m", "melanoma_lit.train", *arguments, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    owner = run / ".run.lock.owner.json"
    try:
        deadline = time.monotonic() + 120
        while not owner.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # the first holds the folder for as long as the checks take
        assert owner.exists(), first.communicate()
        before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
        for command, extra in (("train", []), ("evaluate", ["ckpt=x.ckpt"]), ("prepare", [])):
            code, err = invoke(command, *extra, f"hydra.run.dir={run}", capsys=capsys)
            assert_one_paragraph(code, err, f"PID {first.pid} on {socket.gethostname()}", "in use by another command")
        result = run_command("train", "ckpt_path=last", f"hydra.run.dir={run}", cwd=tmp_path)
        assert_one_paragraph(result.returncode, result.stderr, f"PID {first.pid}")
        assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # once it has ended, the folder is free again (here: refused only because it holds a run)
    code, err = invoke("train", f"hydra.run.dir={run}", capsys=capsys)
    assert code == 2 and "in use" not in err


def test_resuming_with_another_config_or_label_set_is_one_clear_error(
    compose_train, tmp_path: Path, cache_dir: Path
) -> None:
    """``ckpt_path=last`` after changing what is trained lists the changed keys; run-time knobs may change; a
    checkpoint of another label set or backbone is refused by name, before any training."""
    from melanoma_lit.train import train

    tiny = ("debug=limit", "data.input_size=32", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1")
    first = compose_train(*tiny, "data.synthetic.n=96", "data.synthetic.size=64", "trainer.max_epochs=2")
    run = Path(first.paths.output_dir)
    train(first)
    (run / "metrics.json").unlink()  # as if it had been stopped before the end
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for changed, keys in (
        (["optimizer.lr=0.1"], "optimizer.lr: 0.0003 -> 0.1"),
        (["backbone=densenet201", "model.head.dropout=0.5"], "backbone.name"),
        (["data.synthetic.n=120"], "data.synthetic.n"),
    ):
        cfg = compose_train(*tiny, "data.synthetic.n=96", "data.synthetic.size=64", "ckpt_path=last", *changed)
        with pytest.raises(ConfigError, match="was trained with another config") as caught:
            train(cfg)
        assert keys in str(caught.value)
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot
    # run-time knobs (more epochs, workers, devices) may change
    more = compose_train(
        *tiny, "data.synthetic.n=96", "data.synthetic.size=64", "ckpt_path=last", "trainer.max_epochs=3"
    )
    assert set(train(more)) and (run / "config.resume-1.yaml").is_file()

    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run.rename(tmp_path / "first")
    for other, what in ((["data.classes=[MEL,NV]"], "data.classes"), (["backbone=resnet152"], "backbone.name")):
        cfg = compose_train(*tiny, "data.synthetic.n=96", "data.synthetic.size=64", f"ckpt_path={checkpoint}", *other)
        with pytest.raises(ConfigError, match=f"was trained with {what}="):
            train(cfg)
        assert not (tmp_path / "run" / "config.yaml").exists()


# --- 6. interrupts ---------------------------------------------------------------------------------------------


def test_ctrl_c_in_training_saves_and_says_how_to_resume(tmp_path: Path, cache_dir: Path) -> None:
    """A real train, Ctrl-C (SIGINT) once an epoch has ended: exit 130, no traceback, last.ckpt readable, the
    ckpt_path=last line, and no half-written file."""
    import os
    import signal
    import subprocess
    import time

    from melanoma_lit.runs.files import unreadable
    from tests.conftest import REPO_ROOT, SMALL_SYNTHETIC

    run = tmp_path / "run"
    arguments = ["debug=limit", "data.input_size=32", *SMALL_SYNTHETIC, f"paths.cache_dir={cache_dir}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "melanoma_lit.train", *arguments, "trainer.max_epochs=1000", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 130, err
    assert "Traceback" not in err + out
    assert f"Resume with ckpt_path=last hydra.run.dir={run}" in err + out
    assert unreadable(run / "checkpoints" / "last.ckpt") is None
    record = json.loads((run / "job.json").read_text())
    assert record["status"] == "interrupted" and record["reason"].startswith("SIGINT at epoch"), record
    assert [p for p in run.rglob("*") if p.name.endswith((".tmp", ".partial"))] == []


def test_ctrl_c_in_prepare_stops_its_worker_processes_quietly_and_the_rerun_finishes(tmp_path: Path) -> None:
    """Ctrl-C at the terminal reaches the whole process group, prepare's decoding workers included: exit 130, one
    paragraph (no worker traceback), only whole images in the cache, no temporary file, and the same command run
    again writes just the rest."""
    import os
    import signal
    import subprocess

    from PIL import Image

    from melanoma_lit.data.cache import TEMP_SUFFIX
    from tests.conftest import REPO_ROOT
    from tests.test_prepare import wait_for_cached_images

    images = tmp_path / "folder" / "Train" / "melanoma"
    images.mkdir(parents=True)
    for index in range(300):
        Image.new("RGB", (480, 360), (index % 256, 90, 120)).save(images / f"img_{index:03d}.jpg", quality=90)
    cache, run = tmp_path / "cache", tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "melanoma_lit.prepare",
        "data=folder",
        f"data.root={tmp_path / 'folder'}",
        "backbone.pretrained=false",
        "prepare.side=300",
        "prepare.workers=2",
        f"paths.cache_dir={cache}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [*command, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which the terminal's Ctrl-C signals as a whole
    )
    output = cache / "resized" / "s300" / "folder"
    wait_for_cached_images(process, output, 10, timeout=240)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    finished = sorted(path for path in output.iterdir() if path.suffix == ".jpg")
    assert len(finished) >= 10, "the run was not caught half-way"
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err and err.count("Error: interrupted (Ctrl-C)") == 1, err[-3000:]
    assert list(output.glob(f"*{TEMP_SUFFIX}")) == []
    for path in finished:
        with Image.open(path) as image:
            image.load()

    again = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path / 'again'}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((tmp_path / "again" / "prepare.json").read_text())
    assert (summary["skipped"], summary["written"]) == (len(finished), summary["total"] - len(finished)), summary
    assert sum(1 for path in output.iterdir() if path.suffix == ".jpg") == summary["total"]


def test_ctrl_c_in_any_command_exits_130_with_one_paragraph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while a command works (here: at its first long step): exit 130, one paragraph, no output file."""
    import melanoma_lit.data.synthetic.generator as generator
    import melanoma_lit.predict as predict

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "list_inputs", interrupted)
    monkeypatch.setattr(generator, "_render_all", interrupted)
    out = tmp_path / "p"
    code, err = invoke("predict", "ckpt=x.ckpt", f"input={tmp_path}", f"hydra.run.dir={out}", capsys=capsys)
    assert code == 130 and "Traceback" not in err and err.strip().startswith("Error: interrupted (Ctrl-C)"), err
    assert not (out / "predictions.csv").exists()
    code, err = invoke(
        "train", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 't'}", capsys=capsys
    )
    assert code == 130 and "Traceback" not in err and "ckpt_path=last" in err, err
    assert json.loads((tmp_path / "t" / "job.json").read_text())["status"] == "interrupted"


def _half_written_then_interrupted(owner: object, target: object, *args: object, **kwargs: object) -> None:
    """A writer that Ctrl-C stops half way through its file."""
    Path(str(target)).write_bytes(b"half a file")
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("command", "writer"),
    [("export", "torch.jit.save"), ("explain", "PIL.Image.Image.save"), ("evaluate", "pandas.DataFrame.to_csv")],
)
def test_ctrl_c_while_a_command_writes_leaves_no_half_file(
    command: str,
    writer: str,
    tiny_run: Path,
    synthetic_images: list[str],
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C in the middle of writing an output file (the exported model, an overlay, the predictions): exit 130,
    one paragraph, and neither the half file nor its temporary name is left."""
    import shutil

    from tests.conftest import SMALL_SYNTHETIC

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(synthetic_images[0], images)
    monkeypatch.setattr(writer, _half_written_then_interrupted)
    out = tmp_path / "out"
    arguments = {
        "export": ["format=torchscript"],
        "explain": [f"input={images}"],
        "evaluate": [*SMALL_SYNTHETIC, f"paths.cache_dir={cache_dir}", "data.num_workers=0"],
    }[command]
    code, err = invoke(
        command, f"ckpt={tiny_run}", *arguments, f"paths.output_dir={out}", f"hydra.run.dir={out}", capsys=capsys
    )
    assert code == 130 and "Traceback" not in err and err.strip().startswith("Error: interrupted (Ctrl-C)"), err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"half a file"]
    partial = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert written == [] and partial == [], (command, written, partial)


# --- 5. nothing silently skipped -------------------------------------------------------------------------------


def test_every_path_under_predict_input_is_predicted_or_listed_with_a_true_reason(
    tiny_run: Path, synthetic_images: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Images, corrupt ones, an unreadable one, other files, hidden ones, a broken link, a folder link and a folder
    that cannot be entered: each is a prediction row or an errors.csv row whose reason says what happened."""
    import os
    import shutil

    import pandas as pd
    from PIL import Image

    folder = tmp_path / "input"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(synthetic_images[0], folder / "good.jpg")
    shutil.copy(synthetic_images[1], folder / "sub" / "good2.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    shutil.copy(synthetic_images[2], folder / "locked.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.jpg").write_bytes(b"")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "closed").mkdir()
    shutil.copy(synthetic_images[3], folder / "closed" / "inside.jpg")

    locked, closed = str(folder / "locked.jpg"), str(folder / "closed")
    if os.geteuid() != 0:
        os.chmod(locked, 0)
        os.chmod(closed, 0)
    else:  # root reads anything: the file system's answer to another user, simulated
        real_open, real_scandir = Image.open, os.scandir

        def open_as_user(path, *args, **kwargs):
            if str(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real_open(path, *args, **kwargs)

        def scandir_as_user(path="."):
            if str(path) == closed:
                raise PermissionError(13, "Permission denied", closed)
            return real_scandir(path)

        monkeypatch.setattr(Image, "open", open_as_user)
        monkeypatch.setattr(os, "scandir", scandir_as_user)
    output = tmp_path / "out" / "predictions.csv"
    try:
        code, err = invoke(
            "predict",
            f"ckpt={tiny_run}",
            f"input={folder}",
            f"predictions_file={output}",
            "num_workers=0",
            f"hydra.run.dir={tmp_path / 'run'}",
            capsys=capsys,
        )
    finally:
        if os.geteuid() != 0:
            os.chmod(locked, 0o644)
            os.chmod(closed, 0o755)
    assert code == 0, err
    predicted = pd.read_csv(output)["image_name" if "image_name" in pd.read_csv(output) else "image"].tolist()
    assert sorted(predicted) == ["good", "sub/good2"]
    errors = pd.read_csv(output.with_name("predictions.errors.csv"))
    reasons = dict(zip(errors["path"], errors["reason"], strict=True))
    expected = {
        "corrupt.jpg": "cannot decode image",
        "locked.jpg": "permission denied",
        "notes.txt": "not an image file",
        ".DS_Store": "hidden file",
        ".cache": "hidden folder",
        "gone.jpg": "a broken link",
        "linked": "a link to a folder",
        "closed": "cannot enter it (permission denied)",
    }
    assert set(reasons) == {str(folder / name) for name in expected}, reasons
    for name, reason in expected.items():
        assert reason in reasons[str(folder / name)], (name, reasons[str(folder / name)])
    assert "corrupt" not in reasons[locked]
