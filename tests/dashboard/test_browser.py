"""The dashboard in Debian's Chromium, as an operator uses it: a real app under uvicorn
(tests/apps/ops_app.py: the dashboard mounted at /ops/dash, a SQLite store, the app
running its tasks), driven by Playwright. Each page loads without a CSP violation or a
script error; filter, open a task, retry a failed one until it succeeds, cancel a running
one, watch a progress bar move without a reload (and stop while the tab is hidden), see a
task page show how its task ended without reloading it by hand; a
read-only viewer sees no action and its forged POST is refused; a form POST from another
origin (another port; another site, 127.0.0.2) is refused; with JavaScript off, filtering
and a bulk action through its confirmation page still work; select all, and retry a
failure group.

Screenshots go to the test's tmp dir, or to $BACKBEAT_SCREENSHOTS (docs/images/refresh.sh).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import browser  # noqa: F401 - the session's Chromium (a fixture)
from tests.serving import Server, uvicorn

pytestmark = [pytest.mark.process, pytest.mark.browser]

MOUNT = "/ops/dash"
FULL_TOKEN, READ_TOKEN = "full-token", "read-token"  # what tests/apps/ops_app.py grants
WAIT = 15.0  # seconds for anything to happen: generous on a loaded 2-core machine


@dataclass
class Site:
    server: Server
    directory: Path
    shots: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.server.url, timeout=10)

    @property
    def origin(self) -> str:
        return self.server.url

    @property
    def dash(self) -> str:
        return self.server.url + MOUNT

    def submit(self, path: str, **params: object) -> str:
        """A task enqueued by the app's own route: its id."""
        response = self.http.post(path, params=params)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(
            f"{MOUNT}/api/tasks/{task_id}", headers={"x-ops-token": FULL_TOKEN}
        )
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def state(self, task_id: str) -> str:
        return str(self.task(task_id)["state"])

    def wait_state(self, task_id: str, *states: str) -> None:
        poll(lambda: self.state(task_id) in states, f"task {task_id} never {states}")

    def succeed_from_now(self) -> None:
        (self.directory / "succeed").touch()

    def fail_from_now(self) -> None:
        (self.directory / "succeed").unlink(missing_ok=True)


