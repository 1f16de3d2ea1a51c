"""Jobs of a sweep that start together on one empty cache: each shared file is made once, and every job uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CONF_DIR

# One sweep job's data set-up, as train and prepare do it: the synthetic set, the folds file, the resize cache.
JOB = """
import json, logging, sys, time
from pathlib import Path
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from melanoma_lit.data.build import DataSpec, build_splits
from melanoma_lit.prepare import run_prepare

conf_dir, cache, out, go = sys.argv[1:5]
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
    cfg = compose("prepare", overrides=[
        "data=synthetic", "data.synthetic.n=40", "data.synthetic.size=48", f"paths.cache_dir={cache}",
        "prepare.side=32", "prepare.workers=1",
    ])
with open_dict(cfg):
    cfg.paths.output_dir = out
Path(out).mkdir(parents=True)
while not Path(go).exists():  # the barrier: every job starts its work at the same moment
    time.sleep(0.005)
splits = build_splits(DataSpec.from_config(OmegaConf.to_container(cfg.data, resolve=True)))
report = run_prepare(cfg, progress=False)
print(json.dumps({"folds_file": splits.summary["folds_file"], "written": report.written, "total": report.total}))
"""


def test_four_jobs_started_together_share_the_synthetic_set_folds_and_cache(tmp_path: Path) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(CONF_DIR.parent)}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(CONF_DIR), str(cache), str(tmp_path / f"job{i}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(4)
    ]
    while not all((tmp_path / f"job{i}").exists() for i in range(4)):  # all imported and composed
        assert all(job.poll() is None for job in jobs), [job.communicate() for job in jobs]
        time.sleep(0.05)
    go.touch()
    finished = [job.communicate(timeout=600) for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4, [err[-2000:] for _, err in finished]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in finished]
    logs = "".join(err for _, err in finished)

    assert logs.count("generating 40 synthetic images") == 1
    assert logs.count("-fold split of") == 1  # the folds file is written once ...
    folds = {Path(result["folds_file"]).read_bytes() for result in results}
    assert len({result["folds_file"] for result in results}) == 1 and len(folds) == 1  # ... and read by all
    assert sorted(result["written"] for result in results) == [0, 0, 0, 40]  # each image resized once
    assert {result["total"] for result in results} == {40}
    assert logs.count("another process is creating") >= 3  # the other jobs waited, they did not redo the work
