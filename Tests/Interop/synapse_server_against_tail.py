"""Synapse 1.6.1's server (its real ServerReplicationStreamProtocol and ReplicationStreamer, fed by a
small in-memory store) against our client, `replication-sidecar tail`.

Usage: synapse_server_against_tail.py PATH_TO_REPLICATION_SIDECAR

History rows are caught up, live rows are pushed through the streamer's own notifier loop (which sends
rows that share a token as 'batch'), and tail must print exactly the rows Synapse sent, batches included,
while Synapse's server accepts every command tail sends. Prints one line per check and a closing
'N passed, M failed' line; exits non-zero on any failure.
"""
import json
import os
import select
import subprocess
import sys
import threading
import time

from twisted.internet import reactor

from fake_synapse import SERVER_NAME, Store, listen

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + detail), flush=True)


def event(token, n):
    return (token, "$%d:test.local" % n, "!room%d:test.local" % n, "m.room.message", None, None, None)


def on_reactor(function):
    """Runs `function` on the reactor thread and waits for it."""
    done = threading.Event()
    box = []
    reactor.callFromThread(lambda: (box.append(function()), done.set()))
    done.wait(10)
    return box[0] if box else None


def main(executable):
    store = Store()
    store.events = [event(1, 1), event(2, 2), event(2, 3)]
    store.caches = [(1, "get_user_by_id", ["@a:test.local"], 1000)]
    streamer, protocols, port = listen(store)
    threading.Thread(target=lambda: reactor.run(installSignalHandlers=False), daemon=True).start()

    tail = subprocess.Popen(
        [executable, "tail", "--connect", "127.0.0.1:%d" % port, "--server-name", SERVER_NAME,
         "--streams", "events,caches", "--from", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    pending = [b""]

    def read_until(count, seconds=15):
        # Raw reads: a buffered reader would hide lines from select().
        deadline = time.time() + seconds
        while len(lines) < count and time.time() < deadline:
            ready, _, _ = select.select([tail.stdout], [], [], 0.2)
            if ready:
                pending[0] += os.read(tail.stdout.fileno(), 65536)
                *complete, pending[0] = pending[0].split(b"\n")
                lines.extend(json.loads(line) for line in complete if line)
        return len(lines) >= count

    try:
        check("tail prints the caught-up history", read_until(4), repr(lines))
        expected = [
            {"stream": "events", "token": 1, "row": ["ev", ["$1:test.local", "!room1:test.local", "m.room.message", None, None, None]]},
            {"stream": "events", "token": 2, "row": ["ev", ["$2:test.local", "!room2:test.local", "m.room.message", None, None, None]]},
            {"stream": "events", "token": 2, "row": ["ev", ["$3:test.local", "!room3:test.local", "m.room.message", None, None, None]]},
            {"stream": "caches", "token": 1, "row": ["get_user_by_id", ["@a:test.local"], 1000]},
        ]
        check("the history rows are exactly Synapse's", sorted(lines, key=json.dumps) == sorted(expected, key=json.dumps), repr(lines))

        # Live rows, pushed by the streamer's own notifier loop: three events share token 3 (a batch).
        def add_live():
            store.events += [event(3, 4), event(3, 5), event(3, 6)]
            store.caches += [(2, "get_user_by_id", ["@b:test.local"], 2000)]
            streamer.on_notifier_poke()
        on_reactor(add_live)
        check("tail prints the live rows", read_until(8), repr(lines))
        live = [line for line in lines[4:] if line["stream"] == "events"]
        check(
            "the live batch arrives whole, with its token on every row",
            [(line["token"], line["row"][1][0]) for line in live]
            == [(3, "$4:test.local"), (3, "$5:test.local"), (3, "$6:test.local")],
            repr(live))
        check(
            "the live caches row",
            {"stream": "caches", "token": 2, "row": ["get_user_by_id", ["@b:test.local"], 2000]} in lines[4:], repr(lines[4:]))

        protocol = protocols[-1]
        accepted = on_reactor(lambda: dict(protocol.inbound_commands_counter))
        check("Synapse's server accepted tail's commands", accepted.get("NAME") == 1 and accepted.get("REPLICATE") == 2
              and accepted.get("PING", 0) >= 1, repr(accepted))
        check("Synapse's server keeps the connection", on_reactor(lambda: protocol.state) == "established",
              on_reactor(lambda: protocol.state))
        check("tail is still running", tail.poll() is None, tail.stderr.read() if tail.poll() is not None else "")
    finally:
        tail.terminate()
        tail.wait(10)
        reactor.callFromThread(reactor.stop)
    failed = results.count(False)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
