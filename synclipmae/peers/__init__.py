"""Peer models trained on this project's corpora, to compare SyncLipMAE against on equal terms."""
