"""The configurations under test, each started fresh by start(name, ...): direct, weft, weft-routes,
policy and envoy.

A topology exposes: `http` (where the client sends HTTP), `tcp` (where the opaque stream goes),
`proxies` ({"outbound": Child, "inbound": Child}, empty for direct), `others` (children whose CPU
is reported as "control"), `inbound_http` (the inbound proxy's meshed HTTP port, for the mTLS
probes), `authz_name` (the AuthorizationPolicy every request must be admitted by, or None) and
`stop()`.
"""

import json
import os
import shutil
import subprocess

from harness import (CLIENT_ID, CLIENT_NAME, SERVER_ID, SERVER_NAME, Child, free_port, http_get,
                     http_text, request_status, wait_until)

AUTHORITY = "backend.default.svc.cluster.local:8080"
TCP_AUTHORITY = "tcpsink.default.svc.cluster.local:9000"
# Weft's default server-speaks-first list, plus the bench's opaque service port.
OUTBOUND_OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211,9000"

# The configurations that start weft's topology (the rest: direct, envoy).
WEFT_CONFIGS = ("weft", "weft-routes", "policy")


def is_weft(name):
    return name in WEFT_CONFIGS


class Topology:
    def __init__(self, name):
        self.name = name
        self.http = None
        self.tcp = None
        self.inbound_http = None
        self.admin = {}
        self.authz_name = None
        self.proxies = {}
        self.others = {}
        self._children = []

    def add(self, child):
        self._children.append(child)
        return child

    def stop(self):
        for child in reversed(self._children):
            child.stop()


def start(name, ctx, workers, cpus):
    """ctx: run context (paths, backend addresses, certs, flags). cpus: {"outbound": taskset list or None,
    "inbound": ...}: where each proxy runs."""
    if name == "direct":
        t = Topology(name)
        t.http, t.tcp = ctx.backend_http, ctx.backend_tcp
        return t
    if name == "weft":
        return _start_weft(ctx, workers, cpus)
    if name == "weft-routes":
        return _start_weft(ctx, workers, cpus, routes=ROUTES)
    if name == "policy":
        return _start_weft(ctx, workers, cpus, policy=True)
    if name == "envoy":
        return _start_envoy(ctx, workers, cpus)
    raise ValueError(name)


# --- weft --------------------------------------------------------------------------------------

SERVICES_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: tcpsink
  namespace: default
  annotations: {config.linkerd.io/opaque-ports: "9000"}
spec:
  selector: {app: backend}
  ports: [{name: tcp, port: 9000, targetPort: tcp, appProtocol: opaque}]
"""


# The "weft-routes" configuration: this many HTTPRoutes on the backend Service. The load's "/" is
# matched by the last one only, so every request weighs all of them (the cost of routing).
ROUTES = 100


def routes_yaml(n):
    """n Gateway API HTTPRoutes on backend:8080; route i matches PathPrefix /api/v{i}/ and a header,
    the last one matches every path."""
    docs = []
    for i in range(n):
        last = i == n - 1
        match = ("[{path: {type: PathPrefix, value: /}}]" if last else
                 f"[{{path: {{type: PathPrefix, value: /api/v{i}/}}, headers: [{{name: x-route, value: r{i}}}]}}]")
        docs.append(f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i:03}, namespace: default}}
spec:
  parentRefs: [{{group: core, kind: Service, name: backend, port: 8080}}]
  rules:
  - matches: {match}
    backendRefs: [{{name: backend, port: 8080}}]
""")
    return "---\n".join(docs)


# The "policy" configuration: inbound authorization on the backend's HTTP port (docs/policy.md).
# Every request must be admitted by this AuthorizationPolicy; the run checks the inbound proxy's
# inbound_http_authz_allow_total{authz_name=...} counts them.
POLICY_AUTHZ = "backend-authz"
# Identities the MeshTLSAuthentication names besides the client's. The client's goes fourth of the
# five exact identities (the proxy compares exact identities first, in order, then suffixes), so
# each request is compared with three others before it matches.
POLICY_OTHER_IDENTITIES = (
    "web.default.serviceaccount.identity.weft.cluster.local",
    "books.default.serviceaccount.identity.weft.cluster.local",
    "reviews.shop.serviceaccount.identity.weft.cluster.local",
    "*.monitoring.serviceaccount.identity.weft.cluster.local",
    "ratings.shop.serviceaccount.identity.weft.cluster.local",
)


