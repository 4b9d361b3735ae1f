"""Command line: arguments -> config -> logging -> asyncio.run; errors -> exit codes.

Exit codes: 0 success, 1 runtime failure (``once``: a target failed), 2 bad
configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from jobwatch import __version__
from jobwatch.app import App, selection_from_config
from jobwatch.config import Config, load_config
from jobwatch.duration import parse_duration
from jobwatch.errors import ConfigError
from jobwatch.log import configure_logging
from jobwatch.model import KNOWN_STATUSES
from jobwatch.serve import serve
from jobwatch.shard import Shard, resolve_shard
from jobwatch.targets import resolve_targets

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _load(args: argparse.Namespace) -> tuple[Config, Shard]:
    """The config file and this process's shard (flags, then keys, then the pod name)."""
    config = load_config(args.config)
    shard = resolve_shard(
        ordinal=args.shard,
        total=args.total_shards,
        pod=args.pod or os.environ.get("POD_NAME"),
        config_ordinal=config.shard.ordinal,
        config_total=config.shard.total,
    )
    return config, shard


def _cmd_run(args: argparse.Namespace) -> int:
    config, shard = _load(args)
    configure_logging(config.log.level, config.log.format)
    asyncio.run(serve(App(config, shard=shard), args.listen))
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace, out: TextIO) -> int:
    config = load_config(args.config)
    try:
        selection_from_config(config)
    except ConfigError as e:
        raise ConfigError(e.problems, str(args.config)) from None
    total = args.total_shards if args.total_shards is not None else config.shard.total
    shard: Shard | None = None
    pod = args.pod or os.environ.get("POD_NAME")
    if args.shard is not None or config.shard.ordinal is not None or pod or total == 1:
        # An ordinal in sight (or nothing to shard): check it as ``run`` would.
        shard = _load(args)[1]
    else:
        # Sharded, ordinal decided per process at run time: check the total alone.
        try:
            Shard(0, total)
        except ValueError as e:
            raise ConfigError([f"shard: {e}"]) from None
    targets = list(resolve_targets(config).candidates)
    out.write(f"{args.config}: OK, {len(targets)} target(s)\n")
    sharded = shard is not None and shard.total > 1
    for t in targets:
        role = t.role_arn or "(default credentials)"
        labels = ",".join(f"{k}={v}" for k, v in t.labels)
        mine = "  (this shard)" if shard is not None and sharded and shard.owns(t) else ""
        out.write(f"  {t.account_id}  {t.region:<16} {role}  {labels}{mine}\n".rstrip() + "\n")
    if shard is not None and sharded:
        own = len(shard.select(targets))
        out.write(f"shard {shard}: {own} of the {len(targets)} static target(s)\n")
    elif total > 1:
        out.write(f"{total} shards: each process takes its ordinal from --shard or POD_NAME\n")
    d = config.discovery
    if d is not None:
        where = ", ".join(d.organizational_units) or "the whole organization"
        regions = ", ".join(d.regions or config.defaults.regions)
        out.write(
            f"discovery: accounts of {where} every {d.interval:g}s "
            f"(states {', '.join(d.statuses)}), regions {regions}, role {d.role_arn}\n"
        )
    return EXIT_OK


async def _once(config: Config, shard: Shard) -> App:
    # A look, not a run: never touch the daemon's state file.
    app = App(config.model_copy(update={"state_file": None}), shard=shard)
    async with app:
        await app.poll_all_once()
    return app


