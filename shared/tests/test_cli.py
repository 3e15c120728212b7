import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from shared.cli import RunConfig, arg, cli_main, parse_config
from shared.errors import UserError


@dataclass
class ToyConfig(RunConfig):
    lr: float = arg(0.1, "learning rate", min=0, min_inclusive=False)
    epochs: int = arg(5, "passes over the data", min=1, max=1000)
    hidden: tuple[int, ...] = arg((8, 8), "hidden sizes", min=1)
    optimizer: str = arg("adam", "update rule", choices=("sgd", "adam"))
    batchnorm: bool = arg(False, "use batch normalisation")
    images: tuple[str, ...] = arg((), "input images", positional=True)

    def check(self):
        if self.optimizer == "sgd" and self.batchnorm:
            raise UserError("--batchnorm is not supported with --optimizer sgd")


def test_defaults_come_from_the_dataclass():
    cfg = parse_config(ToyConfig, [])
    assert cfg == ToyConfig()
    assert cfg.seed == 0 and cfg.device == "auto" and not cfg.dry_run


def test_flags_are_parsed_into_typed_fields():
    cfg = parse_config(
        ToyConfig,
        ["a.png", "b.png", "--lr", "0.01", "--hidden", "4", "2", "--batchnorm", "--dry-run"],
    )
    assert cfg.lr == 0.01 and cfg.hidden == (4, 2) and cfg.batchnorm and cfg.dry_run
    assert cfg.images == ("a.png", "b.png")


def test_boolean_flags_can_be_switched_off():
    @dataclass
    class OnByDefault:
        ema: bool = arg(True, "keep an EMA")

    assert parse_config(OnByDefault, ["--no-ema"]).ema is False


def test_a_trailing_underscore_lets_a_flag_be_a_python_keyword(capsys):
    @dataclass
    class WithKeyword:
        class_: int = arg(-1, "digit to draw", min=-1, max=9)

    assert parse_config(WithKeyword, ["--class", "3"]).class_ == 3
    with pytest.raises(SystemExit):
        parse_config(WithKeyword, ["--class", "12"])
    assert "--class must be <= 9" in capsys.readouterr().err


def test_a_bad_positional_value_is_named_by_its_metavar(capsys):
    @dataclass
    class Numbers:
        values: tuple[float, ...] = arg((), "numbers", positional=True)

    with pytest.raises(SystemExit):
        parse_config(Numbers, ["1", "x"])
    err = capsys.readouterr().err
    assert "VALUES expects a number, got 'x'" in err and "--values" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "0"], "--lr must be > 0"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--lr", "nan"], "--lr must be finite"),
        (["--lr", "fast"], "--lr expects a number"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--epochs", "2000"], "--epochs must be <= 1000"),
        (["--epochs", "2.5"], "--epochs expects an integer"),
        (["--hidden", "8", "0"], "--hidden must be >= 1"),
        (["--optimizer", "lbfgs"], "--optimizer must be one of sgd, adam"),
        (["--seed", "-3"], "--seed must be >= 0"),
        (["--unknown"], "unrecognized arguments"),
        (["--optimizer", "sgd", "--batchnorm"], "not supported with --optimizer sgd"),
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(ToyConfig, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_help_shows_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(ToyConfig, ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--lr",
        "--epochs",
        "--hidden",
        "--optimizer",
        "--batchnorm",
        "--out",
        "--seed",
        "--device",
        "--data-dir",
        "--resume",
        "--dry-run",
    ):
        assert flag in out
    assert "(default: 0.1)" in out and "(default: 8 8)" in out
    assert "batch normalisation (default: off)" in " ".join(out.split())


def test_user_error_in_main_becomes_one_line_and_exit_2(capsys):
    def main(cfg):
        raise UserError("checkpoint x.pt does not exist")

    with pytest.raises(SystemExit) as exit_info:
        cli_main(main, ToyConfig, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: checkpoint x.pt does not exist\n"


def test_cli_main_returns_what_main_returns():
    assert cli_main(lambda cfg: cfg.epochs * 2, ToyConfig, ["--epochs", "4"]) == 8


def test_a_script_reports_user_errors_without_traceback(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from shared.cli import RunConfig, cli_main
            from shared.checkpoint import load_checkpoint

            def main(cfg):
                load_checkpoint("missing.pt")

            if __name__ == "__main__":
                cli_main(main, RunConfig)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: checkpoint missing.pt does not exist (train first: python train.py)\n"
    )


def test_a_bool_whose_help_states_its_default_gets_no_second_one(capsys):
    @dataclass
    class Config:
        fast: bool = arg(False, "go fast (default: off)")

    with pytest.raises(SystemExit):
        parse_config(Config, ["--help"])
    assert capsys.readouterr().out.count("(default: off)") == 1
