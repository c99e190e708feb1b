"""The "202 Accepted" pattern: answer at once, process in the background, report status.

uvicorn examples.accepted:app
curl -i localhost:8000/files -H 'content-type: application/json' -d '{"name": "a.csv", "rows": 3}'
# 202 Accepted, Location: /tasks/01J...
curl localhost:8000/tasks/01J...      # pending/running, then succeeded
"""

import asyncio
import logging

from pydantic import BaseModel

from backbeat import App, BackgroundTasks, JSONResponse, Runner, post, status_route, task

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.accepted")


class FileIn(BaseModel):
    name: str
    rows: int


@task(name="files.process", retries=2, timeout=30)
async def process_file(name: str, rows: int) -> None:
    for row in range(rows):
        await asyncio.sleep(0.5)  # pretend each row takes a while
        log.info("%s: processed row %d of %d", name, row + 1, rows)


@post("/files", status_code=202)
async def upload(data: FileIn, tasks: BackgroundTasks) -> JSONResponse:
    job = tasks.add_task(process_file, data.name, data.rows)
    return JSONResponse({"task": job.id}, headers={"Location": f"/tasks/{job.id}"})


runner = Runner(concurrency=10, shutdown_timeout=10)
app = App(routes=[upload, status_route(runner, "/tasks/{task_id}")], runner=runner)
