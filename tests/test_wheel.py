"""The wheel carries the Hydra configs: built and installed outside the checkout, the commands compose from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from melanoma_lit import cli
from tests.conftest import CONF_DIR, REPO_ROOT

# What the build reads; copied, so that the build leaves no build/ or *.egg-info in the checkout and no stale
# build/lib of an earlier build can slip into the wheel.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "melanoma_lit", "conf", "hydra_plugins")

COMMANDS = [
    ["melanoma_lit.train", "--cfg", "job", "optimizer.lr=0.0123"],
    ["melanoma_lit.evaluate", "--cfg", "job", "ckpt=run/best.ckpt"],
    ["melanoma_lit.predict", "--cfg", "job", "ckpt=run/best.ckpt", "input=new_images"],
    ["melanoma_lit.train", "optimizer.lrr=0.1"],  # the hint composes the configs again (cli.unknown_key_hint)
]

# Each command's module run as `python -m` runs it, all in one interpreter so that torch is imported once.
RUNNER = """
import contextlib, io, json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
import melanoma_lit.cli

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = list(argv)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code
    GlobalHydra.instance().clear()
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps({"package": melanoma_lit.__file__, "config_dir": melanoma_lit.cli.CONFIG_DIR, "results": results}))
"""


def _pip(*arguments: str, cwd: Path) -> None:
    """pip of this environment, offline: the build uses its setuptools and wheel (the dev extra)."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *arguments, "--no-index"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO_ROOT / name, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source), cwd=root)
    (built,) = (root / "dist").glob("melanoma_lit-*.whl")
    return built


def test_the_wheel_holds_every_config_and_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"melanoma_lit/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert configs, CONF_DIR
    assert configs == {n for n in names if n.startswith("melanoma_lit/conf/")}
    packages = (REPO_ROOT / "melanoma_lit", REPO_ROOT / "hydra_plugins")  # the second: hydra/launcher=slurm's name
    modules = {p.relative_to(REPO_ROOT).as_posix() for package in packages for p in package.rglob("*.py")}
    assert modules == {n for n in names if n.endswith(".py")}  # setup.py's package list misses no subpackage


def test_commands_compose_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(site), str(wheel), cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(COMMANDS)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(site), report["package"]
    assert Path(report["config_dir"]) == site / "melanoma_lit" / "conf"
    train, evaluate, predict, typo = report["results"]
    for result in (train, evaluate, predict):
        assert result["code"] in (0, None), result["stderr"]
    assert "task_name: train" in train["stdout"]
    assert "lr: 0.0123" in train["stdout"]
    assert "scheduler:" in train["stdout"]  # a config group, read from the wheel's subfolders
    assert "task_name: evaluate" in evaluate["stdout"]
    assert "ckpt: run/best.ckpt" in evaluate["stdout"]
    assert "task_name: predict" in predict["stdout"]
    assert "input: new_images" in predict["stdout"]
    assert typo["code"] == 1
    assert "did you mean optimizer.lr?" in typo["stderr"]


def test_a_checkout_reads_its_own_conf() -> None:
    """An editable install or the source folder on the path: edits to conf/ take effect without reinstalling."""
    assert Path(cli.CONFIG_DIR) == CONF_DIR
    assert not (REPO_ROOT / "melanoma_lit" / "conf").exists()  # conf/ lives once, beside the package
