"""`serve(ServeConfig(...))`: load the model, bind the socket (a one-line error if it cannot), run uvicorn."""

from __future__ import annotations

import gc
import ipaddress
import signal
import socket
import sys
import threading

from pycpilot.errors import PycpilotError
from pycpilot.generate.complete import Completer
from pycpilot.serve.config import ServeConfig


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do, and with Nagle on
        # a kept-alive connection waits ~40 ms for the client's delayed ACK between headers and body.
        sock = socket.socket(info[0], socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except (OSError, UnicodeError) as e:
        raise PycpilotError(f"cannot listen on {host}:{port}: {e.strerror if isinstance(e, OSError) else e}") from None
    sock.set_inheritable(True)
    return sock


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    from pycpilot.serve.app import create_app

    cfg.validate()
    sock = bind(cfg.host, cfg.port)  # before loading: a taken port fails fast
    completer = Completer(cfg.model, int8=cfg.int8, engine=cfg.engine, threads=cfg.threads, device=cfg.device)
    app = create_app(cfg, completer, start_worker=False)  # the worker is this thread, see below
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serve: {app.state.server.name} ({completer.loaded.note}, {completer.engine} engine, "
        f"batch {app.state.server.scheduler.max_batch}) at http://{shown}:{port}/ "
        f"(OpenAI base URL http://{shown}:{port}/v1)",
        file=sys.stderr,
        flush=True,
    )
    if not _is_loopback(cfg.host) and not cfg.api_key:
        print("serve: warning: listening beyond this machine without --api-key", file=sys.stderr, flush=True)
    # The model and libraries never become garbage: freezing them keeps full collections (tens of ms over that
    # heap) out of request latencies.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(app, log_level=cfg.log_level, access_log=cfg.log_level in ("info", "debug"))
    server = uvicorn.Server(config)
    scheduler = app.state.server.scheduler

    # HTTP in a thread, the model worker here: this thread loaded the model, and all torch work stays in one
    # thread (scheduler.py says why). Signals come to this thread; uvicorn then shuts down as it would.
    failed: list[str] = []

    def http() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # uvicorn exits with SystemExit when it cannot start (a lifespan error, ...)
            failed.append(f"{type(e).__name__}: {e}")
        finally:
            scheduler.stop()  # however HTTP ended, the worker ends too

    def on_signal(signum: int, frame: object) -> None:
        if server.force_exit:  # a third: now
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        if server.should_exit:
            server.force_exit = True  # a second: do not wait for open connections
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    thread = threading.Thread(target=http, name="pycpilot-http", daemon=True)
    thread.start()
    scheduler.run_here()
    thread.join(timeout=30)
    if failed or not server.started:
        raise PycpilotError(f"the HTTP server stopped: {failed[0] if failed else 'it did not start'}")
