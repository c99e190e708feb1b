"""The action routes behind the pages' forms: a bulk action first shows a confirmation page
with the count (a plain form: works without JavaScript), the confirmed POST acts and
redirects back (303) with a flash saying what was done; every action done is audited."""

from __future__ import annotations

import inspect
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backbeat.dashboard.access import ACTIONS, Forbidden
from backbeat.dashboard.actions import (
    LABELS,
    PAST,
    TASK_ACTIONS,
    Selection,
    act_on_filter,
    act_on_ids,
    count_matches,
)
from backbeat.dashboard.context import Context, grant_of, root_of, set_flash, view_of
from backbeat.dashboard.filters import FIELDS, BadInput, filter_query, parse_filter
from backbeat.dashboard.pages import esc, hidden, layout
from backbeat.status import FINISHED

MAX_IDS = 10_000  # ids in one form post (a selection is a page's rows; this is generous)
MAX_FORM_BYTES = 1 << 20


class Done:
    """What an action did: for the flash, the audit and the API."""

    def __init__(self, action: str, count: int, said: str, target: dict[str, Any]) -> None:
        self.action = action
        self.count = count
        self.said = said
        self.target = target


async def perform(
    context: Context, request: Request, action: str, fields: FormData | dict[str, Any]
) -> Done:
    """Do a confirmed action (the forms' and the API's), audit it, say what was done."""
    source = context.source
    get = fields.get
    if action in TASK_ACTIONS:
        if get("scope") == "filter":
            selection = selection_of(fields)
            count = await act_on_filter(source, action, selection)
            target: dict[str, Any] = {"filter": selection_query(selection)}
        else:
            ids = ids_of(fields)
            count = await act_on_ids(source, action, ids) if ids else 0
            target = {"ids": ids}
        said = f"{count} task(s) {PAST[action]}"
    elif action == "purge":
        seconds, states = purge_terms(fields)
        count = await source.purge(time.time() - seconds, states, dry_run=False)
        target = {"older_than": seconds, "states": list(states)}
        said = f"{count} finished task(s) purged"
    elif action in ("pause_queue", "resume_queue"):
        queue = required(fields, "queue")
        await source.pause_queue(queue, action == "pause_queue")
        count, target = 1, {"queue": queue}
        said = f"queue {queue} {'paused' if action == 'pause_queue' else 'resumed'}"
    else:
        name = required(fields, "name")
        known = await source.pause_schedule(name, action == "pause_schedule")
        if not known:
            raise BadInput(f"no schedule named {name!r}")
        count, target = 1, {"schedule": name}
        said = f"schedule {name} {'paused' if action == 'pause_schedule' else 'resumed'}"
    context.hub.outdated()
    grant = grant_of(request)
    event = {
        "action": action,
        "count": count,
        "client": request.client.host if request.client else None,
        "grant": grant.said,
        **target,
    }
    outcome = context.audit(event)
    if inspect.isawaitable(outcome):
        await outcome
    return Done(action, count, said, target)


