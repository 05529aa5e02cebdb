"""The registry of apps known to the service."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

from caesar_rest.apps.base import App


class AppRegistry:
    """Apps by name, in registration order."""

    def __init__(self, apps: Iterable[App] = ()):
        self._apps: dict[str, App] = {}
        for app in apps:
            self.register(app)

    def register(self, app: App) -> None:
        """Add an app; names are unique."""
        if app.name in self._apps:
            raise ValueError(f"app {app.name!r} registered twice")
        self._apps[app.name] = app

    def get(self, name: str) -> App | None:
        """The app called ``name``, or None."""
        return self._apps.get(name)

    def names(self) -> list[str]:
        """App names in registration order."""
        return list(self._apps)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._apps.values())


def load_app_class(spec: str) -> App:
    """Instantiate an app from ``'module:Class'``."""
    module, _, cls_name = spec.partition(":")
    if not module or not cls_name:
        raise ValueError(f"app spec {spec!r} must look like 'package.module:Class'")
    cls = getattr(importlib.import_module(module), cls_name)
    app = cls()
    if not isinstance(app, App):
        raise TypeError(f"{spec} is not an App")
    return app


#: Built-in apps, in the order ``/apps`` lists them. A module not present in this installation
#: is left out (apps are added one issue at a time); an import error in a present one is raised.
BUILTIN_APPS: tuple[str, ...] = (
    "caesar_rest.apps.caesar_app:CaesarApp",
    "caesar_rest.apps.sep_app:SepApp",
    "caesar_rest.apps.aegean_app:AegeanApp",
    "caesar_rest.apps.pybdsf_app:PybdsfApp",
    "caesar_rest.apps.photutils_app:PhotutilsApp",
    "caesar_rest.apps.caesar_cpp_app:CaesarCppApp",
    "caesar_rest.apps.cutex_app:CutexApp",
    "caesar_rest.apps.mrcnn_app:MrcnnApp",
)


def default_registry(extra: Iterable[str] = ()) -> AppRegistry:
    """The built-in apps plus the ``extra`` ones (``module:Class`` strings)."""
    reg = AppRegistry()
    for spec in BUILTIN_APPS:
        if importlib.util.find_spec(spec.partition(":")[0]) is not None:
            reg.register(load_app_class(spec))
    for spec in extra:
        reg.register(load_app_class(spec))
    return reg
