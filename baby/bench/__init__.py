"""Benchmarks behind `python -m baby bench NAME`: each module has main(argv) -> int and writes JSON under outputs/."""
