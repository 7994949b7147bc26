"""Synapse 1.6.1's replication server (its real ServerReplicationStreamProtocol and ReplicationStreamer
over the in-memory store of fake_synapse.py), driven as fast as it can go, for `replication-bench fanout`.

Usage: synapse_fanout_server.py ROWS

Builds ROWS events up front, listens on a free port on 127.0.0.1 and prints 'PORT <n>'. On 'GO' from
stdin it publishes the events through the streamer's notifier loop, CHUNK at a time, each event with its
own token (rows are exactly what `replication-bench` sends to our server). A new chunk is published only
once no connection is paused by a full transport: pushing faster makes Synapse drop subscribers with
'Failed to keep up'. Exits when stdin closes.
"""
import sys
import threading

from twisted.internet import reactor

from synapse.replication.tcp.protocol import ConnectionStates

from fake_synapse import Store, listen

# Far below the 10,000 rows one notifier poke may carry in Synapse 1.6.
CHUNK = 500


def event(token):
    """The benchmark's event row; `replication-bench` writes the same JSON for our server."""
    return (token, "$%020d-bench-event:bench.example.org" % token, "!%012d-room:bench.example.org" % (token % 97),
            "m.room.message", None, None, None)


def main(rows):
    store = Store()
    store.events = [event(token) for token in range(1, rows + 1)]
    store.visible = 0
    streamer, protocols, port = listen(store)

    def publish_next():
        if store.visible >= rows:
            return
        if any(protocol.state == ConnectionStates.PAUSED for protocol in protocols):
            reactor.callLater(0.0005, publish_next)  # let the transports drain first
            return
        store.visible = min(rows, store.visible + CHUNK)
        streamer.on_notifier_poke()
        reactor.callLater(0, publish_next)

    def read_commands():
        print("PORT %d" % port, flush=True)
        for line in sys.stdin:
            if line.strip() == "GO":
                reactor.callFromThread(publish_next)
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=read_commands, daemon=True).start()
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(int(sys.argv[1]))
