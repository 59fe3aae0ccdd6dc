"""In-process functions (``Octopus.Lambda``): a registered name, an allowed Python module, or,
only when the server allows code upload, Python source given in the start config.

A registered lambda (:func:`kraken.pipeline.lambdas.registry.register_lambda`) makes an
object's attributes callable as functions; the call config names the ``function`` (and, with
uploaded code, optionally the ``module``: an object defined by that code).
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

from kraken.pipeline.clients.base import Client, ClientStartError
from kraken.pipeline.lambdas import examples  # noqa: F401 - registers the built-in lambdas
from kraken.pipeline.lambdas.registry import find_lambda


class LambdaClient(Client):
    def start(self, config: dict[str, Any]) -> Any:
        code, module = config.get("code"), config.get("module")
        if (code is None) == (module is None):
            raise ClientStartError('Ether "code" or "module" must be provided')
        if module is not None:
            if not isinstance(module, str):
                raise ClientStartError('"module" must be a string')
            self.target = self._resolve(module)
            self._state: Any = module
            return module
        if not self.ctx.allow_code:
            raise ClientStartError(
                "uploaded lambda code is disabled on this server (set pipeline.allow_lambda_code: true)"
            )
        source = "\n".join(code) if isinstance(code, list) else code
        if not isinstance(source, str):
            raise ClientStartError('"code" must be a string or a list of lines')
        namespace: dict[str, Any] = {"__name__": f"kraken_lambda_{self.service}"}
        try:
            exec(compile(source, f"<lambda code of {self.service}>", "exec"), namespace)
        except Exception as e:
            raise ClientStartError(f"lambda code failed to load: {type(e).__name__}: {e}") from None
        self.target = SimpleNamespace(**{k: v for k, v in namespace.items() if not k.startswith("__")})
        self._state = source
        return source

    def _resolve(self, module: str) -> Any:
        found = find_lambda(module)
        if found is not None:
            return found
        if any(module == p or module.startswith(p + ".") for p in self.ctx.lambda_modules):
            try:
                return importlib.import_module(module)
            except ImportError as e:
                raise ClientStartError(f"Module '{module}' doesn't exist! ({e})") from None
        raise ClientStartError(f"Module '{module}' doesn't exist!")

    def state(self) -> Any:
        return self._state

    def call(self, prepared: Any, config: dict[str, Any]) -> Any:
        name = config.get("function")
        if not isinstance(name, str):
            raise ValueError('call config must name the "function"')
        target = self.target
        module = config.get("module")
        if isinstance(module, str) and hasattr(target, module.rsplit(".", 1)[-1]):
            target = getattr(target, module.rsplit(".", 1)[-1])
        func = getattr(target, name, None) if not name.startswith("_") else None
        if not callable(func):
            raise AttributeError(f"function {name}/1 is undefined or private")
        return func(prepared)
