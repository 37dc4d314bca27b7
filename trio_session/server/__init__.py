"""The gateway: trio-session sessions over HTTP (extra ``trio-session[server]``).

`open_gateway` serves Server-Sent Events that resume from any ``seq``, the
browser page at ``/`` and the AG-UI protocol, on Starlette and Hypercorn's
trio worker, inside the caller's trio run.

Example:
    >>> import trio
    >>> from trio_session._cli import demo_agent
    >>> async def main():  # doctest: +SKIP
    ...     async with open_gateway(demo_agent(), port=8000) as gateway:
    ...         print(gateway.url)
    ...         await trio.sleep_forever()
"""

from __future__ import annotations

from ._gateway import Gateway as Gateway, open_gateway as open_gateway

__all__ = ["Gateway", "open_gateway"]
