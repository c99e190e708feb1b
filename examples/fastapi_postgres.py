"""A task enqueued in the app's own transaction: FastAPI, SQLAlchemy (async) and backbeat's
PostgreSQL store in the same database. ``uvicorn examples.fastapi_postgres:app``.

``POST /orders`` writes an order and enqueues its receipt in one transaction: both are
committed, or neither (the outbox pattern, without an outbox table). An order refused after
its receipt was enqueued (``?refuse=1``, as a failed check would) rolls both back: no
receipt is ever sent for an order that does not exist.

$DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test): the database of both;
$APP_SCHEMA: the schema of the app's table (default: the search path's); the store's
tables are in the schema ``backbeat`` (or $BACKBEAT_SCHEMA).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.schema import CreateSchema

from backbeat import BackgroundTask, Runner, task
from backbeat.fastapi import install

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("examples.fastapi_postgres")

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
APP_SCHEMA = os.environ.get("APP_SCHEMA")

engine = create_async_engine(DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://"))
sessions = async_sessionmaker(engine, expire_on_commit=False)
metadata = MetaData(schema=APP_SCHEMA)
orders = Table("orders", metadata, Column("id", String, primary_key=True), Column("email", String))


@asynccontextmanager
async def tables(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        if APP_SCHEMA:
            await conn.execute(CreateSchema(APP_SCHEMA, if_not_exists=True))
        await conn.run_sync(metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(title="backbeat + SQLAlchemy: enqueue in the transaction", lifespan=tables)
schema = os.environ.get("BACKBEAT_SCHEMA", "backbeat")
runner = install(app, Runner(store=f"{DATABASE_URL}?schema={schema}"))


@task(retries=3)
async def send_receipt(order_id: str, email: str) -> None:
    log.info("receipt for %s sent to %s", order_id, email)


@app.post("/orders", status_code=201)
async def create_order(email: str, refuse: bool = False) -> dict[str, str]:
    order_id = uuid.uuid4().hex
    session: AsyncSession
    async with sessions() as session, session.begin():  # committed at the end of the block
        await session.execute(insert(orders).values(id=order_id, email=email))
        receipt = BackgroundTask(send_receipt, order_id, email)
        task_id = await runner.asubmit(receipt, connection=session)
        if refuse:  # an exception leaving the block rolls back the order and its receipt
            raise HTTPException(409, "order refused")
    return {"order": order_id, "task": task_id}


@app.get("/orders")
async def list_orders() -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(orders.c.id))).all())
