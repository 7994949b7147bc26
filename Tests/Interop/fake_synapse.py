"""What Synapse 1.6.1's replication server needs around it, without a database: a store holding the
events and caches streams in memory, and a homeserver object with just the parts the server touches.

Shared by the interop test (synapse_server_against_tail.py) and the fan-out benchmark
(synapse_fanout_server.py).
"""
from types import SimpleNamespace

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory

from synapse.replication.tcp.protocol import ServerReplicationStreamProtocol
from synapse.replication.tcp.resource import ReplicationStreamer
from synapse.util import Clock

SERVER_NAME = "test.local"


class Store:
    """The store methods the streams call: events and caches have rows, every other stream is empty.

    Rows are kept in token order; `visible` is how many of the events the streams may see (all of them
    unless a caller publishes them step by step).
    """

    def __init__(self):
        self.events = []  # (stream_id, event_id, room_id, type, state_key, redacts, relates_to)
        self.caches = []  # (stream_id, cache_func, keys, invalidation_ts)
        self.visible = None

    def _visible_events(self):
        return self.events if self.visible is None else self.events[: self.visible]

    def get_current_events_token(self):
        events = self._visible_events()
        return events[-1][0] if events else 0

    def get_cache_stream_token(self):
        return self.caches[-1][0] if self.caches else 0

    def get_all_new_forward_event_rows(self, last_id, current_id, limit):
        events = self._visible_events()
        # Tokens only grow: find the first row past last_id by bisection, then read forward.
        low, high = 0, len(events)
        while low < high:
            middle = (low + high) // 2
            if events[middle][0] <= last_id:
                low = middle + 1
            else:
                high = middle
        rows = []
        for row in events[low:]:
            if row[0] > current_id or (limit is not None and len(rows) >= limit):
                break
            rows.append(row)
        return defer.succeed(rows)

    def get_all_updated_caches(self, last_id, current_id, limit):
        return defer.succeed([row for row in self.caches if last_id < row[0] <= current_id][:limit])

    def get_all_updated_current_state_deltas(self, from_token, to_token, limit):
        return defer.succeed([])

    def get_push_rules_stream_token(self):
        return 0, 0

    def get_all_updated_account_data(self, *args):
        return defer.succeed(([], []))

    def __getattr__(self, name):
        if name.startswith("get_all"):
            return lambda *args, **kwargs: defer.succeed([])
        return _Anything()  # a stream's current token (0), a cache to invalidate, a write to ignore


class _Anything:
    """Called, it answers 0; as a cache, it can be invalidated."""

    def __call__(self, *args, **kwargs):
        return 0

    def invalidate(self, keys):
        pass


def homeserver(store, server_name=SERVER_NAME):
    empty = SimpleNamespace(
        get_current_token=lambda: 0, get_all_typing_updates=lambda *a: defer.succeed([]),
        get_all_presence_updates=lambda *a: defer.succeed([]), update_external_syncs_clear=lambda *a: None,
        update_external_syncs_row=lambda *a: defer.succeed(None))
    notices = SimpleNamespace(on_user_ip=lambda user_id: defer.succeed(None))
    return SimpleNamespace(
        config=SimpleNamespace(replication_torture_level=None, send_federation=True, server_name=server_name),
        get_datastore=lambda: store, get_presence_handler=lambda: empty, get_typing_handler=lambda: empty,
        get_clock=lambda: Clock(reactor), get_notifier=lambda: SimpleNamespace(add_replication_callback=lambda cb: None),
        get_server_notices_sender=lambda: notices, get_reactor=lambda: reactor)


def listen(store):
    """Synapse's streamer over `store`, served on a free port of 127.0.0.1 (once the reactor runs).

    Returns the streamer, the list that every accepted connection's protocol is added to, and the port.
    """
    streamer = ReplicationStreamer(homeserver(store))
    protocols = []

    def build(address):
        protocol = ServerReplicationStreamProtocol(SERVER_NAME, Clock(reactor), streamer)
        protocols.append(protocol)
        return protocol

    factory = Factory()
    factory.buildProtocol = build
    port = reactor.listenTCP(0, factory, interface="127.0.0.1").getHost().port
    return streamer, protocols, port
