"""A Django project for tests/test_django.py: backbeat as the task backend (the store's URL
from $BACKBEAT_DJANGO_STORE); a PostgreSQL database from $BACKBEAT_DJANGO_DATABASE
(postgresql://user@host:port/name), if set."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks", "tests.django_project.shop"]
DATABASES: dict[str, dict[str, str]] = {}
if os.environ.get("BACKBEAT_DJANGO_DATABASE"):
    _database = urlsplit(os.environ["BACKBEAT_DJANGO_DATABASE"])
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.path.lstrip("/"),
        "USER": _database.username or "",
        "HOST": _database.hostname or "",
        "PORT": str(_database.port or ""),
    }
TASKS = {
    "default": {
        "BACKEND": "backbeat.django.BackbeatBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"store": os.environ.get("BACKBEAT_DJANGO_STORE", "sqlite:///tasks.db")},
    }
}
