"""Sessions: one per project (its tests, in a process of its own), lint, shared, bench, results.

Every session runs in the environment the README's install made (no per-session virtualenv),
so torch is installed once. `nox` alone runs lint, shared and every project's tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nox

ROOT = Path(__file__).parent
# In suggested study order, with what each builds (the README's table is made from this).
PROJECTS = {
    "mlp": "a NumPy multi-layer perceptron with hand-written backprop and optimizers",
    "cnn": "convolution in NumPy, then LeNet-5, AlexNet and ResNet-18 in PyTorch",
    "rnn": "vanilla RNN, LSTM and GRU in NumPy with backpropagation through time",
    "transformer": "the encoder-decoder of Attention Is All You Need, translating to French",
    "gpt2": "GPT-2: model, byte-level BPE, training from a laptop to torchrun, sampling",
    "vae": "variational autoencoders: ELBO, reparameterisation, IWAE likelihoods",
    "gan": "GANs from a NumPy GAN on 2-D data to DCGAN, WGAN-GP and spectral norm",
    "diffusion": "DDPM and DDIM with a hand-built U-Net",
    "stable_diffusion": "latent diffusion with a text encoder and cross-attention U-Net",
    "detection": "sliding windows, a Faster R-CNN-like and a YOLO-style detector, mAP",
}
REQUIRED = ("model.py", "train.py", "inference.py", "README.md", "tests")
EXISTING = [name for name in PROJECTS if (ROOT / name).is_dir()]
RESULTS_BEGIN, RESULTS_END = "<!-- results:begin -->", "<!-- results:end -->"
REAL_BEGIN, REAL_END = "<!-- real:begin -->", "<!-- real:end -->"

nox.options.sessions = ["lint", "shared", *EXISTING]
nox.options.default_venv_backend = "none"
nox.options.error_on_missing_interpreters = False


def _pytest(session: nox.Session, where: Path, tests: str) -> None:
    session.chdir(where)
    # Each project has its own model.py: a fresh interpreter per project keeps them apart.
    # --durations: the five slowest tests are named, so a test that grows slow is seen.
    pytest = (sys.executable, "-m", "pytest", "-q", "--durations=5", tests)
    session.run(*pytest, *session.posargs, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the repository."""
    session.chdir(ROOT)
    session.run(sys.executable, "-m", "ruff", "check", ".", external=True)
    session.run(sys.executable, "-m", "ruff", "format", "--check", ".", external=True)


@nox.session(venv_backend="none")
def shared(session: nox.Session) -> None:
    """The shared package's tests, run from the top level.

    Not from inside shared/: there, shared/logging.py would shadow the standard library's.
    """
    _pytest(session, ROOT, "shared/tests")


def _project_session(name: str):
    def run_tests(session: nox.Session) -> None:
        folder = ROOT / name
        missing = [item for item in REQUIRED if not (folder / item).exists()]
        if missing:
            session.error(f"{name} lacks {', '.join(missing)}")
        _pytest(session, folder, "tests")

    run_tests.__doc__ = f"{name}'s tests, in {name}/ in a process of its own."
    return run_tests


for _name in EXISTING:
    nox.session(name=_name, venv_backend="none")(_project_session(_name))


