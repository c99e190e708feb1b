"""A small Django project on backbeat's task backend (see README.md beside this file)."""

import os

SECRET_KEY = "example-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "examples.django_shop.urls"
INSTALLED_APPS = ["django_tasks", "examples.django_shop.shop"]
DATABASES: dict[str, dict[str, str]] = {}
TASKS = {
    "default": {
        "BACKEND": "backbeat.django.BackbeatBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {
            "store": os.environ.get("BACKBEAT_STORE", "sqlite:///.backbeat/django.db"),
        },
    }
}
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"shop": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
