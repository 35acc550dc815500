"""The public talking-face corpora (LRS3, VoxCeleb2, HDTF, CelebV-HQ, MEAD) as TFDS builders that run prep.

`builder.PrepBuilder` is the machinery (manual_dir layout, speaker-disjoint splits, prep's per-input function in
this process or in Beam's workers, failures); `catalog` declares the corpora; `beam_prep` is the Beam transform.
"""
