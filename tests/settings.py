"""Settings of the test project; gunicorn serves the same project in end-to-end tests.

GES_TEST_DB picks the database: "sqlite" (default, a file so that gunicorn shares it) or
"postgres" (127.0.0.1:5432, trust auth). The harness passes GES_DB_NAME to gunicorn so it
opens the test database pytest-django created.
"""

import json
import os
from pathlib import Path

RUN_DIR = Path(os.environ.get("GES_RUN_DIR", Path(__file__).resolve().parent.parent / ".run"))

SECRET_KEY = "grip-eventstream-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.messages",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "grip_eventstream",
    "tests",
]
MIDDLEWARE = [
    "tests.middleware.FlakyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
# pytest-django's live_server (the test kit's eventstream_pushpin) serves static files.
STATIC_URL = "/static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("GES_TEST_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("GES_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("GES_PG_PORT", "5432"),
            "USER": os.environ.get("GES_PG_USER", "postgres"),
            "NAME": os.environ.get("GES_DB_NAME", "test"),
            "TEST": {"NAME": "test_grip_eventstream"},
        }
    }
else:
    # One file per pytest process, so that concurrent runs never share (and delete) a test
    # database; gunicorn and other processes are given its name in GES_DB_NAME.
    _sqlite = str(RUN_DIR / f"test-{os.getpid()}.sqlite3")
    _dev_sqlite = str(RUN_DIR / "dev.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("GES_DB_NAME", _dev_sqlite),
            "TEST": {"NAME": _sqlite},
            "OPTIONS": {
                # WAL lets readers run beside the writer; IMMEDIATE makes every transaction
                # take the write lock up front, so concurrent writers queue (timeout) rather
                # than fail with "database is locked" when a read lock cannot be upgraded.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }

GRIP_URL = os.environ.get(
    "GRIP_URL", "http://127.0.0.1:5561?iss=pushpin&key=grip-eventstream-test-key-0123456789abcdef"
)
if os.environ.get("GES_GRIP_PROXIES"):  # the scale-out tests: several Pushpins
    GRIP_PROXIES = json.loads(os.environ["GES_GRIP_PROXIES"])
EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "tests.channelmanagers.TestChannelManager"
EVENTSTREAM_LINK_TIMEOUT = int(os.environ.get("GES_LINK_TIMEOUT", "120"))
EVENTSTREAM_REPLAY_LIMIT = int(os.environ.get("GES_REPLAY_LIMIT", "500"))
EVENTSTREAM_PUBLISH_TIMEOUT = 3
EVENTSTREAM_KEEP_ALIVE = int(os.environ.get("GES_KEEP_ALIVE", "20"))
# No random "retry:" line, so that tests can compare whole bodies (tests/dropin keeps it).
EVENTSTREAM_RECONNECT_SPREAD = 0
if os.environ.get("GES_CORS"):  # the CORS end-to-end test's gunicorn
    EVENTSTREAM_ALLOW_ORIGINS = ["https://app.example"]
    EVENTSTREAM_ALLOW_CREDENTIALS = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"grip_eventstream": {"handlers": ["console"], "level": "WARNING"}},
}
if os.environ.get("GES_PRESENCE_TTL"):  # the presence end-to-end tests: ghosts expire fast
    EVENTSTREAM_PRESENCE_TTL = int(os.environ["GES_PRESENCE_TTL"])
