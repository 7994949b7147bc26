"""Synapse 1.6.1's own replication client against replication-sidecar.

Usage: synapse_client_against_sidecar.py PATH_TO_REPLICATION_SIDECAR

Starts the sidecar on 127.0.0.1 (free ports, in-memory log, writer "pub"), publishes rows through the
writer protocol, connects Synapse's ClientReplicationStreamProtocol with a small handler, and checks that
the rows Synapse parses (with its own STREAMS_MAP[...].parse_row) equal what was published, catch-up and
live batches included; then sends USER_SYNC, FEDERATION_ACK, REMOVE_PUSHER, INVALIDATE_CACHE and USER_IP
from Synapse's client and checks their effects (rows that come back, counters in /metrics).
Prints one line per check and a closing 'N passed, M failed' line; exits non-zero on any failure.
"""
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory

from synapse.replication.tcp.commands import (
    FederationAckCommand, InvalidateCacheCommand, RemovePusherCommand, UserIpCommand, UserSyncCommand)
from synapse.replication.tcp.protocol import AbstractReplicationClientHandler, ClientReplicationStreamProtocol
from synapse.replication.tcp.streams import STREAMS_MAP
from synapse.util import Clock

SERVER_NAME = "test.local"
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + detail), flush=True)


def start_sidecar(executable, arguments=("--writer", "pub", "--server-name", SERVER_NAME), log=("--in-memory",),
                  runner=()):
    """Starts `serve` on free ports (by default with an in-memory log), through `runner` if given (e.g.
    `ip netns exec NAME`); returns the process and its two ports."""
    process = subprocess.Popen(
        [*runner, executable, "serve", "--port", "0", "--metrics-port", "0", *log, *arguments],
        stderr=subprocess.PIPE, text=True)
    ports = {}
    deadline = time.time() + 30
    while len(ports) < 2 and time.time() < deadline:
        line = process.stderr.readline()
        if "metrics endpoint ready" in line:
            ports["metrics"] = int(re.search(r" port=(\d+)", line).group(1))
        if "replication listener ready" in line:
            ports["replication"] = int(re.search(r" port=(\d+)", line).group(1))
    # Keep reading its log so that it never blocks on a full pipe.
    threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()
    return process, ports


class Writer:
    """Our writer protocol over a plain socket: RDATA lines, waiting for each POSITION."""

    def __init__(self, port):
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.file = self.socket.makefile("r")
        self.file.readline(), self.file.readline()  # SERVER, PING
        self.socket.sendall(b"NAME pub\n")

    def publish(self, stream, token, rows):
        lines = ["RDATA %s batch %s\n" % (stream, json.dumps(row)) for row in rows[:-1]]
        lines.append("RDATA %s %d %s\n" % (stream, token, json.dumps(rows[-1])))
        self.socket.sendall("".join(lines).encode())
        ack = self.file.readline().strip()
        assert ack == "POSITION %s %d" % (stream, token), ack


def ev(n):
    return ["ev", ["$%d:test.local" % n, "!room%d:test.local" % n, "m.room.message", None, None, None]]


def cache(n):
    return ["get_user_by_id", ["@user%d:test.local" % n], 1795835844470 + n]


class Handler(AbstractReplicationClientHandler):
    def __init__(self):
        self.rows = []  # (stream, token, [parsed rows]) in the order Synapse handed them over
        self.positions = {}
        self.connection = None
        self.finished = False

    def on_rdata(self, stream_name, token, rows):
        self.rows.append((stream_name, token, list(rows)))

    def on_position(self, stream_name, token):
        self.positions[stream_name] = token

    def on_sync(self, data):
        pass

    def get_streams_to_replicate(self):
        return {"events": 1, "caches": "NOW", "pushers": "NOW"}

    def get_currently_syncing_users(self):
        return ["@bob:test.local"]

    def update_connection(self, connection):
        self.connection = connection

    def finished_connecting(self):
        self.finished = True


def send_client_commands(connection, federation_ack):
    """The five commands a worker sends the master, through Synapse's own protocol, about @alice."""
    connection.send_command(UserSyncCommand("@alice:test.local", True, 1))
    connection.send_command(FederationAckCommand(federation_ack))
    connection.send_command(RemovePusherCommand("m.http", "pushkey1", "@alice:test.local"))
    connection.send_command(InvalidateCacheCommand("get_user_by_id", ["@alice:test.local"]))
    connection.send_command(UserIpCommand("@alice:test.local", "syt_token", "127.0.0.1", "agent/1.0", "DEVICE", 5))


