# syntax=docker/dockerfile:1
#
# jobwatch container image.
#
#   docker build -t jobwatch:dev .
#   docker run --rm -p 9877:9877 -v "$PWD/config/jobwatch.example.yaml:/etc/jobwatch/config.yaml:ro" jobwatch:dev
#
# Two stages: "build" makes a virtual environment in $VIRTUAL_ENV from wheels only;
# the final stage copies that environment onto a clean slim image and runs it as a
# non-root numeric user. tests/deploy/test_deploy_dockerfile.py lints this file and
# replays the build stage's RUN steps in a fresh virtual environment, so keep every
# path in a RUN step relative to WORKDIR or spelled through $VIRTUAL_ENV, and reach
# the environment's tools through PATH.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV VIRTUAL_ENV=/opt/jobwatch \
    PATH=/opt/jobwatch/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"
COPY pyproject.toml README.md ./
COPY src ./src
# Dependencies come as wheels only (--only-binary), so no compiler is needed in
# either stage; jobwatch itself is pure Python and becomes a wheel first.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir dist . \
 && pip install --only-binary=:all: dist/*.whl \
 && jobwatch --version

FROM ${PYTHON_IMAGE}
ARG JOBWATCH_UID=10001
LABEL org.opencontainers.image.title="jobwatch" \
      org.opencontainers.image.description="Prometheus exporter and event stream for S3 Batch Operations jobs across AWS accounts and regions" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV VIRTUAL_ENV=/opt/jobwatch \
    PATH=/opt/jobwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# No package manager and no compiler here: the final stage gets the virtual
# environment from the build stage and nothing else.
COPY --from=build /opt/jobwatch /opt/jobwatch
# /var/lib/jobwatch is where a state_file can live, owned by the runtime user so a
# plain `docker run` can write it; on Kubernetes it is an emptyDir (the root
# filesystem is read-only there).
RUN install -d -m 0750 -o "${JOBWATCH_UID}" -g "${JOBWATCH_UID}" /var/lib/jobwatch
WORKDIR /var/lib/jobwatch
USER ${JOBWATCH_UID}:${JOBWATCH_UID}
EXPOSE 9877
ENTRYPOINT ["jobwatch", "run", "-c", "/etc/jobwatch/config.yaml"]