def policy_yaml():
    """A Server on the backend workload's HTTP port and an AuthorizationPolicy on it requiring both a
    MeshTLSAuthentication (the client's identity among others) and a NetworkAuthentication (the
    client's loopback address among other networks).

    The Server names the port `http`: backend-1 is registered with the inbound proxy's forward
    ports, and a connection to a forward port is decided by that port's policy."""
    identities = "\n".join(f"  - \"{i}\"" for i in (*POLICY_OTHER_IDENTITIES[:3], CLIENT_NAME, *POLICY_OTHER_IDENTITIES[3:]))
    return f"""apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: backend-http, namespace: default}}
spec:
  externalWorkloadSelector: {{matchLabels: {{app: backend}}}}
  port: http
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: backend-clients, namespace: default}}
spec:
  identities:
{identities}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {{name: backend-networks, namespace: default}}
spec:
  networks:
  - {{cidr: 10.0.0.0/8}}
  - {{cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}
  - {{cidr: 127.0.0.0/8, except: [127.0.0.2/32]}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: {POLICY_AUTHZ}, namespace: default}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: backend-http}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: backend-clients}}
  - {{group: policy.linkerd.io, kind: NetworkAuthentication, name: backend-networks}}
"""


def authz_allowed(t):
    """Requests the inbound proxy admitted through AuthorizationPolicy `t.authz_name`: the sum of its
    inbound_http_authz_allow_total series (None: the metric or the policy is not there)."""
    text = http_text(f"http://{t.admin['inbound']}/metrics")
    label = f'authz_name="{t.authz_name}"'
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("inbound_http_authz_allow_total{") and label in line]
    return sum(values) if values else None


def _proxy_env(ctx, grpc, workload, workers, extra):
    env = {
        # Like Envoy's --concurrency (1: one thread, no work-stealing scheduler).
        "WEFT_PROXY_CORES": str(workers),
        "WEFT_PROXY_DESTINATION_SVC_ADDR": grpc,
        "WEFT_PROXY_POLICY_WORKLOAD": f"default:{workload}",
        "WEFT_PROXY_INBOUND_LISTEN_ADDR": "127.0.0.1:0",
        "WEFT_PROXY_OUTBOUND_LISTEN_ADDR": "127.0.0.1:0",
        "WEFT_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
        "WEFT_PROXY_LOG": "warn",
        "WEFT_PROXY_SHUTDOWN_GRACE_PERIOD": "1s",
    }
    env.update(extra)
    for key, value in ctx.weft_proxy_env:
        env[key] = value.format(identity_dir=ctx.weft_identity_dir, name=workload)
    return env


def _identity_env(ctx, workload, local_name):
    """The sidecar's identity, as `weft demo` hands it over: a token file (written once the workload
    is registered; until then the proxy's Certify attempts retry), its DNS-like name and the CA's
    anchors file. Empty without mTLS (the proxy then runs without identity, plaintext)."""
    if not ctx.weft_mtls:
        return {}
    return {
        "WEFT_PROXY_IDENTITY_TOKEN_FILE": _token_path(ctx, workload),
        "WEFT_PROXY_IDENTITY_LOCAL_NAME": local_name,
        "WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE": os.path.join(ctx.weft_identity_dir, "trust-anchors.pem"),
    }


def _token_path(ctx, workload):
    return os.path.join(ctx.workdir, "weft-tokens", f"{workload}.token")


def _write_token(ctx, workload, token):
    """Temporary file + rename, readable only by us: the proxy never reads half a token."""
    path = _token_path(ctx, workload)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)


