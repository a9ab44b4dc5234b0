"""Run by tests/test_proxy.py in a process of its own (the proxy server module keeps global state): load a proxy
config with litellm's own ``ProxyConfig``, then apply its router settings again as a proxy with a database does
every ``proxy_config_reload_interval_seconds`` (``_add_router_settings_from_db_config``; the database here a
stand-in with no stored router settings). Prints one JSON line: for each prefill strategy, whether it is still the
one the config load built, and its bundle."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys

from litellm.proxy.proxy_server import ProxyConfig

import litellm_prefill_router.proxy_hook  # noqa: F401 - installs the strategy, as the config's callback does
from litellm_prefill_router.router import prefill_strategies


class _Rows:
    """The ``litellm_config`` table of a database holding no settings."""

    async def find_first(self, **kwargs: object) -> None:
        return None

    async def find_unique(self, **kwargs: object) -> None:
        return None


class _Database:
    litellm_config = _Rows()


class _Prisma:
    db = writer_db = _Database()


async def main(config_path: str) -> None:
    proxy_config = ProxyConfig()
    router = (await proxy_config.load_config(router=None, config_file_path=config_path))[0]
    built = prefill_strategies(router)
    reapply = proxy_config._add_router_settings_from_db_config
    for _ in range(2):
        extra = {}
        if "config_data" in inspect.signature(reapply).parameters:  # litellm < 1.103 passes the config in
            extra["config_data"] = await proxy_config.get_config(config_file_path=config_path)
        await reapply(llm_router=router, prisma_client=_Prisma(), **extra)
    print(json.dumps({name: {"kept": strategy is built.get(name), "bundle": strategy.args.bundle}
                      for name, strategy in prefill_strategies(router).items()}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
