"""The kind of a changed file path (``migration``, ``test``, ``dependencies`` ...), a
dataset column (``changed_kinds``) and a prediction feature."""

from __future__ import annotations

__all__ = ["classify_path"]

_DEPENDENCY_FILES = {
    "requirements.txt", "pyproject.toml", "poetry.lock", "pipfile", "pipfile.lock", "setup.py",
    "setup.cfg", "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "go.mod",
    "go.sum", "cargo.toml", "cargo.lock", "gemfile", "gemfile.lock", "pom.xml", "build.gradle",
    "build.gradle.kts", "composer.json", "composer.lock", "uv.lock",
}
_INFRA_DIRS = ("deploy", "deployment", "deployments", "k8s", "kubernetes", "helm", "charts", "terraform", "infra", ".github", ".gitlab", "ansible")
_INFRA_EXT = (".tf", ".tfvars", ".hcl")
_DOC_EXT = (".md", ".rst", ".adoc", ".txt")
_FRONTEND_EXT = (".js", ".jsx", ".ts", ".tsx", ".vue", ".svelte", ".css", ".scss", ".sass", ".less", ".html")
_CONFIG_EXT = (".yaml", ".yml", ".json", ".toml", ".ini", ".cfg", ".conf", ".env", ".properties", ".xml")
_CODE_EXT = (
    ".py", ".go", ".java", ".kt", ".scala", ".rb", ".rs", ".c", ".cc", ".cpp", ".h", ".hpp",
    ".cs", ".php", ".swift", ".m", ".ex", ".exs", ".erl", ".clj", ".sh", ".pl", ".lua", ".r",
)


def classify_path(path: str) -> str:
    """Return the kind of a changed file path, by the first rule that matches:

    ``migration`` (a migrations folder or ``.sql``), ``test``, ``dependencies`` (lock and
    manifest files), ``infrastructure`` (Dockerfile, Terraform, deploy/k8s/helm/CI
    folders), ``docs``, ``frontend``, ``config``, ``code``, else ``other``.
    """
    lowered = path.strip().replace("\\", "/").lower()
    parts = [p for p in lowered.split("/") if p]
    name = parts[-1] if parts else ""
    folders = parts[:-1]
    stem_ext = "." + name.rsplit(".", 1)[1] if "." in name else ""
    if any("migration" in p for p in folders) or stem_ext == ".sql" or "migration" in name:
        return "migration"
    if (
        any(p in ("test", "tests", "spec", "specs", "__tests__") for p in folders)
        or name.startswith("test_")
        or any(name.endswith(s) for s in ("_test.go", "_test.py", ".test.js", ".test.ts", ".spec.js", ".spec.ts", "_spec.rb"))
    ):
        return "test"
    if name in _DEPENDENCY_FILES or (name.startswith("requirements") and stem_ext in (".txt", ".in")):
        return "dependencies"
    if name.startswith("dockerfile") or name in ("docker-compose.yml", "docker-compose.yaml", "compose.yaml", "compose.yml") or stem_ext in _INFRA_EXT or any(p in _INFRA_DIRS for p in folders):
        return "infrastructure"
    if stem_ext in _DOC_EXT or "docs" in folders or "doc" in folders:
        return "docs"
    if stem_ext in _FRONTEND_EXT:
        return "frontend"
    if stem_ext in _CONFIG_EXT:
        return "config"
    if stem_ext in _CODE_EXT:
        return "code"
    return "other"
