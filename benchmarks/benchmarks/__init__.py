"""asv benchmarks for pyfastopt (see ``../asv.conf.json``).

Each module times pyfastopt (``Benchmark`` classes, ``time_<kernel>_pyfastopt``) and
its baselines in classes of their own (``PeerBenchmark``: ``...NumPy``, ``Torch...``,
``OnnxRuntime...``, ``time_<kernel>_numpy``), which never import pyfastopt: asv runs
each benchmark in its own process, so no peer's thread pool shares a process with
pyfastopt's (see ``common.py``). ``bench_runtime.py`` mixes them on purpose. Importing this package prints nothing; call
:func:`show_config` to print the pyfastopt build and CPU report (once per process).
"""

_shown = False


def show_config() -> None:
    """Print ``pyfastopt.show_config()`` the first time it is called in a process."""
    global _shown
    if _shown:
        return
    import pyfastopt

    pyfastopt.show_config()
    _shown = True
