"""README.md and docs/ stay true: every relative link and image resolves, and every
`python -m bench ...` command in them names a subcommand that exists and flags that it takes.

The checker reads Markdown as text: fenced code blocks and inline code spans hold the commands,
the prose around them holds the links. Each subcommand's --help is built once, in this process
(`bench.cli.main([sub, "--help"])`), and a `--flag` passes if that help names it. Placeholders
(`<model>`, `HASH...`) are fine; so is `python -m bench --help`. `python -m bench.X` is reported:
the docs name subcommands only. Grids named `bench.<module>:NAME` must import, and record hashes
given to a command must have a record under results/runs/.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300
HEADLINE_WITHIN = 80

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HTML_LINK = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
COMMAND = re.compile(r"\bpython3? -m bench(\.[\w.]+)?(?=\s|$|`)")
END_OF_COMMAND = re.compile(r"\s(?:#|&&|\|\||\||;|>|2>)")
GRID = re.compile(r"^bench(?:\.\w+)*:\w+$")
RECORD_HASH = re.compile(r"^[0-9a-f]{16}$")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def split_code(text: str) -> tuple[str, list[tuple[int, str]]]:
    """(prose, code): the prose with code blanked out (line numbers kept), and each code snippet
    (fenced line or inline span) with the line it starts on."""
    prose, code = [], []
    lines = text.split("\n")
    in_fence = False
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            in_fence = not in_fence
            prose.append("")
            continue
        if in_fence:
            code.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    body = "\n".join(prose)

    def blank(match: re.Match) -> str:
        line = body.count("\n", 0, match.start()) + 1
        code.append((line, match.group(2).replace("\n", " ")))
        return re.sub(r"[^\n]", " ", match.group(0))

    return INLINE_CODE.sub(blank, body), code


def join_continuations(snippets: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Shell lines ending in a backslash, joined with the next one."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in snippets:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
        else:
            joined.append((number, text))
    if pending is not None:
        joined.append(pending)
    return joined


def check_links(path: Path, prose: str, root: Path = ROOT) -> list[str]:
    problems = []
    targets = [(m.start(), m.group(1)) for pattern in (LINK, REF_LINK, HTML_LINK) for m in pattern.finditer(prose)]
    for start, target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL, mailto:, or an anchor in this page
        relative = unquote(target.split("#", 1)[0].split("?", 1)[0])
        resolved = (root / relative.lstrip("/")) if relative.startswith("/") else (path.parent / relative)
        if not resolved.exists():
            line = prose.count("\n", 0, start) + 1
            problems.append(f"{shown(path, root)}:{line}: broken link {target!r} (no such file: {shown(resolved, root)})")
    return problems


def shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


@functools.lru_cache(maxsize=None)
def subcommand_help(sub: str) -> str:
    """What `python -m bench SUB --help` prints (built in this process, once per subcommand)."""
    from bench import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main([sub, "--help"])
        except SystemExit:
            pass
        except Exception as err:  # a module that does not import: every flag of it is then reported
            return f"<help failed: {err}>"
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def grid_exists(name: str) -> bool:
    module, _, attr = name.partition(":")
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def is_placeholder(token: str) -> bool:
    return (token.startswith("<") or token.endswith(">") or token in ("...", "SUBCOMMAND")
            or (token.isupper() and len(token) > 1) or token.startswith("$"))


def command_tokens(text: str) -> list[str]:
    text = END_OF_COMMAND.split(" " + text, maxsplit=1)[0]
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        return text.split()


def check_command(where: str, command: str, root: Path = ROOT) -> list[str]:
    """Problems with one command line starting at 'python -m bench'."""
    from bench.cli import SUBCOMMANDS

    match = COMMAND.match(command)
    if match.group(1):
        return [f"{where}: `python -m bench{match.group(1)}`: name the subcommand (`python -m bench --help` "
                "lists them), not a module"]
    tokens = command_tokens(command[match.end():])
    if not tokens or tokens[0].startswith("-") or is_placeholder(tokens[0]):
        return []
    sub, args = tokens[0], tokens[1:]
    if sub not in SUBCOMMANDS:
        return [f"{where}: `python -m bench {sub}`: no such subcommand (known: {', '.join(SUBCOMMANDS)})"]
    problems = []
    help_text = subcommand_help(sub)
    for token in args:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            flag = token.split("=", 1)[0]
            if not is_placeholder(flag[2:]) and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
                problems.append(f"{where}: `python -m bench {sub} {flag}`: no such flag "
                                f"(see `python -m bench {sub} --help`)")
        elif GRID.match(token) and not grid_exists(token):
            problems.append(f"{where}: `python -m bench {sub} ... {token}`: no such grid")
        elif RECORD_HASH.match(token) and not (root / "results" / "runs" / f"{token}.json").exists():
            problems.append(f"{where}: `python -m bench {sub} ... {token}`: no record results/runs/{token}.json")
    return problems


def check_commands(path: Path, snippets: list[tuple[int, str]], root: Path = ROOT) -> list[str]:
    problems = []
    for number, text in join_continuations(snippets):
        for match in COMMAND.finditer(text):
            problems += check_command(f"{shown(path, root)}:{number}", text[match.start():], root)
    return problems


def check_file(path: Path, root: Path = ROOT) -> list[str]:
    prose, code = split_code(path.read_text())
    return check_links(path, prose, root) + check_commands(path, code, root)


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_and_commands_parse(path):
    problems = check_file(path)
    assert not problems, "\n".join(problems)


def test_checker_reports_a_broken_link_and_a_bogus_flag(tmp_path):
    (tmp_path / "there.md").write_text("# here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "A [good link](there.md#here) and a [broken one](docs/nowhere.md), an ![image](missing.png).\n\n"
        "```bash\n"
        "python -m bench sweep bench.grids:primitives_ci --workers 2   # fine\n"
        "python -m bench sweep bench.grids:primitives_ci \\\n"
        "    --no-such-flag 3\n"
        "python -m bench tables --only headline\n"
        "```\n\n"
        "Also `python -m bench frobnicate --x 1`, `python -m bench.grids` and `python -m bench run --model <model>`.\n"
    )
    problems = check_file(page, root=tmp_path)
    assert any("broken link 'docs/nowhere.md'" in p and p.startswith("page.md:1:") for p in problems), problems
    assert any("broken link 'missing.png'" in p for p in problems), problems
    assert any("sweep --no-such-flag" in p and p.startswith("page.md:5:") for p in problems), problems
    assert any("frobnicate`: no such subcommand" in p for p in problems), problems
    assert any("`python -m bench.grids`" in p for p in problems), problems
    assert len(problems) == 5, problems  # the good link, the good commands and the placeholder pass


def test_checker_reports_a_missing_grid_and_an_unknown_record(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`python -m bench sweep bench.grids:no_such_grid_ci` and\n"
                    "`python -m bench step-model 0123456789abcdef`\n")
    problems = check_file(page, root=tmp_path)
    assert any("no such grid" in p for p in problems) and any("no record" in p for p in problems), problems


def test_readme_is_short_and_leads_with_its_headline():
    lines = (ROOT / "README.md").read_text().split("\n")
    assert len(lines) - (lines[-1] == "") <= README_MAX_LINES
    table_rows = [i for i, line in enumerate(lines[:HEADLINE_WITHIN], 1) if line.startswith("|")]
    assert len(table_rows) >= 5, f"the headline table should start within the first {HEADLINE_WITHIN} lines"


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    linked = {(ROOT / "docs" / t.split("#")[0]).resolve() for t in LINK.findall(split_code(index)[0])}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md") if p.name != "index.md"}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages - linked)
    assert not missing, f"docs/index.md does not link: {missing}"
