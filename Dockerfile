# The hotline server alone: the lean package (the cloud engines; no notebooks, plots or nbdev), and the
# deploy/ folder: its turn.toml (calibrate's turn-taking) and personas/ (see deploy/README.md).
# Build: docker build -t artist-hotline .   Run: docker run --env-file .env -p 8080:8080 artist-hotline
# With the offline engines too (Whisper, Piper: `serve` without keys): docker build --build-arg EXTRAS=offline -t artist-hotline .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 PORT=8080 LOG_FORMAT=json

WORKDIR /app
COPY setup.py settings.ini README.md LICENSE ./
COPY artist_hotline ./artist_hotline
ARG EXTRAS=
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && useradd --create-home --uid 10001 hotline && mkdir -p /data && chown hotline /data
# After the install, so that a new turn.toml or persona rebuilds this layer only; compose mounts the folder over it.
COPY deploy ./deploy
ENV PERSONAS_DIR=/app/deploy/personas

USER hotline
WORKDIR /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8080\")}/health', timeout=4)"]
# deploy/turn.toml, when there, becomes TURN_CONFIG (unless TURN_CONFIG names another file)
ENTRYPOINT ["sh", "/app/deploy/entrypoint.sh"]
CMD ["artist-hotline", "serve"]
