"""Settings as a django-eventstream project writes them (module name changed)."""

import os

from tests.settings import DATABASES, PASSWORD_HASHERS  # the test database pytest created

SECRET_KEY = "dropin-project"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "rest_framework",
    "grip_eventstream",
    "tests.dropin",
]
MIDDLEWARE = [
    "django_grip.GripMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if os.environ.get("GES_GRIP_MIDDLEWARE") == "0":
    MIDDLEWARE.remove("django_grip.GripMiddleware")
ROOT_URLCONF = "tests.dropin.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]
STATIC_URL = "/static/"
DATABASES = DATABASES
PASSWORD_HASHERS = PASSWORD_HASHERS

GRIP_URL = os.environ.get("GRIP_URL", "http://localhost:5561")
EVENTSTREAM_STORAGE_CLASS = "grip_eventstream.storage.DjangoModelStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "tests.dropin.channelmanager.MyChannelManager"
EVENTSTREAM_ALLOW_ORIGIN = "https://app.example.com"
EVENTSTREAM_ALLOW_CREDENTIALS = True
EVENTSTREAM_ALLOW_HEADERS = "Authorization"
