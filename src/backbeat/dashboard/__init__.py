"""The dashboard: ``from backbeat.dashboard import dashboard``; an ASGI app to mount.

A web-layer package (it reads through the runner and the stores, nothing below imports
it). docs/dashboard.md tells how to mount it, who may see it, and what it costs.
"""

from backbeat.dashboard.app import Dashboard, dashboard

__all__ = ["Dashboard", "dashboard"]
