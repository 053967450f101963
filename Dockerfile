# syntax=docker/dockerfile:1
# One container: the memory server with its model baked in (nothing downloads at run time).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY memory ./memory
COPY projections ./projections
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/python -c "from projections.embedder import default_embedder; e = default_embedder(); assert e.wait_ready(120), e.load_error"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    OPENBLAS_NUM_THREADS=1 \
    MEMORY_DATA_DIR=/data
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin memory \
    && mkdir -p /data && chown memory:memory /data
COPY --from=build /opt/venv /opt/venv
USER memory
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["memory", "serve", "--host", "0.0.0.0", "--port", "8000"]
