"""A Django project for tests/test_django.py: backbeat as the task backend (the store's URL
from $BACKBEAT_DJANGO_STORE)."""

import os

SECRET_KEY = "tests-only"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks", "tests.django_project.shop"]
DATABASES: dict[str, dict[str, str]] = {}
TASKS = {
    "default": {
        "BACKEND": "backbeat.django.BackbeatBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"store": os.environ.get("BACKBEAT_DJANGO_STORE", "sqlite:///tasks.db")},
    }
}
