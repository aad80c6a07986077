"""Checks a running Jupyter Server the way a notebook client would, for
vigil-proxy's compatibility test.

Usage: python jupyter_check.py BASE_URL TOKEN    (e.g. http://127.0.0.1:8888 T)

The server is a real jupyter_server 2.x, started with no browser and no
network, for instance:

    JUPYTER_CONFIG_DIR=$TMP/cfg JUPYTER_RUNTIME_DIR=$TMP/rt \\
    JUPYTER_DATA_DIR=$TMP/data IPYTHONDIR=$TMP/ipython \\
    python -m jupyter_server --ServerApp.ip=127.0.0.1 --ServerApp.port=P \\
        --ServerApp.port_retries=0 --IdentityProvider.token=T \\
        --ServerApp.root_dir=$TMP/root --ServerApp.allow_remote_access=True \\
        --ServerApp.open_browser=False --ServerApp.allow_root=True

(--ServerApp.token=T still works in 2.21 but is deprecated for
--IdentityProvider.token; allow_root is needed only when running as root;
port_retries=0 makes a taken port an error instead of a silent other port;
the env vars keep the user's config, runtime files, notebook-signing key and
IPython profile out of it. GET /api answers without the token, so the first
step also calls GET /api/status, which needs it.)

The REST calls use urllib, which takes its proxy from http_proxy/HTTP_PROXY
(https_proxy for https) minus no_proxy. The WebSocket uses websocket-client,
given the same proxy explicitly; through an HTTP proxy it tunnels with
CONNECT, even for ws://.

Each step prints "ok <step>"; the first failure prints "FAIL <step>: ..." on
stderr and exits 1. Every network wait has a 30 s timeout, so a broken proxy
makes the check fail rather than hang.
"""

import contextlib
import datetime
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit

import websocket

TIMEOUT = 30.0  # seconds, for every network wait
NOTEBOOK = "probe.ipynb"
CELL_SOURCE = "print('vigil probe')"


class CheckFailed(Exception):
    pass


@contextlib.contextmanager
def step(name):
    """Runs one step: prints "ok NAME", or "FAIL NAME: ..." and exits 1."""
    try:
        yield
    except Exception as e:  # any error at all ends the check with its step
        detail = str(e) if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
        print(f"FAIL {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok {name}", flush=True)


