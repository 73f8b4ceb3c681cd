"""A throwaway OpenSSH sshd on 127.0.0.1 for tests: real keys, real known_hosts, strict checking."""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519"):
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


@dataclass
class SshServer:
    port: int
    user: str
    home: Path  # the client's HOME, holding .ssh/config, known_hosts and the key
    process: subprocess.Popen
    log: Path

    @property
    def alias(self) -> str:
        return "hotload-test"

    def url(self, path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def env(self) -> dict:
        env = dict(os.environ)
        env["HOME"] = str(self.home)
        env.pop("SSH_AUTH_SOCK", None)
        return env

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_sshd(workdir: Path) -> SshServer:
    if not os.path.exists(SSHD):
        raise RuntimeError("OpenSSH sshd is not installed (Debian: apt-get install openssh-server)")
    server_dir = workdir / "server"
    home = workdir / "home"
    ssh_dir = home / ".ssh"
    server_dir.mkdir(parents=True)
    ssh_dir.mkdir(parents=True, mode=0o700)
    host_key = server_dir / "ssh_host_ed25519_key"
    keygen(host_key)
    user_key = ssh_dir / "id_ed25519"
    keygen(user_key)
    authorized = server_dir / "authorized_keys"
    shutil.copy(f"{user_key}.pub", authorized)
    os.chmod(authorized, 0o600)
    port = free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    log = server_dir / "sshd.log"
    config = server_dir / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {server_dir / 'sshd.pid'}
AuthorizedKeysFile {authorized}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(log, "w"))
    host_pub = host_key.with_suffix(".pub").read_text().split()
    (ssh_dir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (ssh_dir / "config").write_text(
        f"""Host hotload-test
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {user_key}
"""
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                if probe.recv(4).startswith(b"SSH"):
                    break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"sshd did not start: {log.read_text()}")
    return SshServer(port, user, home, process, log)
