"""A Django project for tests/test_django.py: backbeat as the task backend (the store's URL
from $BACKBEAT_DJANGO_STORE; "at_once" the same store with enqueue_on_commit off); a
database from $BACKBEAT_DJANGO_DATABASE (postgresql://user@host:port/name, or
sqlite:///path), if set."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks", "tests.django_project.shop"]
DATABASES: dict[str, dict[str, str]] = {}
if os.environ.get("BACKBEAT_DJANGO_DATABASE"):
    _database = urlsplit(os.environ["BACKBEAT_DJANGO_DATABASE"])
    if _database.scheme == "sqlite":
        DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": _database.path}
    else:
        DATABASES["default"] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _database.path.lstrip("/"),
            "USER": _database.username or "",
            "HOST": _database.hostname or "",
            "PORT": str(_database.port or ""),
        }
_STORE = os.environ.get("BACKBEAT_DJANGO_STORE", "sqlite:///tasks.db")
TASKS = {
    "default": {
        "BACKEND": "backbeat.django.BackbeatBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"store": _STORE},
    },
    "at_once": {
        "BACKEND": "backbeat.django.BackbeatBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"store": _STORE, "enqueue_on_commit": False},
    },
}
