"""``dispatch preview``: one message to look at (HTML, .eml, text), pictures and a PDF for
sign-off; and ``dispatch init``: a newsletter folder to start from."""

from __future__ import annotations

import tempfile
import webbrowser
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from dispatch.cli.common import (
    ArticleArg,
    AttachOpt,
    DebugOpt,
    EncodingOpt,
    EnvFileOpt,
    SubjectOpt,
    SubscribersOpt,
    TemplateOpt,
    app,
    command,
    inputs,
    load_settings,
    reporting,
)
from dispatch.errors import InputError


@command(app, "preview", "Render one message to look at, as HTML, PNG or PDF.")
def preview(
    article: ArticleArg,
    subscriber: Annotated[
        str, typer.Option("--subscriber", metavar="ADDRESS", help="Render for the list's row of ADDRESS.")
    ] = "",
    subscribers: SubscribersOpt = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="FILE", help="HTML file to write (.eml and .txt go beside it).")
    ] = Path("preview.html"),
    open_browser: Annotated[bool, typer.Option("--open", help="Open the preview in a browser.")] = False,
    png: Annotated[
        Path | None,
        typer.Option("--png", metavar="DIR", help="Also write desktop.png, phone.png and dark.png into DIR."),
    ] = None,
    pdf: Annotated[
        Path | None, typer.Option("--pdf", metavar="FILE", help="Also write a one-file PDF proof to FILE.")
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive", metavar="DIR", help="Also write the web version (no personal data) into DIR."
        ),
    ] = None,
    subject: SubjectOpt = "",
    template: TemplateOpt = None,
    attach: AttachOpt = None,
    env_file: EnvFileOpt = None,
    encoding: EncodingOpt = "utf-8-sig",
    debug: DebugOpt = False,
) -> None:
    """Render ARTICLE for one subscriber to an HTML file (plus .eml and .txt); optionally open it
    or make pictures and a PDF of it for sign-off. Needs no sending settings: without them,
    sample values are used and marked as such."""
    from dispatch.compose.issue import named_recipients, plan_issue, recipients
    from dispatch.proof.dryrun import (
        proof_files,
        require_proofs_extra,
        sample_list,
        with_samples,
        write_archive,
        write_message,
    )

    with reporting(debug):
        if png is not None or pdf is not None:
            require_proofs_extra()  # before any work: say which extra to install
        settings, samples = with_samples(load_settings(env_file))
        for name in samples:
            typer.echo(f"dispatch: note: {name} is not set; the preview uses a sample value", err=True)
        listed = subscribers or settings.subscribers
        with ExitStack() as stack:
            path = listed or stack.enter_context(sample_list())
            issue = plan_issue(
                article, path, settings, subject=subject, template_dir=template, encoding=encoding,
                attach=attach or (),
            )  # fmt: skip
            chosen = named_recipients(issue, [subscriber]) if subscriber else list(recipients(issue, 1))
            if not chosen:
                raise InputError(f"{path}: has no valid subscriber to preview with")
            if chosen[0].line == 0 and listed:
                typer.echo(
                    f"dispatch: note: {chosen[0].email} is not on {path}; its columns are empty", err=True
                )
            read = inputs(article, listed, env_file, template, *(attach or ()))
            page, eml, text = write_message(issue, chosen[0], out.parent.resolve() / out.name, inputs=read)
            typer.echo(f"Preview for {chosen[0].email}: {page}\n  also {eml} and {text}")
            if archive is not None:
                web = plan_issue(
                    article, path, settings, subject=subject, template_dir=template, encoding=encoding,
                    web_version=True,
                )  # fmt: skip
                typer.echo(f"  web version: {write_archive(web, archive.resolve(), inputs=read)}")
            if png is not None or pdf is not None:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dispatch-proof-")))
                for made in proof_files(issue, chosen[0], page, scratch, png=png, pdf=pdf, inputs=read):
                    typer.echo(f"  proof: {made}")
        if open_browser and not webbrowser.open(page.as_uri()):
            typer.echo(f"dispatch: no browser could be opened here; open {page} yourself", err=True)


@command(app, "init", "Start a newsletter folder with examples.")
def init(
    folder: Annotated[
        Path | None, typer.Argument(metavar="DIR", help="The folder to create (default: this one).")
    ] = None,
    templates: Annotated[
        bool, typer.Option("--templates", help="Also copy the built-in templates into DIR/templates.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Write .env (every setting explained, a fresh unsubscribe secret, readable by you only),
    subscribers.csv and article.md into DIR; never overwrites. A dry run works at once."""
    from dispatch.scaffold import scaffold

    with reporting(debug):
        typer.echo(scaffold(folder or Path(), templates=templates).report())
