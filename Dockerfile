# The anisearch gateway: trace.moe's API with quota-aware fallback, for bot fleets.
#   docker build -t anisearch-gateway .
#   docker run -p 8080:8080 -e ANISEARCH_SERVER_CLIENTS="bot=<a long random token>" anisearch-gateway
# With several replicas, give them one Redis (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY anisearch ./anisearch
COPY providers ./providers
RUN pip install '.[server,redis]' && rm -rf /src

# No root, no shell needed at run time; state (a SQLite ledger when no Redis is given) in a volume.
RUN useradd --system --uid 10001 --home-dir /var/lib/anisearch --create-home anisearch
USER anisearch
WORKDIR /var/lib/anisearch
ENV XDG_STATE_HOME=/var/lib/anisearch/state \
    XDG_CACHE_HOME=/var/lib/anisearch/cache \
    XDG_CONFIG_HOME=/var/lib/anisearch/config \
    ANISEARCH_SERVER_HOST=0.0.0.0 \
    ANISEARCH_SERVER_PORT=8080
VOLUME ["/var/lib/anisearch"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# SIGTERM: uvicorn stops accepting, lets in-flight searches finish (each is settled in the ledger), exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["anisearch"]
CMD ["serve"]
