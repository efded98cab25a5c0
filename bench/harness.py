"""Process, /proc and certificate helpers for bench/run.py.

Everything here is plumbing: start a child (optionally pinned with taskset), read its one JSON
listening line, read CPU and memory of a pid from /proc, mint the Envoy certificates with openssl,
and probe a port for mTLS.
"""

import json
import os
import select
import socket
import ssl
import subprocess
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Child:
    """A child process whose stderr goes to a log file in the work directory."""

    def __init__(self, name, cmd, workdir, env=None, cpus=None, stdin=None):
        self.name = name
        if cpus:
            # taskset execs the command: the pid stays the proxy's own.
            cmd = ["taskset", "-c", cpus] + cmd
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            env=full_env,
        )
        self.pid = self.popen.pid

    def json_line(self, timeout=30.0):
        """The next stdout line, parsed as JSON."""
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.popen.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no JSON line within {timeout}s (log {self.log_path})")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"{self.name}: exited before its JSON line (log {self.log_path}): {tail(self.log_path)}")
            buf += chunk
        return json.loads(buf)

    def wait_json(self, timeout):
        """Waits for the process to exit and returns its last stdout line as JSON."""
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"{self.name}: did not finish within {timeout}s")
        lines = [l for l in out.decode().splitlines() if l.strip()]
        if self.popen.returncode != 0 or not lines:
            raise RuntimeError(f"{self.name}: exit {self.popen.returncode}: {tail(self.log_path)}")
        return json.loads(lines[-1])

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


def tail(path, lines=5):
    try:
        with open(path, "rb") as f:
            return " | ".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds (resolution 1/CLK_TCK)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sleeps(pid):
    """Voluntary context switches of a process (all its threads): each is one sleep, most often in
    epoll_wait with nothing to do, and so one wake-up to follow."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass  # a thread that ended between the listing and the read
    return total


def memory_mib(pid):
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def system_busy_seconds():
    """CPU seconds spent not idle, all CPUs, since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    # guest time is already counted in user/nice.
    return (sum(parts[:8]) - idle) / CLK_TCK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2.0):
    """Status of GET url, or None when it failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except Exception:
        return None


def http_text(url, timeout=5.0):
    """Body of GET url as text ("" when it failed)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode(errors="replace")
    except Exception:
        return ""


def request_status(addr, authority, timeout=2.0):
    """Status of a plain HTTP/1.1 GET / to addr with the given Host, or None."""
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        parts = data.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 else None
    except (OSError, ValueError):
        return None


def wait_until(what, predicate, timeout=15.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


# --- certificates (Envoy's mTLS) -------------------------------------------------------------

TRUST_DOMAIN = "cluster.local"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/backend-1"
SERVER_NAME = "backend-1.default.serviceaccount.identity.weft.cluster.local"
CLIENT_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/client"
CLIENT_NAME = "client.default.serviceaccount.identity.weft.cluster.local"
ROGUE_ID = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/rogue"
ROGUE_NAME = "rogue.default.serviceaccount.identity.weft.cluster.local"


def mint_certs(directory):
    """A P-256 CA and three leaves (server, client, rogue client) with SPIFFE URI SANs."""
    os.makedirs(directory, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", "/CN=weft-bench-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem")
    for name, spiffe, dns in (("server", SERVER_ID, SERVER_NAME), ("client", CLIENT_ID, CLIENT_NAME),
                              ("rogue", ROGUE_ID, ROGUE_NAME)):
        ext = os.path.join(directory, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n"
                    f"subjectAltName=URI:{spiffe},DNS:{dns}\n")
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={dns}", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-sha256", "-extfile", ext, "-out", f"{name}.pem")
    return {n: os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                                      "client.key", "rogue.pem", "rogue.key")}


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _h2_answer(sock):
    """True when the peer answers as an HTTP/2 server (a SETTINGS frame); else a reason string.
    Listens first: a TLS server that rejects the client certificate sends its alert right after
    the handshake, and an HTTP/2 server may send SETTINGS before hearing the client's preface."""
    try:
        sock.settimeout(0.5)
        try:
            data = sock.recv(64)
        except socket.timeout:
            sock.settimeout(3.0)
            sock.sendall(H2_PREFACE)
            data = sock.recv(64)
    except ssl.SSLError as e:
        return f"refused ({e.reason or e})"
    except OSError as e:  # reset, broken pipe, timeout
        return f"refused ({type(e).__name__})"
    if not data:
        return "refused (closed)"
    if len(data) >= 4 and data[3] == 0x04:
        return True
    if data[0] == 0x15:
        return f"refused (answered with a TLS alert record: {data[:7].hex()})"
    return f"refused (answered {data[:16]!r})"


def request_probe(addr, authority, tls, timeout=5.0):
    """One HTTP request to an inbound port with curl (HTTP/2 with prior knowledge in plaintext;
    TLS 1.3 offering h2, SNI = the backend's identity, no client certificate, server not verified).
    For a proxy that answers the HTTP/2 preface and then refuses each request (weft's inbound on a
    port that requires identity answers 403), a handshake alone proves nothing: only a request's
    status does. Accepted = status 200. Returns (accepted: bool, detail)."""
    host, port = addr.rsplit(":", 1)
    if tls:
        url = f"https://{SERVER_NAME}:{port}/"
        opts = ["-k", "--tlsv1.3", "--tls-max", "1.3", "--http2", "--connect-to", f"{SERVER_NAME}:{port}:{host}:{port}"]
    else:
        url, opts = f"http://{addr}/", ["--http2-prior-knowledge"]
    cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(timeout), "-H", f"host: {authority}",
           "-w", "%{http_code} HTTP/%{http_version}", *opts, url]
    out = subprocess.run(cmd, capture_output=True, text=True)
    status, _, version = out.stdout.strip().partition(" ")
    if out.returncode != 0 or status in ("", "000"):
        return False, f"refused (curl exit {out.returncode}: {out.stderr.strip()[:120]})"
    if status == "200":
        return True, f"accepted: {version} {status}"
    return False, f"refused: {version} {status}"


def probe(addr, ca=None, cert=None, key=None, tls=True, timeout=3.0):
    """One connection attempt to an inbound port: plaintext HTTP/2 (tls=False), or TLS 1.3 with
    ALPN h2, verifying the server against `ca` (None: not verified), with the client certificate
    `cert`/`key` if given. Accepted = the server answered the HTTP/2 preface with SETTINGS.
    Returns (accepted: bool, detail)."""
    host, port = addr.rsplit(":", 1)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as e:
        return False, f"connect failed: {e}"
    raw.settimeout(timeout)
    try:
        if not tls:
            answer = _h2_answer(raw)
            return answer is True, "plaintext HTTP/2 answered" if answer is True else answer
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["h2"])
        if ca:
            ctx.load_verify_locations(ca)
        else:
            # Not judging the server: a refusal can then only be about the client's certificate.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(cert, key)
        try:
            sock = ctx.wrap_socket(raw, server_hostname=SERVER_NAME)
        except (ssl.SSLError, OSError) as e:
            return False, f"refused in handshake ({e})"
        # TLS 1.3: the server judges the client certificate after the client's handshake is done,
        # so the refusal arrives on the first read.
        answer = _h2_answer(sock)
        if answer is not True:
            return False, answer
        peer = sock.getpeercert() or {}
        uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
        return True, f"{sock.version()}, alpn {sock.selected_alpn_protocol()}, server SAN {','.join(uris)}"
    finally:
        raw.close()
