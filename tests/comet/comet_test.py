#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# Tests of examples/http_comet over HTTP on 127.0.0.1, standard library
# only. `comet_test.py single COMET` runs one process: /sub and /pub as
# before, recovery with ?after=, the fell-behind flag, timeouts, bad
# requests. `comet_test.py cluster COMET` starts a private nats-server and
# two processes with --nats: what is published through one reaches the
# long-polls of both exactly once, whichever process a reconnect lands on.
# The browser test (comet_browser.py) builds on the helpers here. Every
# wait is bounded; every process is started here and stopped by its PID.
# Exit status 77 means skipped (CTest's SKIP_RETURN_CODE).
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
POLL_MS = 1500  # the processes' --poll-timeout


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


class Proc:
    """A child process started by this test, stopped by its PID."""

    def __init__(self, argv, log):
        self.log = open(log, "w+b")
        self.p = subprocess.Popen(argv, stdout=self.log,
                                  stderr=subprocess.STDOUT)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()
        return self.p.returncode


def wait_for(what, fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    fail("timed out waiting for " + what)


class Comet:
    """One http_comet process on a free port."""

    def __init__(self, exe, tmp, name, *args):
        self.proc = Proc([exe, "--listen", "127.0.0.1:0",
                          "--poll-timeout", str(POLL_MS)] + list(args),
                         os.path.join(tmp, name + ".log"))
        line = wait_for(name + " to listen", self._listening)
        self.node, self.port = line.group(1), int(line.group(2))

    def _listening(self):
        if self.proc.p.poll() is not None:
            fail("http_comet exited: " + self.proc.output())
        return re.search(r"as node (\S+) \(port (\d+)\)",
                         self.proc.output())

    def request(self, method, path, body=None, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port,
                                       timeout=timeout)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def pub(self, ch, text):
        status, body = self.request("POST", "/pub?ch=" + ch, text.encode())
        check(status == 200, "pub %s: %d %s" % (ch, status, body))
        return body.strip()

    def poll(self, ch, cursor, timeout=10):
        q = "/sub?ch=%s&after=%s" % (ch, _quote(cursor))
        status, body = self.request("GET", q, timeout=timeout)
        check(status == 200, "sub %s: %d %s" % (q, status, body))
        return json.loads(body)

    def fresh(self, ch):
        return self.poll(ch, "")["cursor"]

    def stop(self):
        rc = self.proc.stop()
        out = open(self.proc.log.name, errors="replace").read()
        check(rc == 0, "http_comet exited with %s: %s" % (rc, out[-2000:]))
        check(not re.search(r"Sanitizer|runtime error", out),
              "a sanitizer complained: " + out[-3000:])


def _quote(s):
    from urllib.parse import quote
    return quote(s, safe="")


class Background:
    """A request run in a thread (a parked long-poll)."""

    def __init__(self, fn, *args):
        self.result = self.error = None
        self.t = threading.Thread(target=self._run, args=(fn,) + args)
        self.t.start()

    def _run(self, fn, *args):
        try:
            self.result = fn(*args)
        except Exception as e:  # reported by get()
            self.error = e

    def get(self, timeout=15):
        self.t.join(timeout)
        check(not self.t.is_alive(), "a long-poll never returned")
        if self.error:
            raise self.error
        return self.result


def texts(answer):
    return [m["text"] for m in answer["messages"]]


class Nats:
    """A private nats-server on a free loopback port."""

    def __init__(self, tmp):
        exe = shutil.which("nats-server")
        if not exe:
            print("SKIPPED: nats-server is not installed "
                  "(apt-get install nats-server; .ci/deps.sh)", flush=True)
            sys.exit(SKIP)
        d = os.path.join(tmp, "nats")
        os.mkdir(d)
        self.proc = Proc([exe, "-a", "127.0.0.1", "-p", "-1",
                          "--ports_file_dir", d],
                         os.path.join(tmp, "nats.log"))
        f = wait_for("nats-server's ports file",
                     lambda: glob.glob(os.path.join(d, "*.ports")))
        self.url = wait_for("nats-server's port", lambda: _ports(f[0]))

    def stop(self):
        self.proc.stop()


def _ports(path):
    try:
        with open(path) as f:
            return json.load(f)["nats"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None


# --- one process -----------------------------------------------------------

def single_plain(a):
    """/sub?ch= parks and gets the next publish as text; /pub answers how
    many parked subscribers got it."""
    bg = Background(a.request, "GET", "/sub?ch=plain")
    got = None
    for i in range(100):  # until the hub has parked the /sub
        n = a.pub("plain", "hello-%d" % i)
        if n == "1":
            got = "hello-%d" % i
            break
        check(n == "0", "pub answered %r" % n)
        time.sleep(0.05)
    check(got, "the parked /sub never counted")
    check(bg.get() == (200, got), "plain /sub got %r" % (bg.get(),))
    status, _ = a.request("GET", "/sub?ch=plain")  # nothing: times out
    check(status == 204, "a plain /sub that waited got %d" % status)


def single_recovery(a):
    """after=CURSOR answers at once with what came after it, in order,
    each message once; a parked cursor wakes on the next publish."""
    cur = a.fresh("rec")
    for t in ("r1", "r2", "r3"):
        a.pub("rec", t)
    ans = a.poll("rec", cur)
    check(texts(ans) == ["r1", "r2", "r3"] and not ans["lost"],
          "recovery: %r" % ans)
    ids = [m["id"] for m in ans["messages"]]
    check(ids == ["%s:%d" % (a.node, i) for i in (1, 2, 3)], "ids %r" % ids)
    check(texts(a.poll("rec", "%s:1" % a.node)) == ["r2", "r3"],
          "after=node:1")
    check(texts(a.poll("rec", "1")) == ["r2", "r3"], "after=1")
    bg = Background(a.poll, "rec", ans["cursor"])
    time.sleep(0.2)
    a.pub("rec", "r4")
    woke = bg.get()
    check(texts(woke) == ["r4"] and not woke["lost"], "woke: %r" % woke)
    t0 = time.monotonic()
    idle = a.poll("rec", woke["cursor"])  # nothing new: waits, then empty
    check(idle["messages"] == [] and not idle["lost"] and
          idle["cursor"] == woke["cursor"], "idle poll: %r" % idle)
    check(time.monotonic() - t0 >= POLL_MS / 1000.0 * 0.5,
          "an idle poll answered before its timeout")


def single_fell_behind(a):
    """A client further behind than --history (4 here) is told so, gets
    what is left, and is back in step with the cursor it got."""
    cur = a.fresh("behind")
    for i in range(1, 11):
        a.pub("behind", "b%d" % i)
    ans = a.poll("behind", cur)
    check(ans["lost"] and texts(ans) == ["b7", "b8", "b9", "b10"],
          "fell behind: %r" % ans)
    a.pub("behind", "b11")
    nxt = a.poll("behind", ans["cursor"])
    check(texts(nxt) == ["b11"] and not nxt["lost"], "after: %r" % nxt)


def _park(a, n, ch):
    """n raw sockets, each with a plain /sub of ch outstanding."""
    import socket
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        s.sendall(b"GET /sub?ch=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                  % ch.encode())
        socks.append(s)
    return socks


def _answers(socks, timeout=15):
    """The one response each socket gets: {socket: (status, body)}."""
    import selectors
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    got, bufs = {}, {s: b"" for s in socks}
    deadline = time.monotonic() + timeout
    while len(got) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            d = s.recv(4096)
            check(d, "a parked /sub was closed")
            bufs[s] += d
            head, sep, rest = bufs[s].partition(b"\r\n\r\n")
            if not sep:
                continue
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            cl = int(m.group(1)) if m else 0
            if len(rest) >= cl:
                got[s] = (int(head.split(b" ")[1]), rest[:cl].decode())
                sel.unregister(s)
    check(len(got) == len(socks), "%d of %d parked /sub answered"
          % (len(got), len(socks)))
    return got


def single_fanout(a):
    """More parked plain /sub than one fan-out batch and than one block of
    the channel's queue: each gets exactly one message, and each /pub's
    count is how many got its text, also when publishes come while a
    fan-out is still under way."""
    n = 300
    for rnd in range(2):
        socks = _park(a, n, "fan")
        counts, texts_sent = {}, []
        lock = threading.Lock()

        def publish(text):
            c = a.pub("fan", text)
            with lock:
                counts[text] = int(c)

        total, i = 0, 0
        while total < n and i < 400:  # until every /sub has got one
            pair = ["r%d-%d" % (rnd, i), "r%d-%d" % (rnd, i + 1)]
            i += 2
            ts = [threading.Thread(target=publish, args=(t,)) for t in pair]
            for t in ts:
                t.start()
            for t in ts:
                t.join(15)
            texts_sent += pair
            total = sum(counts.values())
            time.sleep(0.01)
        check(total == n, "the /pub counts add up to %d of %d" % (total, n))
        got = _answers(socks)
        for text in texts_sent:
            k = sum(1 for st, body in got.values() if body == text)
            check(k == counts[text], "%s: /pub counted %d, %d got it"
                  % (text, counts[text], k))
        check(all(st == 200 for st, _ in got.values()), "a /sub status")
        for s in socks:
            s.close()


def single_bad(a):
    for q in ("/sub", "/sub?ch=", "/sub?ch=a.b", "/sub?ch=a&after=x:y",
              "/sub?ch=a&after=tq", "/pub?ch=%2F"):
        method = "POST" if q.startswith("/pub") else "GET"
        status, _ = a.request(method, q, b"x" if method == "POST" else None)
        check(status == 400, "%s gave %d" % (q, status))
    status, body = a.request("GET", "/")
    check(status == 200 and 'id="messages"' in body and a.node in body,
          "the page: %d" % status)


def run_single(exe, tmp):
    a = Comet(exe, tmp, "single", "--history", "4")
    try:
        for t in (single_plain, single_fanout, single_recovery,
                  single_fell_behind, single_bad):
            t(a)
            print("ok", t.__name__, flush=True)
    finally:
        a.stop()


# --- two processes through NATS ---------------------------------------------

def cluster_exactly_once(a, b):
    """A publish through B reaches a long-poll parked on A once; the same
    cursor then finds nothing new on A nor on B (a reconnect that lands
    on the other process repeats nothing)."""
    cur = a.fresh("x")  # answered once A's subscription is live
    bg = Background(a.poll, "x", cur)
    time.sleep(0.2)
    check(b.pub("x", "from-b") == "%s:1" % b.node, "B's publish id")
    ans = bg.get()
    check(texts(ans) == ["from-b"] and not ans["lost"], "A got %r" % ans)
    check(ans["messages"][0]["id"] == "%s:1" % b.node, "id %r" % ans)
    for p in (a, b):
        again = p.poll("x", ans["cursor"])
        check(again["messages"] == [] and not again["lost"],
              "a repeat on %s: %r" % (p.node, again))


def cluster_every_process(a, b):
    """Parked polls on both processes get each publish, from either side,
    once each, in each publisher's order; a client that alternates
    processes sees every message once."""
    cur_a, cur_b = a.fresh("y"), b.fresh("y")
    pa, pb = Background(a.poll, "y", cur_a), Background(b.poll, "y", cur_b)
    time.sleep(0.2)
    a.pub("y", "y1")
    ra, rb = pa.get(), pb.get()
    check(texts(ra) == ["y1"] and texts(rb) == ["y1"], "%r %r" % (ra, rb))
    sent = []
    for i in range(6):
        (a if i % 2 else b).pub("y", "z%d" % i)
        sent.append("z%d" % i)
    seen, cur, procs = [], ra["cursor"], (b, a)
    deadline = time.monotonic() + 10
    while len(seen) < len(sent) and time.monotonic() < deadline:
        ans = procs[len(seen) % 2].poll("y", cur)  # alternate processes
        check(not ans["lost"], "lost: %r" % ans)
        seen += texts(ans)
        cur = ans["cursor"]
    check(sorted(seen) == sorted(sent), "alternating client saw %r" % seen)
    for origin in (a, b):  # each publisher's order is kept
        mine = [t for t in seen if int(t[1:]) % 2 == (origin is a)]
        check(mine == sorted(mine, key=lambda t: int(t[1:])), "order")


def run_cluster(exe, tmp):
    nats = Nats(tmp)
    procs = []
    try:
        a = Comet(exe, tmp, "a", "--nats", nats.url)
        procs.append(a)
        b = Comet(exe, tmp, "b", "--nats", nats.url)
        procs.append(b)
        for t in (cluster_exactly_once, cluster_every_process):
            t(a, b)
            print("ok", t.__name__, flush=True)
    finally:
        for p in procs:
            p.stop()
        nats.stop()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("single", "cluster"):
        print("usage: comet_test.py single|cluster HTTP_COMET",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="comet_test.") as tmp:
        try:
            (run_single if sys.argv[1] == "single" else run_cluster)(
                sys.argv[2], tmp)
        except AssertionError as e:
            print("FAILED:", e, flush=True)
            for log in glob.glob(os.path.join(tmp, "*.log")):
                print("---", os.path.basename(log))
                print(open(log, errors="replace").read()[-3000:])
            return 1
    print("PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