def _start_weft(ctx, workers, cpus, routes=0, policy=False):
    t = Topology("weft-routes" if routes else "policy" if policy else "weft")
    http_port = ctx.backend_http.rsplit(":", 1)[1]
    tcp_port = ctx.backend_tcp.rsplit(":", 1)[1]
    store = os.path.join(ctx.workdir, "weft-store")
    shutil.rmtree(store, ignore_errors=True)
    os.makedirs(store)
    with open(os.path.join(store, "services.yaml"), "w") as f:
        f.write(SERVICES_YAML)
    if routes:
        with open(os.path.join(store, "routes.yaml"), "w") as f:
            f.write(routes_yaml(routes))
    if policy:
        with open(os.path.join(store, "policy.yaml"), "w") as f:
            f.write(policy_yaml())
        t.authz_name = POLICY_AUTHZ
    try:
        cmd = [ctx.weft_bin, "control", "--store", store, "--grpc-addr", "127.0.0.1:0",
               "--api-addr", "127.0.0.1:0"]
        if ctx.weft_mtls:
            # A fresh CA per start, on disk, so the proxies read the anchors from a file.
            shutil.rmtree(ctx.weft_identity_dir, ignore_errors=True)
            shutil.rmtree(os.path.dirname(_token_path(ctx, "x")), ignore_errors=True)
            os.makedirs(os.path.dirname(_token_path(ctx, "x")))
            subprocess.run([ctx.weft_bin, "identity", "init", "--dir", ctx.weft_identity_dir],
                           check=True, capture_output=True)
            cmd += ["--identity-dir", ctx.weft_identity_dir]
        # The control plane is not on the data path: it shares the clients' core.
        control = t.add(Child("weft-control", cmd, ctx.workdir, cpus=ctx.client_cpus))
        t.others["control"] = control
        listening = control.json_line()
        grpc, api = listening["grpc"], listening["api"]

        inbound_env = {
            "WEFT_PROXY_INBOUND_FORWARD_PORTS": f"{http_port},{tcp_port}",
            "WEFT_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": tcp_port,
            **_identity_env(ctx, "backend-1", SERVER_NAME),
        }
        if ctx.weft_mtls:
            # Like Envoy's require_client_certificate: both backend ports take only mTLS clients.
            inbound_env["WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY"] = f"{http_port},{tcp_port}"
        inbound = t.add(Child("weft-inbound", [ctx.proxy_bin], ctx.workdir, cpus=cpus["inbound"],
                              env=_proxy_env(ctx, grpc, "backend-1", workers, inbound_env)))
        inbound_listening = inbound.json_line()
        forward = {str(f["app_port"]): f["addr"] for f in inbound_listening["forward"]}
        t.inbound_http = forward[http_port]
        answer = _register(api, "backend-1", _backend_doc(forward[http_port], forward[tcp_port]))
        if ctx.weft_mtls:
            # The client is registered too (no ports), for its identity: its proxy needs a certificate.
            client_answer = _register(api, "client", _client_doc())
            for workload, a, name in (("backend-1", answer, SERVER_NAME), ("client", client_answer, CLIENT_NAME)):
                if a.get("identity") != name:
                    raise RuntimeError(f"{workload} was registered as {a.get('identity')!r}, its proxy asks for {name!r}")
                _write_token(ctx, workload, a["token"])

        outbound = t.add(Child("weft-outbound", [ctx.proxy_bin], ctx.workdir, cpus=cpus["outbound"], env=_proxy_env(
            ctx, grpc, "client", workers, {
                "WEFT_PROXY_OUTBOUND_UPSTREAMS": f"{AUTHORITY},{TCP_AUTHORITY}",
                "WEFT_PROXY_OUTBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": OUTBOUND_OPAQUE_PORTS,
                **_identity_env(ctx, "client", CLIENT_NAME),
            })))
        outbound_listening = outbound.json_line()
        upstreams = {u["authority"]: u["addr"] for u in outbound_listening["upstreams"]}
        t.http, t.tcp = upstreams[AUTHORITY], upstreams[TCP_AUTHORITY]
        t.proxies = {"outbound": outbound, "inbound": inbound}
        t.admin = {"outbound": outbound_listening["admin"], "inbound": inbound_listening["admin"]}
        for role, l in (("outbound", outbound_listening), ("inbound", inbound_listening)):
            # With identity, /ready also waits for the proxy's first certificate.
            wait_until(f"weft {role} /ready", lambda: http_get(f"http://{l['admin']}/ready") == 200)
        wait_until("a request through weft", lambda: request_status(t.http, AUTHORITY) == 200)
        if t.authz_name:
            _check_policy_in_force(t)
        return t
    except Exception:
        t.stop()
        raise


def _check_policy_in_force(t):
    """A request is admitted by `t.authz_name` (not by a default policy), or the start fails with
    what the inbound proxy counted instead."""
    try:
        wait_until(f"a request admitted by AuthorizationPolicy {t.authz_name}",
                   lambda: request_status(t.http, AUTHORITY) == 200 and (authz_allowed(t) or 0) > 0)
    except RuntimeError:
        text = http_text(f"http://{t.admin['inbound']}/metrics")
        seen = [line for line in text.splitlines() if line.startswith("inbound_http_authz_")]
        raise RuntimeError(f"policy not in force: the inbound proxy's /metrics has no "
                           f"inbound_http_authz_allow_total with authz_name=\"{t.authz_name}\"; it has: "
                           + ("; ".join(seen) or "no inbound_http_authz_* series")) from None


def _backend_doc(http_addr, tcp_addr):
    ip = http_addr.rsplit(":", 1)[0]
    return {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": "backend-1", "namespace": "default", "labels": {"app": "backend"},
                     "annotations": {"config.linkerd.io/opaque-ports": tcp_addr.rsplit(":", 1)[1]}},
        "spec": {"workloadIPs": [{"ip": ip}],
                 "ports": [{"name": "http", "port": int(http_addr.rsplit(":", 1)[1])},
                           {"name": "tcp", "port": int(tcp_addr.rsplit(":", 1)[1])}]},
    }


def _client_doc():
    return {
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}], "ports": []},
    }


