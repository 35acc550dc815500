"""Real-video preprocessing: decode, find and track the speaker's face, align and crop it, write clip records.

`faces` finds one speaker per video and follows their 468 face landmarks; `align` turns frames plus landmarks into
aligned face crops with face and mouth masks. Both are plain numpy in, numpy out, so the prep runner can call them
from worker processes.
"""
