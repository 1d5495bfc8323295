"""Open an HTML file in real headless Chromium and report what a reader would see.

Drives Chromium through the DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3 and 4,
NUL-terminated JSON), so it needs nothing beyond the standard library and the ``chromium`` binary. Used by the
report tests: every image must decode and no request may leave the machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from faceaudit.errors import FaceauditError

#: Flags for a quiet, isolated, offline-friendly headless browser.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--no-default-browser-check",
)
#: Schemes that never reach a server.
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")

_IMAGE_CHECK = """(() => {
  const imgs = Array.from(document.images);
  const svgImgs = Array.from(document.querySelectorAll('svg image'));
  return JSON.stringify({
    total: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.alt || i.src.slice(0, 60))),
    svg_images: svgImgs.length,
    scripts: document.scripts.length,
    title: document.title,
    height: document.documentElement.scrollHeight,
    text: document.body ? document.body.innerText.length : 0,
  });
})()"""


def find_chromium() -> str | None:
    """Path of the Chromium binary, or None when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageCheck:
    """What headless Chromium saw when it opened a page."""

    url: str
    images_total: int
    images_broken: list[str]
    network_requests: list[str]
    failed_requests: list[str]
    console_errors: list[str]
    scripts: int
    title: str
    page_height: int
    text_chars: int
    screenshot: bytes = field(repr=False, default=b"")


class _Pipe:
    """A minimal DevTools client over Chromium's debugging pipe."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the debugging pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, method: str, timeout: float) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            event = self.receive(max(0.01, deadline - time.monotonic()))
            if event.get("method") == method:
                return event
            self.events.append(event)


@contextlib.contextmanager
def _browser(width: int, height: int, chromium: str | None = None):
    """A headless Chromium at ``width`` x ``height`` and its DevTools pipe; closed on exit."""
    binary = chromium or find_chromium()
    if binary is None:
        raise FaceauditError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="faceaudit-chromium-") as profile:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        child_fds = {3: to_chrome_r, 4: from_chrome_w}

        def _wire() -> None:
            for target, source in child_fds.items():
                os.dup2(source, target)
                os.set_inheritable(target, True)

        args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                f"--window-size={width},{height}", "about:blank"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=_wire, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(proc, to_chrome_w, from_chrome_r)
        try:
            yield pipe
        finally:
            try:
                pipe.send("Browser.close", timeout=5)
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_chrome_w)
            os.close(from_chrome_r)


def check_page(html_path: Path, *, width: int = 1366, height: int = 900, timeout: float = 60.0,
               chromium: str | None = None, full_page: bool = False) -> PageCheck:
    """Open ``html_path`` at laptop size, wait for load, and report images, requests and a screenshot.

    The screenshot is the first screen, or the whole page with ``full_page``.
    """
    url = Path(html_path).resolve().as_uri()
    with _browser(width, height, chromium) as pipe:
        return _inspect(pipe, url, width, height, timeout, full_page)


def run_in_page(html_path: Path, expressions: list[str], *, width: int = 1366, height: int = 900,
                timeout: float = 120.0, chromium: str | None = None) -> tuple[list, list[str]]:
    """Open ``html_path``, evaluate each JavaScript expression in turn (promises awaited, values returned as
    JSON-able data), and return the values and the page's console errors and uncaught exceptions."""
    url = Path(html_path).resolve().as_uri()
    with _browser(width, height, chromium) as pipe:
        session = _open(pipe, url, width, height, timeout)
        values = []
        for expression in expressions:
            reply = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, session=session, timeout=timeout)
            if "exceptionDetails" in reply:
                raise RuntimeError(f"script failed: {reply['exceptionDetails'].get('text')} "
                                   f"{reply['exceptionDetails'].get('exception', {}).get('description', '')}")
            values.append(reply["result"].get("value"))
        return values, _console_errors(pipe.events)


def _open(pipe: _Pipe, url: str, width: int, height: int, timeout: float) -> str:
    """A new tab at ``url`` (loaded), returning its DevTools session id."""
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    pipe.events.clear()
    pipe.send("Page.navigate", {"url": url}, session=session)
    pipe.wait_for("Page.loadEventFired", timeout)
    # Let late requests (fonts, lazy images) show up before counting.
    time.sleep(0.5)
    return session


