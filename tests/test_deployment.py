"""The real deployment path, with real processes on 127.0.0.1 (docs/deployment.md, as tested).

A coordinator (Flower SuperLink with TLS, SuperNode authentication and a database; the ServerApp
launched by `flwr run`) and three hospitals (Flower SuperNodes with the consortium CA, their own
key and a --node-config pointing at their data and their lifetime privacy cap) run a one-round
federation to completion. A second run against the same SuperNode state folders is refused by
every site at the handshake (their caps are spent), and `fedsynth ledger show` prints both runs.
A SuperNode with an unregistered key and one without the CA are refused. The SuperLink is
restarted on the same database and still knows the runs.

Every process started here (and the ones Flower starts detached, such as the SuperLink's SuperExec)
is stopped in ``finally``; the test fails if any survives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project's .venv/bin: fedsynth, flwr, flower-*
SITES = ("north", "south", "east")
CONNECTION = "fedsynth-test"  # the SuperLink connection written to $FLWR_HOME/config.toml
# Folders of a working tree that never belong in an app copy (and are large).
SKIP_DIRS = {".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "build", ".flwr"}
CODE_DIRS = ("client", "common", "server", "simulation", "fedsynth")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stage_app(dst: Path) -> Path:
    """Copy the working tree (minus .venv, .git, caches, runs) and add files that must never ship."""
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        rel = Path(root).relative_to(REPO)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            src = Path(root) / name
            if not src.is_symlink() and src.stat().st_size < 2_000_000:  # code is small; skip weights
                shutil.copy2(src, dst / rel / name)
    decoys = {
        ".venv/pyvenv.cfg": "home = /usr/bin\n",
        ".venv/lib/python3.11/site-packages/leak.py": "SECRET = 1\n",
        "runs/demo/report.json": "{}\n",
        "data/site-north.csv": "age,sex\n34,M\n",
        "data/site-north.parquet": "PAR1",
        "data/schema.yaml": "name: leak\n",
        "state/north/ledger.json": '{"spent": 1.0}\n',
        "certs/ca.key": "-----BEGIN PRIVATE KEY-----\n",
        "certs/sites/north": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "certs/sites/north.pub": "ecdsa-sha2-nistp384 AAAA\n",
    }
    for rel_path, text in decoys.items():
        (dst / rel_path).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel_path).write_text(text)
    return dst


def _check_code_only(paths: list[str]) -> None:
    """The FAB (or an installed app) holds fedsynth's code and Flower's metadata, nothing else."""
    assert "server/server_app.py" in paths and "client/client_app.py" in paths, paths
    assert "common/schema.py" in paths and "fedsynth/__init__.py" in paths, paths
    for path in paths:
        assert path in ("pyproject.toml", ".info/CONTENT") or (
            path.split("/")[0] in CODE_DIRS and path.endswith(".py")), f"the FAB ships {path}"


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # inside Flower's build
def test_fab_ships_code_only(tmp_path: Path) -> None:
    """What `flwr run` builds from a working tree with a venv, runs, data, a ledger and keys in it."""
    from flwr.cli.build import build_fab_from_disk

    app = _stage_app(tmp_path / "app")
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist()
    _check_code_only(names)
    assert {p for p in names if p.startswith("server/")} >= {"server/__init__.py", "server/handshake.py"}
    # pyproject.toml keeps no [tool.flwr.federations]: Flower 1.41 would rewrite the file on `flwr run`.
    assert "federations" not in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]


def test_run_config_keys_are_declared() -> None:
    """`flwr run --run-config k=v` fails for a key missing from [tool.flwr.app.config]."""
    from server.settings import settings_from_run_config

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    read: set[str] = set()

    class Recorder(dict):
        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

    settings_from_run_config(Recorder({**declared, "schema-path": "schema.yaml"}))
    assert {"schema-path", "min-sites", "handshake-timeout-s"} <= read
    assert read <= set(declared), f"read by the ServerApp but not declared: {sorted(read - set(declared))}"


class Processes:
    """Long-running processes of one test: logs, readiness, and a cleanup that misses nothing."""

    def __init__(self, workdir: Path, env: dict[str, str], ports: list[int]) -> None:
        self.workdir, self.env = workdir, env
        self.addresses = {f"127.0.0.1:{port}" for port in ports}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.seen: dict[int, float] = {}  # pid -> create_time of every descendant ever observed

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([str(a) for a in args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.workdir, env=env or self.env,
                                    start_new_session=True)  # its own process group
        self.procs[name], self.logs[name] = proc, log_path
        self.track()
        return proc

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def track(self) -> None:
        """Remember every descendant now alive: Flower starts some detached (new session)."""
        for proc in self.procs.values():
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child.create_time())
            except psutil.NoSuchProcess:
                pass

    def wait_for(self, name: str, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(name):
                self.track()
                return
            if self.procs[name].poll() is not None:
                raise AssertionError(f"{name} exited ({self.procs[name].returncode}) before '{text}'")
            time.sleep(0.2)
        raise AssertionError(f"{name}: no '{text}' within {timeout:.0f} s")

    def wait_exit(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running after {timeout:.0f} s") from None

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it; descendants are remembered for cleanup()."""
        self.track()
        proc = self.procs[name]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        try:  # the group may outlive its leader
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _ours(self) -> list[psutil.Process]:
        """Processes still alive that this test started: seen descendants, or marked by our tmp/ports."""
        alive: dict[int, psutil.Process] = {}
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive[pid] = p
            except psutil.NoSuchProcess:
                pass
        inside = f"{self.workdir}{os.sep}"
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            args = p.info["cmdline"] or []
            if (p.info["pid"] != os.getpid() and p.info["status"] != psutil.STATUS_ZOMBIE
                    and any(a in self.addresses or inside in a for a in args)):
                alive[p.info["pid"]] = p
        return list(alive.values())

    def cleanup(self) -> list[str]:
        """Stop everything (supernodes first, the SuperLink last); return what survived."""
        self.track()
        for name in sorted(self.procs, key=lambda n: n.startswith("superlink")):
            self.stop(name, grace=5.0)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            leftovers = self._ours()
            for p in leftovers:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(leftovers, timeout=5.0)
        return [" ".join(p.cmdline()) for p in self._ours()]

    def dump(self) -> None:
        for name, path in self.logs.items():
            print(f"\n===== {name} (exit {self.procs[name].poll()}) =====\n"
                  f"{path.read_text(errors='replace')[-6000:]}")


