"""asv benchmarks for pyfastopt (see ``../asv.conf.json``).

Each module compares pyfastopt with its plain NumPy baseline in the same class
(``time_<kernel>_pyfastopt`` next to ``time_<kernel>_numpy``), so ``asv compare``
and the asv web UI show both. Importing this package prints nothing; call
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
