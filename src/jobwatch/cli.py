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
import time
from collections.abc import Sequence
from typing import Any, TextIO

from jobwatch import __version__
from jobwatch.app import App, selection_from_config
from jobwatch.config import Config, load_config
from jobwatch.duration import parse_duration
from jobwatch.errors import ConfigError
from jobwatch.log import configure_logging
from jobwatch.serve import serve
from jobwatch.shard import Shard, resolve_shard
from jobwatch.targets import resolve_targets
from jobwatch.terminal import SHOWN, View, fetch_view, render
from jobwatch.views import JobQuery, query_jobs, targets_document

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _load(args: argparse.Namespace) -> tuple[Config, Shard]:
    """The config file and this process's shard."""
    config = load_config(args.config)
    return config, _shard(args, config)


def _shard(args: argparse.Namespace, config: Config) -> Shard:
    """This process's shard: flags, then the config's keys, then the pod name."""
    return resolve_shard(
        ordinal=args.shard,
        total=args.total_shards,
        pod=args.pod or os.environ.get("POD_NAME"),
        config_ordinal=config.shard.ordinal,
        config_total=config.shard.total,
    )


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
        shard = _shard(args, config)
    else:
        # Sharded, ordinal decided per process at run time: check the total alone.
        try:
            Shard(0, total)
        except ValueError as e:
            raise ConfigError([f"shard: {e}"]) from None
    targets = list(resolve_targets(config).candidates)
    out.write(f"{args.config}: OK, {len(targets)} target(s)\n")
    sharded = shard if shard is not None and shard.total > 1 else None
    for t in targets:
        role = t.role_arn or "(default credentials)"
        labels = ",".join(f"{k}={v}" for k, v in t.labels)
        mine = "  (this shard)" if sharded is not None and sharded.owns(t) else ""
        out.write(f"  {t.account_id}  {t.region:<16} {role}  {labels}{mine}\n".rstrip() + "\n")
    if sharded is not None:
        own = len(sharded.select(targets))
        out.write(f"shard {sharded}: {own} of the {len(targets)} static target(s)\n")
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
    if config.push is not None:
        p = config.push
        out.write(f"push: {len(p.queues)} queue(s), long poll {p.wait:g}s, batch {p.batch_size}\n")
        for q in p.queues:
            role = q.role_arn or "(default credentials)"
            dead = f"  dead letters {q.dead_letter_url}" if q.dead_letter_url else ""
            out.write(f"  {q.url}  {q.region}  {role}{dead}\n")
    return EXIT_OK


async def _once(config: Config, shard: Shard) -> tuple[App, View]:
    # A look, not a run: never touch the daemon's state file.
    app = App(config.model_copy(update={"state_file": None}), shard=shard)
    async with app:
        await app.poll_all_once()
    now = app.clock.time()
    view = (
        await targets_document(app.store, now),
        await query_jobs(app.store, JobQuery(group="attention", per_page=SHOWN), now),
        await query_jobs(app.store, JobQuery(group="running", per_page=SHOWN), now),
    )
    return app, view


def _cmd_once(args: argparse.Namespace, out: TextIO) -> int:
    config, shard = _load(args)
    # Events and logs go to stderr, so that stdout holds the view (or the JSON) alone.
    events = sys.stdout if args.events == "stdout" else sys.stderr
    configure_logging(config.log.level, config.log.format, stream=events)
    app, view = asyncio.run(_once(config, shard))
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
        render(view, out)
    return EXIT_OK if all(r["up"] for r in rows) else EXIT_FAILURE


def _cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    try:
        return _status(args, out)
    except KeyboardInterrupt:  # how --watch ends
        return EXIT_OK


def _status(args: argparse.Namespace, out: TextIO) -> int:
    terminal = out.isatty()
    while True:
        try:
            view = fetch_view(args.url, timeout=args.timeout)
        except (OSError, ValueError) as e:
            sys.stderr.write(f"jobwatch status: {args.url}: {e}\n")
            if not args.watch:
                return EXIT_FAILURE
        else:
            if args.json:
                keys = ("targets", "attention", "running")
                json.dump(dict(zip(keys, view, strict=True)), out, indent=2)
                out.write("\n")
            else:
                if args.watch and terminal:
                    out.write("\x1b[H\x1b[2J")  # home and clear: redraw in place
                elif args.watch:
                    out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
                render(view, out, terminal=terminal)
            out.flush()
            if not args.watch:
                return EXIT_OK if view[0]["targets_down"] == 0 else EXIT_FAILURE
        time.sleep(args.interval)


