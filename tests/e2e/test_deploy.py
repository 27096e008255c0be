"""deploy/ as shipped: nginx.conf loads (`nginx -t -c`), its TLS lines load once
uncommented, and in front of a real gateway it passes the real client address
(trusted_proxies: [127.0.0.1]) and answers its own errors as JSON; the systemd unit
verifies and sets what it must.

nginx is taken from PATH or installed like the benchmark suite does
(`apt-get install nginx-light`, as root); if neither works the test fails, it never
skips silently.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.state.embedded import free_port
from harness import ROOT, Gateway, Sim, base_config

DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
UNIT = DEPLOY / "smm-gateway.service"


def obtain_nginx() -> str:
    """nginx from PATH (or /usr/sbin), else apt-get install nginx-light when root."""
    def find() -> str | None:
        return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")

    found = find()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
        found = find()
    if found is None:
        pytest.fail("nginx is needed to check deploy/nginx.conf: install nginx (or nginx-light),"
                    " or run the tests as root so they can apt-get install it")
    return found


@pytest.fixture(scope="module")
def nginx() -> str:
    return obtain_nginx()


def nginx_test(nginx: str, conf: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t -c conf`; the error log and pid file go to `tmp` (not in the file)."""
    return subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp), "-e",
                           str(tmp / "error.log"), "-g", f"pid {tmp / 'nginx.pid'};"],
                          capture_output=True, text=True, timeout=30)


def test_nginx_conf_loads_as_shipped(nginx: str, tmp_path: Path) -> None:
    r = nginx_test(nginx, NGINX_CONF, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


def test_nginx_tls_lines_load_once_uncommented(nginx: str, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a certificate for the TLS check")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=api.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    text = NGINX_CONF.read_text()
    tls = re.sub(r"(?m)^(\s*)# ((listen 443|ssl_)[^\n]*)$", r"\1\2", text)
    assert tls.count("\n") == text.count("\n") and "listen 443 ssl" in tls
    assert re.search(r"(?m)^\s*ssl_certificate\s", tls), "the TLS lines are not where documented"
    tls = re.sub(r"/etc/letsencrypt/live/api\.example\.com/fullchain\.pem", str(cert), tls)
    tls = re.sub(r"/etc/letsencrypt/live/api\.example\.com/privkey\.pem", str(key), tls)
    conf = tmp_path / "nginx-tls.conf"
    conf.write_text(tls)
    r = nginx_test(nginx, conf, tmp_path)
    assert r.returncode == 0, r.stderr


def runnable(port: int, gateway_port: int, tmp: Path) -> str:
    """deploy/nginx.conf with its ports and writable paths substituted for a test run."""
    text = NGINX_CONF.read_text()
    assert re.search(r"(?m)^\s*listen 80;", text) and "server 127.0.0.1:8080;" in text
    text = re.sub(r"(?m)^(\s*)listen 80;", rf"\1listen 127.0.0.1:{port};", text)
    text = text.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{gateway_port};")
    paths = "".join(f"    {name}_temp_path {tmp / name};\n"
                    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", "http {\n" + paths, 1)
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    return text


@pytest.fixture
def behind_nginx(nginx: str, sims: tuple[Sim, Sim], fresh_redis: str,
                 tmp_path: Path) -> Iterator[tuple[str, Gateway]]:
    a, b = sims
    a.reset()
    b.reset()
    gw = Gateway(base_config(a, b, trusted_proxies=["127.0.0.1"]), fresh_redis,
                 tmp_path / "gw")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(runnable(port, gw.port, tmp_path))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log"), "-g",
                             f"daemon off; pid {tmp_path / 'nginx.pid'};"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "error.log").read_text()
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield url, gw
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        gw.stop()


def failed_addresses(gw: Gateway) -> list[str]:
    return [json.loads(line)["address"] for line in gw.log().splitlines()
            if line.startswith("{") and '"authentication failed"' in line]


def test_nginx_gives_the_gateway_the_real_client_address(
        behind_nginx: tuple[str, Gateway]) -> None:
    url, gw = behind_nginx
    # the test's client connects from 127.0.0.2: not the proxy (127.0.0.1)
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, base_url=url, timeout=30) as http:
        r = http.post("/api/v2", data={"key": "wrong", "action": "balance"},
                      headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.7",
                               "Forwarded": "for=6.6.6.8"})
        assert r.status_code == 401 and r.json() == {"error": "Invalid API key"}
        for path in ("/api/v2", "/api/v2/"):  # both served, never redirected
            r = http.post(path, data={"key": "alice-key", "action": "balance"})
            assert r.status_code == 200 and "balance" in r.json(), r.text
        # nginx's own errors are JSON too
        r = http.post("/api/v2", content=b"k=" + b"x" * 70000,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400 and r.json() == {
            "error": "Request body too large (64 KiB at most)"}
        r = http.get("/wp-login.php")
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    assert failed_addresses(gw) == ["127.0.0.2"]


# --- systemd -------------------------------------------------------------------------


def unit_settings() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return {section: dict(parser[section]) for section in parser.sections()}


def test_the_systemd_unit_sets_what_it_must() -> None:
    unit = unit_settings()
    service = unit["Service"]
    assert service["LimitNOFILE"] == "65536"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert " serve " in service["ExecStart"] and "check-config" in service["ExecStartPre"]
    assert "--host 127.0.0.1" in service["ExecStart"]  # behind nginx on the same host
    assert "--data-dir /var/lib/smm-gateway" in service["ExecStart"]
    assert service["StateDirectory"] == "smm-gateway" and service["StateDirectoryMode"] == "0700"
    assert service["User"] and service["NoNewPrivileges"] == "true"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit's keys are checked above)")
    venv_bin = Path(sys.executable).parent
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/smm-gateway/.venv/bin/", f"{venv_bin}/"))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    mine = [line for line in (r.stdout + r.stderr).splitlines() if UNIT.name in line]
    assert r.returncode == 0 and mine == [], r.stdout + r.stderr


# --- the embedded Redis data directory --------------------------------------------------


def test_the_embedded_redis_data_is_private(tmp_path: Path) -> None:
    import stat

    import redis

    from gateway.state.embedded import EmbeddedRedis

    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "appendonly.aof").write_text("")
    (old / "appendonly.aof").chmod(0o644)
    for data_dir in (tmp_path / "new" / "redis", old):
        with EmbeddedRedis(data_dir) as server:
            client = redis.Redis.from_url(server.url)
            client.set("k", "v")
            client.close()
            files = [p for p in data_dir.rglob("*") if not p.is_socket()]
            assert files, "redis wrote nothing"
            assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
            for path in files:
                want = 0o700 if path.is_dir() else 0o600
                assert stat.S_IMODE(path.stat().st_mode) == want, path
            for sock in data_dir.glob("*.sock"):
                assert stat.S_IMODE(sock.stat().st_mode) & 0o077 == 0
