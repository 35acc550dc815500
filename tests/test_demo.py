"""The end of `make demo`: every downstream family runs on the exported model and writes what the demo prints."""

import json

from synclipmae.commands import demo


def test_downstream_writes_probes_lip_reading_and_a_dub(trained_run, tmp_path, monkeypatch, capsys):
  # The demo's own code with smaller budgets (the demo's are sized for its 1050-step model and 2 CPU cores).
  monkeypatch.setattr(demo, "DEMO_PROBE_CLIPS", 16)
  monkeypatch.setattr(demo, "DEMO_VSR", dict(max_clips=16, steps=20, batch_size=8))
  monkeypatch.setattr(demo, "DEMO_DUB_PAIRS", 1)
  demo._downstream(str(trained_run["export"]), str(trained_run["corpus"]), str(tmp_path))
  printed = capsys.readouterr().out

  for name in ("probe_z_amb_expression", "probe_z_voc_expression", "probe_z_id_speaker"):
    probe = json.loads((tmp_path / "probes" / f"{name}.json").read_text())
    assert 0.0 <= probe["accuracy"] <= 1.0 and (tmp_path / "probes" / f"{name}.png").exists()
  assert "expression from z_amb" in printed and "speaker from z_id" in printed

  vsr = json.loads((tmp_path / "vsr" / "vsr_eval_heldout_greedy.json").read_text())
  assert vsr["split"] == "heldout" and vsr["inputs"] == "z_voc" and "viseme_error_rate" in vsr
  assert "WER" in printed

  result = json.loads((tmp_path / "dub" / "dubbing.json").read_text())
  assert result["split"] == "heldout" and result["num_pairs"] == 1 and result["mode"] == "retrieve"
  videos = list((tmp_path / "dub").glob("dub_*.mp4"))
  assert len(videos) == 1 and str(videos[0]) in printed
  assert "audio-driven dub" in printed and "downstream done" in printed
