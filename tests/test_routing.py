import contextvars
import threading
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from backbeat import (
    App,
    BackgroundTask,
    BackgroundTasks,
    JSONResponse,
    Request,
    Response,
    delete,
    get,
    patch,
    post,
    put,
    route,
)
from tests.helpers import asgi_call


class UserIn(BaseModel):
    email: str
    age: int = 0


JSON = {"content-type": "application/json"}


def client_for(*routes: Any, debug: bool = False) -> TestClient:
    return TestClient(App(routes=list(routes), debug=debug), raise_server_exceptions=False)


# --- binding -------------------------------------------------------------------------------


def test_body_is_validated_into_the_model():
    @post("/users")
    async def create(data: UserIn) -> dict[str, Any]:
        return {"email": data.email, "age": data.age, "type": type(data).__name__}

    response = client_for(create).post("/users", json={"email": "a@b.c", "age": "7"})
    assert response.status_code == 201
    assert response.json() == {"email": "a@b.c", "age": 7, "type": "UserIn"}


def test_body_parameter_may_have_any_name_when_annotated_with_a_model():
    @put("/users")
    def replace(user: UserIn) -> UserIn:
        return user

    response = client_for(replace).put("/users", json={"email": "x"})
    assert response.status_code == 200
    assert response.json() == {"email": "x", "age": 0}


def test_path_and_query_parameters_by_name():
    @get("/items/{item_id:int}/{slug}")
    async def read(
        item_id: int, slug: str, limit: int = 10, exact: bool = False, q: str | None = None
    ):
        return {"item_id": item_id, "slug": slug, "limit": limit, "exact": exact, "q": q}

    client = client_for(read)
    assert client.get("/items/3/abc").json() == {
        "item_id": 3,
        "slug": "abc",
        "limit": 10,
        "exact": False,
        "q": None,
    }
    assert client.get("/items/3/abc?limit=5&exact=true&q=hi").json() == {
        "item_id": 3,
        "slug": "abc",
        "limit": 5,
        "exact": True,
        "q": "hi",
    }


def test_bad_query_values_and_missing_required_ones_are_422_listing_each():
    @get("/search")
    async def search(term: str, page: int = 1):
        return {"term": term, "page": page}

    response = client_for(search).get("/search?page=two")
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("query", "term"), ("query", "page")}


def test_request_and_injected_tasks():
    seen: list[str] = []

    @post("/hook/{name}")
    async def hook(request: Request, tasks: BackgroundTasks, name: str) -> None:
        tasks.add_task(seen.append, f"{request.method} {name}")

    assert client_for(hook).post("/hook/x").status_code == 201
    assert seen == ["POST x"]


def test_each_request_gets_a_fresh_injected_collection():
    collections: list[BackgroundTasks] = []

    @get("/")
    async def handler(tasks: BackgroundTasks) -> None:
        collections.append(tasks)
        assert tasks.tasks == []
        tasks.add_task(lambda: None)

    client = client_for(handler)
    client.get("/")
    client.get("/")
    assert collections[0] is not collections[1]


def test_sync_handlers_run_in_a_thread():
    @get("/where")
    def where() -> dict[str, bool]:
        return {"main": threading.current_thread() is threading.main_thread()}

    assert client_for(where).get("/where").json() == {"main": False}


def test_signature_problems_are_reported_at_decoration_time():
    with pytest.raises(TypeError, match="two body parameters"):

        @post("/x")
        async def two(data: UserIn, other: UserIn) -> None: ...

    with pytest.raises(TypeError, match=r"\*args"):

        @post("/x")
        async def star(*args: Any) -> None: ...


# --- return values and status codes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("decorator", "method", "status"),
    [
        (get, "GET", 200),
        (post, "POST", 201),
        (put, "PUT", 200),
        (patch, "PATCH", 200),
        (delete, "DELETE", 204),
    ],
)
def test_default_status_codes(decorator, method, status):
    @decorator("/thing")
    async def handler() -> None:
        return None

    response = client_for(handler).request(method, "/thing")
    assert response.status_code == status
    assert response.content == b""
    if status == 204:
        assert "content-length" not in response.headers


def test_route_decorator_with_explicit_methods_and_status():
    @route("/both", methods=["GET", "POST"], status_code=202)
    async def both(request: Request) -> dict[str, str]:
        return {"method": request.method}

    client = client_for(both)
    assert client.get("/both").status_code == 202
    assert client.post("/both").json() == {"method": "POST"}
    assert client.put("/both").status_code == 405


def test_json_response_without_status_takes_the_routes():
    @post("/a")
    async def implicit() -> JSONResponse:
        return JSONResponse({"message": "Created"})

    @post("/b")
    async def explicit() -> JSONResponse:
        return JSONResponse({"message": "Accepted"}, status_code=202)

    @post("/c", status_code=200)
    async def configured() -> Response:
        return Response(b"plain", media_type="text/plain")

    @post("/d")
    async def foreign() -> PlainTextResponse:
        return PlainTextResponse("starlette's own")

    client = client_for(implicit, explicit, configured, foreign)
    assert (client.post("/a").status_code, client.post("/a").json()) == (
        201,
        {"message": "Created"},
    )
    assert client.post("/b").status_code == 202
    assert client.post("/c").status_code == 200
    assert client.post("/d").status_code == 200


