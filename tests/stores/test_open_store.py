"""`open_store`: a URL's scheme picks its store, whose module is imported only then."""

import subprocess
import sys

import pytest

from backbeat.stores import MemoryStore, StoreError, open_store


def test_an_unknown_scheme_is_refused_with_the_known_ones():
    with pytest.raises(StoreError) as raised:
        open_store("mysql://localhost/tasks")
    message = str(raised.value)
    assert "unknown store 'mysql' in 'mysql://localhost/tasks'" in message
    assert "known schemes: sqlite, redis, rediss, unix, postgresql, postgres, memory" in message
    with pytest.raises(StoreError, match=r"unknown store 'tasks\.db'"):
        open_store("tasks.db")  # a path is not a URL


def test_memory_is_memory_and_nothing_after_it():
    assert isinstance(open_store("memory://"), MemoryStore)
    assert open_store("memory://") is not open_store("memory://")  # each one new and empty
    with pytest.raises(StoreError, match="memory://, with nothing after it"):
        open_store("memory://shared")


def test_a_store_module_is_imported_only_when_a_url_names_it(tmp_path):
    # In a fresh interpreter: this one may have imported every store already.
    script = (
        "import sys\n"
        "from backbeat.stores import open_store\n"
        f"open_store('sqlite:///{tmp_path}/tasks.db')\n"
        "assert 'backbeat.stores.redis' not in sys.modules\n"
        "open_store('redis://127.0.0.1:6379/0')\n"
        "assert 'backbeat.stores.redis' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
