"""Plumbing every stage uses: the package's error type, atomic file writes with synthetic-content
marks, safe loading of other people's files, Hydra resolvers, quiet third-party logs, the entry
points' error handling."""
