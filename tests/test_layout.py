"""The package's layout follows the data flow: each wing imports only what comes before it."""

from __future__ import annotations

import ast
from pathlib import Path

import llmvariance

PACKAGE = Path(llmvariance.__file__).parent


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(absolute module imported, name of the enclosing function or None) for every import."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    package = parts if parts[-1] == "__init__" else parts[:-1]
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                    names = ([target] if child.module
                             else [f"{target}.{a.name}" for a in child.names])
                else:
                    names = [child.module or ""]
                found.extend((name, function) for name in names)
            elif isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), None)
    return found


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _wing(name: str) -> list[Path]:
    return sorted((PACKAGE / name).rglob("*.py"))


def test_the_sending_wing_never_imports_analysis_files_or_experiments() -> None:
    later = ("llmvariance._analysis", "llmvariance._runs", "llmvariance._render",
             "llmvariance._sampler", "llmvariance._suite", "llmvariance._experiment",
             "llmvariance._matrix", "llmvariance._cli")
    offending = [(p.name, module) for p in _wing("_client") for module, _ in _imports(p)
                 if _under(module, later)]
    assert offending == []


def test_analysis_imports_figures_only_lazily_from_the_two_plot_methods() -> None:
    uses = [(p.relative_to(PACKAGE).as_posix(), function)
            for wing in ("_analysis", "_runs") for p in _wing(wing)
            for module, function in _imports(p) if _under(module, ("llmvariance._render",))]
    assert sorted(uses) == [("_analysis/display.py", "_repr_html_"),
                            ("_analysis/report.py", "plot"), ("_analysis/tree/model.py", "plot")]


def test_analysis_never_opens_a_socket_or_reads_the_pool() -> None:
    sending = ("llmvariance._client", "aiohttp", "socket", "asyncio", "anyio")
    offending = [(p.name, module) for p in _wing("_analysis") for module, _ in _imports(p)
                 if _under(module, sending)]
    assert offending == []


def test_no_private_module_is_left_at_the_top_that_belongs_to_a_wing() -> None:
    top = {p.stem for p in PACKAGE.glob("_*.py")}
    assert top == {"__init__", "__main__", "_check", "_demo", "_errors", "_experiment",
                   "_kept", "_loop", "_matrix",
                   "_progress", "_request", "_sample", "_sampler", "_stream", "_suite",
                   "_version",
                   "_entries",
                   "_conditions", "_speed"}  # experiments over the pool, like _experiment


def _layout_table() -> list[str]:
    readme = (PACKAGE.parent.parent / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    entries: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            entries += [e for e in first.split("`")[1::2]]
    return entries


def test_the_readme_layout_table_names_every_module_and_nothing_else() -> None:
    entries = _layout_table()
    missing_on_disk = [e for e in entries if not (PACKAGE / e).exists()]
    assert missing_on_disk == []
    modules = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if p.name not in {"__init__.py", "__main__.py", "_version.py"}]
    uncovered = [m for m in modules
                 if not any(m == e or (e.endswith("/") and m.startswith(e)) for e in entries)]
    assert uncovered == []


def test_every_module_says_what_it_holds_in_its_first_line() -> None:
    undocumented = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                    if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
    assert undocumented == []