class Jupyter:
    def __init__(self, base_url, token):
        self.base = base_url.rstrip("/")
        self.token = token
        self.session = uuid.uuid4().hex  # the client session of the kernel protocol
        # build_opener includes a ProxyHandler reading the proxy env vars.
        self.opener = urllib.request.build_opener()

    def api(self, method, path, body=None, expect=200):
        """Makes a REST call, checks its status, returns its JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        if data is None and method in ("POST", "PUT"):
            data = b""
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=TIMEOUT) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        expected = expect if isinstance(expect, tuple) else (expect,)
        if status not in expected:
            raise CheckFailed(f"{method} {path}: HTTP {status}, want {expect}: {text[:300]!r}")
        return json.loads(text) if text else None

    def ws_connect(self, kernel_id):
        url = self.base.replace("http", "ws", 1)
        url += f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        return websocket.create_connection(
            url,
            timeout=TIMEOUT,
            header=[f"Authorization: token {self.token}"],
            **ws_proxy_options(url),
        )

    def send(self, ws, msg_type, content):
        """Sends a shell-channel message (protocol 5.3, JSON); returns its msg_id."""
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {
                "msg_id": msg_id,
                "msg_type": msg_type,
                "session": self.session,
                "username": "vigil-compat",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "channel": "shell",
            "content": content,
            "buffers": [],
        }))
        return msg_id

    @staticmethod
    def receive(ws, until):
        """The next JSON message, or None once time.monotonic() passes until."""
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None
            ws.settimeout(remaining)
            try:
                # control_frame=True returns pings too (after answering them),
                # so the server's keep-alive pings cannot stretch the wait.
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                return None
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(data)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("closed by the server")
            # binary frames carry buffers, not ours; pings and pongs: go on

    def wait_ready(self, ws):
        """Sends kernel_info_request (again every second) until one of them
        shows on iopub: only then does the kernel's output reach us. A client
        that skips this loses output sent just after a (re)start, because a
        new ZMQ subscription misses what is published before it is set up."""
        deadline = time.monotonic() + TIMEOUT
        asked = set()
        while time.monotonic() < deadline:
            asked.add(self.send(ws, "kernel_info_request", {}))
            until = min(deadline, time.monotonic() + 1.0)
            while (msg := self.receive(ws, until)) is not None:
                if msg.get("channel") == "iopub" and msg["parent_header"].get("msg_id") in asked:
                    return
        raise CheckFailed(f"kernel gave no sign of life on iopub within {TIMEOUT:.0f} s")

    def execute(self, ws, code):
        """Runs code on the kernel; returns its text/plain result."""
        msg_id = self.send(ws, "execute_request", {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        })
        result = None
        deadline = time.monotonic() + TIMEOUT
        while (msg := self.receive(ws, deadline)) is not None:
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "error":
                raise CheckFailed(f"{code!r} raised {content['ename']}: {content['evalue']}")
            if kind == "execute_result":
                result = content["data"]["text/plain"]
            if kind == "status" and content["execution_state"] == "idle":
                if result is None:
                    raise CheckFailed(f"kernel went idle without a result for {code!r}")
                return result
        raise CheckFailed(f"no result and idle status for {code!r} within {TIMEOUT:.0f} s"
                          f" (result so far: {result!r})")


def ws_proxy_options(ws_url):
    """websocket-client options for the proxy urllib would use for this URL.

    websocket-client reads http_proxy/https_proxy and no_proxy itself too;
    passing them explicitly makes REST and WebSocket take the same route.
    """
    parts = urlsplit(ws_url)
    proxy = urllib.request.getproxies().get("https" if parts.scheme == "wss" else "http")
    if not proxy or urllib.request.proxy_bypass(parts.hostname):
        return {}
    proxy = urlsplit(proxy)
    return {
        "http_proxy_host": proxy.hostname,
        "http_proxy_port": proxy.port or 80,
        "proxy_type": "http",
    }


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: jupyter_check.py BASE_URL TOKEN   (e.g. http://127.0.0.1:8888 T)")
    jupyter = Jupyter(sys.argv[1], sys.argv[2])
    api = jupyter.api

    # ---------------------------------------------------------------- REST
    with step("api"):
        version = api("GET", "/api").get("version")
        if not version:
            raise CheckFailed("no version in GET /api")
        api("GET", "/api/status")  # GET /api is public; this one needs the token

    with step("contents_put"):
        notebook = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [{
                "cell_type": "code",
                "id": "probe-cell",
                "source": CELL_SOURCE,
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }],
        }
        body = {"type": "notebook", "format": "json", "content": notebook}
        api("PUT", f"/api/contents/{NOTEBOOK}", body, expect=(200, 201))

    with step("contents_get"):
        model = api("GET", f"/api/contents/{NOTEBOOK}?content=1")
        source = model["content"]["cells"][0]["source"]
        source = "".join(source) if isinstance(source, list) else source
        if source != CELL_SOURCE:
            raise CheckFailed(f"cell source {source!r}, want {CELL_SOURCE!r}")

    with step("contents_list"):
        names = [item["name"] for item in api("GET", "/api/contents")["content"]]
        if NOTEBOOK not in names:
            raise CheckFailed(f"{NOTEBOOK} not in the root listing {names}")

    with step("session_create"):
        body = {"path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook",
                "kernel": {"name": "python3"}}
        session_id = api("POST", "/api/sessions", body, expect=201)["id"]

    with step("session_list"):
        ids = [s["id"] for s in api("GET", "/api/sessions")]
        if session_id not in ids:
            raise CheckFailed(f"session {session_id} not in {ids}")

    with step("session_delete"):
        api("DELETE", f"/api/sessions/{session_id}", expect=204)

    # ---------------------------------------------------------------- kernel
    with step("kernel_start"):
        kernel_id = api("POST", "/api/kernels", {"name": "python3"}, expect=201)["id"]

    with step("websocket_connect"):
        ws = jupyter.ws_connect(kernel_id)
        jupyter.wait_ready(ws)

    with step("execute"):
        result = jupyter.execute(ws, "1+1")
        if result != "2":
            raise CheckFailed(f"1+1 gave {result!r}")

    with step("kernel_interrupt"):
        api("POST", f"/api/kernels/{kernel_id}/interrupt", expect=204)

    with step("kernel_restart"):
        api("POST", f"/api/kernels/{kernel_id}/restart", expect=200)

    with step("execute_after_restart"):
        # jupyter_server keeps the WebSocket open over a restart; reconnect
        # only if it (or the proxy) closed it.
        try:
            jupyter.wait_ready(ws)
        except websocket.WebSocketConnectionClosedException:
            ws = jupyter.ws_connect(kernel_id)
            jupyter.wait_ready(ws)
        result = jupyter.execute(ws, "40+2")
        if result != "42":
            raise CheckFailed(f"40+2 gave {result!r}")
        ws.close()

    with step("kernel_delete"):
        api("DELETE", f"/api/kernels/{kernel_id}", expect=204)


if __name__ == "__main__":
    main()
