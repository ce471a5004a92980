"""threadpoolctl integration: ``threadpool_limits`` controls pyfastopt's threads too.

pyfastopt runs its kernels on its own thread pool (not OpenMP), which threadpoolctl cannot
discover by itself, so we register a custom controller (``threadpoolctl.register``,
threadpoolctl >= 3.5). It matches our ``_core`` extension by the C symbols
``pyfastopt_get_num_threads`` / ``pyfastopt_set_num_threads`` it exports and reports
``internal_api="pyfastopt"``. Its ``user_api`` stays ``"openmp"``: the pool plays the
role of an OpenMP runtime, and code that limits OpenMP pools to avoid oversubscription
(``threadpool_limits(1, user_api="openmp")``, as scikit-learn does) limits pyfastopt as
it always did; ``threadpool_limits(1)`` limits it too.
"""

from __future__ import annotations

from typing import Any

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - a declared dependency
        return
    if not hasattr(threadpoolctl, "register"):  # pragma: no cover - threadpoolctl < 3.5
        return

    class PyfastoptController(threadpoolctl.LibController):
        user_api = "openmp"
        internal_api = "pyfastopt"
        filename_prefixes = ("_core",)
        check_symbols = ("pyfastopt_get_num_threads", "pyfastopt_set_num_threads")

        def get_num_threads(self) -> int | None:
            get: Any = getattr(self.dynlib, "pyfastopt_get_num_threads", None)
            return int(get()) if get is not None else None

        def set_num_threads(self, num_threads: int) -> None:
            set_: Any = getattr(self.dynlib, "pyfastopt_set_num_threads", None)
            if set_ is not None:
                set_(int(num_threads))  # clamped to [1, the thread cap] by the library

        def get_version(self) -> str | None:
            from . import _core

            return (
                _core.config.version if hasattr(self.dynlib, "pyfastopt_get_num_threads") else None
            )

    threadpoolctl.register(PyfastoptController)
    _registered = True