def wait_for(condition, seconds=10):
    """Runs the reactor until condition() holds or the deadline passes."""
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        reactor.iterate(0.01)
    return condition()


def parsed(stream, rows):
    return [STREAMS_MAP[stream].parse_row(row) for row in rows]


def main(executable):
    process, ports = start_sidecar(executable)
    return run_checks(lambda: run(ports), process)


def run_checks(checks, process):
    """Runs the checks, stops the sidecar, prints the summary; the exit status says whether all passed."""
    try:
        checks()
    finally:
        process.terminate()
        process.wait(10)
    return summary()


def summary():
    """Prints the closing line; the exit status says whether every check passed."""
    failed = results.count(False)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed or not results else 0


def run(ports):
    writer = Writer(ports["replication"])
    # History: token 1 and 2 on events (token 2 a batch of three), token 1 on caches.
    writer.publish("events", 1, [ev(1)])
    writer.publish("events", 2, [ev(2), ev(3), ev(4)])
    writer.publish("caches", 1, [cache(1)])

    handler = Handler()
    factory = ClientFactory()
    factory.protocol = lambda: ClientReplicationStreamProtocol("synapse.app.generic_worker", SERVER_NAME, Clock(reactor), handler)
    reactor.connectTCP("127.0.0.1", ports["replication"], factory)
    check("Synapse's client finishes connecting", wait_for(lambda: handler.finished), str(handler.positions))
    check("POSITION for every stream", handler.positions == {"events": 2, "caches": 1, "pushers": 0}, str(handler.positions))
    # Catch-up from token 1: the three rows of token 2, each with its own token, handed over one by one.
    catch_up = [entry for entry in handler.rows if entry[0] == "events"]
    expected = [("events", 2, parsed("events", [ev(n)])) for n in (2, 3, 4)]
    check("catch-up rows parse as Synapse's own rows", catch_up == expected, repr(catch_up))

    # Live: a batch of three on events and one row on caches.
    writer.publish("events", 3, [ev(5), ev(6), ev(7)])
    writer.publish("caches", 2, [cache(2)])
    wait_for(lambda: any(entry[0] == "caches" for entry in handler.rows))
    live = handler.rows[len(catch_up):]
    check(
        "a live batch arrives as one batch with its token",
        live == [("events", 3, parsed("events", [ev(5), ev(6), ev(7)])), ("caches", 2, parsed("caches", [cache(2)]))],
        repr(live))

    # Client commands, sent by Synapse's own protocol.
    connection = handler.connection
    send_client_commands(connection, federation_ack=17)
    got_back = lambda: any(e[0] == "pushers" for e in handler.rows) and len([e for e in handler.rows if e[0] == "caches"]) >= 2
    check("REMOVE_PUSHER and INVALIDATE_CACHE come back as rows", wait_for(got_back), repr(handler.rows[-3:]))
    pushers = [e for e in handler.rows if e[0] == "pushers"]
    check(
        "the pushers row parses as Synapse's",
        pushers and pushers[0][2] == parsed("pushers", [["@alice:test.local", "m.http", "pushkey1", True]]),
        repr(pushers))
    caches = [e for e in handler.rows if e[0] == "caches"][-1]
    check("the caches row names the function and keys", caches[2][0].cache_func == "get_user_by_id"
          and list(caches[2][0].keys) == ["@alice:test.local"], repr(caches))

    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % ports["metrics"]).read().decode()
    for name in ("user_sync", "federation_ack", "remove_pusher", "invalidate_cache", "user_ip_cache"):
        count = 2 if name == "user_sync" else 1  # the client announced @bob on connect, then @alice
        line = "synapse_replication_tcp_resource_%s_total %d" % (name, count)
        check("/metrics counts " + name, line in metrics.splitlines(), line)
    check(
        "/metrics shows the worker's connection by name",
        'synapse_replication_tcp_protocol_inbound_commands{command="REPLICATE",name="synapse.app.generic_worker"} 3'
        in metrics.splitlines())
    check("the connection is still up", connection.state == "established", connection.state)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
