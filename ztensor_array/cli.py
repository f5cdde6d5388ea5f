"""The ``ztensor`` command: a thin click layer over convert/ and ops/.

It parses arguments, calls the library and prints. Every command prints one line and exits
non-zero on bad input (set ZTENSOR_DEBUG=1 for the traceback), writes its output atomically,
refuses to overwrite without ``--force``, and shows rich progress bars on stderr only when
stderr is a terminal and ``-q`` is not given. Options shared by several commands come from one
factory each, so ``--checksum``, ``-c``/``-l`` and ``--force`` mean the same everywhere.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bar
from rich.table import Table
from rich.text import Text

from . import convert as converters
from .codecs.policy import CHECKSUMS, DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from .convert import FORMATS
from .errors import ZTensorError, counted
from .ops import inspect as inspection
from .ops import merge as merging
from .ops import migrate as migration
from .ops import repair as repairing
from .ops import rewrite as rewriting
from .ops import verify as verification
from .ops.base import KEEP, Progress, compression

LARGE = 50  # objects above which `info` prints a summary instead of one row per object


# --------------------------------------------------------------------------- plumbing

# What file content must not bring to a terminal: C0/C1 controls (escape sequences, line
# breaks that forge output lines), line separators and bidirectional overrides
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def printable(text: Any) -> str:
    """``text`` with every control character shown as its escape (``\\x1b``), as Python's
    ``ascii()`` spells it: names and attributes come from files, not from the user."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], str(text))


def _echo(text: str, *, err: bool = False) -> None:
    """One line to stdout or stderr, control characters escaped."""
    click.echo(printable(text), err=err)


def _text(value: Any, style: str = "") -> Text:
    """File content for rich output: never parsed as markup, controls escaped."""
    return Text(printable(value), style=style)


def _stderr():
    return Console(stderr=True)


class RichProgress(Progress):
    """A rich progress bar on stderr, or nothing when quiet or stderr is not a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar = None
        self._task = None

    def __enter__(self) -> RichProgress:
        if self.enabled:
            self._bar = Bar(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=_stderr(),
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, description: str, total: int | None) -> None:
        if self._bar is not None:  # the description column renders markup
            self._task = self._bar.add_task(escape(printable(description)), total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(_text(text))


class Group(click.Group):
    """Turns every error into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # the last line of defence: never a traceback
            if os.environ.get("ZTENSOR_DEBUG"):
                raise
            _echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(1)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ZTensorError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def quiet_option(f: Callable) -> Callable:
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(f)


def force_option(f: Callable) -> Callable:
    return click.option("--force", is_flag=True, help="Overwrite an existing output.")(f)


def output_option(f: Callable) -> Callable:
    return click.option(
        "-o",
        "--output",
        "out",
        required=True,
        type=click.Path(dir_okay=False),
        help="The .zt file to write.",
    )(f)


def level_option(default: int | None, help: str) -> Callable:
    """``-l/--level``: a zstd level in the policy's range."""
    return click.option(
        "-l",
        "--level",
        type=click.IntRange(MIN_LEVEL, MAX_LEVEL),
        default=default,
        show_default=default is not None,
        help=help,
    )


def compress_options(f: Callable) -> Callable:
    """``-c`` (zstd at the default level) and ``-l`` (a level, which implies ``-c``); the
    library's ``compression(compress, level)`` turns the pair into one level."""
    f = level_option(None, f"zstd level {MIN_LEVEL}..{MAX_LEVEL} (implies -c).")(f)
    return click.option(
        "-c",
        "--compress",
        is_flag=True,
        help=f"Compress with zstd (level {DEFAULT_LEVEL} unless -l).",
    )(f)


def checksum_option(*, keep: bool) -> Callable:
    """``--checksum``: one vocabulary everywhere. ``keep`` is offered (and the default) only
    where the input has digests to keep; elsewhere the default is ``none``."""
    meanings = f"none: no digests; {', '.join(CHECKSUMS)}: that digest on every component."
    if keep:
        choices = (KEEP, "none", *CHECKSUMS)
        meanings = f"{KEEP}: an object that had a digest gets one of the same algorithm; {meanings}"
    else:
        choices = ("none", *CHECKSUMS)
    return click.option(
        "--checksum",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=meanings,
    )


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        _echo(text)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ztensor-array", prog_name="ztensor")
def cli() -> None:
    """Inspect, convert and maintain zTensor (.zt) files."""


