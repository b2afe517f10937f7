#!/usr/bin/env python3
"""Runs the services of deploy/compose.yaml in one podman pod, on loopback
only: a small stand-in for `podman-compose up`, used by
deploy/container-check.sh on a machine where containers may not reach any
network (and no registry is reachable).

What is taken from compose.yaml as written: every service, its image
(replaced by --image), user, capabilities, security options, read-only root
and tmpfs, entrypoint, command, environment and volumes
(named volumes become podman volumes of the project; `./compose` binds the
directory beside compose.yaml), the depends_on conditions
(service_completed_successfully, service_healthy, service_started), and the
nodes' healthcheck command. Services start as soon as what they depend on
is satisfied, concurrently, as compose starts them.

What differs, because the pod's containers share one network namespace
whose only interface is loopback (compose gives each service its own
address on a bridge network, which would not be loopback):
  - each node gets its own ports: the n-th node (0, 1, 2 in file order)
    listens on 7443 + 10n for gRPC and 9464 + 10n for metrics; the init and
    setup steps of an office get them as PORT and METRICS_LISTEN (which
    deploy/compose/office-*.sh read), and the node's healthcheck asks its
    own metrics address;
  - every service name resolves to 127.0.0.1 through an /etc/hosts bound
    into each container (podman 4.3 ignores --add-host for a pod without a
    network);
  - published ports are not published (nothing needs them here);
  - healthchecks are run by this script (`podman healthcheck run`), since
    podman's own timer needs systemd.

With --rounds 2 it then stops and removes every container, keeping the
volumes (`compose down` without -v), and brings everything up again: the
init and setup steps must succeed again, and change nothing.

Exit status 0 when every one-shot service exited 0 and every node became
healthy in every round; 1 otherwise. Every wait is bounded.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import yaml

BASE_GRPC = 7443
BASE_METRICS = 9464


def run(cmd, timeout=120, check=False):
    """Runs a command, returning (exit code, stdout + stderr)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout}s: {shlex.join(cmd)}"
    out = (p.stdout + p.stderr).strip()
    if check and p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {shlex.join(cmd)}\n{out}")
    return p.returncode, out


