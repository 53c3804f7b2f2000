"""Coverage-guided fuzzing of every parser that reads bytes or JSON from the network.

One harness per parser lives in :mod:`fuzz.targets`; each declares the only exceptions
its parser may raise on bad input (its typed error). Anything else escaping, or one input
taking longer than :data:`fuzz.contract.TIME_LIMIT`, is a bug. ``python -m fuzz.run``
drives a harness with atheris (libFuzzer); ``tests/fuzz/test_corpus_replay.py`` replays
the committed corpus (``fuzz/corpus/<target>/``) through the same contract in CI, without
atheris. See docs/fuzzing.md.
"""