def test_delete_returning_content_is_a_200():
    @delete("/x")
    async def remove() -> dict[str, bool]:
        return {"deleted": True}

    response = client_for(remove).delete("/x")
    assert (response.status_code, response.json()) == (200, {"deleted": True})


def test_models_lists_and_rich_values_are_sent_as_json():
    import datetime
    import uuid

    ident = uuid.UUID(int=1)

    @get("/list")
    async def listing() -> list[Any]:
        return [UserIn(email="a"), {"when": datetime.date(2026, 1, 2), "id": ident}, float("nan")]

    response = client_for(listing).get("/list")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {"email": "a", "age": 0},
        {"when": "2026-01-02", "id": str(ident)},
        None,
    ]


# --- errors ------------------------------------------------------------------------------------


def test_malformed_json_is_400():
    @post("/users")
    async def create(data: UserIn) -> None: ...

    response = client_for(create).post("/users", content=b'{"email": ', headers=JSON)
    assert response.status_code == 400
    assert "Malformed JSON" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_not_sent_as_json_is_415_and_runs_nothing(content_type):
    # A cross-site form post needs no CORS preflight: JSON under these types is CSRF.
    ran = []

    @post("/users", background=BackgroundTask(ran.append, "task"))
    async def create(data: UserIn) -> None:
        ran.append("handler")

    headers = {} if content_type is None else {"content-type": content_type}
    response = client_for(create).post("/users", content=b'{"email": "a"}', headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert ran == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.api+json"],
)
def test_json_content_types_are_accepted(content_type):
    @post("/users")
    async def create(data: UserIn) -> dict[str, str]:
        return {"email": data.email}

    response = client_for(create).post(
        "/users", content=b'{"email": "a"}', headers={"content-type": content_type}
    )
    assert response.status_code == 201
    assert response.json() == {"email": "a"}


def test_a_body_over_the_limit_is_413_without_reading_it_all():
    @post("/users")
    async def create(data: Any) -> None: ...

    app = App(routes=[create], max_body_size=1000)
    client = TestClient(app)
    big = b'{"x": "' + b"a" * 2000 + b'"}'
    assert client.post("/users", content=big, headers=JSON).status_code == 413

    def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"x": "'
        for _ in range(100):
            yield b"a" * 100
        yield b'"}'

    assert client.post("/users", content=chunks(), headers=JSON).status_code == 413
    assert client.post("/users", json={"x": "a" * 900}).status_code == 201


def test_the_default_body_limit_is_one_mebibyte():
    @post("/users")
    async def create(data: Any) -> None: ...

    client = client_for(create)
    assert client.post("/users", json={"x": "a" * 1_000_000}).status_code == 201
    assert client.post("/users", json={"x": "a" * 1_100_000}).status_code == 413
    with pytest.raises(ValueError, match="max_body_size"):
        App(routes=[create], max_body_size=0)


def test_invalid_body_is_422_listing_fields_without_echoing_input():
    @post("/users")
    async def create(data: UserIn) -> None: ...

    response = client_for(create).post("/users", json={"age": "old", "password": "hunter2"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(e["loc"]) for e in detail} == {("body", "email"), ("body", "age")}
    assert "hunter2" not in response.text and "old" not in response.text


def test_missing_body_is_422():
    @post("/users")
    async def create(data: UserIn) -> None: ...

    response = client_for(create).post("/users")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_unhandled_exception_is_500_without_internals(backbeat_log):
    @get("/fail")
    async def fail() -> None:
        raise RuntimeError("secret database password in message")

    response = client_for(fail).get("/fail")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "secret" not in response.text
    [entry] = backbeat_log.records
    assert "fail" in entry.getMessage() and entry.exc_info is not None


def test_debug_500_includes_the_traceback():
    @get("/fail")
    async def fail() -> None:
        raise RuntimeError("visible in debug")

    response = client_for(fail, debug=True).get("/fail")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "RuntimeError: visible in debug"
    assert any("raise RuntimeError" in line for line in body["traceback"])


def test_http_exception_becomes_its_status():
    @get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "no such user")

    response = client_for(missing).get("/missing")
    assert (response.status_code, response.json()) == (404, {"detail": "no such user"})


# --- background tasks: nothing dropped, right order, right moments ---


def test_decorator_injected_and_response_tasks_all_run_in_that_order():
    log: list[str] = []

    @post("/register", background=BackgroundTask(log.append, "decorator"))
    async def register(tasks: BackgroundTasks) -> JSONResponse:
        tasks.add_task(log.append, "injected")
        return JSONResponse({"ok": True}, background=BackgroundTask(log.append, "response"))

    response = client_for(register).post("/register")
    assert response.status_code == 201
    assert log == ["decorator", "injected", "response"]


