wrk.method = "POST"
wrk.body = '{"email": "ann@example.com", "password": "s3cret"}'
wrk.headers["Content-Type"] = "application/json"