def _console_errors(events: list[dict]) -> list[str]:
    """Console errors and uncaught exceptions among DevTools events."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(params["entry"].get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"].get("text", "exception"))
    return found


def _inspect(pipe: _Pipe, url: str, width: int, height: int, timeout: float, full_page: bool) -> PageCheck:
    session = _open(pipe, url, width, height, timeout)
    result = pipe.send("Runtime.evaluate", {"expression": _IMAGE_CHECK, "returnByValue": True}, session=session)
    seen = json.loads(result["result"]["value"])
    params: dict = {"format": "png"}
    if full_page:
        params.update(captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": width, "height": seen["height"], "scale": 1})
    shot = pipe.send("Page.captureScreenshot", params, session=session, timeout=timeout)
    requests, failed, console = [], [], []
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            request_url = params["request"]["url"]
            if not request_url.startswith(LOCAL_SCHEMES):
                requests.append(request_url)
        elif method == "Network.loadingFailed":
            failed.append(f"{params.get('errorText')} ({params.get('type')})")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            console.append(params["entry"].get("text", ""))
        elif method == "Runtime.exceptionThrown":
            console.append(params["exceptionDetails"].get("text", "exception"))
    return PageCheck(url=url, images_total=seen["total"], images_broken=seen["broken"],
                     network_requests=requests, failed_requests=failed, console_errors=console,
                     scripts=seen["scripts"], title=seen["title"], page_height=seen["height"],
                     text_chars=seen["text"], screenshot=base64.b64decode(shot["data"]))


@dataclass
class PageRun:
    """What a scripted visit to a page returned: each step's value, console errors, requests that left the machine."""

    values: list
    console_errors: list[str]
    network_requests: list[str]


_CENTRE = """((selector) => {
  const element = document.querySelector(selector);
  if (!element) { throw new Error('no element matches ' + selector); }
  element.scrollIntoView({block: 'center'});
  const box = element.getBoundingClientRect();
  return [box.left + box.width / 2, box.top + box.height / 2];
})(%s)"""
_KEYS = {"Enter": ("Enter", 13, "\r"), "Tab": ("Tab", 9, ""), " ": ("Space", 32, " ")}


def drive_page(html_path: Path, steps: list[tuple[str, str]], *, width: int = 1366, height: int = 900,
               timeout: float = 120.0, chromium: str | None = None) -> PageRun:
    """Open ``html_path`` and run ``steps`` in turn, as a reader would: ``("eval", js)`` evaluates an expression
    (its JSON-able value recorded, one per eval step), ``("click", css)`` clicks the centre of the first element
    matching the selector with real mouse events, ``("focus", css)`` focuses it, ``("key", "Enter" | "Tab" | " ")``
    presses a key on the focused element."""
    url = Path(html_path).resolve().as_uri()
    with _browser(width, height, chromium) as pipe:
        session = _open(pipe, url, width, height, timeout)

        def evaluate(expression: str):
            reply = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True}, session=session, timeout=timeout)
            if "exceptionDetails" in reply:
                raise RuntimeError(f"script failed: {reply['exceptionDetails'].get('text')} "
                                   f"{reply['exceptionDetails'].get('exception', {}).get('description', '')}")
            return reply["result"].get("value")

        values = []
        for kind, argument in steps:
            if kind == "eval":
                values.append(evaluate(argument))
                continue
            if kind == "click":
                x, y = evaluate(_CENTRE % json.dumps(argument))
                for event in ("mousePressed", "mouseReleased"):
                    pipe.send("Input.dispatchMouseEvent", {"type": event, "x": x, "y": y, "button": "left",
                                                           "clickCount": 1}, session=session)
            elif kind == "focus":
                evaluate(f"document.querySelector({json.dumps(argument)}).focus()")
            elif kind == "key":
                code, number, text = _KEYS[argument]
                down = {"type": "keyDown", "key": argument, "code": code, "windowsVirtualKeyCode": number}
                pipe.send("Input.dispatchKeyEvent", {**down, **({"text": text} if text else {})}, session=session)
                pipe.send("Input.dispatchKeyEvent", {**down, "type": "keyUp"}, session=session)
            else:
                raise ValueError(f"unknown step {kind!r}")
        requests = [event["params"]["request"]["url"] for event in pipe.events
                    if event.get("method") == "Network.requestWillBeSent"
                    and not event["params"]["request"]["url"].startswith(LOCAL_SCHEMES)]
        return PageRun(values, _console_errors(pipe.events), requests)
