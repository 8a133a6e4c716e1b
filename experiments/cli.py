"""What every absl main here does the same way: argument check, quiet logs, user errors.

A `ConfigError` (a bad config, data or workdir: the user's to fix) prints `error: ...`
without a traceback and exits 1; `Preempted` (SIGTERM / Ctrl-C after the checkpoint was
saved) exits 128 + the signal, so a scheduler or `train && eval` sees the run did not end.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from absl import app, flags, logging

from jaxdet.detectors.config import unknown_field_message
from jaxdet.errors import ConfigError
from jaxdet.training import preemption

RECIPE = "recipe.json"


def record_recipe(workdir: str, config_flag) -> None:
    """workdir/recipe.json: the config file (`path[:arg]`) and the command line a run or
    sweep started from, so that `experiments.report` shows the run's config against its
    recipe. Process 0 writes it, at each start (a resume may add overrides)."""
    import json

    import jax
    from ml_collections import config_flags

    from jaxdet import files

    if jax.process_index() != 0 or (os.path.exists(workdir) and not os.path.isdir(workdir)):
        return  # (a workdir that is a file: the run's own check says so, in one error line)
    path, colon, arg = config_flags.get_config_filename(config_flag).partition(":")
    record = {"config": os.path.abspath(path) + colon + arg, "cwd": os.getcwd(), "command": sys.argv}
    try:
        os.makedirs(workdir, exist_ok=True)
        files.write_atomic(os.path.join(workdir, RECIPE), json.dumps(record, indent=1))
    except OSError:
        return  # (a read-only or full workdir: the run's own checks name it, in one error line)


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, with an override of a config field that does not exist
    (`--config.model.reg_max=5` on RetinaNet, `--config.loss.localisation=l1`) reported as
    `error: ...` naming the field, who reads it and what exists, instead of a traceback."""
    app.run(main, flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.removeprefix("--config=").split(":", 1)[0]
            if not os.path.isfile(path):
                sys.exit(
                    f"error: --config={path!r}: no such file; pass a config file, e.g. "
                    "--config=experiments/configs/default.py (a variant after a colon: default.py:tiny)"
                )
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError, TypeError):  # config_flags: an override path not in the config
        message = _override_error(argv)
        if message is None:
            raise
        sys.exit(f"error: {message}")


def _override_error(argv: list[str]) -> str | None:
    """The message for the first `--config.a.b=value` whose path is not a field of the config."""
    if "config" not in flags.FLAGS:
        return None
    # The flag holds no value when an override failed: load the file as the flag does.
    files = [a.removeprefix("--config=") for a in argv[1:] if a.startswith("--config=")]
    if not files:
        return None
    return missing_override(flags.FLAGS["config"].parser.parse(files[-1]), argv)


def missing_override(config, argv: list[str]) -> str | None:
    """For the first `--config.a.b=value` in `argv` whose path is not a field of `config`:
    what is wrong and what would be right. None when every override names a field."""
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        parts = arg.removeprefix("--config.").split("=", 1)[0].split(".")
        node = config
        for depth, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node.keys():
                if parts[0] == "model" and depth > 0:
                    return unknown_field_message(config.model, parts[1:])
                return _missing(config, parts[: depth + 1])
            node = node[part]
    return None


def _missing(config, parts: list[str]) -> str:
    if parts[:2] == ["loss", "terms"] and len(parts) == 3:
        return (
            f"config.loss.terms.{parts[2]}: {config.model.name} has no loss term {parts[2]!r}; its terms: "
            f"{list(config.loss.terms)}"
        )
    parent = config
    for part in parts[:-1]:
        parent = parent[part]
    if not hasattr(parent, "keys"):
        return f"config.{'.'.join(parts)}: config.{'.'.join(parts[:-1])} is a value, not a section"
    where = "config." + ".".join(parts[:-1]) if len(parts) > 1 else "the config"
    return f"config.{'.'.join(parts)}: {where} has no such field; its fields: {sorted(parent.keys())}"


def start(argv: list[str], quiet: bool = True) -> None:
    """Refuses stray positional arguments; with `quiet`, absl logs at WARNING unless
    --verbosity was given (orbax logs every save at INFO)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if quiet and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """ConfigError -> `error: message` (exit 1); Preempted -> exit 128 + signal; no tracebacks."""
    try:
        yield
    except preemption.Preempted as e:
        raise SystemExit(e.exit_code) from None
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
