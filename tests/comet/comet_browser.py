#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# The comet page in a real browser: starts a private nats-server, two
# http_comet processes A and B with --nats, and headless Chromium on the
# page of A; once the page says it is connected, publishes through B and
# checks that A's page shows the message in its DOM exactly once (also
# after a few more long-polls). Chromium is driven over the DevTools
# protocol with a small WebSocket client, standard library only.
# `--screenshot PATH` also saves the page as PNG (docs/comet.png).
# Exit status 77: skipped (no chromium or no nats-server).
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comet_test import (SKIP, POLL_MS, Comet, Nats, check,  # noqa: E402
                        fail, wait_for)


class DevTools:
    """One WebSocket to a DevTools target (RFC 6455, client side)."""

    def __init__(self, port, path):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n"
                        % (path, port, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            check(chunk, "DevTools closed during the handshake")
            head += chunk
        check(head.startswith(b"HTTP/1.1 101"), "handshake: %r" % head[:80])
        self.rest = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _read(self, n):
        while len(self.rest) < n:
            chunk = self.s.recv(65536)
            check(chunk, "DevTools closed the connection")
            self.rest += chunk
        out, self.rest = self.rest[:n], self.rest[n:]
        return out

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.s.sendall(head + mask + body)

    def _recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            check(not b1 & 0x80, "a masked frame from the server")
            payload = self._read(n)
            if b0 & 0x0F == 0x8:
                fail("DevTools closed the WebSocket")
            if b0 & 0x0F in (0x9, 0xA):  # ping, pong: not used by Chromium
                continue
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method,
                               "params": params}))
        while True:  # events may come first
            m = self._recv()
            if m.get("id") == self.next_id:
                check("error" not in m, "%s: %r" % (method, m.get("error")))
                return m["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr,
                      returnByValue=True)
        return r["result"].get("value")

    def close(self):
        self.s.close()


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    print("SKIPPED: Chromium is not installed (apt-get install chromium; "
          ".ci/deps.sh installs it)", flush=True)
    sys.exit(SKIP)


class Browser:
    """Headless Chromium in its own session, stopped by its PID (and its
    process group: the renderers it started)."""

    def __init__(self, exe, tmp):
        profile = os.path.join(tmp, "chromium")
        self.log = open(os.path.join(tmp, "chromium.log"), "wb")
        self.p = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "--user-data-dir=" + profile,
             "--window-size=800,520", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        active = os.path.join(profile, "DevToolsActivePort")
        lines = wait_for("Chromium's DevToolsActivePort",
                         lambda: _read_lines(active), timeout=30)
        self.port = int(lines[0])

    def page(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/json/list")
        targets = json.loads(c.getresponse().read())
        c.close()
        pages = [t for t in targets if t.get("type") == "page"]
        check(pages, "no page target: %r" % targets)
        url = pages[0]["webSocketDebuggerUrl"]
        return DevTools(self.port, url.split(str(self.port), 1)[1])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        try:  # renderers left over in the group this test created
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def _read_lines(path):
    try:
        with open(path) as f:
            lines = f.read().split("\n")
        return lines if len(lines) >= 2 and lines[0].isdigit() else None
    except OSError:
        return None


def items(tab):
    return tab.eval("Array.from(document.querySelectorAll('#messages li'),"
                    " li => li.textContent)") or []


def run(comet, tmp, screenshot):
    exe = find_chromium()
    nats = Nats(tmp)
    procs, browser, tab = [], None, None
    try:
        a = Comet(comet, tmp, "a", "--nats", nats.url)
        procs.append(a)
        b = Comet(comet, tmp, "b", "--nats", nats.url)
        procs.append(b)
        browser = Browser(exe, tmp)
        tab = browser.page()
        tab.call("Page.navigate",
                 url="http://127.0.0.1:%d/?ch=browser" % a.port)
        wait_for("the page to connect", lambda: tab.eval(
            "document.getElementById('status')?.textContent") ==
            "connected", timeout=20)
        check(tab.eval("document.getElementById('node').textContent") ==
              a.node, "the page is not A's")
        text = "hello from B (%s)" % b.node
        b.pub("browser", text)
        shown = wait_for("the message in A's page",
                         lambda: text in items(tab) and items(tab))
        time.sleep(2 * POLL_MS / 1000.0)  # a few more long-polls go by
        shown = items(tab)
        check(shown == [text], "A's page shows %r" % shown)
        print("ok browser: A's page shows B's publish once", flush=True)
        if screenshot:
            b.pub("browser", "a second message, also through B")
            wait_for("the second message",
                     lambda: len(items(tab)) == 2)
            png = tab.call("Page.captureScreenshot", format="png")["data"]
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(png))
            print("screenshot:", screenshot, flush=True)
    finally:
        if tab:
            tab.close()
        if browser:
            browser.stop()
        for p in procs:
            p.stop()
        nats.stop()


def main():
    args = sys.argv[1:]
    screenshot = None
    if len(args) == 3 and args[0] == "--screenshot":
        screenshot, args = os.path.abspath(args[1]), args[2:]
    if len(args) != 1:
        print("usage: comet_browser.py [--screenshot PNG] HTTP_COMET",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="comet_browser.") as tmp:
        try:
            run(args[0], tmp, screenshot)
        except AssertionError as e:
            print("FAILED:", e, flush=True)
            for log in sorted(os.listdir(tmp)):
                if log.endswith(".log"):
                    print("---", log)
                    print(open(os.path.join(tmp, log),
                               errors="replace").read()[-3000:])
            return 1
    print("PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
