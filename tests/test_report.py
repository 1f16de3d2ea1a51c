"""The sweep report of a real 2 backbones x 3 folds multirun with a crashing fold, checked against the job outputs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the oracle only
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from melanoma_lit.analysis.cv import SUMMARY_METRICS, group_jobs, summarise
from melanoma_lit.analysis.jobs import COMPLETED, Job, expected_jobs
from melanoma_lit.analysis.render import to_html, to_markdown
from melanoma_lit.analysis.sweep_report import ENSEMBLE_LABEL, write_report
from melanoma_lit.data.taxonomy import ISIC_CLASSES
from melanoma_lit.metrics.isic import compute_metrics
from melanoma_lit.report import main as report_main
from tests.test_sweep import TINY, run_train

BACKBONES = ("resnet18", "resnet10t")
FOLDS = (0, 1, 2)
CLASSES = list(ISIC_CLASSES)


@pytest.fixture(scope="module")
def cv_sweep(tmp_path_factory, cache_dir) -> tuple[Path, object]:
    """One multirun for the module: every backbone on folds 0-2, plus fold 7, which does not exist and crashes."""
    root = tmp_path_factory.mktemp("cv")
    sweep_dir = root / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep_dir}", *TINY, f"backbone.name={','.join(BACKBONES)}", "data.fold=0,1,2,7"]
    return sweep_dir, run_train(args, cache_dir, root)


@pytest.fixture(scope="module")
def report(cv_sweep) -> dict:
    return json.loads((cv_sweep[0] / "report" / "report.json").read_text())


def _completed(report: dict, backbone: str) -> list[dict]:
    return [j for j in report["jobs"] if j["configuration"] == backbone and j["status"] == COMPLETED]


def _stacked_predictions(report: dict, backbone: str) -> pd.DataFrame:
    return pd.concat([pd.read_csv(Path(j["dir"]) / "val_predictions.csv") for j in _completed(report, backbone)])


def _truth(cache_dir: Path) -> pd.DataFrame:
    """The synthetic set's own ground truth, read directly (every label known)."""
    folder = cache_dir / "synthetic" / "isic2019-n96-px64-seed0"
    return pd.read_csv(folder / "ISIC_2019_Training_GroundTruth.csv").set_index("image")


def _markdown(path: Path) -> str:
    """report.md with the tables' padding squeezed: tabulate pads every cell to its column's width."""
    return re.sub(r" {2,}\|", " |", re.sub(r"\| {2,}", "| ", path.read_text()))


