"""The fixture report in real headless Chromium, offline: it loads, shows its figures, logs no
error, runs no script and asks for nothing beyond its own file.

Chromium comes from Debian's package (bash tests/setup_system.sh; `make test` runs it first). It is
driven over the DevTools protocol on --remote-debugging-pipe: NUL-separated JSON messages, read by
Chromium from fd 3 and written to fd 4, so no WebSocket client and no open port are needed.

Set FTCOMPARE_SCREENSHOT_DIR to keep the screenshot.
"""

import base64
import fcntl
import json
import os
import queue
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.report import BLOG_FIGURES, BLOG_RUNS, built_blog_report

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    # Nothing resolves: a request for any host name fails on this machine, before any packet.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    f"--window-size={VIEWPORT['width']},{VIEWPORT['height']}",
    "--remote-debugging-pipe",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent: run `bash tests/setup_system.sh` (apt-get install chromium)",
    ),
]


# How long one DevTools call may wait for Chromium: make test runs it beside whole studies on two
# workers, where a 2-core machine has made Chromium take over 20 s to open a tab.
CDP_TIMEOUT_S = 120


class DevToolsPipe:
    """A Chromium process and its DevTools protocol connection over a pair of pipes."""

    def __init__(self, user_data_dir: Path, log_path: Path):
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()
        # Out of the way of fds 3 and 4, which the child gets them as.
        child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_read)
        os.close(from_browser_write)

        def give_child_fds_3_and_4():
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=give_child_fds_3_and_4,
            close_fds=False,
        )
        os.close(child_read)
        os.close(child_write)
        self.writer = os.fdopen(to_browser_write, "wb", buffering=0)
        self.reader = os.fdopen(from_browser_read, "rb", buffering=0)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self.reader.read(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self.messages.put(json.loads(message))
        self.messages.put(None)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = CDP_TIMEOUT_S):
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        self.writer.write(json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline, f"no answer to {method}")
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = CDP_TIMEOUT_S) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline, f"no {method} event")
            self.events.append(message)
            if message.get("method") == "Page.javascriptDialogOpening":
                raise AssertionError(f"a script opened a dialog: {message['params']}")
            if message.get("method") == method:
                return message

    def drain(self, seconds: float) -> None:
        """Collect whatever else arrives in the next `seconds` (late console or network events)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                return
            if message is not None:
                self.events.append(message)

    def _next(self, deadline: float, what: str) -> dict:
        try:
            message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise TimeoutError(what) from None
        if message is None:
            raise RuntimeError(f"Chromium closed the DevTools pipe ({what})")
        return message

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.writer.close()
        self.log.close()


def events_named(events: list[dict], method: str) -> list[dict]:
    return [e["params"] for e in events if e.get("method") == method]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_loads_offline_in_chromium(tmp_path):
    report = built_blog_report().html
    browser = DevToolsPipe(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            session=session,
        )
        browser.call(
            "Emulation.setDeviceMetricsOverride", {**VIEWPORT, "deviceScaleFactor": 1, "mobile": False}, session=session
        )

        navigation = browser.call("Page.navigate", {"url": report.as_uri()}, session=session)
        assert "errorText" not in navigation, navigation
        browser.wait_for("Page.loadEventFired")
        browser.drain(0.5)

        page = json.loads(
            browser.call(
                "Runtime.evaluate",
                {
                    "returnByValue": True,
                    "expression": """
            JSON.stringify({
                title: document.title,
                scripts: document.scripts.length,
                images: [...document.images].map(i => ({loaded: i.complete && i.naturalWidth > 0,
                                                       width: i.getBoundingClientRect().width})),
                headlineRows: [...document.querySelectorAll('#headline tbody th')].map(th => th.textContent),
                injected: document.querySelector('[data-prompt-id="0"] [data-model="full"] .output').textContent,
                fontFamily: getComputedStyle(document.body).fontFamily,
            })""",
                },
                session=session,
            )["result"]["value"]
        )

        metrics = browser.call("Page.getLayoutMetrics", session=session)
        height = min(int(metrics["cssContentSize"]["height"]), 12000)
        shot = browser.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height, "scale": 1},
            },
            session=session,
            timeout=60,
        )
        browser.drain(0.2)
    finally:
        browser.close()

    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("FTCOMPARE_SCREENSHOT_DIR"):
        keep = Path(os.environ["FTCOMPARE_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, keep / "report.png")

    events = browser.events
    console = [
        f"console.{e['type']}: {[a.get('value', a.get('description')) for a in e.get('args', [])]}"
        for e in events_named(events, "Runtime.consoleAPICalled")
    ]
    console += [
        f"log {e['entry']['level']}: {e['entry']['text']}"
        for e in events_named(events, "Log.entryAdded")
        if e["entry"]["level"] in ("error", "warning")
    ]
    console += [
        f"exception: {e['exceptionDetails'].get('text')}" for e in events_named(events, "Runtime.exceptionThrown")
    ]
    assert console == [], "\n".join(console)
    assert not events_named(events, "Page.javascriptDialogOpening"), "a script ran and opened a dialog"

    requested = [e["request"]["url"] for e in events_named(events, "Network.requestWillBeSent")]
    assert requested, "no request seen at all: the page was not loaded"
    leaving = [url for url in requested if not url.startswith(("file:", "data:"))]
    assert leaving == [], f"requests leaving the file: {leaving}"
    assert not events_named(events, "Network.loadingFailed"), events_named(events, "Network.loadingFailed")

    assert page["title"] == "LoRA vs full fine-tuning of Llama-2-7b-chat (blog setup)"
    assert page["scripts"] == 0
    assert page["headlineRows"] == ["base", *BLOG_RUNS]
    assert len(page["images"]) == len(BLOG_FIGURES)
    assert all(image["loaded"] and image["width"] > 400 for image in page["images"]), page["images"]
    assert "<script>alert(1)</script>" in page["injected"]

    width, shot_height = png_size(screenshot.read_bytes())
    assert width == VIEWPORT["width"] and shot_height == height > 3000
    assert screenshot.stat().st_size > 100_000  # a rendered page, not a blank one


def open_offline(browser: DevToolsPipe, report: Path, viewport: dict = VIEWPORT) -> str:
    """A new page showing `report` with the network off; its DevTools session id."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Network"):
        browser.call(f"{domain}.enable", session=session)
    browser.call(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        session=session,
    )
    browser.call(
        "Emulation.setDeviceMetricsOverride", {**viewport, "deviceScaleFactor": 1, "mobile": False}, session=session
    )
    navigation = browser.call("Page.navigate", {"url": report.as_uri()}, session=session)
    assert "errorText" not in navigation, navigation
    browser.wait_for("Page.loadEventFired")
    return session


