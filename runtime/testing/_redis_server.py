"""A throwaway redis-server on a free port, TLS files for it, and bus timings short enough for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from bus import BusOptions

__all__ = ["RedisSentinels", "RedisServer", "TlsFiles", "fast_options", "free_port", "make_tls"]

_START_TIMEOUT_S = 30.0
"""A busy machine can take seconds to start a process; a server that never answers is broken."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process of the tests' own, on a free port.

    ``password``: the default user's password; ``user``: an ACL user (name, password) that
    replaces the default user; ``tls``: serve TLS only, with the certificates of ``make_tls``;
    ``aof``: keep an append-only file in ``workdir`` (fsynced on every write) across restarts;
    ``replica_of``: the port of a local server this one replicates.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        user: tuple[str, str] | None = None,
        tls: TlsFiles | None = None,
        aof: bool = False,
        replica_of: int | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed; the redis tests need it (apt install redis-server)")
        self.port = port or free_port()
        self.workdir = workdir
        self.password = password
        self.user = user
        self.tls = tls
        workdir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
        if tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += [
                "--tls-cert-file",
                str(tls.cert),
                "--tls-key-file",
                str(tls.key),
                "--tls-ca-cert-file",
                str(tls.ca),
            ]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        if password is not None:
            args += ["--requirepass", password]
        if user is not None:
            name, secret = user
            args += ["--user", "default", "off", "--user", name, "on", f">{secret}", "~*", "&*", "+@all"]
        self._args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = ""
        if self.user is not None:
            auth = f"{self.user[0]}:{self.user[1]}@"
        elif self.password is not None:
            auth = f":{self.password}@"
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}localhost:{self.port}/0?ssl_ca_certs={self.tls.ca}"

    def start(self) -> None:
        self._proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {_START_TIMEOUT_S:.0f} s")

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the server is not running"
        return self._proc.pid

    def wait_replicating(self) -> None:
        """Until this replica has caught up with its primary (its link is up)."""
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while client.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica on port {self.port} did not sync within {_START_TIMEOUT_S:.0f} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL: the host is lost, with whatever the server had not replicated."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


class RedisSentinels:
    """Redis Sentinels (``redis-server --sentinel``) watching a local primary as ``service``.

    They declare the primary down after ``down_after_ms`` without an answer and, agreeing by
    ``quorum``, promote one of its replicas. Ready once each knows the primary's ``replicas`` and
    the other Sentinels (they learn both from announcements, seconds after starting).
    """

    def __init__(
        self,
        workdir: Path,
        primary_port: int,
        *,
        replicas: int = 1,
        count: int = 3,
        service: str = "meetara",
        down_after_ms: int = 1000,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed; the redis tests need it (apt install redis-server)")
        self.service = service
        self.ports = [free_port() for _ in range(count)]
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for port in self.ports:
                folder = workdir / f"sentinel-{port}"
                folder.mkdir(parents=True, exist_ok=True)
                config = folder / "sentinel.conf"  # a Sentinel rewrites its config: a file of its own
                config.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                    f"sentinel monitor {service} 127.0.0.1 {primary_port} {count // 2 + 1}\n"
                    f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                    f"sentinel failover-timeout {service} 10000\n"
                )
                command = [binary, str(config), "--sentinel"]
                self._procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + _START_TIMEOUT_S
            for port in self.ports:
                while not self._knows_everyone(port, replicas):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis sentinel on port {port} not ready within {_START_TIMEOUT_S:.0f} s")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _knows_everyone(self, port: int, replicas: int) -> bool:
        client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
        try:
            flat = client.execute_command("SENTINEL", "MASTER", self.service)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False
        finally:
            client.close()
        state = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else dict(flat)
        return int(state["num-slaves"]) >= replicas and int(state["num-other-sentinels"]) == len(self.ports) - 1

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{self.service}/{db}"

    def primary_port(self, port: int | None = None) -> int | None:
        """The port of the primary that a client would be sent to now, as the Sentinels (or the one
        on ``port``) judge it: none while they do not answer or hold it down."""
        ports = [port] if port else self.ports
        sentinel = Sentinel([("127.0.0.1", p) for p in ports], socket_timeout=2)  # type: ignore[no-untyped-call]
        try:
            return int(sentinel.discover_master(self.service)[1])  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        finally:
            for client in sentinel.sentinels:
                client.close()

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.wait(10)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for ``localhost`` / 127.0.0.1 it signed."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = TlsFiles(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(certificate("meetara test CA", ca_key, "meetara test CA", ca_key, True).public_bytes(pem))
    files.cert.write_bytes(certificate("localhost", server_key, "meetara test CA", ca_key, False).public_bytes(pem))
    files.key.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def fast_options(namespace: str, **overrides: object) -> BusOptions:
    """Timings short enough for tests, keeping the production ratios (heartbeat << reclaim)."""
    values: dict[str, object] = {
        "namespace": namespace,
        "reclaim_idle_ms": 400,
        "heartbeat_ms": 50,
        "block_ms": 100,
        "retry_base_ms": 50,
        "max_deliveries": 3,
    }
    values.update(overrides)
    return BusOptions.model_validate(values)
