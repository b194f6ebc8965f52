# consult: one image for the receiver, web and worker services (see docker-compose.yml).

# OpenSeadragon comes from npm (nothing from npm is committed).
FROM node:20-slim AS assets
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CONSULT_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY consult ./consult
COPY viewer ./viewer
COPY storage ./storage
RUN pip install . \
    && useradd --system --home-dir /data --create-home consult
COPY --from=assets /app/node_modules ./node_modules
USER consult
EXPOSE 8000 11112
CMD ["consult", "serve"]
