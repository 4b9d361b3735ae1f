"""Fuzzing: responses built from botocore's own model of S3 Control, valid and mutated,
fed through the whole path (HTTP socket, aiobotocore, source, diff, store, exposition);
and configuration files. Nothing may escape as an unhandled exception.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import botocore.session
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from jobwatch.app import App
from jobwatch.clock import ManualClock
from jobwatch.config import Config, parse_config
from jobwatch.errors import ConfigError
from jobwatch.targets import resolve_targets
from jobwatch.testing import MemorySink

NS = "http://awss3control.amazonaws.com/doc/2018-08-20/"
MODEL = botocore.session.get_session().get_service_model("s3control")
ACCOUNT = "111111111111"
# XML 1.0 cannot carry most control characters: AWS never sends them.
XML_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\x0b\x0c"),
    max_size=40,
).map(lambda s: "".join(c for c in s if c in "\t\n" or ord(c) >= 0x20))


def _scalar(shape: Any) -> st.SearchStrategy[str]:
    t = shape.type_name
    if t == "string":
        enum = getattr(shape, "enum", None) or []
        return st.sampled_from(enum) | XML_TEXT if enum else XML_TEXT
    if t in ("integer", "long"):
        return st.integers(min_value=-(2**40), max_value=2**40).map(str)
    if t == "boolean":
        return st.sampled_from(["true", "false"])
    if t == "timestamp":
        return st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: d.isoformat().replace("+00:00", "Z"))
    return XML_TEXT


def _xml(shape: Any, depth: int = 0) -> st.SearchStrategy[str]:
    """XML for ``shape`` as AWS would serialise it (members may be missing)."""
    if shape.type_name == "structure":
        if depth > 3:
            return st.just("")
        parts = [
            st.one_of(st.just(""), _xml(m, depth + 1).map(lambda x, n=name: f"<{n}>{x}</{n}>"))
            for name, m in shape.members.items()
        ]
        return st.tuples(*parts).map("".join)
    if shape.type_name == "list":
        return st.lists(_xml(shape.member, depth + 1), max_size=4).map(
            lambda items: "".join(f"<member>{i}</member>" for i in items)
        )
    if shape.type_name == "map":
        return st.just("")
    return _scalar(shape).map(escape)


def _descriptor() -> st.SearchStrategy[str]:
    """A JobListDescriptor that always has a JobId (most do); the rest as the model says."""
    shape = MODEL.shape_for("JobListDescriptor")
    return st.tuples(st.from_regex(r"[a-z0-9-]{5,12}", fullmatch=True), _xml(shape)).map(
        lambda t: f"<JobId>{t[0]}</JobId>{t[1]}"
    )


MUTATIONS = st.sampled_from(["none", "truncate", "garble_number", "drop_close", "inject", "empty"])


def _mutate(body: str, how: str, data: st.DataObject) -> str:
    if how == "truncate":
        return body[: data.draw(st.integers(0, max(0, len(body) - 1)))]
    if how == "garble_number":
        return body.replace("<Priority>", "<Priority>x", 1).replace(
            "<TotalNumberOfTasks>", "<TotalNumberOfTasks>1e", 1
        )
    if how == "drop_close":
        return body.replace("</member>", "", 1)
    if how == "inject":
        return body.replace("<member>", "<member><Unexpected>\u2603</Unexpected>", 1)
    if how == "empty":
        return ""
    return body


async def _serve_and_poll(list_body: str, describe_body: str) -> App:
    async def list_jobs(_: web.Request) -> web.Response:
        return web.Response(text=list_body, content_type="application/xml")

    async def describe(_: web.Request) -> web.Response:
        return web.Response(text=describe_body, content_type="application/xml")

    app = web.Application()
    app.router.add_get("/v20180820/jobs", list_jobs)
    app.router.add_get("/v20180820/jobs/{id}", describe)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        clock = ManualClock()
        cfg = Config.model_validate(
            {
                "endpoint_url": f"http://127.0.0.1:{port}",
                "timeout": "5s",
                "retry": {"mode": "standard", "max_attempts": 1},
                "targets": [{"account_id": ACCOUNT}],
            }
        )
        async with App(cfg, clock=clock, sinks=[MemorySink()]) as jw:
            await jw.poll_all_once()
            clock.advance(60)
            await jw.poll_all_once()  # incremental: exercises DescribeJob too
        return jw
    finally:
        await runner.cleanup()


#: More examples for a deeper run: JOBWATCH_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz.py
EXAMPLES = int(os.environ.get("JOBWATCH_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@FUZZ
@given(
    jobs=st.lists(_descriptor(), max_size=6),
    token=st.one_of(st.just(""), st.just("<NextToken></NextToken>")),
    describe=_xml(MODEL.shape_for("JobDescriptor")),
    how=MUTATIONS,
    data=st.data(),
)
def test_fuzzed_responses_never_crash_and_metrics_stay_valid(
    jobs: list[str], token: str, describe: str, how: str, data: st.DataObject
) -> None:
    members = "".join(f"<member>{j}</member>" for j in jobs)
    head = '<?xml version="1.0" encoding="UTF-8"?>\n'
    body = f'{head}<ListJobsResult xmlns="{NS}"><Jobs>{members}</Jobs>{token}</ListJobsResult>'
    body = _mutate(body, how, data)
    describe_body = (
        f'{head}<DescribeJobResult xmlns="{NS}"><Job>{describe}</Job></DescribeJobResult>'
    )
    with capture_logs() as logs:
        jw = asyncio.run(_serve_and_poll(body, describe_body))
    crashed = [e for e in logs if e["event"] in ("poll_crashed", "event_sink_failed")]
    assert crashed == [], crashed
    state = jw.store[(ACCOUNT, "us-east-1")]
    assert state.attempted
    if not state.up:
        assert state.last_error  # a failure always names its code
    text = generate_latest(jw.registry).decode()
    list(text_string_to_metric_families(text))  # the exposition still parses


CONFIG_KEYS = st.sampled_from(
    [
        "interval",
        "jitter",
        "resync_interval",
        "concurrency",
        "timeout",
        "retry",
        "listen",
        "log",
        "endpoint_url",
        "state_file",
        "terminal_retention",
        "stall",
        "defaults",
        "targets",
        "bogus",
    ]
)
YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**13)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
GOOD_TARGET = {"account_id": "123456789012"}


@settings(max_examples=EXAMPLES * 5, deadline=None, derandomize=True)
@given(
    doc=st.dictionaries(CONFIG_KEYS, YAML_VALUES, max_size=5),
    keep_target=st.booleans(),
    raw=st.one_of(st.none(), st.text(max_size=40)),
)
def test_fuzzed_config_files_are_accepted_or_explained(
    doc: dict[str, Any], keep_target: bool, raw: str | None
) -> None:
    if keep_target:
        doc.setdefault("targets", [GOOD_TARGET])
    text = raw if raw is not None else yaml.safe_dump(doc)
    problems: list[str] | None = None
    try:
        cfg = parse_config(text, environ={})
    except ConfigError as e:
        problems = e.problems
    if problems is None:
        assert resolve_targets(cfg).targets
        return
    assert problems
    for problem in problems:
        # Each problem names where (a key path, a line, or the top level) and why.
        assert ":" in problem, problem
