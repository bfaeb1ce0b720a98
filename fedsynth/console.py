"""What a person running ``fedsynth demo`` / ``simulate`` sees: one line per phase and progress
bars on the console, everything else (Flower's, Ray's and transformers' logs, Python warnings,
tracebacks) in the run's log file, whose path is printed at the end; ``-v`` brings them back.

The output folder is staged and appears whole or not at all, so the log is written beside it
while the run lasts, moved to ``OUT/logs/run.log`` when the run succeeds, and left beside the
folder as ``OUT-failed.log`` when it fails, where the error message names it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import InputError


class RunFailed(Exception):
    """A run stopped by something other than its input; the message names the log."""

    exit_code = 1


@contextmanager
def run_console(out: Path, verbose: bool = False) -> Iterator[Path]:
    """Route logging for one run into its log file (and, with ``verbose``, the console too);
    yields the log's final path. An InputError keeps its message, gains the log's path; any
    other error becomes a ``RunFailed`` paragraph, its traceback in the log."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pending = out.parent / f".{out.name}.log"
    file_handler = logging.FileHandler(pending, mode="w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler.setLevel(logging.DEBUG)
    with _routed(file_handler, verbose):
        try:
            yield out / "logs" / "run.log"
        except BaseException as exc:
            file_handler.handle(logging.LogRecord("fedsynth", logging.ERROR, __file__, 0,
                                                  "run failed", None,
                                                  (type(exc), exc, exc.__traceback__)))
            file_handler.close()
            failed = out.parent / f"{out.name}-failed.log"
            os.replace(pending, failed)
            if isinstance(exc, InputError):
                exc.args = (f"{exc} (log: {failed})",)
                raise
            if not isinstance(exc, Exception):
                raise
            raise RunFailed(f"the run stopped: {type(exc).__name__}: {exc}. Nothing was written "
                            f"to {out}. The log, with the traceback, is {failed}; run again with "
                            f"-v to see every library's messages as they come.") from exc
    file_handler.close()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.replace(pending, logs / "run.log")


@contextmanager
def _routed(file_handler: logging.Handler, verbose: bool) -> Iterator[None]:
    """The root logger writes to ``file_handler`` (replacing handlers a library's
    ``basicConfig`` left, e.g. Opacus') and, with ``verbose``, to the console at INFO; Flower's
    own console handler is detached (its records reach the root logger), transformers' too
    unless ``verbose``; warnings become log records; fedsynth's INFO lines keep a plain console
    handler. All restored afterwards."""
    from flwr.common.logger import console_handler as flower_console
    from transformers.utils import logging as hf_logging

    root, flower, fedsynth = (logging.getLogger(name) for name in ("", "flwr", "fedsynth"))
    saved = (list(root.handlers), root.level, fedsynth.level, fedsynth.propagate)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("  %(message)s"))
    console.setLevel(logging.INFO)
    root.handlers = [file_handler] + ([console] if verbose else [])
    root.setLevel(logging.DEBUG)
    fedsynth.handlers.append(console)
    fedsynth.setLevel(logging.DEBUG)
    fedsynth.propagate = False
    fedsynth.addHandler(file_handler)
    flower.removeHandler(flower_console)
    if not verbose:
        hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        hf_logging.disable_propagation()
        hf_logging.enable_default_handler()
        if flower_console not in flower.handlers:
            flower.addHandler(flower_console)
        for handler in (console, file_handler):
            fedsynth.removeHandler(handler)
        root.handlers, root.level = saved[0], saved[1]
        fedsynth.setLevel(saved[2])
        fedsynth.propagate = saved[3]
