"""Stage 1: item tokenizers (BBQ, TIGER's RQ-VAE, LETTER), their trainer and semantic-ID files."""
