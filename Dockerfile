# CPU image: pyserver from this tree, serving the example store baked in at /models.
#   podman build -t pyserver:0.1.0 .            (or docker build; BASE: any Debian 12 image)
#   podman run --rm -p 8000-8002:8000-8002 pyserver:0.1.0
# Only what serving needs: Debian's python3, pyserver and its wheels (onnxruntime) in
# /opt/pyserver, the models; no compiler, no pip, no onnx. Runs as uid 10001.
ARG BASE=docker.io/library/debian:bookworm-slim

# checkov:skip=CKV_DOCKER_7:FROM names the build argument BASE, whose default above is a versioned tag
FROM ${BASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# Where PyPI is reached through a TLS-inspecting proxy, hand pip the CA bundle that
# trusts it: podman build -v /etc/ssl/certs:/run/host-certs:ro \
#   --build-arg PIP_CERT=/run/host-certs/ca-certificates.crt ...
ARG PIP_CERT=
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# onnx and Pillow only make the example models, from a folder the image leaves behind.
RUN { [ -n "$PIP_CERT" ] || unset PIP_CERT; } \
    && python3 -m venv /opt/pyserver \
    && /opt/pyserver/bin/pip install --no-cache-dir . \
    && /opt/pyserver/bin/pip install --no-cache-dir --target /opt/store-tools "onnx>=1.15" \
    && PYTHONPATH=/opt/store-tools /opt/pyserver/bin/python -m pyserver.examples.store /models \
    && /opt/pyserver/bin/pip uninstall -y pip setuptools \
    && find /opt/pyserver -name __pycache__ -prune -exec rm -rf {} + \
    && /opt/pyserver/bin/python -m compileall -q /opt/pyserver/lib

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* \
    && groupadd --system --gid 10001 pyserver \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pyserver
COPY --from=build /opt/pyserver /opt/pyserver
COPY --from=build /models /models
ENV PATH=/opt/pyserver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000 8001 8002
# Liveness (the process serves); Kubernetes uses its own probes (deploy/kubernetes).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pyserver"]
CMD ["--model-store=/models", "--http-address=0.0.0.0", "--grpc-address=0.0.0.0", \
     "--metrics-address=0.0.0.0", "--model-control-mode=none", "--drain-hold-secs=5"]