# --------------------------------------------------------------------------- info / verify


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option("--full", is_flag=True, help="List every object even in large files.")
def info(file: str, as_json: bool, full: bool) -> None:
    """Show a file's version, global attributes and objects (v1.x and legacy v0.1)."""

    d = inspection.describe(file)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return

    console = Console(width=None if sys.stdout.isatty() else 240)
    objs = d["objects"]
    stored, raw = inspection.totals(objs)
    console.print(
        _text(d["path"], "bold"),
        _text(
            f": zTensor {d['version']}, {counted(len(objs), 'object')}, "
            f"{_size(d['file_bytes'])} on disk ({_size(stored)} stored, {_size(raw)} raw)"
        ),
        sep="",
    )
    if d["attributes"]:
        console.print("global attributes:")
        for k, v in d["attributes"].items():
            console.print(_text(f"  {k} = {_short(v)}"))
    if len(objs) > LARGE and not full:
        _summary(console, objs)
        return
    table = Table(show_edge=False)
    for col in (
        "name",
        "format",
        "dtype",
        "shape",
        "encoding",
        "stored",
        "raw",
        "digest",
        "attributes",
    ):
        table.add_column(col, overflow="fold")
    for o in objs:
        cells = (
            o["name"],
            o["format"],
            o["dtype"],
            o["shape"],
            o["encoding"],
            _size(o["stored_bytes"]),
            _size(o["raw_bytes"]),
            o["digest"] or "",
            _short(o["attributes"], 60) if o["attributes"] else "",
        )
        table.add_row(*map(_text, cells))
    console.print(table)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(console, objs: list[dict]) -> None:
    table = Table(show_edge=False, title=f"{counted(len(objs), 'object')} (use --full for each)")
    for col in ("format", "dtype", "encoding", "objects", "elements", "stored", "raw"):
        table.add_column(col)
    for row in inspection.summarize(objs):
        cells = (
            row["format"],
            row["dtype"],
            row["encoding"],
            row["objects"],
            f"{row['elements']:,}",
            _size(row["stored_bytes"]),
            _size(row["raw_bytes"]),
        )
        table.add_row(*map(_text, cells))
    console.print(table)
    largest = inspection.largest(objs)
    console.print(
        _text(
            "largest: "
            + ", ".join(f"{o['name']} {o['shape']} {_size(o['stored_bytes'])}" for o in largest)
        )
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--deep", is_flag=True, help="Also decode every component and object.")
@quiet_option
def verify(file: str, deep: bool, quiet: bool) -> None:
    """Check structure and every digest; exit 0 when clean, 1 listing each problem."""

    with RichProgress(quiet) as bar:
        problems = verification.verify(file, deep=deep, progress=bar)
    if problems:
        for p in problems:
            _echo(f"{file}: {p}", err=True)
        _echo(f"{file}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    _say(quiet, f"{file}: OK{' (deep)' if deep else ''}")


# --------------------------------------------------------------------------- convert


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@output_option
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["auto", *FORMATS]),
    default="auto",
    show_default=True,
    help="Input format (auto: from content, then extension).",
)
@compress_options
@checksum_option(keep=False)
@click.option(
    "--dequantize", is_flag=True, help="GGUF: store quantized tensors dequantized to float32."
)
@click.option(
    "--prefix-with-filename",
    is_flag=True,
    help="Prefix tensor names with their file's stem (for colliding names).",
)
@click.option(
    "--combine",
    type=click.Choice(["by_coords", "nested"]),
    default=None,
    help="Datasets: combine the inputs into one dataset as xarray.open_mfdataset does "
    "(attributes that differ between them are left out, and named).",
)
@click.option(
    "--concat-dim",
    default=None,
    help="With --combine nested: the dimension to concatenate along.",
)
@click.option(
    "--delete-original",
    is_flag=True,
    help="Delete the inputs once the output is written and verified.",
)
@force_option
@quiet_option
def convert(
    inputs,
    out,
    fmt,
    compress,
    level,
    checksum,
    dequantize,
    prefix_with_filename,
    combine,
    concat_dim,
    delete_original,
    force,
    quiet,
) -> None:
    """Convert safetensors, GGUF, PyTorch pickles or xarray datasets into one .zt file.

    Datasets keep their groups, and their compression and chunking unless -c/-l is given."""

    with RichProgress(quiet) as bar:
        report = converters.convert(
            list(inputs),
            out,
            fmt=fmt,
            compress=compression(compress, level) if compress or level else None,
            checksum=checksum,
            dequantize=dequantize,
            prefix_with_filename=prefix_with_filename,
            combine=combine,
            concat_dim=concat_dim,
            overwrite=force,
            delete_original=delete_original,
            progress=bar,
        )
    for note in report.notes:
        _echo(f"note: {note}", err=True)
    _say(
        quiet,
        f"{out}: {counted(report.tensors, 'tensor')}, "
        f"{_size(report.bytes_in)} -> {_size(report.bytes_out)}",
    )
    for path in report.deleted:
        _say(quiet, f"deleted {path}")