def _register(api, name, doc):
    """PUT /v1/workloads/default/NAME; returns the answer ({"ok", "identity", "token"})."""
    import urllib.request
    request = urllib.request.Request(f"http://{api}/v1/workloads/default/{name}", method="PUT",
                                     data=json.dumps(doc).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as r:
        if r.status != 200:
            raise RuntimeError(f"registering {name}: {r.status}")
        return json.loads(r.read() or b"{}")


# --- envoy -------------------------------------------------------------------------------------

def _tls_common(ctx, cert, key, peer_id, alpn):
    common = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                       "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [{"certificate_chain": {"filename": ctx.certs[cert]},
                              "private_key": {"filename": ctx.certs[key]}}],
        # Chain to the bench CA and carry exactly the expected SPIFFE identity.
        "validation_context": {
            "trusted_ca": {"filename": ctx.certs["ca.pem"]},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": peer_id}}],
        },
    }
    if alpn:
        common["alpn_protocols"] = ["h2"]
    return common


def _downstream_tls(ctx, alpn):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": _tls_common(ctx, "server.pem", "server.key", CLIENT_ID, alpn)}}


def _upstream_tls(ctx, alpn):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": SERVER_NAME,
        "common_tls_context": _tls_common(ctx, "client.pem", "client.key", SERVER_ID, alpn)}}


def _hcm(prefix, cluster):
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": prefix,
        "codec_type": "AUTO",  # HTTP/1.1 and h2c from the client, like weft's detection
        "route_config": {"name": "all", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "10s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}


def _tcp_proxy(prefix, cluster):
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": prefix, "cluster": cluster}}


def _listener(name, port, network_filter, transport=None):
    chain = {"filters": [network_filter]}
    if transport:
        chain["transport_socket"] = transport
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [chain]}


def _cluster(name, addr, h2=False, transport=None):
    host, port = addr.rsplit(":", 1)
    cluster = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]},
        # Envoy's default circuit breakers (1024) would cap the 1000-idle-connection test; Istio
        # raises them too.
        "circuit_breakers": {"thresholds": [{"max_connections": 1000000, "max_pending_requests": 1000000,
                                             "max_requests": 1000000}]},
    }
    if h2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    if transport:
        cluster["transport_socket"] = transport
    return cluster


def envoy_configs(ctx, ports):
    """(outbound, inbound) bootstrap dicts. ports: in_http, in_tcp, out_http, out_tcp, admins."""
    inbound = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["in_admin"]}}},
        "static_resources": {
            "listeners": [
                _listener("in_http", ports["in_http"], _hcm("in_http", "backend_http"), _downstream_tls(ctx, True)),
                _listener("in_tcp", ports["in_tcp"], _tcp_proxy("in_tcp", "backend_tcp"), _downstream_tls(ctx, False)),
            ],
            "clusters": [_cluster("backend_http", ctx.backend_http), _cluster("backend_tcp", ctx.backend_tcp)],
        },
    }
    outbound = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["out_admin"]}}},
        "static_resources": {
            "listeners": [
                _listener("out_http", ports["out_http"], _hcm("out_http", "mesh_http")),
                _listener("out_tcp", ports["out_tcp"], _tcp_proxy("out_tcp", "mesh_tcp")),
            ],
            "clusters": [
                _cluster("mesh_http", f"127.0.0.1:{ports['in_http']}", h2=True, transport=_upstream_tls(ctx, True)),
                _cluster("mesh_tcp", f"127.0.0.1:{ports['in_tcp']}", transport=_upstream_tls(ctx, False)),
            ],
        },
    }
    return outbound, inbound


def _start_envoy(ctx, workers, cpus):
    t = Topology("envoy")
    ports = {k: free_port() for k in ("in_http", "in_tcp", "out_http", "out_tcp", "in_admin", "out_admin")}
    outbound_cfg, inbound_cfg = envoy_configs(ctx, ports)
    try:
        for role, cfg in (("inbound", inbound_cfg), ("outbound", outbound_cfg)):
            path = os.path.join(ctx.workdir, f"envoy-{role}.json")
            with open(path, "w") as f:
                json.dump(cfg, f, indent=1)
            child = t.add(Child(f"envoy-{role}", [
                ctx.envoy_bin, "-c", path, "--concurrency", str(workers), "--disable-hot-restart",
                "-l", "warn"], ctx.workdir, cpus=cpus[role]))
            t.proxies[role] = child
            admin = ports["in_admin" if role == "inbound" else "out_admin"]
            wait_until(f"envoy {role} /ready", lambda: http_get(f"http://127.0.0.1:{admin}/ready") == 200,
                       timeout=30)
        t.http = f"127.0.0.1:{ports['out_http']}"
        t.tcp = f"127.0.0.1:{ports['out_tcp']}"
        t.inbound_http = f"127.0.0.1:{ports['in_http']}"
        t.admin = {"outbound": f"127.0.0.1:{ports['out_admin']}", "inbound": f"127.0.0.1:{ports['in_admin']}"}
        wait_until("a request through envoy", lambda: request_status(t.http, AUTHORITY) == 200)
        return t
    except Exception:
        t.stop()
        raise
