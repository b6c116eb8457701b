"""search.layout's rules (the grace period, ASHA's rungs), and the code's map: search/ reads as one pipeline
(each module imports only those before it, also inside functions), each module's docstring says its job, and
core/ and spaces/ never import search/ or Ray."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the order of search/ (docs/architecture.md): each module may import only the ones before it
SEARCH = ["layout", "budget", "storage", "internals", "journal", "spec", "tables", "cli", "tracking", "dataset", "cluster",
          "plan", "searcher", "scheduler", "trainable", "progress", "watch", "cut_trials", "recovery", "revalidate", "tuning",
          "importance", "report", "export", "summary", "shutdown", "run"]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_every_search_module_is_on_the_map():
    assert sorted(p.stem for p in (ROOT / "search").glob("*.py") if p.stem != "__init__") == sorted(SEARCH)


def test_search_modules_import_only_the_steps_before_them():
    for i, name in enumerate(SEARCH):
        used = {m.split(".")[1] for m in imports(ROOT / "search" / f"{name}.py")
                if m.startswith("search.") and m.split(".")[1] in SEARCH}
        later = sorted(used - set(SEARCH[:i]))
        assert not later, f"search/{name}.py imports {later}, which come after it in the pipeline"


def test_core_and_spaces_know_nothing_of_search_or_ray():
    for folder in ("core", "spaces"):
        for path in (ROOT / folder).glob("*.py"):
            bad = sorted(m for m in imports(path) if m.split(".")[0] in ("search", "ray"))
            assert not bad, f"{folder}/{path.name} imports {bad}"


def test_grace_period_rises_to_a_fraction_of_long_searches():
    """birdtune's first rung: the space's grace period, at least 1/27 of max_t (LCBench's 52 epochs -> 2)."""
    from search import layout

    assert layout.grace_period(1, 8) == 1 and layout.grace_period(2, 30) == 2
    assert layout.grace_period(1, 52) == 2 and layout.grace_period(1, 100) == 4 and layout.grace_period(1, 27) == 1
    assert layout.grace_period(5, 3) == 3  # never past max_t
    assert layout.asha_rungs(52, 2, 4) == [2, 8, 32, 52] and layout.asha_rungs(8, 1, 4) == [1, 4, 8]


def test_every_product_module_says_its_job_and_no_function_runs_past_60_lines():
    for folder in ("core", "search", "spaces"):
        for path in (ROOT / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            if path.stem != "__init__":
                assert ast.get_docstring(tree), f"{folder}/{path.name} has no docstring saying what it is for"
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    assert lines <= 60, f"{folder}/{path.name}: {node.name} is {lines} lines"


def test_the_readme_is_a_front_door_and_every_picture_says_how_it_was_made():
    """README.md at most 250 lines; each docs/ page starts by saying what it answers; every picture in them is
    followed by the command that makes it, and every page it links to exists."""
    import re

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages[1:]:
        assert "This page answers" in "\n".join(page.read_text().splitlines()[:5]), page.name
    for page in pages:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            for target in re.findall(r"\]\(([^)#]+\.(?:md|png))(?:#[^)]*)?\)", line):
                assert (page.parent / target).is_file(), f"{page.name}:{i + 1} links to {target}"
            if line.startswith("!["):
                after = "\n".join(lines[i + 1:i + 6])
                assert re.search(r"`(python|pytest)[^`]*`", after), f"{page.name}:{i + 1}: no command after the picture"
