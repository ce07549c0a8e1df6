# The example chat (example/) with grip_eventstream, served by gunicorn: the `app` service of
# docker-compose.yml. Pushpin runs in its own container (pushpin/Dockerfile) in front of it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv

# The library first, so that changing only example/ reuses this layer. psycopg for PostgreSQL;
# gunicorn 27 has --no-control-socket, used below.
COPY setup.cfg pyproject.toml README.md ./
COPY grip_eventstream/ grip_eventstream/
RUN pip install ".[postgres]" "gunicorn>=27"

RUN useradd --system --user-group --no-create-home app
# Owned by `app` so that the SQLite fallback (no POSTGRES_HOST) can write example/db.sqlite3.
COPY --chown=app:app example/ example/
USER app

EXPOSE 8000

# Apply migrations, then serve. gthread workers: the stream view answers at once (Pushpin holds
# the connections), so a few threads serve many clients. No control socket: nothing uses it and
# the user has no home directory to put it in.
CMD ["sh", "-c", "python example/manage.py migrate --no-input && exec gunicorn --chdir example --bind 0.0.0.0:8000 --worker-class gthread --workers 2 --threads 8 --no-control-socket --access-logfile - demo_project.wsgi:application"]