def poll(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("dash-browser")
    shots = Path(os.environ.get("BACKBEAT_SCREENSHOTS") or directory / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    env = {"BACKBEAT_TEST_STORE": f"sqlite:///{directory}/tasks.db"}
    env["BACKBEAT_TEST_DIR"] = str(directory)
    with uvicorn("tests.apps.ops_app:app", directory, env=env, name="app") as server:
        made = Site(server, directory, shots)
        yield made
        made.http.close()


class Tab:
    """A page in a browser context, recording what went wrong: script errors, console
    errors (a CSP violation is one) and failed loads (the browser's own /favicon.ico aside;
    a test that provokes a refusal clears `problems` after checking it)."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # A failed load is said on the console too, without its URL: `_response` has it.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            self.problems.append(f"{response.status} {response.request.method} {response.url}")

    def goto(self, url: str) -> Any:
        response = self.page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        return response


def context_with(browser: Any, site: Site, token: str, **options: Any) -> Any:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 860}, **options)
    context.add_cookies([{"name": "ops", "value": token, "url": site.origin}])
    context.set_default_timeout(WAIT * 1000)
    return context


@pytest.fixture(scope="module")
def operator(browser: Any, site: Site) -> Iterator[Any]:  # noqa: F811
    context = context_with(browser, site, FULL_TOKEN)
    yield context
    context.close()


@pytest.fixture(scope="module")
def viewer(browser: Any, site: Site) -> Iterator[Any]:  # noqa: F811
    context = context_with(browser, site, READ_TOKEN)
    yield context
    context.close()


@pytest.fixture(scope="module")
def no_script(browser: Any, site: Site) -> Iterator[Any]:  # noqa: F811
    context = context_with(browser, site, FULL_TOKEN, java_script_enabled=False)
    yield context
    context.close()


def action_buttons(page: Any) -> Any:
    return page.locator("form[method=post] button")


# --- the tests --------------------------------------------------------------------------


def test_every_page_loads_without_a_csp_violation(site: Site, operator: Any) -> None:
    failed = site.submit("/orders", ident="A-1")
    site.wait_state(failed, "failed")
    tab = Tab(operator)
    for path, heading in [
        ("/", "Overview"),
        ("/tasks", "Tasks"),
        ("/failures", "Failures"),
        ("/workers", "Workers"),
        ("/schedules", "Schedules"),
        (f"/tasks/{failed}", failed),
    ]:
        tab.goto(site.dash + path)
        assert heading in tab.page.locator("h1").inner_text()
        # Links carry the mount's prefix.
        for href in tab.page.locator("nav a").evaluate_all("links => links.map(a => a.href)"):
            assert href.startswith(site.dash), href
    assert tab.problems == []


def test_filter_open_and_retry_a_failed_task_until_it_succeeds(site: Site, operator: Any) -> None:
    site.fail_from_now()
    ids = [site.submit("/orders", ident=f"R-{n}") for n in range(3)]
    site.submit("/quick", label="unrelated")
    for task_id in ids:
        site.wait_state(task_id, "failed")
    tab = Tab(operator)
    tab.goto(site.dash + "/tasks")
    tab.page.fill("input[name=name]", "ops.flaky")
    tab.page.select_option("select[name=state]", "failed")
    tab.page.fill("input[name=argument]", "R-")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/tasks?*")
    assert "name=ops.flaky" in tab.page.url and "state=failed" in tab.page.url
    rows = tab.page.locator("tbody tr")
    assert rows.count() == 3
    assert "payment gateway unreachable" in rows.first.inner_text()
    tab.page.screenshot(path=site.shots / "tasks-filtered.png", full_page=True)

    target = ids[0]
    tab.page.click(f"a[href$='/tasks/{target}']")
    tab.page.wait_for_url(f"**/tasks/{target}")
    assert "payment gateway unreachable for order R-0" in tab.page.content()
    assert tab.page.locator("form[action$='actions/cancel']").count() == 0  # not for failed
    site.succeed_from_now()
    try:
        tab.page.click("form[action$='actions/retry'] button")
        tab.page.wait_for_load_state()
        site.wait_state(target, "succeeded")
    finally:
        site.fail_from_now()
    # A fresh look in another tab: the page the retry came back to may be loading itself
    # again (it follows the task while it runs), and a navigation would race with it.
    done = Tab(operator)
    done.goto(site.dash + f"/tasks/{target}")
    assert "order R-0 charged" in done.page.content()
    assert done.page.locator("form[action$='actions/retry']").count() == 0
    assert tab.problems == [] and done.problems == []


def test_cancel_a_running_task(site: Site, operator: Any) -> None:
    task_id = site.submit("/imports", steps=400, pause=0.1)
    site.wait_state(task_id, "running")
    tab = Tab(operator)
    tab.goto(site.dash + f"/tasks/{task_id}")
    tab.page.click("form[action$='actions/cancel'] button")
    tab.page.wait_for_load_state()
    site.wait_state(task_id, "cancelled")
    # The page it came back to says so: at once, or when its worker has stopped the task
    # (it said running until then, and followed the task).
    tab.page.locator("dl.facts .state-cancelled").wait_for()
    assert "cancelled" in tab.page.locator("dl").inner_text()
    assert tab.page.locator("[data-follow]").count() == 0
    assert tab.problems == []


def test_a_progress_bar_moves_live_without_a_reload(site: Site, operator: Any) -> None:
    task_id = site.submit("/imports", steps=100, pause=0.1)  # 10 s: time to look, on a slow day
    site.wait_state(task_id, "running")
    tab = Tab(operator)
    tab.goto(site.dash + f"/tasks/{task_id}")
    bar = tab.page.locator(f"progress[data-progress='{task_id}']")
    tab.page.evaluate("window.stillTheSamePage = true")
    first = float(bar.evaluate("bar => bar.value") or 0)
    poll(
        lambda: float(bar.evaluate("bar => bar.value") or 0) >= first + 0.1,
        f"the progress bar stayed at {first}",
    )
    assert tab.page.evaluate("window.stillTheSamePage") is True  # updated in place (SSE)
    tab.page.screenshot(path=site.shots / "task-progress.png", full_page=True)
    # The overview while it runs: its bar is in the running tasks' list there too.
    tab.goto(site.dash + "/")
    tab.page.locator(f"progress[data-progress='{task_id}']").wait_for()
    tab.page.screenshot(path=site.shots / "overview.png", full_page=True)
    assert tab.problems == []


def test_a_task_page_shows_how_its_task_ended_and_stops(site: Site, operator: Any) -> None:
    tab = Tab(operator)
    # Counts the streams each load of the page opens (run before the page's own script).
    tab.page.add_init_script(
        """(() => {
            const Real = window.EventSource;
            window.streamsOpened = 0;
            window.EventSource = function (url) {
                window.streamsOpened += 1;
                return new Real(url);
            };
        })()"""
    )
    task_id = site.submit("/imports", steps=50, pause=0.1)  # 5 s
    site.wait_state(task_id, "running")
    tab.goto(site.dash + f"/tasks/{task_id}")
    assert tab.page.locator(f"dl[data-follow='{task_id}']").count() == 1
    assert tab.page.evaluate("window.streamsOpened") == 1
    tab.page.evaluate("window.stillTheSamePage = true")
    # Nobody reloads: the page does, once, when the task has finished.
    tab.page.locator("dl.facts .state-succeeded").wait_for()
    tab.page.wait_for_load_state()
    assert tab.page.evaluate("window.stillTheSamePage") is None  # a new page: how it ended
    assert "50 steps" in tab.page.locator("main").inner_text()  # the result
    bar = tab.page.locator("progress")
    assert bar.evaluate("bar => bar.value") == 1
    assert "step 50 of 50" in tab.page.locator("main").inner_text()
    # And it stops: the finished task's page is not live.
    assert bar.get_attribute("data-progress") is None
    assert tab.page.locator("[data-follow]").count() == 0
    assert tab.page.evaluate("window.streamsOpened") == 0
    tab.page.screenshot(path=site.shots / "task-finished.png", full_page=True)
    assert tab.problems == []


def test_the_live_view_pauses_while_the_tab_is_hidden(site: Site, operator: Any) -> None:
    task_id = site.submit("/imports", steps=100, pause=0.1)
    site.wait_state(task_id, "running")
    tab = Tab(operator)
    tab.goto(site.dash + f"/tasks/{task_id}")
    bar = tab.page.locator(f"progress[data-progress='{task_id}']")

    def shown() -> float:
        return float(bar.evaluate("bar => bar.value") or 0)

    def stored() -> float:
        return float((site.task(task_id)["progress"] or {}).get("fraction") or 0)

    first = shown()
    poll(lambda: shown() > first, "the bar never moved")
    # The tab goes to the background: the script closes its stream.
    tab.page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {value: true, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    frozen = shown()  # a closed EventSource dispatches nothing more, not even a queued event
    poll(lambda: stored() >= frozen + 0.15, "the task stopped reporting progress")
    assert shown() == frozen  # the task went on, the hidden tab was not told
    tab.page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", {value: false, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    poll(lambda: shown() >= frozen + 0.15, "the bar did not catch up once shown again")
    assert tab.problems == []


def test_a_read_only_viewer_sees_no_action_and_its_forged_post_is_refused(
    site: Site, viewer: Any
) -> None:
    failed = site.submit("/orders", ident="RO-1")
    site.wait_state(failed, "failed")
    tab = Tab(viewer)
    for path in ["/tasks", f"/tasks/{failed}", "/failures", "/workers", "/schedules"]:
        tab.goto(site.dash + path)
        assert action_buttons(tab.page).count() == 0, path
    assert "Read-only" in tab.page.content()
    # The same POST the operator's button makes, from the viewer's own page (same origin).
    status = tab.page.evaluate(
        """async ([url, id]) => {
            const body = new URLSearchParams({id, confirm: "yes"});
            return (await fetch(url, {method: "POST", body})).status;
        }""",
        [site.dash + "/actions/retry", failed],
    )
    assert status == 403
    assert tab.problems == [f"403 POST {site.dash}/actions/retry"]
    assert site.state(failed) == "failed"


class Attacker:
    """Another origin (same host, another port) serving a page that auto-submits a form
    to the dashboard: what a malicious page open in the operator's browser would do."""

    def __init__(self, target: str, fields: dict[str, str], host: str = "127.0.0.1") -> None:
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
        page = (
            f'<!doctype html><form id="f" method="post" action="{target}">{inputs}</form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_post_from_another_origin_is_refused(site: Site, browser: Any) -> None:  # noqa: F811
    failed = site.submit("/orders", ident="X-1")
    site.wait_state(failed, "failed")
    fields = {"id": failed, "confirm": "yes"}
    # The operator's cookie goes along both times (same site on another port; cross-site, a
    # cookie without SameSite in its first two minutes, as Chromium allows for top-level
    # POSTs): only the dashboard's origin check stands between the page and the delete.
    for host, site_says in [("127.0.0.1", "same-site"), ("127.0.0.2", "cross-site")]:
        attacker = Attacker(site.dash + "/actions/delete", fields, host)
        operator = context_with(browser, site, FULL_TOKEN)  # a fresh cookie: see above
        try:
            page = operator.new_page()
            with page.expect_response(lambda response: response.request.method == "POST") as posted:
                page.goto(attacker.url)
            response = posted.value
            assert response.request.header_value("origin") == attacker.url.rstrip("/")
            assert response.request.header_value("sec-fetch-site") == site_says
            assert response.request.header_value("cookie") == f"ops={FULL_TOKEN}", host
            assert response.status == 403, host
            assert "origin check" in response.text(), (host, response.text())
        finally:
            operator.close()
            attacker.close()
    assert site.state(failed) == "failed"


def test_without_javascript_filter_and_act_through_the_confirmation_page(
    site: Site, no_script: Any
) -> None:
    ids = [site.submit("/quick", label=f"nojs-{n}") for n in range(4)]
    for task_id in ids:
        site.wait_state(task_id, "succeeded")
    tab = Tab(no_script)
    tab.goto(site.dash + "/tasks")
    tab.page.fill("input[name=name]", "ops.quick")
    tab.page.fill("input[name=argument]", "nojs-")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/tasks?*")
    assert tab.page.locator("tbody tr").count() == 4
    # Delete everything matching the filter: a confirmation page with the count first.
    matching = tab.page.locator("form.bulk").filter(has=tab.page.locator("input[value=filter]"))
    matching.locator("button[value=delete]").click()
    tab.page.wait_for_load_state()
    assert "4" in tab.page.locator("main").inner_text()
    tab.page.screenshot(path=site.shots / "confirm.png", full_page=True)
    assert all(site.state(task_id) == "succeeded" for task_id in ids)  # nothing done yet
    tab.page.locator("main form[method=post] button[type=submit]").first.click()
    tab.page.wait_for_load_state()
    assert "deleted" in tab.page.locator(".flash").inner_text()
    for task_id in ids:
        gone = site.http.get(f"{MOUNT}/api/tasks/{task_id}", headers={"x-ops-token": FULL_TOKEN})
        assert gone.status_code == 404


def test_select_all_then_back_out_of_the_confirmation(site: Site, operator: Any) -> None:
    site.fail_from_now()
    ids = [site.submit("/orders", ident=f"S-{n}") for n in range(2)]
    for task_id in ids:
        site.wait_state(task_id, "failed")
    tab = Tab(operator)
    tab.goto(site.dash + "/tasks?name=ops.flaky&state=failed&argument=S-")
    boxes = tab.page.locator("tbody input[type=checkbox]")
    assert boxes.count() == 2
    tab.page.check("[data-select-all]")  # the script ticks every row
    assert all(boxes.nth(n).is_checked() for n in range(2))
    tab.page.locator("#selection button[value=retry]").click()
    tab.page.wait_for_load_state()
    assert "Retry 2 selected task(s)?" in tab.page.locator("main").inner_text()
    tab.page.click("text=No, go back")
    tab.page.wait_for_url("**/tasks?*")
    assert all(site.state(task_id) == "failed" for task_id in ids)
    assert tab.problems == []


def test_retry_a_failure_group_after_its_confirmation(site: Site, operator: Any) -> None:
    site.fail_from_now()
    ids = [site.submit("/orders", ident=f"G-{n}") for n in range(3)]
    for task_id in ids:
        site.wait_state(task_id, "failed")
    tab = Tab(operator)
    tab.goto(site.dash + "/failures")
    group = tab.page.locator("tbody tr").filter(has_text="ops.flaky")
    assert "ConnectionError" in group.inner_text()
    tab.page.screenshot(path=site.shots / "failures.png", full_page=True)
    group.locator("button", has_text="Retry group").click()
    tab.page.wait_for_load_state()
    question = tab.page.locator("main p").first.inner_text()
    assert question.startswith("Retry ") and "matching" in question, question
    site.succeed_from_now()
    try:
        tab.page.locator("main form[method=post] button[type=submit]").click()
        tab.page.wait_for_url("**/failures")
        assert "retried" in tab.page.locator(".flash").inner_text()
        for task_id in ids:
            site.wait_state(task_id, "succeeded")
    finally:
        site.fail_from_now()
    left = site.http.get(
        f"{MOUNT}/api/tasks",
        params={"name": "ops.flaky", "state": "failed"},
        headers={"x-ops-token": FULL_TOKEN},
    )
    assert left.status_code == 200 and left.json()["tasks"] == [], left.text
    assert tab.problems == []
