"""Renders the key dashboard panels to PNG from a live Prometheus, for the README.

Usage (with `replication-sidecar demo` running and a Prometheus scraping it):
    python3 docs/render-panels.py http://127.0.0.1:9090 SECONDS   # needs matplotlib
"""
import json
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("buffers.png", "Send buffers per connection (bytes)", [
        ("synapse_replication_tcp_protocol_transport_send_buffer", "user space: {name}"),
        ("synapse_replication_tcp_protocol_transport_kernel_send_buffer", "kernel: {name}"),
    ]),
    ("lag.png", "Lag per connection (tokens behind the head)", [
        ("max by (name) (replication_sidecar_connection_lag_tokens)", "{name}"),
    ]),
    ("rates.png", "Outbound commands per second", [
        ("sum by (command) (rate(replication_sidecar_outbound_commands_total[5s]))", "{command}"),
    ]),
    ("connections.png", "Open connections per worker", [
        ('sum by (name) (synapse_replication_tcp_protocol_outbound_commands{command="SERVER"})', "{name}"),
    ]),
]


def query_range(base, expression, start, end):
    parameters = urllib.parse.urlencode({"query": expression, "start": start, "end": end, "step": "1s"})
    with urllib.request.urlopen("%s/api/v1/query_range?%s" % (base, parameters)) as response:
        return json.load(response)["data"]["result"]


def main(base, seconds):
    end = time.time()
    start = end - seconds
    for file, title, queries in PANELS:
        figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
        for expression, legend in queries:
            for series in query_range(base, expression, start, end):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                label = legend.format(**{k: series["metric"].get(k, "") for k in ("name", "stream_name", "command")})
                axes.plot(times, values, label=label.replace("synapse.app.", ""))
        axes.set_title(title)
        axes.set_xlabel("seconds")
        axes.legend(fontsize="x-small", loc="upper left")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig("docs/" + file)
        print("wrote docs/" + file)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
