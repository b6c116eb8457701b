"""The code's map holds: search/ reads as one pipeline (each module imports only those before it, also
inside functions), and core/ and spaces/ never import search/ or Ray."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the order of search/ (README, Layout): each module may import only the ones before it
SEARCH = ["layout", "budget", "storage", "internals", "journal", "results", "cli", "tracking", "plan", "cluster", "searcher",
          "trainable", "progress", "records", "recovery", "revalidate", "tuning", "importance", "report", "export", "run"]


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
