# syntax=docker/dockerfile:1
# One container: the memory server with its model baked in (nothing downloads at run time).
# Configure it only through MEMORY_* environment variables (README, "Configuration").

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY memory ./memory
COPY projections ./projections
COPY docker/install.sh ./docker/install.sh
# The same script tests/test_container.py runs against a fresh virtualenv.
RUN sh docker/install.sh /opt/venv .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    OPENBLAS_NUM_THREADS=1 \
    MEMORY_DATA_DIR=/data \
    MEMORY_HOST=0.0.0.0 \
    MEMORY_PORT=8000 \
    MEMORY_LOG_FORMAT=json
RUN groupadd --system --gid 10001 memory \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin memory \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# The model's int8-arithmetic form (projections/embedder.py), derived once here rather than at every
# container start (about 3 s): it lands in the image's /tmp, owned by the user that serves.
RUN ["python", "-c", "from projections.embedder import default_embedder; m = default_embedder(); assert m.wait_ready(), m.load_error"]
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MEMORY_PORT', '8000'), timeout=2).status == 200 else 1)"]
ENTRYPOINT ["memory", "serve"]