def _option(session: nox.Session, name: str) -> str | None:
    """The value of `--name VALUE` (or `--name=VALUE`) among the session's arguments."""
    args = list(session.posargs)
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _selected(session: nox.Session) -> list[str]:
    values = {_option(session, "--data-dir")}
    chosen = [
        arg for arg in session.posargs if not arg.startswith("--") and arg not in values
    ] or EXISTING
    unknown = [name for name in chosen if name not in EXISTING]
    if unknown:
        session.error(f"no such project: {', '.join(unknown)} (have: {', '.join(EXISTING)})")
    return chosen


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Each project's bench.py, then one table of the ratios they report."""
    rows = []
    for name in _selected(session):
        if not (ROOT / name / "bench.py").exists():
            continue
        out = subprocess.run(
            [sys.executable, "bench.py"], cwd=ROOT / name, capture_output=True, text=True
        )
        print(out.stdout, end="")
        if out.returncode != 0:
            session.error(f"{name}/bench.py failed:\n{out.stderr}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
        rows += [(name, key, value) for key, value in report["ratios"].items()]
    print(f"\n{'project':<18}{'comparison':<48}{'ratio':>8}")
    for name, key, value in rows:
        print(f"{name:<18}{key:<48}{value:>8.2f}")


def _format_row(name: str, r: dict | None) -> list[str]:
    if r is None:
        return [name, "-", "not measured yet", "-", "-"]
    value = r["value"]
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    figures = ", ".join(f"[{Path(p).name}]({p})" for p in r["figures"]) or "-"
    return [
        f"[{name}]({name}/)",
        r["task"],
        f"{r['metric']} = {shown}",
        f"{r['wall_time_s']:.0f} s",
        figures,
    ]


def _results_table(results: dict, with_builds: bool) -> str:
    """A Markdown table in study order; projects not measured yet show dashes."""
    header = ["project", "default task", "headline result", "default run", "figures"]
    if with_builds:
        header.insert(1, "what it builds")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, builds in PROJECTS.items():
        if name not in EXISTING and name not in results:
            continue
        cells = _format_row(name, results.get(name))
        if with_builds:
            cells.insert(1, builds)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _replace_between(path: Path, begin: str, end: str, text: str) -> None:
    content = path.read_text()
    if begin not in content:  # a new section goes at the end
        content = content.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def write_results(results: dict) -> None:
    """results.json, RESULTS.md, and the table between the markers in README.md."""
    (ROOT / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (ROOT / "RESULTS.md").write_text(
        "# Results\n\nWritten by `nox -s results`: the default `python train.py` of each "
        "project, then `python inference.py` on its checkpoint. Do not edit by hand.\n\n"
        + _results_table(results, with_builds=False)
        + "\n"
    )
    _replace_between(
        ROOT / "README.md", RESULTS_BEGIN, RESULTS_END, _results_table(results, with_builds=True)
    )
    _write_real_tables()


REAL_STORE = ROOT / "results_real.json"
REAL_INTRO = (
    "## Real data\n\nWritten by `nox -s results -- --real`: each project's named recipes "
    "(`python train.py --preset NAME --data-dir DATA`, where DATA holds `MNIST/` and "
    "`FashionMNIST/` in torchvision's layout, `shakespeare/input.txt`, `names/names.txt` and "
    "`eng-fra/eng-fra.txt`), timed on the machine named in each row. Do not edit by hand.\n"
)


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _real_table(real: dict) -> str:
    lines = [
        "| project | recipe | command | result | also measured | anchor | time | machine |",
        "|" + " --- |" * 8,
    ]
    for name in PROJECTS:
        for preset, r in sorted(real.get(name, {}).items()):
            also = ", ".join(f"{k} = {_shown(v)}" for k, v in r["report"].items()) or "-"
            lines.append(
                f"| [{name}]({name}/) | {r['help']} | `python train.py --preset {preset} "
                f"--data-dir DATA` | {r['metric']} = {_shown(r['value'])} | {also} | "
                f"{r['anchor'] or '-'} | {r['wall_time_s'] / 60:.1f} min | {r['measured_on']} |"
            )
    if len(lines) == 2:
        lines.append("| - | no recipe measured yet | - | - | - | - | - | - |")
    return "\n".join(lines)


def _write_real_tables() -> None:
    """The real-data table, from results_real.json, in RESULTS.md and README.md."""
    real = json.loads(REAL_STORE.read_text()) if REAL_STORE.exists() else {}
    table = REAL_INTRO + "\n" + _real_table(real)
    _replace_between(ROOT / "RESULTS.md", REAL_BEGIN, REAL_END, table)
    _replace_between(ROOT / "README.md", REAL_BEGIN, REAL_END, table)


def _presets(folder: Path) -> dict:
    """{name: {help, anchor, report}} of a project's train.TrainConfig.PRESETS."""
    code = (
        "import json, train\n"
        "print(json.dumps({n: {'help': p.help, 'anchor': p.anchor, 'report': list(p.report)}"
        " for n, p in train.TrainConfig.PRESETS.items()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def _real_results(session: nox.Session) -> None:
    """Run (or with --collect, read back) every preset of the named projects."""
    real = json.loads(REAL_STORE.read_text()) if REAL_STORE.exists() else {}
    collect = "--collect" in session.posargs
    data_dir = _option(session, "--data-dir")
    env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg")
    for name in _selected(session):
        folder = ROOT / name
        for preset, info in _presets(folder).items():
            run_dir = folder / "runs" / f"real-{preset}"
            if collect:
                if not (run_dir / "metrics.json").exists():
                    session.log(f"{name}: no finished run in {run_dir}; skipped")
                    continue
                used = json.loads((run_dir / "config.json").read_text())
                if used.get("preset") != preset or used.get("dry_run"):
                    session.error(f"{name}: {run_dir} is not a full --preset {preset} run")
            else:
                command = [sys.executable, "train.py", "--preset", preset, "--out", str(run_dir)]
                if data_dir:
                    command += ["--data-dir", str(Path(data_dir).resolve())]
                session.log(f"{name}: python train.py --preset {preset}")
                subprocess.run(command, cwd=folder, env=env, check=True)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            real.setdefault(name, {})[preset] = {
                "help": info["help"],
                "anchor": info["anchor"],
                "metric": metrics["metric"],
                "value": metrics["value"],
                "report": {k: metrics[k] for k in info["report"] if k in metrics},
                "wall_time_s": metrics["wall_time_s"],
                "measured_on": f"{os.cpu_count()} CPU cores, "
                + time.strftime(
                    "%Y-%m-%d", time.localtime((run_dir / "metrics.json").stat().st_mtime)
                ),
            }
            REAL_STORE.write_text(json.dumps(real, indent=2, sort_keys=True) + "\n")
            _write_real_tables()


# Flags that say where or how a run went, not what it computed.
NOT_CONFIG = {"out", "data_dir", "device", "threads", "resume", "preset"}


def _default_config(folder: Path) -> dict:
    code = (
        "import dataclasses, json, train;print(json.dumps(dataclasses.asdict(train.TrainConfig())))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)
    return json.loads(out.stdout)


@nox.session(venv_backend="none")
def results(session: nox.Session) -> None:
    """Default train.py then inference.py per project; writes RESULTS.md and results.json.

    `nox -s results -- gpt2 cnn` runs a subset and keeps the other projects' earlier rows.
    `nox -s results -- --collect gpt2` trains nothing: it takes the project's runs/latest,
    after checking that its config.json is the default one, and runs inference.py on it.
    `nox -s results -- --real [--data-dir DATA] [PROJECT ...]` runs every `--preset` recipe of
    the projects instead (long: not part of CI) into runs/real-<preset>, and rewrites the
    real-data tables; with `--collect` too, it reads those runs back without training.
    """
    if "--real" in session.posargs:
        _real_results(session)
        return
    store = ROOT / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    collect = "--collect" in session.posargs
    env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg")
    for name in _selected(session):
        folder = ROOT / name
        if collect:
            run_dir = (folder / "runs" / "latest").resolve()
            used = json.loads((run_dir / "config.json").read_text())
            default = _default_config(folder)
            changed = sorted(
                k for k in default if k not in NOT_CONFIG and used.get(k) != default[k]
            )
            if changed:
                session.error(
                    f"{name}: {run_dir} is not a default run ({', '.join(changed)} differ)"
                )
            session.log(f"{name}: collecting {run_dir}, then python inference.py")
        else:
            run_dir = folder / "runs" / "results"
            session.log(f"{name}: python train.py --out runs/results, then python inference.py")
            subprocess.run(
                [sys.executable, "train.py", "--out", str(run_dir)], cwd=folder, env=env, check=True
            )
        # runs/latest points at the run (runs/results sits inside runs/): no flags needed.
        subprocess.run([sys.executable, "inference.py"], cwd=folder, env=env, check=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        figures = sorted(
            str(p.relative_to(ROOT))
            for p in (folder / "figures").glob("*")
            if p.suffix in (".png", ".gif")
        )
        results[name] = {
            "task": metrics["task"],
            "metric": metrics["metric"],
            "value": metrics["value"],
            "higher_is_better": metrics["higher_is_better"],
            "wall_time_s": metrics["wall_time_s"],
            "figures": figures[:3],
            "measured_on": f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}",
        }
        write_results(results)


@nox.session(name="results-table", venv_backend="none")
def results_table(session: nox.Session) -> None:
    """Rewrite RESULTS.md and README's table from results.json, without training."""
    store = ROOT / "results.json"
    write_results(json.loads(store.read_text()) if store.exists() else {})