def check_action(context: Context, request: Request, action: str) -> None:
    if action not in ACTIONS:
        raise BadInput(f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    if not grant_of(request).can(action):
        raise Forbidden(f"you may not {LABELS[action].lower()} here (read-only or not granted)")
    if not context.source.allows(action):
        raise BadInput(
            f"{LABELS[action].lower()} needs a store: a runner without one keeps live objects "
            "in this process only (cancel is what it offers)"
        )


def selection_of(fields: FormData | dict[str, Any]) -> Selection:
    """The filter of a bulk action, and the exact exception type it names, if it does
    (a failure group's retry: ``exception`` present, even empty)."""
    where = parse_filter({key: str(fields.get(key) or "") for key in FIELDS})
    exception = fields.get("exception")
    return Selection(where, None if exception is None else str(exception).strip())


def selection_query(selection: Selection) -> dict[str, str]:
    """The selection as the audit and the confirmation page say it."""
    query = filter_query(selection.where)
    if selection.exception is not None:
        query["exception"] = selection.exception or "(no error)"
    return query


def ids_of(fields: FormData | dict[str, Any]) -> list[str]:
    if isinstance(fields, FormData):
        given = [str(value) for value in fields.getlist("id")]
    else:
        raw = fields.get("ids") or []
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise BadInput("ids must be a list of task id strings")
        given = raw
    ids = list(dict.fromkeys(item.strip() for item in given if item.strip()))
    if len(ids) > MAX_IDS:
        raise BadInput(f"at most {MAX_IDS} ids at once (got {len(ids)}); act on a filter instead")
    return ids


def required(fields: FormData | dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"say which {name.replace('_', ' ')}: the field {name!r} is missing")
    return value.strip()


def purge_terms(fields: FormData | dict[str, Any]) -> tuple[float, tuple[str, ...]]:
    """How old (seconds) and which finished states; `older_than_hours` from the form."""
    if "older_than" in fields:
        text = str(fields.get("older_than"))
        scale = 1.0
    else:
        text = str(fields.get("older_than_hours") or "")
        scale = 3600.0
    try:
        seconds = float(text) * scale
    except ValueError:
        raise BadInput(
            f"say how old the tasks to purge must be, as a number; got {text!r}"
        ) from None
    if seconds < 0:
        raise BadInput(f"the age of the tasks to purge cannot be negative; got {text!r}")
    if isinstance(fields, FormData):
        states = tuple(str(state) for state in fields.getlist("states"))
    else:
        states = tuple(fields.get("states") or ())
    states = states or FINISHED
    unknown = sorted(set(states) - set(FINISHED))
    if unknown:
        raise BadInput(f"only finished tasks can be purged ({', '.join(FINISHED)}), not {unknown}")
    return seconds, states


def safe_back(request: Request, given: object) -> str:
    """Where to go after an action: a page of this dashboard only (no open redirect)."""
    root = root_of(request)
    if (
        isinstance(given, str)
        and given.startswith(root + "/")
        and "\\" not in given
        and "//" not in given
    ):
        return given
    return f"{root}/tasks"


async def confirmation(context: Context, request: Request, action: str, form: FormData) -> str:
    """The page that asks before a bulk action, with the count it would act on."""
    view = view_of(request, context)
    if action in TASK_ACTIONS:
        if form.get("scope") == "filter":
            selection = selection_of(form)
            matches = await count_matches(context.source, action, selection)
            counted = f"{matches.count}{' or more' if matches.capped else ''}"
            query = selection_query(selection)
            terms = ", ".join(f"{key} = {value}" for key, value in query.items())
            what = f"{counted} task(s) matching {esc(terms or 'no filter: every task')}"
        else:
            ids = ids_of(form)
            if not ids:
                raise BadInput("no task selected: tick some rows, or act on the filter")
            what = f"{len(ids)} selected task(s)"
        valid = ", ".join(TASK_ACTIONS[action])
        question = f"{LABELS[action]} {what}? (only those {valid} are acted on)"
    elif action == "purge":
        seconds, states = purge_terms(form)
        count = await context.source.purge(time.time() - seconds, states, dry_run=True)
        shown = ", ".join(states)
        question = f"Purge {count} finished task(s) ({shown}) older than {seconds:g}s?"
    else:
        raise BadInput(f"{action} needs no confirmation")
    again = hidden(
        (name, value)
        for name, value in form.multi_items()
        if name not in ("confirm", "action") and isinstance(value, str)
    )
    back = safe_back(request, form.get("back"))
    body = (
        f"<p>{question}</p>"
        f'<form method="post" action="{esc(view.url("actions/" + action))}">{again}'
        '<input type="hidden" name="confirm" value="yes">'
        f'<button type="submit">Yes, {esc(LABELS[action].lower())}</button> '
        f'<a href="{esc(back)}">No, go back</a></form>'
    )
    return layout(view, "-", "Confirm", body)


async def read_form(request: Request) -> FormData:
    """The posted form (urlencoded, as the pages send it; read here, so the dashboard needs
    no multipart parser)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise BadInput(
            "post the form as application/x-www-form-urlencoded (the JSON API is "
            f"/api/actions/NAME); got {kind or 'no content type'}"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadInput(f"the form is larger than {MAX_FORM_BYTES} bytes")
    if body and not kind:
        raise BadInput("post the form as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_IDS + 50)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadInput(f"the form cannot be read: {error}") from None
    fields: list[tuple[str, str | UploadFile]] = list(pairs)
    return FormData(fields)


async def action_route(context: Context, request: Request) -> Response:
    form = await read_form(request)
    action = request.path_params.get("action") or str(form.get("action") or "")
    check_action(context, request, action)
    needs_asking = action in TASK_ACTIONS or action == "purge"
    if needs_asking and form.get("confirm") != "yes":
        return HTMLResponse(await confirmation(context, request, action, form))
    done = await perform(context, request, action, form)
    response = RedirectResponse(safe_back(request, form.get("back")), status_code=303)
    set_flash(request, response, done.said)
    return response
