import json
from dataclasses import dataclass

import pytest

from shared.cli import RunConfig, arg
from shared.errors import UserError
from shared.logging import default_checkpoint, latest_run, read_log, start_run


@dataclass
class Config(RunConfig):
    lr: float = arg(0.1, "learning rate")


def test_run_writes_config_log_and_metrics_with_required_keys(tmp_path, capsys):
    run = start_run("toy task", Config(), tmp_path)
    assert run.path.parent == (tmp_path / "runs").resolve()
    assert json.loads((run.path / "config.json").read_text())["lr"] == 0.1
    run.log(step=1, loss=2.0)
    run.log(step=2, loss=1.0)
    metrics = run.finish(metric="accuracy", value=0.9, higher_is_better=True, extra_key=3)
    saved = json.loads((run.path / "metrics.json").read_text())
    assert saved == metrics
    for key in ("task", "metric", "value", "higher_is_better", "wall_time_s", "extra_key"):
        assert key in saved
    assert [r["loss"] for r in read_log(run.path)] == [2.0, 1.0]
    assert "accuracy = 0.9000" in capsys.readouterr().out


def test_latest_points_at_the_newest_run(tmp_path):
    first = start_run("t", Config(), tmp_path)
    second = start_run("t", Config(), tmp_path)
    assert first.path != second.path
    assert latest_run(tmp_path) == second.path
    assert default_checkpoint(tmp_path, "model.pt") == second.path / "model.pt"


def test_out_flag_chooses_the_folder(tmp_path):
    run = start_run("t", Config(out=str(tmp_path / "mine")), tmp_path / "project")
    assert run.path == (tmp_path / "mine").resolve()
    assert (run.path / "config.json").exists()


def test_resume_reopens_the_latest_run(tmp_path):
    first = start_run("t", Config(), tmp_path)
    resumed = start_run("t", Config(resume=True), tmp_path)
    assert resumed.path == first.path


def test_a_resumed_run_counts_the_time_of_its_earlier_part(tmp_path):
    first = start_run("t", Config(), tmp_path)
    first.log(step=1, loss=1.0)
    records = read_log(first.path)
    records[-1]["time_s"] = 500.0  # as if the first part had run for 500 s before its stop
    (first.path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    resumed = start_run("t", Config(resume=True), tmp_path)
    resumed.log(step=2, loss=0.5)
    assert 500.0 <= read_log(resumed.path)[-1]["time_s"] < 560.0
    assert 500.0 <= resumed.finish("loss", 0.5, False)["wall_time_s"] < 560.0


def test_resume_without_any_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="train first"):
        start_run("t", Config(resume=True), tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        start_run("t", Config(resume=True, out=str(tmp_path / "nope")), tmp_path)


def test_no_run_yet_is_a_user_error_for_inference(tmp_path):
    with pytest.raises(UserError, match="train first: python train.py"):
        default_checkpoint(tmp_path, "model.pt")


def test_other_ranks_write_nothing(tmp_path):
    run = start_run("t", Config(out=str(tmp_path / "r")), tmp_path, is_main=False)
    run.log(step=1)
    run.finish(metric="m", value=1.0, higher_is_better=True)
    assert not (tmp_path / "r").exists()
