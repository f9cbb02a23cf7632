"""Stand-in application for the selfhosted.platform tests (image ``shp-test/httpapp``).

Environment:
  APP_NAME       name reported everywhere (default ``httpapp``)
  APP_VERSION    version reported (default ``1``)
  PORT           TCP port to listen on, all interfaces (default 8080)
  HEALTH         ``healthy`` (default), ``unhealthy`` (/health answers 500) or ``crash`` (the process
                 exits 1 right after starting: a broken release)
  STARTUP_DELAY  seconds to wait before listening (default 0)
  HEALTHY_AFTER  seconds after it starts listening during which /health answers 500 (default 0)
  UPLOAD_DIR     directory for POST /upload (uploads are off when unset)
  DATABASE_URL   postgres://user:pass@host:port/db    checked by /check (psycopg2)
  MYSQL_URL      mysql://user:pass@host:port/db       checked by /check (pymysql)
  REDIS_URL      redis://:pass@host:port/0            checked by /check (redis-py)
  MONGO_URL      mongodb://user:pass@host:port/db     checked by /check (pymongo)
  PUBLIC_*       readable through GET /env/<NAME>

Endpoints:
  GET  /health             200 {"status": "ok", "name", "version"} or 500 {"status": "unhealthy", ...}
  GET  /                   text "<APP_NAME> <APP_VERSION>"
  GET  /ws, /socket.io/    websocket echo: each text message comes back as "<APP_NAME>: <message>"
  GET  /env/<NAME>         the value of PUBLIC_* variables (404 for any other name)
  GET  /check              200 when every configured backend answers, 503 with the errors otherwise
  POST /upload?name=X      writes the request body to UPLOAD_DIR/X (201)
  GET  /upload?name=X      reads it back
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from urllib.parse import unquote, urlsplit

from aiohttp import WSMsgType, web

APP_NAME = os.environ.get("APP_NAME", "httpapp")
APP_VERSION = os.environ.get("APP_VERSION", "1")
CHECK_TIMEOUT = 5
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def log(msg: str) -> None:
    print(f"[{APP_NAME}] {msg}", flush=True)


def env_float(name: str, default: float = 0.0) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw.strip() else default
    except ValueError:
        log(f"ignoring {name}={raw!r}: not a number")
        return default


# ---------------------------------------------------------------------------------------------
# backend checks: each takes the URL and returns a small dict of facts (no secrets) or raises
# ---------------------------------------------------------------------------------------------

def check_postgres(url: str) -> dict:
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=CHECK_TIMEOUT)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1, current_database(), current_user")
            one, db, user = cur.fetchone()
        return {"database": db, "user": user, "select": one}
    finally:
        conn.close()


def check_mysql(url: str) -> dict:
    import pymysql

    u = urlsplit(url)
    conn = pymysql.connect(
        host=u.hostname or "localhost", port=u.port or 3306,
        user=unquote(u.username or ""), password=unquote(u.password or ""),
        database=unquote(u.path.lstrip("/")) or None,
        connect_timeout=CHECK_TIMEOUT, read_timeout=CHECK_TIMEOUT, write_timeout=CHECK_TIMEOUT,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("select 1, database(), current_user()")
            one, db, user = cur.fetchone()
        return {"database": db, "user": user, "select": one}
    finally:
        conn.close()


def check_redis(url: str) -> dict:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        return {"ping": bool(client.ping())}
    finally:
        client.close()


def check_mongo(url: str) -> dict:
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=CHECK_TIMEOUT * 1000,
                                 connectTimeoutMS=CHECK_TIMEOUT * 1000)
    try:
        res = client.admin.command("ping")
        return {"ping": res.get("ok") == 1}
    finally:
        client.close()


BACKENDS = {
    "postgres": ("DATABASE_URL", check_postgres),
    "mysql": ("MYSQL_URL", check_mysql),
    "redis": ("REDIS_URL", check_redis),
    "mongo": ("MONGO_URL", check_mongo),
}


def scrub(text: str, url: str) -> str:
    """The error text without the URL, its password or its userinfo."""
    secrets = [url]
    try:
        u = urlsplit(url)
        if u.password:
            secrets += [u.password, unquote(u.password)]
        if u.netloc and "@" in u.netloc:
            secrets.append(u.netloc.rsplit("@", 1)[0])
    except ValueError:
        pass
    for s in sorted(set(filter(None, secrets)), key=len, reverse=True):
        text = text.replace(s, "***")
    return text


async def run_check(name: str, var: str, fn) -> dict:
    url = os.environ[var]
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        facts = await asyncio.wait_for(loop.run_in_executor(None, fn, url), CHECK_TIMEOUT * 2)
        return {"ok": True, "env": var, **facts, "ms": round((time.monotonic() - start) * 1000)}
    except Exception as exc:  # every failure is reported, none is fatal
        msg = " ".join(str(exc).split()) or exc.__class__.__name__
        return {"ok": False, "env": var, "error": f"{exc.__class__.__name__}: {scrub(msg, url)}",
                "ms": round((time.monotonic() - start) * 1000)}


# ---------------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------------

def identity() -> dict:
    return {"name": APP_NAME, "version": APP_VERSION}


async def health(request: web.Request) -> web.Response:
    state = request.app["state"]
    if state["health"] == "unhealthy":
        return web.json_response({"status": "unhealthy", "reason": "HEALTH=unhealthy", **identity()}, status=500)
    remaining = state["healthy_at"] - time.monotonic()
    if remaining > 0:
        return web.json_response(
            {"status": "starting", "reason": f"healthy in {remaining:.1f}s", **identity()}, status=500)
    return web.json_response({"status": "ok", **identity()})


async def index(request: web.Request) -> web.Response:
    return web.Response(text=f"{APP_NAME} {APP_VERSION}\n")


async def websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    if not ws.can_prepare(request).ok:
        return web.Response(status=400, text="websocket upgrade expected\n")
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"{APP_NAME}: {msg.data}")
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type == WSMsgType.ERROR:
            break
    return ws


async def env_var(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not name.startswith("PUBLIC_") or name not in os.environ:
        return web.json_response({"error": "not found"}, status=404)
    return web.Response(text=os.environ[name])


async def check(request: web.Request) -> web.Response:
    configured = [(name, var, fn) for name, (var, fn) in BACKENDS.items() if os.environ.get(var)]
    results = await asyncio.gather(*(run_check(*c) for c in configured))
    backends = {c[0]: r for c, r in zip(configured, results, strict=True)}
    ok = all(r["ok"] for r in results)
    body = {"status": "ok" if ok else "error", **identity(), "backends": backends}
    return web.json_response(body, status=200 if ok else 503)


def upload_path(request: web.Request) -> str:
    upload_dir = os.environ.get("UPLOAD_DIR", "")
    if not upload_dir:
        raise web.HTTPNotFound(text="uploads are disabled (UPLOAD_DIR is not set)\n")
    name = request.query.get("name", "")
    if not NAME_RE.match(name) or name in (".", ".."):
        raise web.HTTPBadRequest(text="name must match [A-Za-z0-9._-]{1,200}\n")
    return os.path.join(upload_dir, name)


async def upload(request: web.Request) -> web.Response:
    path = upload_path(request)
    data = await request.read()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        return web.json_response({"error": f"{exc.__class__.__name__}: {exc.strerror}"}, status=500)
    return web.json_response({"name": os.path.basename(path), "bytes": len(data)}, status=201)


async def download(request: web.Request) -> web.Response:
    path = upload_path(request)
    try:
        with open(path, "rb") as fh:
            return web.Response(body=fh.read(), content_type="application/octet-stream")
    except FileNotFoundError:
        return web.json_response({"error": "not found"}, status=404)


@web.middleware
async def access_log(request: web.Request, handler):
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if request.path != "/health":
            log(f'{request.remote} "{request.method} {request.path_qs}" {status}')


def make_app(health_mode: str, healthy_after: float) -> web.Application:
    app = web.Application(middlewares=[access_log], client_max_size=1024 ** 3)
    app["state"] = {"health": health_mode, "healthy_at": time.monotonic() + healthy_after}
    app.router.add_get("/health", health)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/socket.io/", websocket)
    app.router.add_get("/env/{name}", env_var)
    app.router.add_get("/check", check)
    app.router.add_post("/upload", upload)
    app.router.add_put("/upload", upload)
    app.router.add_get("/upload", download)
    return app


def main() -> int:
    # PID 1 ignores SIGTERM/SIGINT without a handler: stop at once, also during STARTUP_DELAY
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: sys.exit(0))

    health_mode = os.environ.get("HEALTH", "healthy").strip().lower() or "healthy"
    if health_mode not in ("healthy", "unhealthy", "crash"):
        log(f"unknown HEALTH={health_mode!r}, expected healthy|unhealthy|crash")
        return 2
    if health_mode == "crash":
        log(f"{APP_NAME} {APP_VERSION}: HEALTH=crash, exiting with status 1")
        return 1
    try:
        port = int(os.environ.get("PORT", "8080"))
    except ValueError:
        log(f"PORT={os.environ.get('PORT')!r} is not a number")
        return 2

    delay = env_float("STARTUP_DELAY")
    if delay > 0:
        log(f"starting in {delay:g}s (STARTUP_DELAY)")
        time.sleep(delay)

    app = make_app(health_mode, env_float("HEALTHY_AFTER"))
    log(f"{APP_NAME} {APP_VERSION} listening on :{port} (health={health_mode})")
    web.run_app(app, host="0.0.0.0", port=port, print=None, access_log=None, handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
