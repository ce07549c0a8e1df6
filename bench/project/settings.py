import os

SECRET_KEY = "bench"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "grip_eventstream",
]
# A typical project's middleware, the same for every view measured.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "bench.project.urls"

_db = os.environ.get("GES_BENCH_DB", "/tmp/bench.sqlite3")
if _db.startswith("postgres:"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "USER": "postgres",
            "NAME": _db.removeprefix("postgres:"),
            # Persistent connections, as the README's Performance section recommends:
            # otherwise every subscribe pays for a new connection (about 4 ms here).
            "CONN_MAX_AGE": 60,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _db,
            "CONN_MAX_AGE": 60,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }

GRIP_URL = os.environ.get("GRIP_URL", "http://127.0.0.1:5561")
EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"
EVENTSTREAM_PUBLISH_ERRORS = os.environ.get("GES_BENCH_PUBLISH_ERRORS", "raise")
EVENTSTREAM_RECONNECT_SPREAD = int(os.environ.get("GES_BENCH_SPREAD", "10"))
