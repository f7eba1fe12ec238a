"""`plush cluster`: the pieces for running several `plush server` replicas behind one gRPC load balancer.

`plush cluster nginx` prints the nginx site (upstream and server blocks) for the replicas, with the TLS
certificate of this server's configuration: the one every paired plush pins, so all replicas and the balancer
present the same certificate. See docs/deploy/cluster.md for the whole layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from plush.cli.console import ConfigOption, out
from plush.config import load_config
from plush.logs import setup_logging
from plush.pairing import split_address

cluster_app = typer.Typer(help="Run several server replicas behind a gRPC load balancer.", no_args_is_help=True)


@cluster_app.command("nginx")
def nginx(
    replica: Annotated[
        list[str], typer.Option("--replica", "-r", help="host:port of a `plush server` replica (repeat it).")
    ],
    listen: Annotated[str, typer.Option(help="host:port the balancer listens on (the address plushes dial).")] = (
        "0.0.0.0:50051"
    ),
    upstream_tls: Annotated[
        bool, typer.Option(help="Replicas listen in TLS too (with the same certificate), not plain gRPC.")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it here instead of printing.")] = None,
    config: ConfigOption = None,
) -> None:
    """Print the nginx site that balances plushes over the replicas (for /etc/nginx/conf.d/plush.conf).

    The certificate is this server's (made now if it does not exist yet), so pair plushes with
    `plush pair add NAME --address BALANCER:PORT` and they pin the certificate the balancer presents.
    """
    from plush.server.balancer import nginx_site
    from plush.server.certificate import certificate_paths, load_or_create

    cfg = load_config(config)
    setup_logging(cfg.log_level)
    for address in (listen, *replica):
        split_address(address)  # a clear error for "host" without a port, before anything is made
    load_or_create(cfg.server)
    certificate, key = certificate_paths(cfg.server)
    site = nginx_site(
        listen, replica, certificate, key, upstream_tls=upstream_tls, max_message_mb=cfg.server.max_message_mb
    )
    if output is None:
        out.print(site, markup=False, highlight=False, end="")
        return
    output.write_text(site, encoding="utf-8")
    out.print(f"wrote {output} ({len(replica)} replicas behind {listen})", highlight=False)


FolderOption = Annotated[
    Path | None, typer.Option("--folder", help="The cluster's scratch folder (default: /tmp/plush-cluster-UID).")
]


@cluster_app.command("up")
def up(  # noqa: PLR0917 - a command's options
    replicas: Annotated[int, typer.Option(min=1, max=16, help="How many `plush server` replicas.")] = 3,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The balancer's port; replicas take PORT+11 on. 0: free ports.")
    ] = 50051,
    sqlite: Annotated[bool, typer.Option(help="One SQLite file for the replicas instead of PostgreSQL.")] = False,
    name: Annotated[str, typer.Option(help="The name of the plush paired through the balancer.")] = "plush",
    folder: FolderOption = None,
    config: ConfigOption = None,
) -> None:
    """Start a local cluster on 127.0.0.1 to try (what scripts/cluster runs): PostgreSQL and Redis from Debian's
    packages in a scratch folder, the replicas and nginx as their balancer; a plush paired through it. Runs until
    Ctrl+C or `plush cluster down`, then stops everything it started.

    --config is the replicas' base configuration (models, brain, persona; default: the file `plush` finds, as
    every command does); the cluster sets their [server] address, TLS (off: it ends at nginx), database, Redis and
    data folder over it.
    """
    from plush.cli.local_cluster import ClusterPlan, default_folder
    from plush.cli.local_cluster import up as run_cluster
    from plush.cli.models import models_download
    from plush.config import find_config_file

    models_download(side="server", config=config)  # once here, not by each replica at its start
    base = find_config_file(config)
    plan = ClusterPlan(
        folder=folder or default_folder(), replicas=replicas, port=port, base_config=base, sqlite=sqlite,
        plush_name=name,
    )  # fmt: skip
    run_cluster(plan)


@cluster_app.command("down")
def down(folder: FolderOption = None) -> None:
    """Stop the local cluster `plush cluster up` started (from another terminal), and whatever it left running."""
    from plush.cli.local_cluster import default_folder
    from plush.cli.local_cluster import down as stop_cluster

    where = folder or default_folder()
    stopped = stop_cluster(where)
    out.print(f"stopped the cluster in {where}" if stopped or not where.exists() else "no cluster was running")
