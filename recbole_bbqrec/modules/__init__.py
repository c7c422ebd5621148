"""Plain-torch building blocks (typed arguments, no RecBole config)."""
