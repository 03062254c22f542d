"""``dispatch dkim keygen``: a DKIM signing key and the DNS record to publish."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dispatch.cli.common import (
    DebugOpt,
    command,
    reporting,
    sub_app,
)
from dispatch.errors import InputError

if TYPE_CHECKING:
    pass


# --- DKIM -----------------------------------------------------------------------------------

dkim_app = sub_app("dkim", "DKIM signing keys.")


@command(dkim_app, "keygen", "Make a DKIM key and print its DNS record.")
def dkim_keygen(
    selector: Annotated[str, typer.Option("--selector", metavar="NAME", help="The selector, like s2026.")],
    domain: Annotated[
        str, typer.Option("--domain", metavar="DOMAIN", help="The signing domain (the From domain).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Key file to write (default: dkim-SELECTOR.pem)."),
    ] = None,
    algorithm: Annotated[
        str, typer.Option("--algorithm", metavar="NAME", help="rsa (2048 bits) or ed25519.")
    ] = "rsa",
    debug: DebugOpt = False,
) -> None:
    """Write a new private key (0600, never over an existing file) and print the TXT record to
    publish, then the settings that use it."""
    from dispatch.compose.dkimkeys import generate_key

    with reporting(debug):
        if algorithm not in ("rsa", "ed25519"):
            raise InputError("--algorithm must be rsa or ed25519")
        path = out or Path(f"dkim-{selector}.pem")
        record = generate_key(
            path, selector=selector, domain=domain, algorithm="rsa" if algorithm == "rsa" else "ed25519"
        )
        typer.echo(f"Wrote the private key to {path} (readable by you only; keep it secret).")
        typer.echo(f"\nPublish this TXT record in DNS:\n\n{record.zone}\n")
        settings = (f"DISPATCH_DKIM_KEY_FILE={path.resolve()}", f"DISPATCH_DKIM_SELECTOR={selector}",
                    f"DISPATCH_DKIM_DOMAIN={domain.lower()}")  # fmt: skip
        typer.echo("Then set:\n" + "\n".join(f"  {line}" for line in settings))
        if algorithm == "ed25519":  # or as a second signature, beside an RSA key that every receiver checks
            second = (
                f"DISPATCH_DKIM_ED25519_KEY_FILE={path.resolve()}",
                f"DISPATCH_DKIM_ED25519_SELECTOR={selector}",
            )
            typer.echo(
                "\nOr, for a second signature beside your RSA key (some receivers still fail Ed25519 alone;\n"
                "Amazon SES refuses two signatures), keep the RSA key's three settings and set:\n"
                + "\n".join(f"  {line}" for line in second)
            )
