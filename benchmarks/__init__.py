"""Cost benchmarks of PDB and the baseline defenses: defended inference and retraining time.

Run every benchmark and write the results as JSON, then render them as a Markdown page::

    python -m benchmarks.run --out benchmarks/results.json --markdown docs/benchmarks.md

``python -m benchmarks.run --help`` lists the knobs (repeats, batch sizes, threads). Every
figure is a median over repeated runs after warm-up runs, with its interquartile range, and a
ratio to the undefended model (inference) or to plain training (training) measured in the
same run. Timings depend on the machine and on other load, so the JSON records the machine.
"""
