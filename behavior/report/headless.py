"""Open a page in headless Chromium and see it as a person would: the screenshot, where its images landed, what the
console complained about, and how long it took to load.

Chromium is driven over the DevTools protocol on a pair of pipes (``--remote-debugging-pipe``: fd 3 in, fd 4 out,
messages as JSON ending in a NUL byte), so nothing listens on a port and no browser-driver package is needed. Used by
the report tests and ``python -m behavior.report.speed``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Every image the page marks with data-box, with its place on the page (CSS pixels, page coordinates).
BOXES_JS = """JSON.stringify([...document.querySelectorAll('img[data-box]')].map(e => {
  const r = e.getBoundingClientRect();
  return {box: e.dataset.box, x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height,
          decoded: e.complete && e.naturalWidth > 0};
}))"""


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass
class PageView:
    """What the browser made of a page."""

    screenshot: bytes  # PNG of the whole page
    boxes: list[dict]  # BOXES_JS's records
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    load_seconds: float = 0.0  # from navigation to the first paint after the load event (every image decoded)


class Browser:
    """One headless Chromium process; ``with Browser() as b: b.view(path)``."""

    def __init__(self, width: int = 1280, timeout: float = 60.0) -> None:
        binary = find_browser()
        if binary is None:
            raise FileNotFoundError("no Chromium found (apt-get install -y chromium)")
        self.width, self.timeout, self.next_id = width, timeout, 0
        self.profile = tempfile.TemporaryDirectory(prefix="behavior-chromium-")
        to_child, self.send_fd = os.pipe()
        self.recv_fd, from_child = os.pipe()
        # The child's ends move above fd 4 first: one of them may be fd 3 or 4 itself, which the redirections below
        # would overwrite before reading it.
        to_child, from_child = (_above(to_child, 10), _above(from_child, 10))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                 "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile.name}", "about:blank"]
        # bash (dash reads only one-digit fds) puts the pipe ends on the fds the protocol expects, then becomes the
        # browser.
        self.process = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_child} 4>&{from_child}', binary, *flags],
                                        pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.buffer, self.events = b"", []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._write({"id": 0, "method": "Browser.close"})
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for fd in (self.send_fd, self.recv_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.profile.cleanup()

    def _write(self, message: dict) -> None:
        os.write(self.send_fd, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium did not answer within {self.timeout:g}s")
            chunk = os.read(self.recv_fd, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and wait for its answer; events arriving meanwhile are kept in ``events``."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, seen in enumerate(self.events):
            if seen.get("method") == event and seen.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            message = self._read(deadline)
            if message.get("method") == event and message.get("sessionId") == session:
                return message
            self.events.append(message)

    def view(self, page: str | os.PathLike, height: int = 900) -> PageView:
        """Load a page file in a new tab; return its full-page screenshot, image boxes, errors and the time to its
        first paint after loading."""
        url = Path(page).resolve().as_uri()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session)
        self.call("Emulation.setDeviceMetricsOverride", session, width=self.width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.events.clear()
        start = time.perf_counter()
        self.call("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)
        # Two animation frames after the load event: the page has been laid out and painted once.
        self.call("Runtime.evaluate", session, awaitPromise=True,
                  expression="new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        load_seconds = time.perf_counter() - start
        boxes = json.loads(self.call("Runtime.evaluate", session, expression=BOXES_JS,
                                     returnByValue=True)["result"]["value"])
        size = self.call("Page.getLayoutMetrics", session)["cssContentSize"]
        self.call("Emulation.setDeviceMetricsOverride", session, width=self.width,
                  height=max(height, int(size["height"])), deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        errors = [describe(e) for e in self.events if e.get("sessionId") == session and is_error(e)]
        self.call("Target.closeTarget", targetId=target)
        return PageView(base64.b64decode(shot["data"]), boxes, errors, load_seconds)


def _above(fd: int, lowest: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return moved


def is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params.get("entry", {}).get("level") == "error"
    return False


def describe(event: dict) -> str:
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        return params.get("exceptionDetails", {}).get("text", "exception")
    if event["method"] == "Runtime.consoleAPICalled":
        return " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
    entry = params.get("entry", {})
    return f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
