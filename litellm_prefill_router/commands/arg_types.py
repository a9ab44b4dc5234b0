"""argparse value types of the command line: each value is checked where it is read, so a bad one is a usage error
naming the option - before any bundle, dataset or model is loaded."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path


def time_arg(value: str) -> datetime:
    """An argparse type: an ISO date or date-time (UTC unless it names a zone)."""
    from ..jsonl import parse_time

    try:
        return parse_time(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def whole(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low`` (argparse names the option and exits 2 otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


def number(low: float = 0.0, high: float = math.inf, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from err
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]" if high < math.inf else (
                f"{'>' if low_open else '>='} {low:g}")
            raise argparse.ArgumentTypeError(f"must be a number {'in ' if high < math.inf else ''}{bounds}, "
                                             f"got {text}")
        return value

    parse.__name__ = "number"
    return parse


def layer_list(text: str) -> list[int] | None:
    """An argparse type: ``auto`` (None: the probes choose) or comma-separated encoder layers, each >= 1."""
    if text.strip() == "auto":
        return None
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"takes comma-separated layer numbers, e.g. 5 or 5,11,17; got {text!r}") \
            from err
    if min(layers) < 1:
        raise argparse.ArgumentTypeError(f"layers are numbered from 1 (the embeddings are not a layer); got {text!r}")
    return layers


THREADS = whole(1)  # onnxruntime intra-op threads, as routing_strategy_args.intra_op_threads
FRACTION = number(0.0, 1.0)


def out_file(text: str) -> str:
    """An argparse type: a file to write - not an existing directory (its missing parent directories are made when
    it is written)."""
    if Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; name a file in it")
    return text


def out_dir(text: str) -> str:
    """An argparse type: a directory to write reports into - not an existing file (made if missing)."""
    if Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file; name a directory for the outputs")
    return text
