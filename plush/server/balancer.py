"""nginx in front of several `plush server` replicas: the gRPC load balancer's configuration, written from one place.

Why nginx: it is a Debian package every owner can have, it speaks HTTP/2 on both sides (`grpc_pass`), terminates
TLS with the service's certificate, and retries a request on the next replica when one refuses the connection
(`grpc_next_upstream error`), so a plush whose replica died is answered by another on its next call without
knowing there were several. HAProxy would do as well; one tested configuration is better than two untested.

What the balancer does and does not do:
- TLS ends at the balancer, with the certificate every paired plush pins (`plush pair add NAME --address
  BALANCER:PORT` hands out its address and that certificate's fingerprint). Replicas listen in plain gRPC on a
  private address (`[server] tls = "off"`), or in TLS when `upstream_tls` (the same certificate, so any replica
  may be dialled directly too).
- Health: open-source nginx has no active checks; a replica that refuses or drops a connection is skipped for
  `fail_timeout`. A replica that is alive but draining (SIGTERM) finishes its turns and then closes its port,
  which nginx sees the same way. The gRPC health service answers `grpc.health.v1.Health/Check` through the
  balancer like any other call, for an outside monitor.
- Streams: a Converse stream lasts one turn (the button held, then the reply), so the read and send timeouts
  are minutes, not nginx's 60 s default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plush.pairing import SERVER_NAME, split_address

UPSTREAM = "plush_replicas"
STREAM_TIMEOUT_S = 300
"""The longest a turn's stream may stay quiet: the button held (at most the recorder's maximum) plus a reply."""


def nginx_site(
    listen: str,
    replicas: Sequence[str],
    certificate: Path,
    key: Path,
    *,
    upstream_tls: bool = False,
    fail_timeout_s: int = 10,
    max_message_mb: float = 4.0,
) -> str:
    """An nginx `upstream` and `server` block (for `/etc/nginx/conf.d/plush.conf`, inside `http { }`).

    `listen` is host:port of the balancer; `replicas` the host:port of each `plush server`.
    """
    split_address(listen)
    if not replicas:
        raise ValueError("the balancer needs at least one replica (host:port)")
    for replica in replicas:
        split_address(replica)
    servers = "\n".join(f"    server {r} max_fails=1 fail_timeout={fail_timeout_s}s;" for r in replicas)
    scheme = "grpcs" if upstream_tls else "grpc"
    upstream_tls_lines = (
        f"        grpc_ssl_trusted_certificate {certificate};\n        grpc_ssl_verify on;\n"
        f"        grpc_ssl_name {SERVER_NAME};\n        grpc_ssl_server_name on;\n"
        if upstream_tls
        else ""
    )
    body_mb = int(max_message_mb) + 1
    return f"""upstream {UPSTREAM} {{
    # Passive health: a replica that refuses or drops a connection is left out for {fail_timeout_s} s.
{servers}
    keepalive 16;
}}

server {{
    listen {listen} ssl http2;
    ssl_certificate {certificate};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size {body_mb}m;
    grpc_read_timeout {STREAM_TIMEOUT_S}s;
    grpc_send_timeout {STREAM_TIMEOUT_S}s;
    client_body_timeout {STREAM_TIMEOUT_S}s;

    location / {{
        grpc_pass {scheme}://{UPSTREAM};
        # A replica that is gone: the call goes to the next one before anything was sent back.
        grpc_next_upstream error timeout;
        grpc_next_upstream_tries 3;
        grpc_set_header X-Real-IP $remote_addr;
{upstream_tls_lines}    }}
}}
"""


def nginx_scratch_conf(folder: Path, site: str) -> str:
    """A whole nginx.conf that runs `site` from a scratch folder as any user (tests, `scripts/cluster`):
    no daemon, its pid, logs and temporary files in `folder`."""
    return (
        f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  fastcgi_temp_path {folder}/fcgi;\n  uwsgi_temp_path {folder}/uwsgi;\n  scgi_temp_path {folder}/scgi;\n"
        f"{site}}}\n"
    )
