"""A config dataclass becomes the command line: every field a flag, checked, with its default shown.

    @dataclass
    class TrainConfig(RunConfig):
        lr: float = arg(1e-3, "learning rate", min=0, min_inclusive=False)

    if __name__ == "__main__":
        cli_main(main, TrainConfig)

Bad values and `UserError`s end the program with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from shared.errors import UserError

EXIT_USAGE = 2


def arg(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_inclusive: bool = True,
    positional: bool = False,
) -> Any:
    """A dataclass field that knows its help text, allowed values and range."""
    metadata = dict(
        help=help,
        choices=tuple(choices) if choices is not None else None,
        min=min,
        max=max,
        min_inclusive=min_inclusive,
        positional=positional,
    )
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe: the flags a real-data run needs, and what its number is measured against.

    `flags` maps config field names to values; `--preset NAME` makes them the defaults, so any
    flag given on the command line still wins. `anchor` is the published number or peer the
    result is compared with; `report` names extra metrics.json fields shown beside the headline
    number in the real-data results table.
    """

    help: str
    flags: dict[str, Any]
    anchor: str = ""
    report: tuple[str, ...] = ()


@dataclasses.dataclass
class RunConfig:
    """Flags every train.py shares. A subclass may define `PRESETS = {"name": Preset(...)}`."""

    PRESETS: typing.ClassVar[dict[str, Preset]] = {}

    out: str = arg("", "run folder (default: <project>/runs/<time>, linked from runs/latest)")
    seed: int = arg(0, "random seed for python, numpy and torch", min=0)
    device: str = arg("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    data_dir: str = arg("", "where datasets live (default: $DLFS_DATA_DIR, else ~/.cache/dlfs)")
    resume: bool = arg(False, "continue from the last checkpoint of --out (or runs/latest)")
    dry_run: bool = arg(False, "tiny model, a few steps of every stage, all outputs written")
    preset: str = arg("", "a named recipe that sets several flags (listed below); flags given win")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, no usage dump
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _unwrap_optional(tp: Any) -> Any:
    """`int | None` -> int; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _scalar_parser(tp: type, flag: str) -> Callable[[str], Any]:
    if tp is float:

        def parse_float(text: str) -> float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{flag} expects a number, got {text!r}") from None
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"{flag} must be finite, got {text!r}")
            return value

        return parse_float
    if tp is int:

        def parse_int(text: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{flag} expects an integer, got {text!r}"
                ) from None

        return parse_int
    if tp is str:
        return str
    raise TypeError(f"{flag}: unsupported config type {tp!r}")


def _field_kind(tp: Any) -> tuple[str, Any]:
    """('bool' | 'scalar' | 'sequence', element type)."""
    tp = _unwrap_optional(tp)
    if tp is bool:
        return "bool", bool
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return "sequence", args[0] if args else str
    return "scalar", tp


def _flag_name(field: dataclasses.Field) -> str:
    """`batch_size` -> `--batch-size`; a trailing underscore allows a keyword (`class_` ->
    `--class`); a positional argument is named by its metavar (`VALUES`)."""
    if field.metadata.get("positional"):
        return field.name.upper()
    return "--" + field.name.rstrip("_").replace("_", "-")


def _presets_epilog(presets: dict[str, Preset]) -> str | None:
    if not presets:
        return None
    lines = ["presets (python train.py --preset NAME; flags given on the command line still win):"]
    for name, preset in presets.items():
        flags = " ".join(_preset_flags(preset.flags))
        lines.append(f"  {name}: {preset.help}")
        lines.append(f"      = {flags}")
        if preset.anchor:
            lines.append(f"      anchor: {preset.anchor}")
    return "\n".join(lines)


def _preset_flags(flags: dict[str, Any]) -> list[str]:
    shown = []
    for name, value in flags.items():
        option = "--" + name.rstrip("_").replace("_", "-")
        if isinstance(value, bool):
            shown.append(option if value else "--no-" + option[2:])
        elif isinstance(value, (list, tuple)):
            shown.append(f"{option} {' '.join(map(str, value))}")
        else:
            shown.append(f"{option} {value}")
    return shown


def build_parser(config_cls: type, description: str | None = None) -> argparse.ArgumentParser:
    presets = getattr(config_cls, "PRESETS", {})
    parser = _Parser(
        description=description,
        epilog=_presets_epilog(presets),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        kind, elem = _field_kind(hints[field.name])
        flag = _flag_name(field)
        shown = " ".join(map(str, default)) if kind == "sequence" else default
        help_text = meta.get("help", "")
        if kind == "bool":
            off = f"--no-{flag[2:]}"
            if "(default" not in help_text:  # a help text may state its default itself
                help_text += f" (default: on; {off} turns it off)" if default else " (default: off)"
            parser.add_argument(flag, dest=field.name, action="store_true", help=help_text)
            parser.add_argument(
                "--no-" + flag[2:], dest=field.name, action="store_false", help=argparse.SUPPRESS
            )
            parser.set_defaults(**{field.name: default})
            continue
        if "(default" not in help_text:  # a help text may explain its default itself
            help_text += f" (default: {shown!r})" if shown in ("", None) else f" (default: {shown})"
        choices = meta.get("choices")
        if choices:
            help_text += " {" + ",".join(map(str, choices)) + "}"
        kwargs: dict[str, Any] = dict(type=_scalar_parser(elem, flag), help=help_text)
        if kind == "sequence":
            kwargs["nargs"] = "*" if meta.get("positional") else "+"
        if meta.get("positional"):
            if kind == "scalar":
                kwargs["nargs"] = "?"
            parser.add_argument(field.name, default=default, metavar=field.name.upper(), **kwargs)
        else:
            parser.add_argument(flag, dest=field.name, default=default, **kwargs)
    return parser


def _check_values(config_cls: type, cfg: Any) -> None:
    """Choices and ranges of every field; raises UserError naming the flag."""
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        flag = _flag_name(field)
        value = getattr(cfg, field.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is None or isinstance(v, bool):
                continue
            choices = meta.get("choices")
            if choices and v not in choices:
                allowed = ", ".join(map(str, choices))
                raise UserError(f"{flag} must be one of {allowed}, got {v!r}")
            low, high = meta.get("min"), meta.get("max")
            if low is not None and (v < low if meta.get("min_inclusive", True) else v <= low):
                relation = ">=" if meta.get("min_inclusive", True) else ">"
                raise UserError(f"{flag} must be {relation} {low}, got {v}")
            if high is not None and v > high:
                raise UserError(f"{flag} must be <= {high}, got {v}")


def parse_config(
    config_cls: type, argv: Sequence[str] | None = None, description: str | None = None
):
    """Parse argv into a checked config, or exit with one line and status 2."""
    parser = build_parser(config_cls, description)
    preset_name = _preset_asked(argv)
    if preset_name:
        presets = getattr(config_cls, "PRESETS", {})
        if preset_name not in presets:
            have = ", ".join(presets) or "none"
            parser.error(f"--preset must be one of {have}, got {preset_name!r}")
        parser.set_defaults(**preset_defaults(config_cls, preset_name))
    namespace = parser.parse_args(argv)
    hints = typing.get_type_hints(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        value = getattr(namespace, field.name)
        if (
            isinstance(value, list)
            and typing.get_origin(_unwrap_optional(hints[field.name])) is tuple
        ):
            value = tuple(value)
        values[field.name] = value
    cfg = config_cls(**values)
    try:
        _check_values(config_cls, cfg)
        if hasattr(cfg, "check"):
            cfg.check()
    except UserError as err:
        parser.error(str(err))
    return cfg


def _preset_asked(argv: Sequence[str] | None) -> str:
    """The value of --preset in argv ('' if absent), found before the full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="")
    known, _ = pre.parse_known_args(argv)
    return known.preset


def preset_defaults(config_cls: type, name: str) -> dict[str, Any]:
    """The preset's flags as config fields (with `preset` itself); unknown fields are a bug."""
    preset = config_cls.PRESETS[name]
    fields = {field.name for field in dataclasses.fields(config_cls)}
    unknown = sorted(set(preset.flags) - fields)
    if unknown:
        raise TypeError(f"preset {name!r} sets unknown fields {unknown}")
    return {**preset.flags, "preset": name}


def cli_main(main: Callable[[Any], Any], config_cls: type, argv: Sequence[str] | None = None):
    """Run `main(config)` from the command line; user errors become one line and exit 2."""
    description = sys.modules[main.__module__].__doc__
    cfg = parse_config(config_cls, argv, description)
    try:
        return main(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
