"""``emage-agent serve``: EMage over HTTP, an OpenAI-compatible images API and a session API (the serve extra).

Modules: ``options`` (request fields, EMage's from ``RunOptions``), ``errors`` (OpenAI's error shape),
``guard`` (token, body limit), ``runs`` (the bounded queue of background runs on the shared engine),
``idempotency``, ``uploads``, ``views`` (read-only session views), ``openai_images`` and
``sessions_api`` (the routes), ``app`` (the ASGI app and the server), ``main`` (what the CLI calls).
"""
