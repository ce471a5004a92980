"""threadpoolctl integration: ``threadpool_limits`` controls pyfastopt's threads too.

threadpoolctl finds libraries by scanning the shared objects loaded in the process. We
register a controller matching our ``_core`` extension, recognised by the C symbols
``pyfastopt_get_num_threads`` / ``pyfastopt_set_num_threads`` it exports. Its user API
is "openmp" (pyfastopt is an OpenMP library), so ``threadpool_limits(1)`` and
``threadpool_limits(1, user_api="openmp")`` both limit it.
"""

from __future__ import annotations

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

        def get_num_threads(self):
            get = getattr(self.dynlib, "pyfastopt_get_num_threads", None)
            return get() if get is not None else None

        def set_num_threads(self, num_threads):
            set_ = getattr(self.dynlib, "pyfastopt_set_num_threads", None)
            if set_ is not None:
                set_(int(num_threads))

        def get_version(self):
            from . import _core

            return (
                _core.config.version if hasattr(self.dynlib, "pyfastopt_get_num_threads") else None
            )

    threadpoolctl.register(PyfastoptController)
    _registered = True
