"""Stage 4, quality: the sample filters (one registered module each), the embeddings cache, diversity and
bias metrics, and the HTML report; stage.py runs them in order for one spec."""
