FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FINGERPRINTS_DATA_DIR=/data

# hnswlib builds from source: a compiler is needed at install time only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY fingerprints ./fingerprints
RUN pip install . \
    && apt-get purge -y build-essential && apt-get autoremove -y

RUN useradd --system --uid 10001 --home /data fingerprints \
    && mkdir -p /data && chown fingerprints /data
USER fingerprints
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"

CMD ["fingerprints", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "8000"]
