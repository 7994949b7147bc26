"""The same malformed and edge-case lines sent to Synapse 1.6.1's ServerReplicationStreamProtocol and to
replication-sidecar: the ERROR each sends must be identical wherever the project keeps compatibility.

Usage: same_input_same_answer.py PATH_TO_REPLICATION_SIDECAR

Synapse's side runs its real protocol code on Twisted with a minimal streamer that knows the sixteen
streams and has no rows (errors come from the protocol itself). Prints a table, one line per case, and
a closing 'N passed, M failed' line; exits non-zero on any difference that is not a documented decision.
"""
import re
import socket
import subprocess
import sys
import threading
import time

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory

from synapse.replication.tcp.protocol import ServerReplicationStreamProtocol
from synapse.replication.tcp.streams import STREAMS_MAP
from synapse.util import Clock

SERVER_NAME = "test.local"

# (case, lines sent after "NAME probe", whether our answer must equal Synapse's)
CASES = [
    ("unknown command", ["FOO bar"], True),
    ("server-only command from a client", ["POSITION events 1"], True),
    ("RDATA from a non-writer", ["RDATA events 1 []"], True),
    ("SERVER from a client", ["SERVER x"], True),
    ("token not an integer", ["REPLICATE events abc"], True),
    ("missing token", ["REPLICATE events"], True),
    ("unknown stream", ["REPLICATE nosuch 0"], True),
    ("bad JSON keys", ['INVALIDATE_CACHE get_user_by_id ["@a:test.local"'], True),
    ("USER_SYNC state 'stop'", ["USER_SYNC @u:test.local stop 1"], True),
    ("FEDERATION_ACK not a number", ["FEDERATION_ACK x"], True),
    ("USER_IP with too few fields", ['USER_IP @u:test.local ["a"]'], True),
    ("REMOVE_PUSHER with two fields", ["REMOVE_PUSHER a b"], True),
    ("line of 16385 bytes", ["PING " + "x" * 16380], True),
    ("line of 16384 bytes is fine", ["PING " + "x" * 16379, "FOO bar"], True),
    ("lowercase command", ["name x"], True),
    # Deliberate differences (README, "Protocol notes"): Synapse 1.6 dropped these connections without
    # an ERROR (an exception in lineReceived); we accept them or answer with an ERROR.
    ("blank line, then an unknown command", ["", "FOO"], False),
    ("one-word line, then an unknown command", ["PING", "FOO"], False),
]


class Streamer:
    """What ServerReplicationStreamProtocol asks of Synapse's ReplicationStreamer, with no rows."""

    streams_by_name = {name: None for name in STREAMS_MAP}

    def new_connection(self, connection): pass
    def lost_connection(self, connection): pass
    def on_user_sync(self, *args): pass
    def federation_ack(self, token): pass
    def on_remove_pusher(self, *args): pass
    def on_invalidate_cache(self, *args): pass
    def on_user_ip(self, *args): pass

    def get_stream_updates(self, stream_name, token):
        if stream_name not in self.streams_by_name:
            raise Exception("unknown stream %s", stream_name)
        return defer.succeed(([], 0))


def start_synapse():
    factory = Factory()
    factory.protocol = lambda: ServerReplicationStreamProtocol(SERVER_NAME, Clock(reactor), Streamer())
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    threading.Thread(target=lambda: reactor.run(installSignalHandlers=False), daemon=True).start()
    return port.getHost().port


def start_sidecar(executable):
    process = subprocess.Popen(
        [executable, "serve", "--port", "0", "--metrics-port", "0", "--in-memory", "--server-name", SERVER_NAME],
        stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stderr.readline()
        if "replication listener ready" in line:
            return process, int(re.search(r" port=(\d+)", line).group(1))
    raise RuntimeError("the sidecar did not start")


def answer(port, lines):
    """The ERROR line the server sends for `lines` (or what else happened), reading until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        stream = connection.makefile("rb")
        stream.readline(), stream.readline()  # SERVER, PING
        connection.sendall(("NAME probe\n" + "".join(line + "\n" for line in lines)).encode())
        try:
            while True:
                line = stream.readline()
                if not line:
                    return "(connection closed without an ERROR)"
                if line.startswith(b"ERROR "):
                    return line.decode().rstrip("\n")
        except (socket.timeout, ConnectionResetError) as error:
            return "(%s)" % type(error).__name__


def main(executable):
    synapse_port = start_synapse()
    process, our_port = start_sidecar(executable)
    passed = failed = 0
    try:
        for name, lines, compatible in CASES:
            theirs = answer(synapse_port, lines)
            ours = answer(our_port, lines)
            same = theirs == ours
            ok = same if compatible else ours.startswith("ERROR invalid command: FOO")
            passed, failed = passed + ok, failed + (not ok)
            verdict = "same" if same else ("decision" if not compatible else "DIFFERENT")
            print("%-4s %-40s %-9s synapse: %s" % ("PASS" if ok else "FAIL", name, verdict, theirs[:110]))
            if not same:
                print("     %-40s %-9s ours:    %s" % ("", "", ours[:110]))
    finally:
        process.terminate()
        process.wait(10)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
