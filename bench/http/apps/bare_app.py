"""The ceiling: a bare ASGI callable doing the least the endpoint must do."""

import json

from common import Sent, send_email_notification

CREATED = b'{"message":"Created"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"21")]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/sent":
        body = json.dumps({"sent": Sent.count}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    data = json.loads(b"".join(chunks))
    assert data["email"] and data["password"]
    await send({"type": "http.response.start", "status": 201, "headers": HEADERS})
    await send({"type": "http.response.body", "body": CREATED})
    await send_email_notification(message="Account created")
