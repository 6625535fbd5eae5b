"""zchat's benchmark suite (issue 6): ``python3 bench/run.py``; see bench/README.md."""