def test_the_seed_pattern_returning_json_response_keeps_the_decorator_task():
    # Esmerald 3.9.4 drops the decorator's task here; backbeat must not.
    log: list[str] = []

    async def send_email_notification(message: str) -> None:
        log.append(message)

    @post(
        "/register", background=BackgroundTask(send_email_notification, message="Account created")
    )
    async def create_user(data: UserIn) -> JSONResponse:
        return JSONResponse({"message": "Created"})

    response = client_for(create_user).post("/register", json={"email": "a"})
    assert (response.status_code, response.json()) == (201, {"message": "Created"})
    assert log == ["Account created"]


def test_starlette_background_tasks_on_a_response_run_isolated(backbeat_log):
    from starlette.background import BackgroundTask as StarletteTask

    log: list[str] = []

    def bad() -> None:
        raise ValueError("starlette task failed")

    @post("/x", background=BackgroundTask(log.append, "decorator"))
    async def handler() -> JSONResponse:
        return JSONResponse({}, background=StarletteTask(bad))

    @post(
        "/y", background=BackgroundTasks([BackgroundTask(bad), BackgroundTask(log.append, "after")])
    )
    async def other() -> None: ...

    client = client_for(handler, other)
    assert client.post("/x").status_code == 201
    assert client.post("/y").status_code == 201
    assert log == ["decorator", "after"]
    failures = [r for r in backbeat_log.records if "starlette task failed" in r.getMessage()]
    assert len(failures) == 2


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_no_tasks_for_head_or_options(method):
    log: list[str] = []

    @route("/x", methods=["GET", "OPTIONS"], background=BackgroundTask(log.append, "decorator"))
    async def handler(tasks: BackgroundTasks) -> JSONResponse:
        tasks.add_task(log.append, "injected")
        return JSONResponse({}, background=BackgroundTask(log.append, "response"))

    client = client_for(handler)
    assert client.request(method, "/x").status_code == 200
    assert log == []
    client.get("/x")
    assert log == ["decorator", "injected", "response"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), HTTPException(409, "taken")])
def test_no_tasks_when_the_handler_raises(error):
    log: list[str] = []

    @post("/x", background=BackgroundTask(log.append, "decorator"))
    async def handler(tasks: BackgroundTasks) -> None:
        tasks.add_task(log.append, "injected")
        raise error

    assert client_for(handler).post("/x").status_code >= 400
    assert log == []


def test_no_tasks_when_the_request_is_invalid():
    log: list[str] = []

    @post("/x", background=BackgroundTask(log.append, "decorator"))
    async def handler(data: UserIn) -> None: ...

    client = client_for(handler)
    assert client.post("/x", content=b"{", headers=JSON).status_code == 400
    assert client.post("/x", json={}).status_code == 422
    assert log == []


def test_background_must_be_a_task():
    with pytest.raises(TypeError, match="background= expects a BackgroundTask"):

        @post("/x", background=print)  # type: ignore[arg-type]
        async def handler() -> None: ...


@pytest.mark.anyio
async def test_tasks_start_only_after_the_final_body_message():
    observed: list[list[str]] = []
    messages: list[dict[str, Any]] = []

    async def snapshot() -> None:
        observed.append([m["type"] + ("" if m.get("more_body") else ":final") for m in messages])

    @post("/x", background=BackgroundTask(snapshot))
    async def handler(tasks: BackgroundTasks) -> JSONResponse:
        tasks.add_task(snapshot)
        return JSONResponse({"a": 1}, background=BackgroundTask(snapshot))

    app = App(routes=[handler], runner=False)
    sent = await asgi_call(app, sent=messages)
    assert sent[-1]["type"] == "http.response.body"
    expected = ["http.response.start:final", "http.response.body:final"]
    assert observed == [expected, expected, expected]


def test_decorator_tasks_run_in_each_requests_context():
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[str] = []

    async def record() -> None:
        seen.append(request_id.get())

    @get("/r/{rid}", background=BackgroundTask(record))
    async def handler(rid: str, tasks: BackgroundTasks) -> None:
        request_id.set(rid)
        tasks.add_task(record)
        request_id.set(rid + "-later")

    client = client_for(handler)
    client.get("/r/one")
    client.get("/r/two")
    # The decorator's task runs in the request's context as it is after the
    # handler; an injected task sees the context of the moment it was added.
    assert seen == ["one-later", "one", "two-later", "two"]


def test_app_rejects_things_that_are_not_routes():
    async def handler() -> None: ...

    with pytest.raises(TypeError, match="expects routes"):
        App(routes=[handler])  # type: ignore[list-item]


def test_a_return_annotation_that_cannot_be_resolved_is_ignored():
    from tests.apps.factories import make_handler

    client = client_for(make_handler())
    assert client.get("/made").json() == {"made": True}


def test_an_unresolvable_parameter_annotation_is_a_clear_error():
    from tests.apps.factories import make_broken_handler

    with pytest.raises(TypeError, match="parameter 'data' of handler"):
        make_broken_handler()
