"""HTTPS with a private CA made in the test: the CLI and the agent verify the server's certificate."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ceti.client import CetiError, Client
from tests.conftest import ceti_cmd, free_port, wait_until

pytestmark = pytest.mark.slow


def make_ca(tmp: Path) -> tuple[Path, Path, Path]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=ceti test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


def test_https_with_a_private_ca(tmp_path):
    ca, cert, key = make_ca(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CETI_")}
    env.update({"CETI_SCHEDULE_INTERVAL_S": "0.2", "CETI_HEARTBEAT_INTERVAL_S": "0.2",
                "CETI_CONFIG": str(tmp_path / "none.json")})
    data = tmp_path / "server"
    server = subprocess.Popen(
        ceti_cmd("server", "--port", str(port), "--data-dir", str(data), "--admin-token-file", str(data / "admin"),
                 "--tls-cert", str(cert), "--tls-key", str(key), "--log-level", "warning"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    agent = None
    try:
        wait_until(lambda: _up(url, str(ca)), 30, what="the HTTPS server")
        admin_token = (data / "admin").read_text().strip()
        with pytest.raises(CetiError) as untrusted:
            Client(url, admin_token, retries=0).whoami()
        assert "certificate" in untrusted.value.message.lower()
        admin = Client(url, admin_token, ca_cert=str(ca))
        provider = admin.create_token("provider", provider="tls")["token"]
        agent = subprocess.Popen(
            ceti_cmd("--ca-cert", str(ca), "agent", "--server", url, "--token", provider, "--data-dir",
                     str(tmp_path / "agent"), "--heartbeat-s", "0.2", "--hostname", "tls-agent"),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: [n for n in admin.nodes() if n["state"] == "online"], 30, what="the agent over HTTPS")
        spec = tmp_path / "job.yaml"
        spec.write_text("name: tls\ncommand: echo over-tls\n")
        run = subprocess.run(ceti_cmd("--ca-cert", str(ca), "run", str(spec), "--follow", "--server", url,
                                      "--token", admin_token),
                             env=env, check=False, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "over-tls" in run.stdout, run.stderr
        refused = subprocess.run(ceti_cmd("jobs", "--server", url, "--token", admin_token), env=env,
                                 check=False, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "certificate" in refused.stderr.lower()
        assert "Traceback" not in refused.stderr
    finally:
        for p in (agent, server):
            if p is not None:
                p.terminate()
                p.wait(15)


def _up(url: str, ca: str) -> bool:
    try:
        Client(url, ca_cert=ca, retries=0, timeout_s=2).health()
        return True
    except CetiError:
        return False