class Pod:
    def __init__(self, args):
        self.podman = shlex.split(args.podman)
        self.image = args.image
        self.compose_dir = os.path.dirname(os.path.abspath(args.compose))
        with open(args.compose) as f:
            self.compose = yaml.safe_load(f)
        self.project = args.project
        self.pod = f"{self.project}_pod"
        self.wait = args.wait
        self.health = args.health
        self.services = self.compose["services"]
        self.nodes = [n for n, s in self.services.items() if s.get("restart", "no") != "no"]
        self.ports = {
            n: (BASE_GRPC + 10 * i, f"127.0.0.1:{BASE_METRICS + 10 * i}")
            for i, n in enumerate(self.nodes)
        }
        self.hosts = os.path.join(args.workdir, "hosts")
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost " + " ".join(self.nodes) + "\n::1 localhost\n")

    def p(self, *args, timeout=120, check=False):
        return run(self.podman + list(args), timeout=timeout, check=check)

    def name(self, service):
        return f"{self.project}_{service}"

    def create_pod(self):
        self.p("pod", "rm", "-f", self.pod)
        code, out = self.p("pod", "create", "--name", self.pod, "--network", "none")
        if code != 0:
            raise SystemExit(f"podman pod create --network none failed:\n{out}")
        for v in self.compose.get("volumes", {}) or {}:
            vol = f"{self.project}_{v}"
            if self.p("volume", "exists", vol)[0] != 0:
                self.p("volume", "create", vol, check=True)

    def office_of(self, service):
        env = self.services[service].get("environment", {}) or {}
        return env.get("OFFICE", service if service in self.nodes else None)

    def run_args(self, service):
        s = self.services[service]
        args = ["run", "-d", "--pull", "never", "--name", self.name(service), "--pod", self.pod,
                "-v", f"{self.hosts}:/etc/hosts:ro"]
        if "user" in s:
            args += ["--user", str(s["user"])]
        for cap in s.get("cap_drop", []) or []:
            args += ["--cap-drop", cap]
        for cap in s.get("cap_add", []) or []:
            args += ["--cap-add", cap]
        for opt in s.get("security_opt", []) or []:
            args += ["--security-opt", opt]
        if s.get("read_only"):
            args += ["--read-only"]
        for path in s.get("tmpfs", []) or []:
            args += ["--tmpfs", path]
        env = dict(s.get("environment", {}) or {})
        office = self.office_of(service)
        if office in self.ports and service not in self.nodes:
            env["PORT"] = str(self.ports[office][0])
            if not self.health:
                env["METRICS_LISTEN"] = ""
            else:
                env["METRICS_LISTEN"] = self.ports[office][1]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        for vol in s.get("volumes", []) or []:
            src, rest = vol.split(":", 1)
            if src.startswith("."):
                src = os.path.normpath(os.path.join(self.compose_dir, src))
            else:
                src = f"{self.project}_{src}"
            args += ["-v", f"{src}:{rest}"]
        if service in self.nodes:
            test = list(s.get("healthcheck", {}).get("test", []))
            if test and self.health:
                # ["CMD", ..., "--addr", "127.0.0.1:9464"]: this node's address.
                if "--addr" in test:
                    test[test.index("--addr") + 1] = self.ports[service][1]
                args += ["--health-cmd", json.dumps(test[1:]), "--health-interval", "disable"]
            else:
                args += ["--no-healthcheck"]
        if "entrypoint" in s:
            args += ["--entrypoint", json.dumps(s["entrypoint"])]
        args.append(self.image)
        args += [str(c) for c in s.get("command", []) or []]
        return args

    def state(self, service):
        code, out = self.p("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                           self.name(service))
        if code != 0:
            return "missing", None
        status, exit_code = out.split()
        return status, int(exit_code)

    def healthy(self, service):
        if not self.health:
            # No healthcheck command in this binary: ready once the node
            # answers its own admin over gRPC.
            code, _ = self.p("exec", self.name(service), "/usr/local/bin/casemesh", "status",
                             "--data", "/var/lib/casemesh", timeout=30)
            return code == 0
        code, _ = self.p("healthcheck", "run", self.name(service), timeout=30)
        return code == 0

    def up(self, label):
        """Starts every service as its dependencies allow; returns the
        failures (empty when all went well)."""
        print(f"== {label}: up", flush=True)
        pending = list(self.services)
        started, done, healthy, failures = set(), set(), set(), []
        deadline = time.monotonic() + self.wait

        def satisfied(dep, cond):
            if cond == "service_completed_successfully":
                return dep in done
            if cond == "service_healthy":
                return dep in healthy
            return dep in started

        while time.monotonic() < deadline:
            for service in list(pending):
                deps = self.services[service].get("depends_on", {}) or {}
                if isinstance(deps, list):
                    deps = {d: {"condition": "service_started"} for d in deps}
                if all(satisfied(d, c.get("condition", "service_started")) for d, c in deps.items()):
                    self.p("rm", "-f", self.name(service))
                    args = self.run_args(service)
                    print("   $ podman " + shlex.join(args), flush=True)
                    code, out = self.p(*args)
                    if code != 0:
                        failures.append(f"{service}: podman run failed: {out}")
                        print(f"   {service}: podman run failed:\n{out}", flush=True)
                        return failures
                    print(f"   {service}: started", flush=True)
                    pending.remove(service)
                    started.add(service)
            for service in started - done - healthy:
                status, exit_code = self.state(service)
                if service in self.nodes:
                    if status != "running":
                        _, logs = self.p("logs", "--tail", "30", self.name(service))
                        failures.append(f"{service}: the node is {status} (exit {exit_code}):\n{logs}")
                        print(f"   {service}: {status} (exit {exit_code})\n{logs}", flush=True)
                        return failures
                    if self.healthy(service):
                        print(f"   {service}: healthy", flush=True)
                        healthy.add(service)
                elif status == "exited":
                    _, logs = self.p("logs", self.name(service))
                    print(f"   {service}: exited {exit_code}", flush=True)
                    print("      " + logs.replace("\n", "\n      "), flush=True)
                    if exit_code != 0:
                        failures.append(f"{service}: exited {exit_code}:\n{logs}")
                        return failures
                    done.add(service)
            if not pending and all(
                s in (healthy if s in self.nodes else done) for s in self.services
            ):
                print(f"== {label}: every one-shot service exited 0 and every node is healthy",
                      flush=True)
                return failures
            time.sleep(1)
        waiting = [s for s in self.services if s not in done and s not in healthy]
        failures.append(f"gave up after {self.wait}s waiting for: {', '.join(waiting)}")
        for service in waiting:
            if service in started:
                _, logs = self.p("logs", "--tail", "30", self.name(service))
                print(f"   {service} (not finished):\n      " + logs.replace("\n", "\n      "))
        return failures

    def down(self, volumes=False):
        for service in self.services:
            self.p("stop", "-t", "30", self.name(service), timeout=60)
            self.p("rm", "-f", self.name(service))
        if volumes:
            self.p("pod", "rm", "-f", self.pod)
            for v in self.compose.get("volumes", {}) or {}:
                self.p("volume", "rm", "-f", f"{self.project}_{v}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--podman", default="podman", help="the podman command, with global options")
    ap.add_argument("--image", required=True)
    ap.add_argument("--compose", required=True)
    ap.add_argument("--project", default="casemesh-check")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wait", type=int, default=240, help="seconds each round may take")
    ap.add_argument("--no-health", dest="health", action="store_false",
                    help="the binary has no healthcheck command: leave metrics off and use status")
    args = ap.parse_args()
    pod = Pod(args)
    print("nodes and their ports in the pod: " + ", ".join(
        f"{n} {g}/{m}" for n, (g, m) in pod.ports.items()), flush=True)
    pod.create_pod()
    failures = []
    try:
        for r in range(1, args.rounds + 1):
            if r > 1:
                print(f"== round {r}: down (containers removed, volumes kept), then up again",
                      flush=True)
                pod.down()
            failures = pod.up(f"round {r}")
            if failures:
                break
    finally:
        pod.down(volumes=True)
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
