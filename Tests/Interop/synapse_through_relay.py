"""Synapse 1.6.1 on both sides of a relay: its real server (over fake_synapse's store) as the upstream of
`replication-sidecar serve --upstream`, and its real client as a worker behind the relay.

Usage: synapse_through_relay.py PATH_TO_REPLICATION_SIDECAR

The relay starts after Synapse has history, so its log begins at Synapse's current token; the worker
asks for everything from token 0 and must get Synapse's rows intact (fetched upstream by the relay),
then live rows and batches, and its commands must reach Synapse's server. Prints one line per check
and a closing 'N passed, M failed' line; exits non-zero on any failure.
"""
import re
import sys
import urllib.request

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory

from synapse.replication.tcp import resource
from synapse.replication.tcp.protocol import ClientReplicationStreamProtocol
from synapse.util import Clock

from fake_synapse import SERVER_NAME, Store, listen
from synapse_client_against_sidecar import (
    Handler, check, parsed, run_checks, send_client_commands, start_sidecar, wait_for)


def event(token, n):
    return (token, "$%d:test.local" % n, "!room%d:test.local" % n, "m.room.message", None, None, None)


def ev(n):
    return ["ev", ["$%d:test.local" % n, "!room%d:test.local" % n, "m.room.message", None, None, None]]


class Worker(Handler):
    def get_streams_to_replicate(self):
        return {"events": 0, "caches": "NOW"}

    def get_currently_syncing_users(self):
        return []


def metric(port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    match = re.search(r"^%s (\S+)$" % re.escape(name), text, re.MULTILINE)
    return float(match.group(1)) if match else None


def main(executable):
    store = Store()
    store.events = [event(1, 1), event(2, 2), event(2, 3)]
    streamer, protocols, upstream_port = listen(store)
    relay, ports = start_sidecar(
        executable, ("--upstream", "127.0.0.1:%d" % upstream_port, "--upstream-server-name", SERVER_NAME,
                     "--server-name", "relay.local"))
    return run_checks(lambda: run(store, streamer, protocols, ports), relay)


def run(store, streamer, protocols, ports):
    connected = lambda: metric(ports["metrics"], "replication_sidecar_upstream_connected") == 1
    check("the relay connects to Synapse's server", wait_for(connected, 20))
    check("the relay's log starts at Synapse's token",
          wait_for(lambda: metric(ports["metrics"], 'replication_sidecar_stream_head_token{stream_name="events"}') == 2))

    worker = Worker()
    factory = ClientFactory()
    factory.protocol = lambda: ClientReplicationStreamProtocol("synapse.app.generic_worker", "relay.local", Clock(reactor), worker)
    reactor.connectTCP("127.0.0.1", ports["replication"], factory)
    check("Synapse's client finishes connecting to the relay", wait_for(lambda: worker.finished, 20), str(worker.positions))
    history = [entry for entry in worker.rows if entry[0] == "events"]
    expected = [("events", 1, parsed("events", [ev(1)])), ("events", 2, parsed("events", [ev(2)])),
                ("events", 2, parsed("events", [ev(3)]))]
    check("rows older than the relay's log arrive intact, fetched from Synapse", history == expected, repr(history))
    check("POSITION at Synapse's token", worker.positions.get("events") == 2, str(worker.positions))

    store.events += [event(3, 4), event(3, 5), event(3, 6)]
    store.caches += [(1, "get_user_by_id", ["@a:test.local"], 1000)]
    streamer.on_notifier_poke()
    wait_for(lambda: any(entry[0] == "caches" for entry in worker.rows))
    live = worker.rows[len(history):]
    check("live rows pass the relay as one batch with Synapse's token",
          live == [("events", 3, parsed("events", [ev(4), ev(5), ev(6)])),
                   ("caches", 1, parsed("caches", [["get_user_by_id", ["@a:test.local"], 1000]]))], repr(live))

    counters = (resource.user_sync_counter, resource.federation_ack_counter, resource.remove_pusher_counter,
                resource.invalidate_cache_counter, resource.user_ip_cache_counter)
    connection = worker.connection
    send_client_commands(connection, federation_ack=3)
    handled = lambda: all(counter._value.get() >= 1 for counter in counters)
    check("the worker's five commands reach Synapse's server through the relay", wait_for(handled),
          repr([counter._value.get() for counter in counters]))
    # The relay's first connection asked for 'federation', which this master does not offer (it sends
    # federation itself); the relay found that out and left it out of the next connection.
    live_upstream = [p for p in protocols if p.name == "replication-sidecar-relay" and p.state == "established"]
    check("they arrive on the relay's one live upstream connection, by name",
          len(live_upstream) == 1 and live_upstream[0].inbound_commands_counter.get("USER_IP") == 1,
          repr([(p.name, p.state, dict(p.inbound_commands_counter)) for p in protocols]))
    check("that connection asked for every stream but federation",
          live_upstream and live_upstream[0].replication_streams == set(resource.STREAMS_MAP) - {"federation"},
          repr(live_upstream and live_upstream[0].replication_streams))
    check("the worker's connection is still up", connection.state == "established", connection.state)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
