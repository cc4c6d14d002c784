# The hpsweep image: one image for the coordinator (`hpsweep launch …`) and the workers
# (`hpsweep worker`). Built by `docker compose build`; see docker-compose.yml and README.md,
# "Running on many machines".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-root user; /cache is the dataset cache folder (a named volume in docker-compose.yml,
# shared by the workers of one Docker host; a new volume takes this folder's owner).
RUN useradd --create-home --uid 10001 hpsweep \
    && mkdir -p /cache \
    && chown hpsweep /cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY coordinator ./coordinator
COPY worker ./worker
COPY storage ./storage
RUN pip install '.[postgres,datasets]'
COPY configs ./configs

USER hpsweep
ENV HPSWEEP_CACHE=/cache
ENTRYPOINT ["hpsweep"]
CMD ["--help"]