# --------------------------------------------------------------------------- rewriting


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@output_option
@level_option(DEFAULT_LEVEL, f"zstd level {MIN_LEVEL}..{MAX_LEVEL}.")
@checksum_option(keep=True)
@force_option
@quiet_option
def compress(src, out, level, checksum, force, quiet) -> None:
    """Rewrite a file with every component zstd-compressed (all objects kept)."""
    _rewrite(src, out, level, checksum, force, quiet)


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@output_option
@checksum_option(keep=True)
@force_option
@quiet_option
def decompress(src, out, checksum, force, quiet) -> None:
    """Rewrite a file with every component stored raw (all objects kept)."""
    _rewrite(src, out, False, checksum, force, quiet)


def _rewrite(src, out, compress, checksum, force, quiet) -> None:
    """compress/decompress: one rewrite of every object with new encodings."""

    with RichProgress(quiet) as bar:
        report = rewriting.rewrite(
            src, out, compress=compress, checksum=checksum, overwrite=force, progress=bar
        )
    _say(
        quiet,
        f"{out}: {counted(report.tensors, 'object')}, "
        f"{_size(report.bytes_in)} -> {_size(report.bytes_out)}",
    )


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_option
@click.option(
    "--prefix-with-filename",
    is_flag=True,
    help="Prefix object names with their file's stem (for colliding names).",
)
@force_option
@quiet_option
def merge(inputs, out, prefix_with_filename, force, quiet) -> None:
    """Merge .zt files (v1.x and legacy v0.1) into one, keeping every object as stored
    (v1 blobs and digests are copied verbatim)."""

    with RichProgress(quiet) as bar:
        report = merging.merge(
            list(inputs),
            out,
            prefix_with_filename=prefix_with_filename,
            overwrite=force,
            progress=bar,
        )
    _say(quiet, f"{out}: {counted(report.tensors, 'object')} from {counted(len(inputs), 'file')}")


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@output_option
@compress_options
@checksum_option(keep=True)
@force_option
@quiet_option
def migrate(src, out, compress, level, checksum, force, quiet) -> None:
    """Convert a legacy v0.1 file to v1.1 (its legacy checksums are verified first)."""

    with RichProgress(quiet) as bar:
        report = migration.migrate(
            src,
            out,
            compress=compress,
            level=level,
            checksum=checksum,
            overwrite=force,
            progress=bar,
        )
    _say(
        quiet,
        f"{out}: {counted(report.tensors, 'tensor')} migrated to v1.1, "
        f"{_size(report.bytes_in)} -> {_size(report.bytes_out)}",
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the repaired file here instead of repairing in place.",
)
@click.option(
    "--abandon",
    is_flag=True,
    help="Undo a parallel append whose processes died (refused otherwise while it runs).",
)
@force_option
@quiet_option
def repair(file, out, abandon, force, quiet) -> None:
    """Cut a torn tail back to the last complete state and report what was cut."""

    _echo(str(repairing.repair(file, out, overwrite=force, abandon=abandon)))


# --------------------------------------------------------------------------- hub


@cli.command("download-hf")
@click.argument("repo")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Folder to write the .zt files into.",
)
@click.option("--revision", default=None, help="Branch, tag or commit.")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN / saved login).")
@compress_options
@checksum_option(keep=False)
@click.option("--single-file", is_flag=True, help="Merge all shards into one .zt file.")
@force_option
@quiet_option
def download_hf(
    repo, out, revision, token, compress, level, checksum, single_file, force, quiet
) -> None:
    """Download a Hugging Face repo's safetensors and convert them to .zt.

    Sub-folders (diffusers' unet/, vae/...) keep their layout under the output. With
    HF_HUB_OFFLINE=1 the files come from the local Hugging Face cache only.
    """
    from .convert.hf import download

    with RichProgress(quiet) as bar:
        written = download(
            repo,
            out,
            revision=revision,
            token=token,
            compress=compression(compress, level),
            checksum=checksum,
            single_file=single_file,
            overwrite=force,
            progress=bar,
            quiet=quiet or not bar.enabled,
        )
    for path in written:
        _say(quiet, path)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; usage errors too are one line on stderr."""
    try:
        code = cli.main(args=argv, prog_name="ztensor", standalone_mode=False)
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
