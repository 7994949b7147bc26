"""Synapse 1.6.1's own client on host B, rows written on host A, Redis on a third host.

Usage: synapse_across_hosts.py PATH_TO_REPLICATION_SIDECAR

Needs root: the hosts are network namespaces made for the run (`ip netns`, names unique to the run, all
deleted at the end whatever happens). Host R runs redis-server (append-only file fsynced on every write);
hosts A and B each run a sidecar following it, each over a veth link of its own to R (10.251.1.0/24 and
10.251.2.0/24; every namespace has its own routing table, so the addresses collide with nothing outside).
This script writes on A from inside A and runs Synapse's ClientReplicationStreamProtocol inside B:
- every row written on A reaches Synapse's client on B, in order;
- B's link is taken down (`ip link set eth0 down`) while A keeps writing, until B's metrics say its
  follower lost Redis and at least 10 s have passed; once the link is up again, B's client gets every row
  written meanwhile, with no gap and no duplicate;
- B killed with SIGKILL while A writes, restarted on its data directory: a new client on B resuming from
  the last token it processed gets every row once.
Prints one line per check and a closing 'N passed, M failed' line; exits non-zero on any failure.
"""
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from twisted.internet import reactor

from synapse_client_against_sidecar import SERVER_NAME, Writer, check, ev, parsed, start_sidecar, summary, wait_for
from synapse_through_redis import connect_client

CLONE_NEWNET = 0x40000000
# Redis listens on more than loopback here: without a password it would refuse every client (protected mode).
PASSWORD = uuid.uuid4().hex
libc = ctypes.CDLL(None, use_errno=True)


class Hosts:
    """Three network namespaces: R (Redis) linked to A and to B, each by a veth pair of its own."""

    def __init__(self):
        tag = "rs-" + uuid.uuid4().hex[:8]
        self.redis, self.a, self.b = tag + "-r", tag + "-a", tag + "-b"
        self.made = []
        for name in (self.redis, self.a, self.b):
            ip("netns", "add", name)
            self.made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        for host, subnet in ((self.a, 1), (self.b, 2)):
            near = "to-" + host[-1]
            ip("-n", self.redis, "link", "add", near, "type", "veth", "peer", "name", "eth0", "netns", host)
            ip("-n", self.redis, "addr", "add", "10.251.%d.1/24" % subnet, "dev", near)
            ip("-n", host, "addr", "add", "10.251.%d.2/24" % subnet, "dev", "eth0")
            ip("-n", self.redis, "link", "set", near, "up")
            ip("-n", host, "link", "set", "eth0", "up")

    @staticmethod
    def run(host):
        """The prefix that runs a command on `host`."""
        return ("ip", "netns", "exec", host)

    @staticmethod
    def enter(host):
        """Moves this process (its one thread) onto `host`: sockets opened from now on are that host's."""
        with open("/run/netns/" + host) as namespace:
            if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns " + host)

    def delete(self):
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ip(*arguments):
    subprocess.run(["ip", *arguments], check=True, capture_output=True)


