-- Like post.lua, but each connection waits 20 ms between requests: a steady,
-- unsaturated load (~1,500 req/s at 32 connections), so latency is not queueing.
wrk.method = "POST"
wrk.body = '{"email": "ann@example.com", "password": "s3cret"}'
wrk.headers["Content-Type"] = "application/json"

function delay()
    return 20
end
