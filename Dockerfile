# reviewbus worker image. Build: docker build -t reviewbus .   Run: see docker-compose.kafka.yml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REVIEWBUS_HOME=/var/lib/reviewbus \
    REVIEWBUS_WEB_HOST=0.0.0.0 \
    REVIEWBUS_WEB_PORT=6066

WORKDIR /src
COPY . /src
RUN pip install . \
    && useradd --system --create-home --uid 10001 reviewbus \
    && mkdir -p /var/lib/reviewbus \
    && chown reviewbus /var/lib/reviewbus

USER reviewbus
WORKDIR /var/lib/reviewbus
EXPOSE 6066
CMD ["reviewbus", "worker"]