def _assert_same_metrics(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        if math.isnan(value):
            assert found[key] is None, key
        else:
            assert found[key] == pytest.approx(value, abs=1e-12), key


def test_a_crashing_job_does_not_stop_the_others_and_is_listed_as_failed(cv_sweep, report) -> None:
    sweep_dir, result = cv_sweep
    assert result.returncode == 1 and "data.fold=7" in result.stderr  # Hydra reports the failure at the end
    assert report["counts"] == {
        "expected": 8,
        "completed": 6,
        "failed": 2,
        "no metrics": 0,
        "unfinished": 0,
        "missing": 0,
    }
    failed = [j for j in report["jobs"] if j["status"] == "failed"]
    assert sorted(j["configuration"] for j in failed) == sorted(BACKBONES)
    assert all(j["fold"] == 7 and "ConfigError: data.fold=7" in j["error"] for j in failed)
    assert max(j["num"] for j in report["jobs"] if j["status"] == COMPLETED) > min(j["num"] for j in failed)
    markdown = _markdown(sweep_dir / "report" / "report.md")
    assert "Jobs: 8 expected, 6 completed, 2 failed" in markdown
    assert markdown.count("| failed | ConfigError: data.fold=7") == 2
    assert "ConfigError: data.fold=7" in (sweep_dir / "report" / "report.html").read_text()


def test_cross_validation_summary_is_mean_and_std_over_the_folds(cv_sweep, report) -> None:
    markdown = _markdown(cv_sweep[0] / "report" / "report.md")
    for backbone in BACKBONES:
        jobs = _completed(report, backbone)
        assert sorted(j["fold"] for j in jobs) == list(FOLDS)
        summary = report["configurations"][backbone]["summary"]
        for metric in SUMMARY_METRICS:
            values = [
                json.loads((Path(j["dir"]) / "metrics.json").read_text())["metrics"][f"val/{metric}"] for j in jobs
            ]
            finite = [v for v in values if v is not None]
            assert summary[metric]["n"] == len(finite)
            if len(finite) > 1:
                assert summary[metric]["mean"] == pytest.approx(np.mean(finite))
                assert summary[metric]["std"] == pytest.approx(np.std(finite, ddof=1))
        auc = summary["auc_macro"]
        assert f"| {backbone} | 3/4 | {auc['mean']:.4f} ± {auc['std']:.4f} |" in markdown


def test_calibration_table_has_each_class_ece_over_the_folds_and_out_of_fold(cv_sweep, report) -> None:
    markdown = _markdown(cv_sweep[0] / "report" / "report.md")
    assert "15 equal-width probability bins, L1" in markdown
    keys = [f"ece/{cls}" for cls in CLASSES] + ["ece_macro"]
    for backbone in BACKBONES:
        metrics = [
            json.loads((Path(j["dir"]) / "metrics.json").read_text())["metrics"] for j in _completed(report, backbone)
        ]
        over_folds = [
            f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" for v in ([m[f"val/{k}"] for m in metrics] for k in keys)
        ]
        assert f"| {backbone} | folds | {' | '.join(over_folds)} |" in markdown
        oof = report["configurations"][backbone]["oof"]["metrics"]
        assert f"| {backbone} | out-of-fold | {' | '.join(f'{oof[k]:.4f}' for k in keys)} |" in markdown


def test_out_of_fold_metrics_equal_recomputing_them_from_the_jobs_csvs(report, cache_dir) -> None:
    truth = _truth(cache_dir)
    probabilities = {}
    for backbone in BACKBONES:
        stacked = _stacked_predictions(report, backbone)
        assert stacked["image"].is_unique and len(stacked) == len(truth)  # every image once, from its own fold
        oof = report["configurations"][backbone]["oof"]
        assert oof["images"] == len(truth) and oof["folds"] == list(FOLDS)
        stacked = stacked.set_index("image").loc[truth.index]
        probabilities[backbone] = stacked[CLASSES].to_numpy()
        targets = truth[CLASSES].to_numpy()
        expected = compute_metrics(probabilities[backbone], targets, np.ones_like(targets), CLASSES)
        _assert_same_metrics(oof["metrics"], expected)
    ensemble = np.mean(list(probabilities.values()), axis=0)
    targets = truth[CLASSES].to_numpy()
    _assert_same_metrics(
        report["oof_ensemble"]["metrics"], compute_metrics(ensemble, targets, np.ones_like(targets), CLASSES)
    )


def test_report_plots_open_as_images(cv_sweep, report) -> None:
    names = report["files"]["images"]
    expected = {"comparison.png"} | {
        f"{kind}_{label}.png"
        for kind in ("roc", "confusion", "reliability")
        for label in (*BACKBONES, "ensemble_of_all_configurations")
    }
    assert set(names) == expected
    for name in names:
        with Image.open(cv_sweep[0] / "report" / name) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 200
    html = (cv_sweep[0] / "report" / "report.html").read_text()
    assert all(f'src="{name}"' in html for name in names)


def test_folds_are_identical_across_backbones(report) -> None:
    completed = [j for j in report["jobs"] if j["status"] == COMPLETED]
    summaries = [json.loads((Path(j["dir"]) / "metrics.json").read_text()) for j in completed]
    folds_files = {s["data"]["folds_file"] for s in summaries}
    assert len(folds_files) == 1  # one saved split for every job
    saved = pd.read_csv(folds_files.pop(), dtype={"image_id": str}).set_index("image_id")["fold"]
    validated: dict[tuple[str, int], set[str]] = {}
    for job in completed:
        images = set(pd.read_csv(Path(job["dir"]) / "val_predictions.csv")["image"])
        assert images == set(saved.index[saved == job["fold"]])  # the job validated on exactly its saved fold
        validated[(job["configuration"], job["fold"])] = images
    for fold in FOLDS:
        assert validated[(BACKBONES[0], fold)] == validated[(BACKBONES[1], fold)]
    assert report["folds"] == {
        "folds_files": [str(Path(s["data"]["folds_file"])) for s in summaries[:1]],
        "shared": True,
        "matches_file": True,
        "identical_across_groups": True,
    }


def test_report_on_demand_equals_the_one_written_at_the_end(cv_sweep, report, tmp_path, capsys) -> None:
    assert report_main([str(cv_sweep[0]), "--out", str(tmp_path / "again")]) == 0
    assert "report.md" in capsys.readouterr().out
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["configurations"] == report["configurations"] and again["counts"] == report["counts"]


def test_missing_and_unfinished_jobs_are_listed(cv_sweep, tmp_path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(cv_sweep[0], copy, ignore=shutil.ignore_patterns("*.ckpt", "report"))
    jobs = {int(p.name.split("-", 1)[0]): p for p in copy.iterdir() if p.is_dir() and p.name[0].isdigit()}
    shutil.rmtree(jobs[1])  # never started
    (jobs[2] / "metrics.json").unlink()  # started, then killed: no metrics, no record
    (jobs[2] / "job.json").unlink()
    files = write_report(copy)
    report = json.loads(files.json.read_text())
    assert report["counts"]["missing"] == 1 and report["counts"]["unfinished"] == 1
    status = {j["num"]: j for j in report["jobs"]}
    assert status[1]["status"] == "missing" and "data.fold=1" in status[1]["overrides"]
    assert status[2]["status"] == "unfinished" and "validation macro AUC" in status[2]["error"]  # the log's tail
    assert report["configurations"][BACKBONES[0]]["oof"]["folds"] == [0]
    markdown = _markdown(files.markdown)
    assert "| missing | never started |" in markdown and "| unfinished |" in markdown


def test_test_set_fold_and_backbone_ensembles(cv_sweep, tmp_path) -> None:
    """Jobs that wrote test predictions (with their labels) get fold-ensemble and backbone-ensemble scores."""
    copy = tmp_path / "sweep"
    shutil.copytree(cv_sweep[0], copy, ignore=shutil.ignore_patterns("*.ckpt", "report"))
    rng = np.random.default_rng(0)
    images = [f"TEST_{i:03d}" for i in range(40)]
    labels = np.eye(len(CLASSES))[rng.integers(0, len(CLASSES), len(images))]
    written: dict[str, list[np.ndarray]] = {b: [] for b in BACKBONES}
    for job_dir in sorted(p for p in copy.iterdir() if (p / "metrics.json").exists()):
        backbone = json.loads((job_dir / "metrics.json").read_text())["backbone"]
        probs = rng.random((len(images), len(CLASSES)))
        written[backbone].append(probs)
        frame = pd.DataFrame(probs, columns=CLASSES).assign(image=images)
        for index, cls in enumerate(CLASSES):
            frame[f"target_{cls}"], frame[f"known_{cls}"] = labels[:, index], 1.0
        frame.to_csv(job_dir / "test_predictions.csv", index=False)
    report = json.loads(write_report(copy).json.read_text())
    known = np.ones_like(labels)
    fold_means = {b: np.mean(written[b], axis=0) for b in BACKBONES}
    for backbone in BACKBONES:
        expected = compute_metrics(fold_means[backbone], labels, known, CLASSES)
        _assert_same_metrics(report["test"][backbone]["metrics"], expected)
    expected = compute_metrics(np.mean(list(fold_means.values()), axis=0), labels, known, CLASSES)
    _assert_same_metrics(report["test"][ENSEMBLE_LABEL]["metrics"], expected)
    assert report["test"][ENSEMBLE_LABEL]["images"] == len(images)


def test_report_rejects_a_folder_that_holds_no_sweep(tmp_path, capsys) -> None:
    assert report_main([str(tmp_path)]) == 2
    assert "multirun.yaml" in capsys.readouterr().err


def test_tables_keep_each_row_on_one_line_and_their_cells_as_given() -> None:
    table = pd.DataFrame([["3", "a|b\nc <x>", "0.5000", "–"]], columns=["job", "error", "auc", "ap"])
    markdown = to_markdown([table]).strip().splitlines()
    assert len(markdown) == 3 and re.sub(r" +", " ", markdown[2]) == "| 3 | a\\|b c <x> | 0.5000 | – |"
    html = to_html([table], "t")
    assert "<th>error</th>" in html and "<td>a|b\\nc &lt;x&gt;</td>" in html and "<td>0.5000</td>" in html


@pytest.mark.parametrize(
    ("params", "task"),
    [
        ({}, []),
        ({}, ["backbone.name=resnet18,resnet10t", "data.fold=0,1,2,7"]),
        (
            {"optimizer.lr": "0.1,0.01", "data.fold": "0,1"},
            ["data.fold=range(3)", "+extra=a,b", "~trainer.precision", "model.tags=[x,y]", "note='a, b'", "seed=1"],
        ),
        ({"seed": "1,2"}, ["backbone=resnet18,densenet201", "seed=3", "augment=light", "data.fold=range(4,0,-2)"]),
    ],
    ids=["no-overrides", "two-axes", "params-replaced-and-prefixed", "fixed-last-wins"],
)
def test_expected_jobs_are_numbered_as_hydras_basic_sweeper_numbers_them(params: dict, task: list[str]) -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": params},
                "overrides": {"task": task},
            }
        }
    )
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + task)
    hydras = [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]
    assert expected_jobs(config) == dict(enumerate(hydras))


