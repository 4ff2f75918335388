# jobcast: one image for every part (worker, notifier+api, notifier, flower);
# docker-compose.yml picks the command.

# The demo page's socket.io-client, installed from the lockfile (never copied into the repo).
FROM node:20-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies of jobcast and of its server and flower extras first, exactly as
# requirements/runtime.txt pins them (the versions of the tested lock; pip checks every file
# against its hash): this layer is rebuilt only when the lock changes.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes -r requirements/runtime.txt

# Then the package with those extras (pyproject's readme is README.md): its wheel, installed
# with --no-index, so the install fails rather than fetch anything runtime.txt does not pin.
COPY pyproject.toml README.md ./
COPY workers ./workers
COPY notifier ./notifier
COPY api ./api
COPY --from=web /web/node_modules/socket.io-client/dist ./node_modules/socket.io-client/dist
RUN pip wheel --no-deps --wheel-dir /tmp/dist . \
    && pip install --no-index --find-links /tmp/dist "jobcast[server,flower]" \
    && rm -rf /tmp/dist build \
    && pip check \
    && useradd --create-home --uid 10001 --user-group jobcast

USER jobcast

# Inside a container the server listens on every interface; the ports are the compose's choice.
ENV JOBCAST_HTTP_HOST=0.0.0.0
EXPOSE 8080

CMD ["python", "-m", "api", "--host", "0.0.0.0", "--port", "8080"]
