"""``afdp init`` on places that cannot hold an evidence repository: usage errors, nothing written."""

from __future__ import annotations

from pathlib import Path


def test_init_on_a_file_is_a_usage_error(cli, tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("{}")
    done = cli("init", str(target))
    assert done.code == 2
    assert "is not a folder" in done.err
    assert target.read_text() == "{}"


def test_init_on_a_non_empty_folder_is_a_usage_error(cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = cli("init", str(tmp_path))
    assert done.code == 2
    assert "not empty and is not a Git repository" in done.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_adopts_an_existing_repository(cli, tmp_path: Path) -> None:
    assert cli("init", str(tmp_path / "ev")).code == 0
    again = cli("init", str(tmp_path / "ev"))
    assert again.code == 0
