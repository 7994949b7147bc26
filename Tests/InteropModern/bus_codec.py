"""Synapse 1.163's own command codec (parse_command_from_line / to_line), the reference for the bus codec.

  bus_codec.py emit       prints, as a JSON list, the message of every bus command built with Synapse's classes
  bus_codec.py roundtrip  reads a JSON list of messages on stdin; prints, as a JSON list, for each one what
                          Synapse makes of it: its own re-encoding, or null when it refuses to parse it
"""

import json
import sys

from synapse.replication.tcp.commands import (
    CancelTaskCommand,
    ClearUserSyncsCommand,
    FederationAckCommand,
    LockReleasedCommand,
    NewActiveTaskCommand,
    PositionCommand,
    RdataCommand,
    RemoteServerUpCommand,
    ReplicateCommand,
    UserIpCommand,
    UserSyncCommand,
    parse_command_from_line,
)


def message(command):
    return command.NAME + " " + command.to_line()


def emit():
    commands = [
        RdataCommand("events", "master", 12, ["ev", ["$e", "!r:h", "m.room.message", None, None, None, None, 0, 0]]),
        RdataCommand("events", "event_persister1", None, ["state", ["!r:h", "m.room.name", "", "$n"]]),
        RdataCommand("typing", "worker1", 3, ["!r:h", ["@a:h", "@b:h"]]),
        RdataCommand("caches", "master", 5, ["get_user", ["@ü:h"], 1700000000000]),
        PositionCommand("events", "master", 20, 20),
        PositionCommand("typing", "worker1", 3, 9),
        ReplicateCommand(),
        UserSyncCommand("worker1", "@a:h", "DEVICE", True, 1700000000000),
        UserSyncCommand("worker1", "@a:h", None, False, 1700000000001),
        ClearUserSyncsCommand("worker1"),
        FederationAckCommand("federation_sender1", 77),
        UserIpCommand("@a:h", "syt_token", "127.0.0.1", "Mozilla/5.0 \"x\" é", "DEVICE", 1700000000000),
        UserIpCommand("@a:h", "syt_token", "::1", "curl", None, 1),
        RemoteServerUpCommand("other.example"),
        LockReleasedCommand("master", "new_event_during_purge_lock", "!room:h"),
        LockReleasedCommand("worker1", "lock \"quoted\"", "ключ 🔑"),
        NewActiveTaskCommand("task-1"),
        CancelTaskCommand("task-2"),
    ]
    print(json.dumps([message(command) for command in commands]))


def roundtrip():
    answers = []
    for line in json.load(sys.stdin):
        try:
            answers.append(message(parse_command_from_line(line)))
        except Exception:
            answers.append(None)
    print(json.dumps(answers))


{"emit": emit, "roundtrip": roundtrip}[sys.argv[1]]()
