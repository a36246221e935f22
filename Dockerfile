# gatewatch: `docker build -t gatewatch .`, then e.g.
#   docker run --rm gatewatch serve --config /etc/gatewatch/gatewatch.yaml --store elasticsearch:http://es:9200 --listen 0.0.0.0:8080
# docker-compose.yml builds and runs it twice (gatewatch-1, gatewatch-2).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs: the build context also holds .venv/ and .cache/ (test servers).
WORKDIR /src
COPY pyproject.toml ./
COPY gatewatch ./gatewatch
COPY ingest ./ingest
COPY detectors ./detectors
COPY schemas ./schemas
COPY dashboards ./dashboards
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/gatewatch --create-home gatewatch

USER gatewatch
WORKDIR /var/lib/gatewatch
EXPOSE 8080
ENTRYPOINT ["gatewatch"]
CMD ["--help"]