def _cli(args: list, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    print(f"$ {' '.join(str(a) for a in args)}\n{proc.stdout}{proc.stderr}")
    assert proc.returncode == 0, f"{args[:3]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _cli_parallel(commands: list[list], env: dict[str, str], cwd: Path, timeout: float = 60) -> list[str]:
    """Run independent commands at once (each `flwr`/`fedsynth` start-up costs seconds of CPU)."""
    procs = [subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL) for args in commands]
    outs = []
    try:
        for args, proc in zip(commands, procs, strict=True):
            out, _ = proc.communicate(timeout=timeout)
            print(f"$ {' '.join(str(a) for a in args)}\n{out}")
            assert proc.returncode == 0, f"{args[:3]} failed ({proc.returncode}):\n{out}"
            outs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outs


def _json_out(result: subprocess.CompletedProcess | str) -> dict:
    text = result if isinstance(result, str) else result.stdout
    return json.loads(text[text.index("{"):])


def _connections(pids: list[int]) -> list:
    conns = []
    for pid in pids:
        try:
            conns += psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            pass
    return conns


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in _connections(pids) if c.status == psutil.CONN_LISTEN}


def _connects_to(pids: list[int]) -> set[tuple[str, int]]:
    """Remote ends of the connections these processes opened (not the ones they accepted)."""
    listening = {port for _, port in _listening(pids)}
    return {(c.raddr.ip, c.raddr.port) for c in _connections(pids)
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port not in listening}


def _tree(pid: int) -> list[int]:
    return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]


