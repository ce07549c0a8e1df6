"""Settings for the grip_eventstream example: a one-page live chat behind Pushpin.

Development defaults throughout; every value that differs in a deployment comes from the
environment (see docker-compose.yml at the repository root for a complete set).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent  # the example/ folder


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"

# The browser talks to Pushpin (127.0.0.1:7999), which passes its Host header on to Django.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "grip_eventstream",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # No GZipMiddleware: compressing responses would buffer the event stream.
]

ROOT_URLCONF = "demo_project.urls"
WSGI_APPLICATION = "demo_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    },
]

# PostgreSQL when POSTGRES_HOST is set (docker-compose.yml does), SQLite otherwise.
if os.environ.get("POSTGRES_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["POSTGRES_HOST"],
            "PORT": os.environ.get("POSTGRES_PORT", "5432"),
            "NAME": os.environ.get("POSTGRES_DB", "grip_eventstream"),
            "USER": os.environ.get("POSTGRES_USER", "postgres"),
            "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
            # Several processes send events (gunicorn workers, manage.py): WAL and immediate
            # transactions make them queue instead of failing with "database is locked".
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Where send_event() publishes: Pushpin's control port. The `key` must equal `sig_key` in
# pushpin/pushpin.conf: the stream view uses it to verify the Grip-Sig header Pushpin adds to
# every request it forwards, and answers requests that did not come through Pushpin with a 4xx.
GRIP_URL = os.environ.get(
    "GRIP_URL", "http://127.0.0.1:5561?key=changeme-dev-only-and-at-least-32-bytes"
)
# Store events so that reconnecting clients get what they missed (Last-Event-ID replay)
# and Pushpin can repair gaps; needs "manage.py migrate", which scripts/demo runs.
EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