def _cmd_sim(args: argparse.Namespace) -> int:
    from jobwatch.clock import SystemClock
    from jobwatch.simulator import ScenarioError, builtin_scenario, load_scenario, run_simulator

    try:
        scenario = load_scenario(args.scenario) if args.scenario else builtin_scenario("demo")
    except ScenarioError as e:
        sys.stderr.write(f"jobwatch sim: {e}\n")
        return EXIT_CONFIG
    if (args.sqs_endpoint is None) != (args.sqs_queue is None):
        sys.stderr.write("jobwatch sim: --sqs-endpoint and --sqs-queue go together\n")
        return EXIT_CONFIG
    push = None
    if args.sqs_queue is not None:
        from jobwatch.simulator import PushFaults

        faults = PushFaults(
            loss=args.push_loss,
            duplicate=args.push_duplicate,
            delay=args.push_delay,
            reorder=args.push_reorder,
        )
        push = (args.sqs_endpoint, args.sqs_queue, args.sqs_region, faults)
    configure_logging("info", "json")  # run_simulator logs simulator_started with the real URL
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_simulator(args.listen, scenario, SystemClock(), push=push))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from jobwatch.demo import run_demo

    configure_logging("info", args.log_format)
    asyncio.run(
        run_demo(args.listen, duration=args.duration, scenario_path=args.scenario, push=args.push)
    )
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
    p.add_argument(
        "--events",
        choices=("stderr", "stdout"),
        default="stderr",
        help="where the JSON events and logs go (default %(default)s)",
    )
    _shard_arguments(p)

    p = sub.add_parser("status", help="show a running jobwatch's view from its API (docs/api.md)")
    p.add_argument(
        "--url",
        required=True,
        help="the daemon's address, e.g. http://127.0.0.1:9877 after kubectl port-forward "
        "(user:password@ in it is sent as basic auth)",
    )
    p.add_argument("--watch", action="store_true", help="redraw every --interval until Ctrl-C")
    p.add_argument("--interval", type=parse_duration, default=5.0, help="with --watch (default 5s)")
    p.add_argument("--timeout", type=parse_duration, default=10.0, help="per request")
    p.add_argument("--json", action="store_true", help="print the API's documents as JSON")

    p = sub.add_parser("demo", help="simulator and daemon in one process, no AWS account needed")
    p.add_argument(
        "--listen", default="127.0.0.1:9877", help="metrics address (default %(default)s)"
    )
    p.add_argument("--duration", type=parse_duration, default=None, help="stop after this long")
    p.add_argument("--scenario", default=None, help="simulator scenario file (default: demo)")
    p.add_argument("--log-format", choices=("json", "console"), default="json")
    p.add_argument(
        "--push",
        action="store_true",
        help="job events through moto's SQS too (docs/push.md; needs moto[server])",
    )

    p = sub.add_parser("sim", help="run the S3 Control simulator")
    p.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT (default %(default)s)")
    p.add_argument("--scenario", default=None, help="scenario YAML (default: built-in demo)")
    g = p.add_argument_group("job events to SQS, as EventBridge delivers them (docs/push.md)")
    g.add_argument("--sqs-endpoint", default=None, help="SQS endpoint URL (e.g. moto's)")
    g.add_argument("--sqs-queue", default=None, help="queue URL to publish to")
    g.add_argument("--sqs-region", default="us-east-1", help="(default %(default)s)")
    g.add_argument("--push-loss", type=float, default=0.0, help="probability an event is lost")
    g.add_argument("--push-duplicate", type=float, default=0.0, help="probability of a copy")
    g.add_argument("--push-delay", type=parse_duration, default=0.0, help="up to this late")
    g.add_argument("--push-reorder", action="store_true", help="shuffle each batch")
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
        if args.command == "status":
            return _cmd_status(args, stdout)
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