def test_tls_authenticated_federation_runs_to_completion(tmp_path: Path) -> None:
    started = time.monotonic()
    link_port, *node_ports = _free_ports(6)
    link = f"127.0.0.1:{link_port}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "FLWR_HOME": str(tmp_path / "coordinator-home"), "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_TELEMETRY_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs = Processes(tmp_path, env, ports=[link_port, *node_ports])
    certs, data = tmp_path / "certs", tmp_path / "data"
    failed = True
    try:
        # --- coordinator: keys, data for the simulated hospitals, the SuperLink ---------------------
        _cli_parallel([[BIN / "fedsynth", "certs", "--out", certs, "--sites", ",".join((*SITES, "rogue")),
                        "--hosts", "localhost,127.0.0.1"],
                       [BIN / "fedsynth", "sim-data", "--sites", 3, "--records-per-site", 100, "--seed", 0,
                        "--out", data]], env, tmp_path)
        site_files = dict(zip(SITES, sorted(data.glob("site-*.csv")), strict=True))
        home = Path(env["FLWR_HOME"])
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{link}"\nroot-certificates = "{certs / "ca.crt"}"\n')
        superlink_args = [BIN / "flower-superlink", "--ssl-ca-certfile", certs / "ca.crt",
                          "--ssl-certfile", certs / "superlink.crt", "--ssl-keyfile", certs / "superlink.key",
                          "--enable-supernode-auth", "--database", tmp_path / "superlink.db",
                          "--host", "127.0.0.1", "--port", link_port,
                          "--disable-runtime-dependency-installation"]
        procs.start("superlink", superlink_args)
        procs.wait_for("superlink", "Uvicorn running on https://", timeout=30)

        # --- register the three sites' public keys (not rogue's) ------------------------------------
        outs = _cli_parallel([[BIN / "flwr", "supernode", "register", certs / "sites" / f"{site}.pub",
                               CONNECTION, "--format", "json"] for site in SITES], env, tmp_path)
        registered = {site: int(_json_out(out)["node-id"]) for site, out in zip(SITES, outs, strict=True)}

        # --- hospitals, and two SuperNodes that must be refused ------------------------------------
        def supernode(name: str, port: int, *extra) -> None:
            state = tmp_path / "sites" / name
            state.mkdir(parents=True)
            node_config = (f"site-name='{name}' data-path='{site_files.get(name, site_files['north'])}' "
                           f"schema-path='{data / 'schema.yaml'}' state-dir='{state}' "
                           f"epsilon-total=3.5 epsilon-tabular=3")  # room for one run, not two
            procs.start(name, [BIN / "flower-supernode", "--superlink", link, *extra,
                               "--node-config", node_config, "--port", port],
                        env={**env, "FLWR_HOME": str(state / "flwr-home")})

        for site, port in zip(SITES, node_ports, strict=False):
            supernode(site, port, "--root-certificates", certs / "ca.crt",
                      "--auth-supernode-private-key", certs / "sites" / site)
        supernode("rogue", node_ports[3], "--root-certificates", certs / "ca.crt",
                  "--auth-supernode-private-key", certs / "sites" / "rogue")
        supernode("no-ca", node_ports[4], "--auth-supernode-private-key", certs / "sites" / "north")
        for site in SITES:
            procs.wait_for(site, "SuperNode ID:", timeout=45)
            assert f"SuperNode ID: {registered[site]}" in procs.log(site)

        assert procs.wait_exit("rogue", timeout=45) != 0
        assert "Failed to initialize the connection to the SuperLink" in procs.log("rogue")
        assert procs.wait_exit("no-ca", timeout=45) != 0
        assert "CERTIFICATE_VERIFY_FAILED" in procs.log("no-ca")
        for refused in ("rogue", "no-ca"):
            assert "SuperNode ID:" not in procs.log(refused)
        nodes = _json_out(_cli([BIN / "flwr", "supernode", "ls", CONNECTION, "--format", "json"],
                               env, tmp_path))["nodes"]
        assert {int(n["node-id"]) for n in nodes if n["status"] == "online"} == set(registered.values())

        # Network facts for hospital IT: the SuperLink listens on one port; a SuperNode listens on
        # loopback only (its local ClientApp API) and connects out to the SuperLink alone.
        procs.track()
        assert _listening(_tree(procs.procs["superlink"].pid)) == {("127.0.0.1", link_port)}
        for site, port in zip(SITES, node_ports, strict=False):
            pids = _tree(procs.procs[site].pid)
            assert _listening(pids) == {("127.0.0.1", port)}
            deadline = time.monotonic() + 10  # polls and heartbeats keep a connection open
            while ("127.0.0.1", link_port) not in (remote := _connects_to(pids)):
                assert time.monotonic() < deadline, f"{site} has no connection to the SuperLink: {remote}"
                time.sleep(0.2)
            assert remote <= {("127.0.0.1", link_port), ("127.0.0.1", port)}, remote

        # --- the run: `flwr run` from a working tree full of things that must not ship -------------
        app = _stage_app(tmp_path / "fedsynth-app")
        pyproject_before = hashlib.sha256((app / "pyproject.toml").read_bytes()).hexdigest()
        run_config = (f"schema-path='{data / 'schema.yaml'}' run-dir='{tmp_path / 'coordinator-run'}' "
                      f"min-sites=3 quorum=3 handshake-timeout-s=60 rounds=1 local-steps=1 generator='vae'")
        # (the VAE's rounds exercise the retries and checkpoints here; the default marginals stage runs
        # through the same ServerApp loop in tests/test_federation.py)
        out = _cli([BIN / "flwr", "run", app, CONNECTION, "--run-config", run_config, "--format", "json"],
                   env, tmp_path, timeout=120)
        run = _json_out(out)
        run_id = int(run["run-id"])
        assert hashlib.sha256((app / "pyproject.toml").read_bytes()).hexdigest() == pyproject_before

        def final_status(run_id: int) -> str:
            procs.wait_for("superlink", f"of run {run_id}", timeout=30)  # the ServerApp task started
            deadline, status = time.monotonic() + 240, ""  # a bound, not a target: CI is 2 busy cores
            while time.monotonic() < deadline and not status.startswith("finished"):
                if "Finished task" in procs.log("superlink").split(f"Created run {run_id}")[-1]:
                    listing = _json_out(_cli([BIN / "flwr", "ls", CONNECTION, "--run-id", run_id,
                                              "--format", "json"], env, tmp_path))
                    status = listing["runs"][0]["status"]
                time.sleep(0.5)
            return status

        assert final_status(run_id) == "finished:completed"

        # --- a second run on the same sites: every site refuses it, its cap is spent --------------
        second = _json_out(_cli([BIN / "flwr", "run", app, CONNECTION, "--run-config",
                                 run_config + " run-name='second'", "--format", "json"],
                                env, tmp_path, timeout=120))
        assert final_status(int(second["run-id"])) == "finished:failed"
        second_log = _cli([BIN / "flwr", "log", second["run-id"], CONNECTION, "--show"], env,
                          tmp_path).stdout
        for site in SITES:
            assert re.search(rf"site {site}: the site's privacy budget does not cover", second_log), \
                second_log
        assert "only 0 site(s) passed the handshake" in second_log
        for site in SITES:
            shown = _cli([BIN / "fedsynth", "ledger", "show", "--state-dir", tmp_path / "sites" / site],
                         env, tmp_path).stdout
            assert re.search(r"\brun\s+tabular-vae\b", shown), shown
            assert re.search(r"\bsecond\s+refused: the run would bring the lifetime spend", shown), shown
            assert "left" in shown

        server_log = _cli([BIN / "flwr", "log", run_id, CONNECTION, "--show"], env, tmp_path).stdout
        # min-sites=3 and quorum=3: all three passed the handshake and answered; the log names them.
        assert re.search(r"3 site\(s\)[^\n]*\['east', 'north', 'south'\]", server_log), server_log
        for site in SITES:
            assert "query.handshake" in procs.log(site)

        # What reached the SuperLink and the hospitals is code only (no venv, runs, data, keys).
        for installed in [*home.glob("apps/*"), *(tmp_path / "sites").glob("*/flwr-home/apps/*")]:
            files = [p.relative_to(installed).as_posix() for p in installed.rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts]
            _check_code_only(files)
        assert len(list(home.glob("apps/*"))) == 1
        assert len(list((tmp_path / "sites").glob("*/flwr-home/apps/*"))) == 3

        # --- the SuperLink restarts on the same database and still knows the run --------------------
        procs.stop("superlink")
        procs.start("superlink-restarted", superlink_args)
        procs.wait_for("superlink-restarted", "Uvicorn running on https://", timeout=30)
        listing = _json_out(_cli([BIN / "flwr", "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
                                 env, tmp_path))
        assert listing["runs"][0]["status"] == "finished:completed"
        failed = False
    finally:
        if failed:
            procs.dump()
        survivors = procs.cleanup()
        print(f"deployment test: {time.monotonic() - started:.1f} s")
    assert not survivors, f"processes left running: {survivors}"
