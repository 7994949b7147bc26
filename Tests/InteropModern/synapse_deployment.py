"""A real deployment of today's Synapse replicating over Redis, watched by `replication-sidecar observe` and
`tail --redis`.

Starts PostgreSQL (as the `postgres` user when run as root: it refuses to run as root), Redis, a Synapse
main process and one generic_worker that writes the `typing` stream, all on 127.0.0.1 and free ports, in a
temporary directory. Over the client-server API it registers users, creates a room, sends messages and
typing notifications, then checks what the observer exports against what Synapse stored; then restarts
Redis under everything and checks that the observer reconnects and counts the rows it missed as a gap.

    synapse_deployment.py <replication-sidecar executable>

Prints one line per check and ends with "N passed, M failed"; exits 1 if any failed.
"""

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SIDECAR = sys.argv[1]
SERVER_NAME = "bus.test"
WORKER = "typing_worker1"
results = {"passed": 0, "failed": 0}


def check(name, condition, detail=""):
    results["passed" if condition else "failed"] += 1
    print(("ok   " if condition else "FAIL ") + name + ("" if condition else f": {detail}"), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, seconds=60):
    """Polls `condition` until it returns something truthy; never sleeps "long enough"."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {seconds} s")


def unblocked_signals():
    # The test runner's thread may block SIGTERM and others; children would inherit that mask.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Processes:
    def __init__(self):
        self.running = []

    def start(self, arguments, log_path, **kwargs):
        log = open(log_path, "ab")
        process = subprocess.Popen(
            arguments, stdout=kwargs.pop("stdout", log), stderr=log, preexec_fn=unblocked_signals, **kwargs
        )
        self.running.append(process)
        return process

    def stop(self, process):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self):
        for process in reversed(self.running):
            self.stop(process)


def as_postgres(arguments):
    """PostgreSQL's programs refuse to run as root: run them as `postgres` then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + arguments
    return arguments