def metric(ports, sample):
    """One sample of the sidecar's /metrics on the host this process is on, or None."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % ports["metrics"], timeout=10).read().decode()
    match = re.search(r"^replication_sidecar_redis_streams_%s (\S+)$" % re.escape(sample), text, re.M)
    return float(match.group(1)) if match else None


def rows_of(token):
    """Token t holds 1 to 3 rows: batches of several rows cross the hosts too."""
    return [ev(token * 10 + index) for index in range(1 + token % 3)]


def expected(tokens):
    return [(token, row) for token in tokens for row in parsed("events", rows_of(token))]


def received(handler):
    """Every events row Synapse's client handed over, one (token, row) each: catch-up hands a batch's rows
    over one by one, live delivery all at once."""
    return [(token, row) for stream, token, rows in handler.rows if stream == "events" for row in rows]


def main(executable):
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    directory = tempfile.mkdtemp(prefix="synapse-across-hosts-")
    hosts = None
    processes = []
    try:
        hosts = Hosts()
        redis = subprocess.Popen(
            [*Hosts.run(hosts.redis), "redis-server", "--port", "6379", "--bind", "10.251.1.1", "10.251.2.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", directory,
             "--logfile", os.path.join(directory, "redis.log"), "--requirepass", PASSWORD])
        processes.append(redis)
        ping = [*Hosts.run(hosts.redis), "redis-cli", "-h", "10.251.1.1", "-a", PASSWORD, "--no-auth-warning", "PING"]
        deadline = time.time() + 30
        while subprocess.run(ping, capture_output=True, text=True).stdout.strip() != "PONG":
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start on host R")
            time.sleep(0.05)
        shared = ("--writer", "pub", "--server-name", SERVER_NAME)
        a, a_ports = start_sidecar(
            executable, shared + ("--redis", "redis://:%s@10.251.1.1:6379" % PASSWORD), runner=Hosts.run(hosts.a))
        processes.append(a)
        b_log = ("--data-dir", os.path.join(directory, "sidecar-b"), "--sync", "normal")
        start_b = lambda: start_sidecar(
            executable, shared + ("--redis", "redis://:%s@10.251.2.1:6379" % PASSWORD), log=b_log, runner=Hosts.run(hosts.b))
        b, b_ports = start_b()
        processes.append(b)
        check("both sidecars started on their hosts", "replication" in a_ports and "replication" in b_ports,
              "%s %s" % (a_ports, b_ports))
        Hosts.enter(hosts.a)
        writer = Writer(a_ports["replication"])
        writer.socket.settimeout(60)
        Hosts.enter(hosts.b)
        run(hosts, writer, b, b_ports, start_b, processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        libc.setns(home, CLONE_NEWNET)
        if hosts:
            hosts.delete()
        shutil.rmtree(directory, ignore_errors=True)
    return summary()


def run(hosts, writer, b, b_ports, start_b, processes):
    handler = connect_client(b_ports, {"events": 0})
    token = 0

    def write(count):
        nonlocal token
        for _ in range(count):
            token += 1
            writer.publish("events", token, rows_of(token))

    write(20)
    check("rows written on A reach Synapse's client on B, in order",
          wait_for(lambda: received(handler) == expected(range(1, 21)), seconds=30), repr(received(handler)[-3:]))

    # B's link to Redis goes down; A keeps writing (and acknowledging) until B's follower has noticed and the
    # link has been down at least 10 s.
    cut = time.time()
    ip("-n", hosts.b, "link", "set", "eth0", "down")
    written_before_cut = token
    while not (metric(b_ports, 'connected{role="follower"}') == 0 and time.time() - cut >= 10):
        write(1)
        reactor.iterate(0.05)
        if time.time() - cut > 60:
            break
    check("B's metrics show its follower cut off from Redis", metric(b_ports, 'connected{role="follower"}') == 0)
    write(5)
    down_for = time.time() - cut
    ip("-n", hosts.b, "link", "set", "eth0", "up")
    check("A acknowledged %d batches while B was cut off for %.0f s" % (token - written_before_cut, down_for),
          token - written_before_cut >= 5 and down_for >= 10)
    check("once the link is back, B's client has every row once, in order",
          wait_for(lambda: len(received(handler)) >= len(expected(range(1, token + 1))), seconds=120)
          and received(handler) == expected(range(1, token + 1)),
          "got %d rows, last %r" % (len(received(handler)), received(handler)[-1:]))
    check("B's follower reconnected", (metric(b_ports, 'reconnects_total{role="follower"}') or 0) >= 1)

    # B dies without a goodbye while A goes on writing; restarted, it resumes from its log, then Redis.
    last_processed = received(handler)[-1][0]
    b.send_signal(signal.SIGKILL)
    b.wait()
    handler.connection.transport.abortConnection()
    write(30)
    b, b_ports = start_b()
    processes.append(b)
    resumed = connect_client(b_ports, {"events": last_processed})
    write(5)
    check("after kill -9 and restart, a client on B resuming at %d gets every row once, in order" % last_processed,
          wait_for(lambda: len(received(resumed)) >= len(expected(range(last_processed + 1, token + 1))), seconds=60)
          and received(resumed) == expected(range(last_processed + 1, token + 1)),
          "got %d rows, first %r, last %r" % (len(received(resumed)), received(resumed)[:1], received(resumed)[-1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
