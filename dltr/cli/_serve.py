"""``dltr predict`` (one patient, one registered head) and ``dltr serve`` (the HTTP scoring service)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import typer

from dltr.cli._common import config_from
from dltr.core.exceptions import DltrError
from dltr.core.vocabulary import PRIMARY_HEAD


class ServeConfigError(DltrError, ValueError):
    """The service was asked to start in an unsafe or impossible configuration."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def serve_token(host: str, token_env: str | None) -> str | None:
    """The bearer token from ``token_env``; refuses a non-loopback host without one."""
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        raise ServeConfigError(f"--token-env {token_env}: the variable is unset or empty; export the token first")
    if token is None and not is_loopback(host):
        raise ServeConfigError(f"--host {host}: binding beyond loopback needs a bearer token; give --token-env VAR "
                               "with the token in $VAR (or bind to 127.0.0.1)")
    return token


def register(app: typer.Typer) -> None:
    """Add ``predict`` and ``serve``."""

    @app.command("predict")
    def predict_cmd(
        patient: Path = typer.Argument(..., help="One-patient cohort folder (manifest.csv, clinical.csv, images)."),
        store: Path = typer.Option(..., "--store", help="Store folder holding the registered heads."),
        head: str = typer.Option(None, "--head", help="Registered head, NAME or NAME@VERSION (default dltr_mlp)."),
        record: bool = typer.Option(False, "--record", help="Append the patient's features to scoring_records."),
        key_env: str = typer.Option(None, "--pseudonym-key-env",
                                    help="With --record on a pseudonymised store: the variable holding ingest's "
                                         "key (the record gets the same pseudonym, never the manifest's id)."),
        as_json: bool = typer.Option(False, "--json", help="Print the prediction as JSON."),
    ) -> None:
        """Score one patient with the registered preprocessing, encoder and head."""
        from dltr.cli._common import pseudonym_key
        from dltr.scoring import predict_patient

        pred = predict_patient(store, patient, head=head or PRIMARY_HEAD, record=record,
                               pseudonym_key=pseudonym_key(key_env))
        if as_json:
            from dltr.cli._common import echo_json

            echo_json(pred.to_dict())
            return
        ci = (f"95 % CI {pred.interval[0]:.3f}-{pred.interval[1]:.3f}" if pred.interval
              else "no interval (the head records no uncertainty)")
        lin = pred.lineage
        typer.echo(f"probability of objective response: {pred.probability:.4f} ({ci})")
        typer.echo(f"risk group: {pred.risk_group} (cutoff {pred.cutoff:.4f}, Youden on the training split)")
        pfs = pred.pfs.get("training_median_pfs_days")
        typer.echo(f"PFS group: {pred.pfs_group or 'n/a'}"
                   + (f" (training median PFS {pfs:.0f} days)" if pfs is not None else ""))
        typer.echo(f"lineage: head {lin['head']}@{lin['head_version']}, feature set "
                   f"{lin['feature_set']}@{lin['feature_set_version']}, encoder {lin['encoder_card_hash']}")
        if pred.record_id:
            typer.echo(f"recorded as {pred.record_id} in scoring_records")

    @app.command("serve")
    def serve_cmd(
        store: Path = typer.Option(..., "--store", help="Store folder holding the registered heads."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless a token is set)."),
        port: int = typer.Option(8000, "--port", help="TCP port."),
        token_env: str = typer.Option(None, "--token-env", help="Environment variable holding the bearer token."),
        head: str = typer.Option(None, "--head", help="Registered head to serve, NAME or NAME@VERSION (default "
                                  "dltr_mlp)."),
        max_request_mb: float = typer.Option(None, "--max-request-mb", help="Largest request body accepted "
                                             "(default 256 MB)."),
    ) -> None:
        """Serve POST /predict, GET /models, GET /health (OpenAPI at /docs and /openapi.json)."""
        import uvicorn

        from dltr.scoring import ServeLimits, create_app

        token = serve_token(host, token_env)
        api = create_app(store, head=head or PRIMARY_HEAD, token=token,
                         limits=config_from(ServeLimits(), max_request_mb=max_request_mb))
        uvicorn.run(api, host=host, port=port, access_log=False, log_level="info")
