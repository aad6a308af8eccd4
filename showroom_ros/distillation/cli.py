"""``showroom distill CONFIG.yaml [--resume auto|PATH] [--set key=value ...]``: train a ShowRoom student.

Also runnable as ``python -m showroom_ros.distillation.cli`` and under torchrun, e.g.
``torchrun --nproc_per_node 4 -m showroom_ros.distillation.cli config.yaml`` (one process per GPU; the same
config, ``train.batch_size`` being the global batch). Exit status: 0 done, 2 bad config or data.

Stdout carries only the result (the student's folder, or with ``--json`` the run's summary); the
training bar and the log go to stderr (:mod:`showroom_ros.io.console`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from showroom_ros.distillation.config import ConfigError, DistillConfig
from showroom_ros.distillation.data import DataError
from showroom_ros.io.console import result, stdout_for_results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="showroom distill",
        description="Distil the ShowRoom student (half-width DPT heads) from a Fast3R teacher.",
    )
    parser.add_argument("config", help="YAML config (see config/distill_example.yaml)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|PATH",
        help="continue from a checkpoint: 'auto' (the default when the flag is given alone) = the newest in "
        "output_dir/checkpoints, or a checkpoint file or folder",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.max_steps=100 --set data.root=/data",
    )
    parser.add_argument(
        "--validate", action="store_true", help="only check the config and the data, then exit"
    )
    parser.add_argument("--json", action="store_true", help="print the run's summary (or --validate's counts) as JSON")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # outside: the result of --help is the help, on stdout
    with stdout_for_results():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.WARNING if args.quiet or rank != 0 else logging.INFO,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        overrides = [*args.overrides, "train.progress=false"] if args.quiet else args.overrides
        config = DistillConfig.from_yaml(args.config, overrides=overrides)
        if args.validate:
            from showroom_ros.distillation.trainer import split_rooms

            train, val = split_rooms(config)
            if args.json:
                result(json.dumps({"training_rooms": len(train), "validation_rooms": len(val)}))
            else:
                result(f"config OK: {len(train)} training rooms, {len(val)} validation rooms")
            return 0
        from showroom_ros.distillation.trainer import Distiller

        distiller = Distiller(config, resume=args.resume)
        try:
            summary = distiller.fit()
        finally:
            distiller.close()
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"showroom distill: error: {exc}", file=sys.stderr)
        return 2
    finally:
        _shutdown_distributed()
    if rank != 0:
        return 0
    if args.json:
        result(json.dumps(summary, indent=2, default=_jsonable))
    elif summary.get("export"):
        result(f"student written to {summary['export']}")
    return 0


def _jsonable(value: Any) -> Any:
    """Paths and numpy/torch scalars of the summary as JSON values."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _shutdown_distributed() -> None:
    """Leave the process group together: a rank tearing gloo down while rank 0 still writes the export
    can abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
