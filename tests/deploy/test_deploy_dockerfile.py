"""The container image, checked without a Docker engine.

hadolint lints the Dockerfile; the rules the issue sets (slim base, non-root numeric
user, nothing built in the final stage, entry point, port) are asserted on the parsed
file; and the build stage's RUN steps are replayed, as written, in a fresh virtual
environment built from the same context a ``docker build`` would send.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from deploykit import (
    REPO,
    DockerIgnore,
    Stage,
    expand,
    output_of,
    parse_dockerfile,
    parse_env,
    require_tool,
    run,
)

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = ["jobwatch", "run", "-c", "/etc/jobwatch/config.yaml"]
# Commands that compile or fetch packages: none may run in the final stage.
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf|microdnf|pip3?|uv|poetry|gcc|g\+\+|cc|make|cmake|cargo|"
    r"build-essential|python3? -m pip)\b"
)


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def final(parsed: tuple[dict[str, str], list[Stage]]) -> Stage:
    return parsed[1][-1]


def test_hadolint_reports_nothing() -> None:
    hadolint = require_tool("hadolint")
    proc = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert proc.returncode == 0, output_of(proc)
    assert proc.stdout.strip() == "", output_of(proc)


def test_hadolint_sees_our_rules(tmp_path: Path) -> None:
    """hadolint must not be blind to our install step: drop the pip cache mount and
    it has to complain (DL3042), so a clean report above means something."""
    hadolint = require_tool("hadolint")
    text = DOCKERFILE.read_text()
    assert "--mount=type=cache,target=/root/.cache/pip" in text
    mutated = tmp_path / "Dockerfile"
    mutated.write_text(text.replace("--mount=type=cache,target=/root/.cache/pip", ""))
    proc = run([hadolint, "--no-color", "--format", "json", str(mutated)])
    assert "DL3042" in proc.stdout, output_of(proc)


def test_usage_comments_name_files_that_exist() -> None:
    """The `docker run` example mounts a config file the repository has."""
    comments = "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if line.startswith("#")
    )
    named = re.findall(r"\$PWD/([\w./-]+?):", comments)
    assert named, "the usage comment mounts a config file"
    for rel in named:
        assert (REPO / rel).is_file(), f"the Dockerfile's usage comment names {rel}"


def test_multi_stage_on_a_slim_python_311_base(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = parsed
    assert len(stages) >= 2
    assert stages[0].name == "build"
    for stage in stages:
        base = expand(stage.base, global_args)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    assert expand(stages[0].base, global_args) == expand(stages[-1].base, global_args), (
        "the venv is built against the final stage's interpreter, so both must match"
    )


def test_final_stage_runs_as_a_non_root_numeric_user(final: Stage) -> None:
    args = {k.strip(): v.strip() for k, _, v in (i.args.partition("=") for i in final.of("ARG"))}
    users = final.of("USER")
    assert len(users) == 1
    user = expand(users[0].args, args)
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER must be numeric uid[:gid] so runAsNonRoot can verify it: {user!r}"
    assert int(match.group(1)) >= 1000
    assert match.group(2) is None or int(match.group(2)) != 0
    # USER comes after everything that needs root.
    assert final.instructions.index(users[0]) > max(
        final.instructions.index(i) for i in final.of("RUN") + final.of("COPY")
    )


def test_final_stage_installs_and_builds_nothing(final: Stage) -> None:
    for ins in final.of("RUN"):
        assert not BUILD_TOOLS.search(ins.args), f"line {ins.line}: {ins.args}"
    copies = final.of("COPY") + final.of("ADD")
    assert copies, "the final stage copies the venv from the build stage"
    for ins in copies:
        flags, rest = ins.flags()
        assert ins.keyword == "COPY"
        assert flags.get("from") == "build", f"line {ins.line}: only the venv is copied"
        assert rest.split() == ["/opt/jobwatch", "/opt/jobwatch"]


def test_entrypoint_port_and_path(final: Stage) -> None:
    (entrypoint,) = final.of("ENTRYPOINT")
    assert entrypoint.exec_form() == ENTRYPOINT
    assert not final.of("CMD")
    assert [i.args for i in final.of("EXPOSE")] == ["9877"]
    env: dict[str, str] = {}
    for ins in final.of("ENV"):
        env.update(parse_env(ins.args))
    assert env["PATH"].split(":")[0] == "/opt/jobwatch/bin"
    assert env.get("PYTHONUNBUFFERED") == "1", "events are JSON lines on stdout"


def test_dockerignore_sends_only_what_the_build_copies(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    ignore = DockerIgnore.load(REPO / ".dockerignore")
    files = ignore.context_files(REPO)
    assert "pyproject.toml" in files
    assert "README.md" in files
    assert "src/jobwatch/__init__.py" in files
    for path in files:
        top = path.split("/")[0]
        assert top in {"pyproject.toml", "README.md", "src"}, path
        assert "__pycache__" not in path
        assert ".egg-info" not in path
    for secret_ish in (".git/config", ".venv/pyvenv.cfg", ".env", "tests/x.py", "deploy/x"):
        assert ignore.excluded(secret_ish), secret_ish
    # Every COPY source of the build stage is in the context.
    for ins in parsed[1][0].of("COPY"):
        _, rest = ins.flags()
        *sources, _dest = rest.split()
        for source in sources:
            assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), (
                f"line {ins.line}: {source} is excluded by .dockerignore"
            )


def _map_path(value: str, root: Path) -> str:
    """Map an absolute container path into the fake root; PATH-like lists too."""
    return os.pathsep.join(
        str(root / part.lstrip("/")) if part.startswith("/") else part for part in value.split(":")
    )


def test_build_stage_steps_install_in_a_fresh_venv(
    parsed: tuple[dict[str, str], list[Stage]], tmp_path: Path
) -> None:
    """Replay the build stage: ENV, WORKDIR, COPY (from the .dockerignore'd context)
    and every RUN command verbatim, with container paths mapped into ``tmp_path``.

    pip's own cache directory stands in for the ``--mount=type=cache`` of the
    Dockerfile, so the run reuses wheels already downloaded on this machine.
    """
    global_args, stages = parsed
    build = stages[0]
    root = tmp_path / "root"
    context = tmp_path / "context"
    for rel in DockerIgnore.load(REPO / ".dockerignore").context_files(REPO):
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, context / rel)

    # A PATH with the base interpreter as `python` and system tools, and nothing of
    # the project's own virtual environment (its `jobwatch` must not answer for ours).
    host_bin = tmp_path / "host-bin"
    host_bin.mkdir()
    (host_bin / "python").symlink_to(sys._base_executable)  # type: ignore[attr-defined]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"} and not k.startswith("AWS_")
    }
    env["PATH"] = f"{host_bin}{os.pathsep}/usr/local/bin:/usr/bin:/bin"
    variables = dict(global_args)
    workdir = root
    ran = []
    for ins in build.instructions:
        if ins.keyword == "ENV":
            for key, value in parse_env(ins.args).items():
                env[key] = expand(_map_path(value, root), {**env, **variables})
        elif ins.keyword == "ARG":
            key, _, value = ins.args.partition("=")
            variables[key.strip()] = value.strip()
        elif ins.keyword == "WORKDIR":
            workdir = root / ins.args.strip().lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            flags, rest = ins.flags()
            assert "from" not in flags
            *sources, dest = rest.split()
            target = workdir / dest
            for source in sources:
                src = context / source
                if src.is_dir():
                    shutil.copytree(src, target if not dest.endswith("/") else target / src.name)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name)
        elif ins.keyword == "RUN":
            flags, command = ins.flags()
            assert set(flags) <= {"mount"}, flags
            assert not re.search(r"(?<![\w$}])/(?!root/\.cache)", command), (
                f"line {ins.line}: an absolute path in RUN cannot be replayed; use $VIRTUAL_ENV"
            )
            proc = run(
                ["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env, timeout=540
            )
            assert proc.returncode == 0, f"line {ins.line}: {command}\n{output_of(proc)}"
            ran.append(proc)
        else:
            pytest.fail(f"line {ins.line}: the replay does not know {ins.keyword}")
    assert ran, "the build stage has RUN steps"

    venv = Path(env["VIRTUAL_ENV"])
    assert venv.is_relative_to(root)
    python = venv / "bin" / "python"
    proc = run([str(python), "-m", "pip", "check"], env=env)
    assert proc.returncode == 0, output_of(proc)
    proc = run([str(venv / "bin" / "jobwatch"), "--version"], env=env)
    assert proc.returncode == 0, output_of(proc)
    proc = run([str(python), "-c", "import jobwatch, sys; print(jobwatch.__file__)"], env=env)
    assert proc.returncode == 0, output_of(proc)
    # Installed as a wheel into the venv, not linked back to the source tree.
    assert Path(proc.stdout.strip()).is_relative_to(venv), proc.stdout