# Every fold opened (a reader may open them all), then the boxes measured: the page never scrolls sideways;
# a table wider than the page scrolls inside its own box, and the comparison's tables need no scrolling at all.
LAYOUT_PROBE = """
document.querySelectorAll('details').forEach(d => { d.open = true; });
const page = document.documentElement.clientWidth;
const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, width: r.width}; };
JSON.stringify({
    page: page,
    scrollWidth: document.documentElement.scrollWidth,
    headline: box(document.querySelector('#glance h2')),
    wraps: [...document.querySelectorAll('.table-wrap')].map(w => ({
        table: w.querySelector('table').id,
        inComparison: !!w.closest('#comparison'),
        ...box(w), scrollWidth: w.scrollWidth, clientWidth: w.clientWidth})),
    blocks: [...document.querySelectorAll('#comparison p, #comparison ul, #glance ul.verdicts, figure')].map(box),
    figures: [...document.querySelectorAll('#comparison figure img')].map(i => ({
        loaded: i.complete && i.naturalWidth > 0, width: i.getBoundingClientRect().width,
        naturalWidth: i.naturalWidth})),
    images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
})"""


@pytest.mark.parametrize("width", [1280, 1024])
def test_a_50_run_sweep_report_fits_the_page_in_chromium(tmp_path, width):
    from helpers.comparison import SWEEP_RUN_COUNT, built_sweep_report

    report = built_sweep_report()[0].html
    viewport = {"width": width, "height": 900}
    browser = DevToolsPipe(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        session = open_offline(browser, report, viewport)
        layout = json.loads(
            browser.call("Runtime.evaluate", {"returnByValue": True, "expression": LAYOUT_PROBE}, session=session)[
                "result"
            ]["value"]
        )
        rows = browser.call(
            "Runtime.evaluate",
            {"returnByValue": True, "expression": "document.querySelectorAll('#headline tbody tr').length"},
            session=session,
        )["result"]["value"]
        if os.environ.get("FTCOMPARE_SCREENSHOT_DIR"):
            metrics = browser.call("Page.getLayoutMetrics", session=session)
            shot = browser.call(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": width,
                        "height": min(int(metrics["cssContentSize"]["height"]), 16000),
                        "scale": 1,
                    },
                },
                session=session,
                timeout=60,
            )
            keep = Path(os.environ["FTCOMPARE_SCREENSHOT_DIR"])
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"sweep-report-{width}.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()

    page = layout["page"]
    assert page == width
    assert layout["scrollWidth"] <= page, f"the page scrolls sideways: {layout['scrollWidth']} > {page}"
    assert layout["headline"]["right"] <= page
    assert rows == SWEEP_RUN_COUNT + 1  # every run and the base model, in the opened fold
    for wrap in layout["wraps"]:
        assert wrap["left"] >= 0 and wrap["right"] <= page + 0.5, wrap
        if wrap["inComparison"]:
            assert wrap["scrollWidth"] <= wrap["clientWidth"] + 1, f"{wrap['table']} needs sideways scrolling"
    assert {wrap["table"] for wrap in layout["wraps"] if wrap["inComparison"]} >= {
        "at-best",
        "comparisons",
        "fairness",
        "expected-best",
        "comparison-runs",
    }
    for block in layout["blocks"]:
        assert block["right"] <= page + 0.5, block
    assert all(layout["images"]), "an image did not load"
    assert len(layout["figures"]) == 3
    for figure in layout["figures"]:
        # legible: at least ~half a laptop screen wide, and drawn with at least as many pixels as it shows
        assert figure["loaded"] and figure["width"] >= 480 and figure["naturalWidth"] >= figure["width"], figure
