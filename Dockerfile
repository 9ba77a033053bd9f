# CPU image: builds pyserver from this tree and serves the example store.
#   docker build -t pyserver . && docker run --rm -p 8000-8002:8000-8002 pyserver
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[examples]"

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -m pyserver.examples.store /models
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/api/health/live')"
ENTRYPOINT ["pyserver"]
CMD ["--model-store=/models"]
