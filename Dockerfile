# One image for every agent; docker-compose.yml picks the agent with `meetara agent NAME`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MEETARA_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY bus ./bus
COPY runtime ./runtime
COPY agents ./agents
COPY configs ./configs
RUN pip install ".[s3]" && useradd --create-home --uid 1000 meetara \
    && mkdir -p /srv/meetara && chown meetara /srv/meetara

USER meetara
WORKDIR /srv/meetara
CMD ["meetara", "--help"]
