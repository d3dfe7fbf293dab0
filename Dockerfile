# The hotline server alone: the package without its workbench extras (no notebooks, plots or nbdev).
# Build: docker build -t artist-hotline .   Run: docker run --env-file .env -p 8080:8080 artist-hotline
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 PORT=8080 LOG_FORMAT=json

WORKDIR /app
COPY setup.py settings.ini README.md LICENSE ./
COPY artist_hotline ./artist_hotline
RUN pip install . && useradd --create-home --uid 10001 hotline && mkdir -p /data && chown hotline /data

USER hotline
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8080\")}/health', timeout=4)"]
CMD ["artist-hotline", "serve"]
