"""Synapse 1.6.1's own replication client on one sidecar, rows written on another, through a real Redis.

Usage: synapse_through_redis.py PATH_TO_REPLICATION_SIDECAR

Starts redis-server (free port, append-only file fsynced on every write) and two sidecars A and B following
it (serve --redis). A writer publishes on A; Synapse's ClientReplicationStreamProtocol on B gets every row
in order, batches whole, parsed by Synapse's own STREAMS_MAP; INVALIDATE_CACHE and REMOVE_PUSHER sent by
Synapse's client on B become rows under the next tokens in Redis; B killed with SIGKILL and restarted on
its data directory serves a new client the rows written meanwhile, once each.
Prints one line per check and a closing 'N passed, M failed' line; exits non-zero on any failure.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory

from synapse.replication.tcp.commands import InvalidateCacheCommand, RemovePusherCommand
from synapse.replication.tcp.protocol import ClientReplicationStreamProtocol
from synapse.util import Clock

from synapse_client_against_sidecar import (
    SERVER_NAME, Handler, Writer, cache, check, ev, parsed, start_sidecar, summary, wait_for)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_cli(port, *arguments):
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *arguments], capture_output=True, text=True,
        check=True).stdout.strip()


def entries_read(ports, stream):
    """What B's /metrics says it read from Redis for `stream`."""
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % ports["metrics"]).read().decode()
    match = re.search(r'replication_sidecar_redis_streams_entries_read_total\{stream_name="%s"\} (\d+)' % stream, metrics)
    return int(match.group(1)) if match else -1


def connect_client(ports, streams):
    handler = Handler()
    handler.get_streams_to_replicate = lambda: streams
    factory = ClientFactory()
    factory.protocol = lambda: ClientReplicationStreamProtocol(
        "synapse.app.generic_worker", SERVER_NAME, Clock(reactor), handler)
    reactor.connectTCP("127.0.0.1", ports["replication"], factory)
    check("Synapse's client on B finishes connecting", wait_for(lambda: handler.finished), str(handler.positions))
    return handler


def main(executable):
    directory = tempfile.mkdtemp(prefix="synapse-through-redis-")
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--dir", directory, "--logfile", os.path.join(directory, "redis.log")])
    processes = []
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if redis_cli(redis_port, "PING") == "PONG":
                    break
            except subprocess.CalledProcessError:
                time.sleep(0.05)
        shared = ("--writer", "pub", "--server-name", SERVER_NAME, "--redis", "redis://127.0.0.1:%d" % redis_port)
        a, a_ports = start_sidecar(executable, shared)
        processes.append(a)
        b_arguments = shared + ("--data-dir", os.path.join(directory, "sidecar-b"), "--sync", "normal")
        b, b_ports = start_sidecar(executable, b_arguments)
        processes.append(b)
        run(redis_port, a_ports, lambda: start_sidecar(executable, b_arguments), b, b_ports, processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        redis.kill()
        redis.wait()
        shutil.rmtree(directory, ignore_errors=True)
    return summary()


def run(redis_port, a_ports, restart_b, b, b_ports, processes):
    writer = Writer(a_ports["replication"])
    writer.publish("events", 1, [ev(1)])
    writer.publish("events", 2, [ev(2), ev(3), ev(4)])
    writer.publish("caches", 1, [cache(1)])
    check("B has read what A wrote", wait_for(lambda: entries_read(b_ports, "events") == 2 and entries_read(b_ports, "caches") == 1))

    handler = connect_client(b_ports, {"events": 1, "caches": "NOW", "pushers": "NOW"})
    check("POSITION for every stream", handler.positions == {"events": 2, "caches": 1, "pushers": 0}, str(handler.positions))
    catch_up = [entry for entry in handler.rows if entry[0] == "events"]
    expected = [("events", 2, parsed("events", [ev(n)])) for n in (2, 3, 4)]
    check("catch-up on B parses as Synapse's own rows", catch_up == expected, repr(catch_up))

    writer.publish("events", 3, [ev(5), ev(6), ev(7)])
    writer.publish("caches", 2, [cache(2)])
    wait_for(lambda: any(entry[0] == "caches" for entry in handler.rows))
    live = handler.rows[len(catch_up):]
    check(
        "a batch written on A arrives on B as one batch with its token",
        live == [("events", 3, parsed("events", [ev(5), ev(6), ev(7)])), ("caches", 2, parsed("caches", [cache(2)]))],
        repr(live))

    handler.connection.send_command(RemovePusherCommand("m.http", "pushkey1", "@alice:test.local"))
    handler.connection.send_command(InvalidateCacheCommand("get_user_by_id", ["@alice:test.local"]))
    got_back = lambda: any(e[0] == "pushers" for e in handler.rows) and len([e for e in handler.rows if e[0] == "caches"]) >= 2
    check("REMOVE_PUSHER and INVALIDATE_CACHE on B come back as rows", wait_for(got_back), repr(handler.rows[-3:]))
    caches = [e for e in handler.rows if e[0] == "caches"][-1]
    check("the caches row takes the next token in Redis", caches[1] == 3, repr(caches))
    pushers = [e for e in handler.rows if e[0] == "pushers"]
    check("the pushers row takes token 1", pushers and pushers[0][1] == 1, repr(pushers))
    key = "replication-sidecar:{%s}:" % SERVER_NAME
    check("Redis holds both under those IDs",
          redis_cli(redis_port, "XREVRANGE", key + "caches", "+", "-", "COUNT", "1").splitlines()[:1] == ["3-0"]
          and redis_cli(redis_port, "XREVRANGE", key + "pushers", "+", "-", "COUNT", "1").splitlines()[:1] == ["1-0"])

    # B dies without a goodbye; A goes on writing; B restarted on its log serves a new client what it missed.
    b.send_signal(signal.SIGKILL)
    b.wait()
    handler.connection.transport.abortConnection()
    writer.publish("events", 4, [ev(8)])
    writer.publish("events", 5, [ev(9), ev(10)])
    b, b_ports = restart_b()
    processes.append(b)
    check("B restarted has read the rest", wait_for(lambda: entries_read(b_ports, "events") >= 2))
    resumed = connect_client(b_ports, {"events": 3, "caches": "NOW", "pushers": "NOW"})
    wait_for(lambda: len([e for e in resumed.rows if e[0] == "events"]) >= 3, seconds=5)
    events = [entry for entry in resumed.rows if entry[0] == "events"]
    expected = [("events", 4, parsed("events", [ev(8)]))] + [("events", 5, parsed("events", [ev(n)])) for n in (9, 10)]
    check("after kill -9 and restart: every row once, in order", events == expected, repr(events))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
