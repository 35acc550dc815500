"""Workdir paths: local paths become absolute, object-storage URLs pass through unmangled, and appending a line
works both by appending (local) and by rewriting the object (URL: object stores cannot append)."""

from synclipmae import storage


def test_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
  run = storage.path("gs://bucket/runs/mu")
  assert storage.is_url(run) and str(run / "checkpoints" / "250") == "gs://bucket/runs/mu/checkpoints/250"
  assert str(run.parent / "damaged_checkpoints") == "gs://bucket/runs/damaged_checkpoints"
  monkeypatch.chdir(tmp_path)
  local = storage.path("runs/mu")
  assert not storage.is_url(local) and str(local) == str(tmp_path / "runs" / "mu")


def test_append_line_appends_locally_and_rewrites_objects(tmp_path, monkeypatch):
  local = storage.path(tmp_path / "metrics.jsonl")
  storage.append_line(local, '{"step": 1}')
  storage.append_line(local, '{"step": 2}')
  assert local.read_text() == '{"step": 1}\n{"step": 2}\n'
  # The object-storage branch through a local file: it must keep every earlier line.
  monkeypatch.setattr(storage, "is_url", lambda path: True)
  storage.append_line(local, '{"step": 3}')
  assert local.read_text().splitlines() == ['{"step": 1}', '{"step": 2}', '{"step": 3}']