def _cmd_once(args: argparse.Namespace, out: TextIO) -> int:
    config, shard = _load(args)
    configure_logging(config.log.level, config.log.format, stream=sys.stderr)
    app = asyncio.run(_once(config, shard))
    rows: list[dict[str, Any]] = []
    for ts in app.store.targets.values():
        counts: dict[str, int] = {}
        for t in (ts.jobs or {}).values():
            counts[t.job.status] = counts.get(t.job.status, 0) + 1
        rows.append(
            {
                "aws_account_id": ts.target.account_id,
                "aws_region": ts.target.region,
                "up": ts.up,
                "error": ts.last_error,
                "jobs": counts,
                "stalled": sorted(j for j, t in (ts.jobs or {}).items() if t.stalled or t.overdue),
            }
        )
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        out.write(f"{'ACCOUNT':<13} {'REGION':<15} {'UP':<4} JOBS\n")
        for r in rows:
            order = [s for s in KNOWN_STATUSES if s in r["jobs"]]
            order += sorted(s for s in r["jobs"] if s not in KNOWN_STATUSES)
            jobs = " ".join(f"{s}={r['jobs'][s]}" for s in order) or "-"
            extra = f"  error={r['error']}" if r["error"] else ""
            up = "yes" if r["up"] else "NO"
            out.write(f"{r['aws_account_id']:<13} {r['aws_region']:<15} {up:<4} {jobs}{extra}\n")
    return EXIT_OK if all(r["up"] for r in rows) else EXIT_FAILURE


def _cmd_sim(args: argparse.Namespace) -> int:
    from jobwatch.clock import SystemClock
    from jobwatch.simulator import ScenarioError, builtin_scenario, load_scenario, run_simulator

    try:
        scenario = load_scenario(args.scenario) if args.scenario else builtin_scenario("demo")
    except ScenarioError as e:
        sys.stderr.write(f"jobwatch sim: {e}\n")
        return EXIT_CONFIG
    configure_logging("info", "json")  # run_simulator logs simulator_started with the real URL
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(args.listen, scenario, SystemClock()))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from jobwatch.demo import run_demo

    configure_logging("info", args.log_format)
    asyncio.run(run_demo(args.listen, duration=args.duration, scenario_path=args.scenario))
    return EXIT_OK


def _shard_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sharding (docs/scaling.md)")
    g.add_argument("--shard", type=int, default=None, help="this process's shard, 0-based")
    g.add_argument(
        "--total-shards", type=int, default=None, help="number of shards (overrides shard.total)"
    )
    g.add_argument(
        "--pod",
        default=None,
        help="StatefulSet pod name whose ordinal is the shard (default: $POD_NAME)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobwatch",
        description="Watch S3 Batch Operations jobs across AWS accounts and regions.",
    )
    parser.add_argument("--version", action="version", version=f"jobwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("-c", "--config", required=True, help="YAML configuration file")
    p.add_argument("--listen", help="override listen (HOST:PORT)")
    _shard_arguments(p)

    p = sub.add_parser("check-config", help="validate a configuration and list its targets")
    p.add_argument("-c", "--config", required=True)
    _shard_arguments(p)

    p = sub.add_parser("once", help="poll every target once and print a summary")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _shard_arguments(p)

    p = sub.add_parser("demo", help="simulator and daemon in one process, no AWS account needed")
    p.add_argument(
        "--listen", default="127.0.0.1:9877", help="metrics address (default %(default)s)"
    )
    p.add_argument("--duration", type=parse_duration, default=None, help="stop after this long")
    p.add_argument("--scenario", default=None, help="simulator scenario file (default: demo)")
    p.add_argument("--log-format", choices=("json", "console"), default="json")

    p = sub.add_parser("sim", help="run the S3 Control simulator")
    p.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT (default %(default)s)")
    p.add_argument("--scenario", default=None, help="scenario YAML (default: built-in demo)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``jobwatch`` command. Returns the exit code."""
    args = build_parser().parse_args(argv)
    stdout = out or sys.stdout
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "check-config":
            return _cmd_check_config(args, stdout)
        if args.command == "once":
            return _cmd_once(args, stdout)
        if args.command == "sim":
            return _cmd_sim(args)
        return _cmd_demo(args)
    except ConfigError as e:
        sys.stderr.write(f"jobwatch: {e}\n")
        return EXIT_CONFIG
    except OSError as e:
        sys.stderr.write(f"jobwatch: {e}\n")
        return EXIT_FAILURE


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
