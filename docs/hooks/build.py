"""MkDocs hooks: the pages that are generated from the code at build time, and the checks that
keep the site true to it (a failed check is a warning, so `mkdocs build --strict` fails).

- `<!-- cli-reference -->` (cli.md): the `--help` of every `errorforcing` command, rendered by
  the typer app itself.
- `<!-- modules: PACKAGE -->` (architecture.md): a table of the subpackage's modules with the
  first line of each module docstring.
- `<!-- paper-modules -->` (api/reproductions.md): the API of every paper module of
  `errorforcing.reproductions`.
- `<!-- store-schema -->` (store.md): the tables and columns of a store created by the current
  code (`RunStore` on an empty directory, migrations included); every column must be described
  in the page's column tables.
- After the build: every name in each subpackage's `__all__` has an anchor in the API reference.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import logging
import os
import re
import sqlite3
import tempfile
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.errorforcing")

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "errorforcing"
API_PACKAGES = ("tasks", "models", "forcing", "rules", "training", "analysis", "experiments", "reproductions",
                "store", "plotting")


# ---------------------------------------------------------------- CLI reference
def _commands(group, path=()):
    """(command path, click command) for the app and every subcommand, depth first."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def cli_reference() -> str:
    os.environ["COLUMNS"] = "100"  # click wraps help text to the terminal width
    import typer

    from errorforcing.cli import app

    root = typer.main.get_command(app)
    parts = []
    for path, cmd in _commands(root):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                root.main(args=[*path, "--help"], prog_name="errorforcing", standalone_mode=False)
            except SystemExit:
                pass
        title = " ".join(("errorforcing",) + path)
        level = "#" * min(2 + len(path), 4) if path else "##"
        parts.append(f"{level} `{title}`\n\n```text\n{buf.getvalue().rstrip()}\n```\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- module tables
def _first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def module_table(package: str) -> str:
    folder = SRC / package if package != "errorforcing" else SRC
    rows = ["| file | what it is |", "|---|---|"]
    for path in sorted(folder.glob("*.py")):
        rel = path.relative_to(ROOT)
        rows.append(f"| `{rel}` | {_first_line(path).replace('|', '&#124;')} |")
    return "\n".join(rows)


# ---------------------------------------------------------------- store schema
def store_tables() -> dict[str, list[tuple[str, str, bool]]]:
    """{table: [(column, type, not null)]} of a store the current code creates."""
    from errorforcing.store import RunStore

    with tempfile.TemporaryDirectory() as d:
        store = RunStore(d)
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
            return {t: [(r[1], r[2], bool(r[3])) for r in db.execute(f"PRAGMA table_info({t})")] for t in names}


def store_schema(tables) -> str:
    parts = []
    for table, columns in tables.items():
        lines = [f"    {name} {sql_type}{' NOT NULL' if not_null else ''}" for name, sql_type, not_null in columns]
        parts.append(f"```sql\n-- table {table}\n" + ",\n".join(lines).replace("    ", "  ") + "\n```")
    return "\n\n".join(parts)


def check_store_page(markdown: str, tables) -> None:
    for table, columns in tables.items():
        section = re.search(rf"^### `{table}`\n(.*?)(?=^### |\Z)", markdown, re.S | re.M)
        if section is None:
            log.warning(f"store.md: table {table!r} of the current store has no '### `{table}`' section")
            continue
        described = set(re.findall(r"^\| `(\w+)` \|", section.group(1), re.M))
        for name, _, _ in columns:
            if name not in described:
                log.warning(f"store.md: column {table}.{name} of the current store is not described")
        for name in described - {c[0] for c in columns}:
            log.warning(f"store.md: describes column {table}.{name}, which the current store does not have")


# ---------------------------------------------------------------- hooks
def on_page_markdown(markdown, page, config, files):
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    for package in re.findall(r"<!-- modules: ([\w.]+) -->", markdown):
        markdown = markdown.replace(f"<!-- modules: {package} -->", module_table(package))
    if "<!-- paper-modules -->" in markdown:
        names = sorted(p.stem for p in (SRC / "reproductions").glob("*.py") if not p.stem.startswith("_"))
        blocks = [f"::: errorforcing.reproductions.{n}\n    options:\n      heading_level: 3\n" for n in names]
        markdown = markdown.replace("<!-- paper-modules -->", "\n".join(blocks))
    if "<!-- store-schema -->" in markdown:
        tables = store_tables()
        check_store_page(markdown, tables)
        markdown = markdown.replace("<!-- store-schema -->", store_schema(tables))
    return markdown


def on_post_build(config):
    site = Path(config["site_dir"])
    for package in API_PACKAGES:
        page = site / "api" / package / "index.html"
        if not page.exists():
            log.warning(f"API reference: no page for errorforcing.{package} ({page})")
            continue
        ids = set(re.findall(r'id="(errorforcing\.[\w.]+)"', page.read_text()))
        module = importlib.import_module(f"errorforcing.{package}")
        for name in module.__all__:
            if f"errorforcing.{package}.{name}" not in ids:
                log.warning(f"API reference: errorforcing.{package}.{name} is public (in __all__) but not documented")