def _job(num: int, overrides: list[str], auc: float) -> Job:
    return Job(num=num, overrides=overrides, status=COMPLETED, metrics={"val/auc_macro": auc, "val/mel_auc": math.nan})


def test_configurations_are_the_overrides_that_vary_except_the_fold() -> None:
    jobs = [
        _job(i, [f"backbone={b}", f"data.fold={f}", "debug=limit"], 0.5)
        for i, (b, f) in enumerate([("a", 0), ("a", 1), ("b", 0)])
    ]
    assert {label: [j.num for j in members] for label, members in group_jobs(jobs).items()} == {"a": [0, 1], "b": [2]}
    two = [_job(i, [f"backbone={b}", f"optimizer.lr={lr}"], 0.5) for i, (b, lr) in enumerate([("a", 1), ("b", 2)])]
    assert list(group_jobs(two)) == ["backbone=a optimizer.lr=1", "backbone=b optimizer.lr=2"]


def test_summary_skips_undefined_values_and_failed_jobs() -> None:
    jobs = [_job(0, [], 0.7), _job(1, [], 0.9), Job(num=2, overrides=[], status="failed")]
    summary = summarise(jobs, ["auc_macro", "mel_auc"])
    assert summary["auc_macro"].n == 2 and summary["auc_macro"].mean == pytest.approx(0.8)
    assert summary["auc_macro"].std == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert str(summary["auc_macro"]) == "0.8000 ± 0.1414" and str(summary["mel_auc"]) == "–"
