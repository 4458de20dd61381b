"""Quality metrics of generated text data (diversity and similarity to real data) over embeddings."""
