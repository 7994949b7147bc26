"""Synapse 1.6.1's line codec on a file of lines, for `replication-bench codec`.

Usage: synapse_codec_speed.py LINES_FILE ROUNDS

Decodes every line as Synapse's protocol does (split off the command name, then the command class's
from_line, which parses the row's JSON), then encodes the commands back as send_command does. Prints
'SECONDS <decode> <encode>', the best round of each.
"""
import sys
import time

from synapse.replication.tcp.commands import COMMAND_MAP


def main(path, rounds):
    with open(path, "rb") as source:
        lines = source.read().split(b"\n")[:-1]
    decode = encode = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        commands = []
        for line in lines:
            name, rest = line.decode("utf-8").split(" ", 1)
            commands.append(COMMAND_MAP[name].from_line(rest))
        decode = min(decode, time.perf_counter() - started)
        started = time.perf_counter()
        for command in commands:
            ("%s %s" % (command.NAME, command.to_line())).encode("utf-8")
        encode = min(encode, time.perf_counter() - started)
    print("SECONDS %f %f" % (decode, encode), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