def start_postgres(directory):
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    data = os.path.join(directory, "pgdata")
    os.makedirs(data)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        os.chown(data, owner.pw_uid, owner.pw_gid)
    port = free_port()
    subprocess.run(
        as_postgres([f"{binaries}/initdb", "-D", data, "-U", "synapse", "-E", "UTF8", "--locale=C", "-A", "trust"]),
        check=True, stdout=subprocess.DEVNULL, preexec_fn=unblocked_signals,
    )
    subprocess.run(
        as_postgres([
            f"{binaries}/pg_ctl", "-D", data, "-w", "-l", os.path.join(directory, "postgres.log"), "-o",
            f"-h 127.0.0.1 -p {port} -k {directory} -c fsync=off -c full_page_writes=off", "start",
        ]),
        check=True, stdout=subprocess.DEVNULL, preexec_fn=unblocked_signals,
    )
    stop = as_postgres([f"{binaries}/pg_ctl", "-D", data, "-m", "immediate", "stop"])
    subprocess.run(
        [f"{binaries}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "synapse", "synapse"], check=True,
    )
    return port, stop


def start_redis(processes, directory, port):
    process = processes.start(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        os.path.join(directory, "redis.log"),
    )
    wait_for("redis", lambda: subprocess.run(
        ["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True).stdout.strip() == "PONG", 10)
    return process


def http(method, url, body=None, token=None):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def healthy(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def write_config(directory, postgres_port, redis_port, ports):
    config = {
        "server_name": SERVER_NAME,
        "pid_file": os.path.join(directory, "main.pid"),
        "listeners": [
            {"port": ports["main_client"], "bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": False,
             "resources": [{"names": ["client"], "compress": False}]},
            {"port": ports["main_replication"], "bind_addresses": ["127.0.0.1"], "type": "http",
             "resources": [{"names": ["replication"]}]},
        ],
        "database": {"name": "psycopg2", "args": {
            "user": "synapse", "database": "synapse", "host": "127.0.0.1", "port": postgres_port,
            "cp_min": 1, "cp_max": 5}},
        "redis": {"enabled": True, "host": "127.0.0.1", "port": redis_port},
        "instance_map": {
            "main": {"host": "127.0.0.1", "port": ports["main_replication"]},
            WORKER: {"host": "127.0.0.1", "port": ports["worker_replication"]},
        },
        "stream_writers": {"typing": [WORKER]},
        "log_config": os.path.join(directory, "log.yaml"),
        "media_store_path": os.path.join(directory, "media"),
        "signing_key_path": os.path.join(directory, "signing.key"),
        "report_stats": False,
        "trusted_key_servers": [],
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": "not-used",
        "macaroon_secret_key": "test-macaroon-secret",
        "form_secret": "test-form-secret",
        "rc_message": {"per_second": 1000, "burst_count": 1000},
        "rc_registration": {"per_second": 1000, "burst_count": 1000},
        "rc_login": {"address": {"per_second": 1000, "burst_count": 1000},
                     "account": {"per_second": 1000, "burst_count": 1000}},
        "presence": {"enabled": False},
    }
    worker = {
        "worker_app": "synapse.app.generic_worker",
        "worker_name": WORKER,
        "worker_listeners": [
            {"port": ports["worker_client"], "bind_addresses": ["127.0.0.1"], "type": "http",
             "resources": [{"names": ["client"]}]},
            {"port": ports["worker_replication"], "bind_addresses": ["127.0.0.1"], "type": "http",
             "resources": [{"names": ["replication"]}]},
        ],
        "worker_log_config": os.path.join(directory, "log.yaml"),
    }
    log = {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                              "filename": os.path.join(directory, "synapse.log")}},
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
    # JSON is YAML: no YAML writer needed.
    for name, content in [("homeserver.yaml", config), ("worker.yaml", worker), ("log.yaml", log)]:
        with open(os.path.join(directory, name), "w") as file:
            json.dump(content, file)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        samples = {}
        for line in response.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples


def position(samples, stream, instance):
    return samples.get(f'replication_sidecar_bus_stream_position{{instance="{instance}",stream_name="{stream}"}}')


def main():
    directory = tempfile.mkdtemp(prefix="synapse-bus-")
    processes = Processes()
    stop_postgres = None
    python = sys.executable
    try:
        postgres_port, stop_postgres = start_postgres(directory)
        redis_port = free_port()
        redis = start_redis(processes, directory, redis_port)
        ports = {name: free_port() for name in ["main_client", "main_replication", "worker_client", "worker_replication"]}
        write_config(directory, postgres_port, redis_port, ports)
        homeserver = os.path.join(directory, "homeserver.yaml")
        subprocess.run([python, "-m", "synapse.app.homeserver", "-c", homeserver, "--generate-keys"], check=True,
                       stdout=subprocess.DEVNULL, cwd=directory)

        observe_log = os.path.join(directory, "observe.log")
        observer = processes.start(
            [SIDECAR, "observe", "--redis", f"redis://127.0.0.1:{redis_port}", "--server-name", SERVER_NAME,
             "--metrics-port", "0", "--probe-interval", "2"], observe_log)
        tail_out = open(os.path.join(directory, "tail.jsonl"), "wb")
        processes.start([SIDECAR, "tail", "--redis", f"redis://127.0.0.1:{redis_port}", "--server-name", SERVER_NAME,
                         "--streams", "events"], os.path.join(directory, "tail.log"), stdout=tail_out)
        metrics_port = wait_for("observer metrics port", lambda: next(
            (int(line.split(" port=")[1].split()[0]) for line in open(observe_log) if "metrics endpoint ready" in line),
            None), 30)

        processes.start([python, "-m", "synapse.app.homeserver", "-c", homeserver],
                        os.path.join(directory, "main.out"), cwd=directory)
        wait_for("Synapse main process", lambda: healthy(ports["main_client"]), 120)
        processes.start([python, "-m", "synapse.app.generic_worker", "-c", homeserver, "-c",
                         os.path.join(directory, "worker.yaml")], os.path.join(directory, "worker.out"), cwd=directory)
        wait_for("Synapse worker", lambda: healthy(ports["worker_client"]), 120)

        main_api = f"http://127.0.0.1:{ports['main_client']}/_matrix/client/v3"
        worker_api = f"http://127.0.0.1:{ports['worker_client']}/_matrix/client/v3"
        users = {}
        for name in ["alice", "bob"]:
            status, answer = http("POST", f"{main_api}/register",
                                  {"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}})
            check(f"{name} registers", status == 200, answer)
            users[name] = answer
        alice = users["alice"]["access_token"]
        status, answer = http("POST", f"{main_api}/createRoom", {"preset": "public_chat", "name": "bus"}, alice)
        check("alice creates a room", status == 200, answer)
        room = answer["room_id"]
        status, answer = http("POST", f"{main_api}/join/{room}", {}, users["bob"]["access_token"])
        check("bob joins", status == 200, answer)
        sent = []
        for index in range(3):
            status, answer = http("PUT", f"{main_api}/rooms/{room}/send/m.room.message/txn{index}",
                                  {"msgtype": "m.text", "body": f"message {index}"}, alice)
            sent.append(answer.get("event_id"))
        check("three messages sent", all(sent), sent)
        for user in ["alice", "bob"]:
            status, answer = http("PUT", f"{worker_api}/rooms/{room}/typing/{users[user]['user_id']}",
                                  {"typing": True, "timeout": 30000}, users[user]["access_token"])
            check(f"{user} types (on the worker, the typing writer)", status == 200, answer)

        import psycopg2  # psycopg2-binary, installed beside Synapse

        def last_stream_ordering():
            with psycopg2.connect(host="127.0.0.1", port=postgres_port, user="synapse", dbname="synapse") as db:
                with db.cursor() as cursor:
                    cursor.execute("SELECT MAX(stream_ordering) FROM events")
                    return cursor.fetchone()[0]

        stored = last_stream_ordering()
        try:
            samples = wait_for("observer sees the last event", lambda: (
                lambda s: s if position(s, "events", "master") == stored else None)(metrics(metrics_port)), 30)
        except TimeoutError:
            samples = metrics(metrics_port)
        check("events position of master equals Synapse's last stream ordering",
              position(samples, "events", "master") == stored, (position(samples, "events", "master"), stored))
        rows = samples.get(f'replication_sidecar_bus_rows_total{{instance="master",stream_name="events"}}', 0)
        check("events rows counted under master", rows >= 4, rows)
        try:
            samples = wait_for("typing rows of the worker", lambda: (
                lambda s: s if s.get(f'replication_sidecar_bus_rows_total{{instance="{WORKER}",stream_name="typing"}}', 0) >= 2
                else None)(metrics(metrics_port)), 30)
        except TimeoutError:
            samples = metrics(metrics_port)
        typing_rows = samples.get(f'replication_sidecar_bus_rows_total{{instance="{WORKER}",stream_name="typing"}}', 0)
        check("typing rows counted under the worker", typing_rows >= 2, typing_rows)
        check("no typing rows from master", f'replication_sidecar_bus_rows_total{{instance="master",stream_name="typing"}}'
              not in samples, [k for k in samples if "typing" in k])
        check("both instances last seen", all(
            f'replication_sidecar_bus_instance_last_seen_timestamp_seconds{{instance="{i}"}}' in samples
            for i in ["master", WORKER]), [k for k in samples if "last_seen" in k])
        check("nothing malformed", all(v == 0 for k, v in samples.items() if "malformed_messages_total" in k),
              {k: v for k, v in samples.items() if "malformed" in k and v})
        check("no gap while connected", samples.get(
            'replication_sidecar_bus_gaps_total{instance="master",stream_name="events"}') == 0, samples)

        def tailed_events():
            with open(os.path.join(directory, "tail.jsonl")) as file:
                return [json.loads(line) for line in file if line.strip()]

        try:
            wait_for("tail prints the messages", lambda: all(
                any(row["row"][1][0] == event for row in tailed_events() if row["row"][0] == "ev") for event in sent), 30)
        except TimeoutError:
            pass
        rows = tailed_events()
        check("tail --redis prints the events rows of the messages sent, under master",
              all(any(row["row"][0] == "ev" and row["row"][1][0] == event and row["instance"] == "master"
                      for row in rows) for event in sent), rows[-5:])
        check("tail --redis prints only events rows", rows and all(row["stream"] == "events" for row in rows), rows[:3])

        # Redis goes away and comes back. Synapse holds its sends until it has reconnected (at most 5 s later),
        # while the observer backs off longer after its fourth failed attempt (about 20 s): messages sent in
        # between are published while the observer is away. The REPLICATE it sends on its return makes
        # Synapse announce where it is: the rows it missed are a gap.
        redis.kill()
        redis.wait()
        wait_for("observer backs off", lambda: metrics(metrics_port).get(
            'replication_sidecar_redis_failed_connection_attempts_total{role="subscriber"}', 0) >= 4, 60)
        redis = start_redis(processes, directory, redis_port)
        for index in range(3, 5):
            status, answer = http("PUT", f"{main_api}/rooms/{room}/send/m.room.message/txn{index}",
                                  {"msgtype": "m.text", "body": f"message {index}"}, alice)
            check(f"message {index} sent after Redis is back", status == 200, answer)
        check("the observer was still away when they were sent", metrics(metrics_port).get(
            'replication_sidecar_redis_connected{role="subscriber"}') == 0)
        stored = last_stream_ordering()
        try:
            samples = wait_for("observer back and caught up", lambda: (
                lambda s: s if position(s, "events", "master") == stored else None)(metrics(metrics_port)), 60)
        except TimeoutError:
            samples = metrics(metrics_port)
        check("observer reconnected", samples.get('replication_sidecar_redis_connected{role="subscriber"}') == 1
              and samples.get('replication_sidecar_redis_disconnections_total{role="subscriber"}') == 1, samples)
        check("position after the restart equals Synapse's last stream ordering",
              position(samples, "events", "master") == stored, (position(samples, "events", "master"), stored))
        gaps = samples.get('replication_sidecar_bus_gaps_total{instance="master",stream_name="events"}')
        check("the rows published while the observer was away count as a gap", gaps is not None and gaps >= 1, gaps)
        # A message published while nobody is subscribed is gone (pub/sub), so the test waits for tail's
        # second subscription before it sends: its back-off may run longer than the observer's.
        try:
            wait_for("tail subscribed again", lambda: sum(
                "subscribed to" in line for line in open(os.path.join(directory, "tail.log"), errors="replace")) >= 2,
                60)
        except TimeoutError:
            pass
        status, answer = http("PUT", f"{main_api}/rooms/{room}/send/m.room.message/txn9",
                              {"msgtype": "m.text", "body": "after"}, alice)
        try:
            wait_for("tail carries on", lambda: any(
                row["row"][0] == "ev" and row["row"][1][0] == answer["event_id"] for row in tailed_events()), 30)
        except TimeoutError:
            pass
        check("tail --redis carries on after the restart", any(
            row["row"][0] == "ev" and row["row"][1][0] == answer.get("event_id") for row in tailed_events()),
            open(os.path.join(directory, "tail.log"), errors="replace").readlines()[-3:])
        check("observer still running", observer.poll() is None)
    except Exception as error:
        check("deployment ran", False, repr(error))
        for log in ["synapse.log", "observe.log", "main.out", "worker.out", "postgres.log"]:
            path = os.path.join(directory, log)
            if os.path.exists(path):
                print(f"--- {log} (last lines)")
                print("".join(open(path, errors="replace").readlines()[-15:]))
    finally:
        processes.stop_all()
        if stop_postgres:
            subprocess.run(stop_postgres, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


main()
