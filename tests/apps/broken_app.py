"""An app module that fails while being imported (a worker must say so in one line)."""

raise RuntimeError("DATABASE_URL is not set")
