"""Provenance: the code's git commit and dirty flag (None outside a checkout or without git), devices, processes."""

import shutil
import subprocess

import pytest

from wm_jax import sysinfo


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")
def test_commit_and_dirty_flag_of_a_checkout(tmp_path):
    assert sysinfo.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout: no crash
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert len(head) == 40 and sysinfo.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "untracked.txt").write_text("notes")  # untracked files leave the code as committed
    assert sysinfo.git_state(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert sysinfo.git_state(tmp_path) == {"commit": head, "dirty": True}


def test_no_git_binary_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: `git` is not found
    assert sysinfo.git_state() == {"commit": None, "dirty": None}


def test_provenance_names_backend_devices_and_processes(tmp_path):
    import jax

    p = sysinfo.provenance(tmp_path)
    assert p == {"commit": None, "dirty": None, "backend": "cpu", "device_kind": jax.devices()[0].device_kind,
                 "device_count": 4, "process_count": 1}  # conftest's four host devices, one process
    here = sysinfo.provenance()  # this package's folder: a commit hash when the tests run from a checkout
    assert here["commit"] is None or len(here["commit"]) == 40
