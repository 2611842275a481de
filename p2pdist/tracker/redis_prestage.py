"""Pre-staging orders in Redis, for site servers that share their peer store there.

The contract of ``prestage.SqlitePrestage``. Layout under ``prefix`` (``\\x1f`` separates parts;
PackageIDs and versions never hold it, a site name is always the last part):

* ``sites``  set of the sites that have orders
* ``s:<site>``  hash: ``<package>\\x1f<version>`` -> ``<at>\\x1f<created>`` (version -1: the current one)
* ``x:<site>``  sorted set of ``<package>\\x1f<version>\\x1f<at>\\x1f<created>`` by cancel time

A report answer reads one hash and one range of the reporting site: a few entries, whatever
the number of agents.
"""

from __future__ import annotations

from typing import Any

from p2pdist.tracker.prestage import CANCEL_KEEP, LATEST, MAX_ORDERS, MAX_STORED, Order, OrderError
from p2pdist.tracker.redis_store import ERRORS
from p2pdist.tracker.store import StoreError

SEP = "\x1f"


class RedisPrestage:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, name: str) -> str:
        return self.prefix + name

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except ERRORS as exc:
            raise StoreError(f"Redis unavailable for the pre-staging orders: {exc}") from None

    async def put(self, order: Order) -> bool:
        site_key = self._key(f"s:{order.site}")
        field = f"{order.package_id}{SEP}{LATEST if order.version is None else order.version}"
        old = await self._call(self.client.hget(site_key, field))
        if old is not None and float(old.decode().split(SEP)[0]) == order.at:
            return False
        if old is None and len(await self.orders()) >= MAX_STORED:
            raise OrderError(f"the server keeps at most {MAX_STORED} orders; cancel some first")
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(self._key("sites"), order.site)
            pipe.hset(site_key, field, f"{order.at!r}{SEP}{order.created_at!r}")
            await self._call(pipe.execute())
        return True

    async def cancel(self, package_id: str, version: int | None, sites: list[str] | None, now: float) -> list[Order]:
        found = [
            o for o in await self.orders(package_id)
            if (version is None or o.version == version) and (sites is None or o.site in sites)
        ]  # fmt: skip
        if found:
            async with self.client.pipeline(transaction=True) as pipe:
                for o in found:
                    stored = LATEST if o.version is None else o.version
                    pipe.hdel(self._key(f"s:{o.site}"), f"{o.package_id}{SEP}{stored}")
                    pipe.zadd(self._key(f"x:{o.site}"), {f"{o.package_id}{SEP}{stored}{SEP}{o.at!r}{SEP}{o.created_at!r}": now})
                await self._call(pipe.execute())
        return sorted(
            (Order(o.package_id, o.version, o.site, o.at, o.created_at, now) for o in found),
            key=lambda o: (o.package_id, LATEST if o.version is None else o.version, o.site),
        )

    async def _sites(self) -> list[str]:
        return sorted(name.decode() for name in await self._call(self.client.smembers(self._key("sites"))))

    async def orders(self, package_id: str | None = None, site: str | None = None) -> list[Order]:
        sites = [site] if site is not None else await self._sites()
        async with self.client.pipeline(transaction=False) as pipe:
            for name in sites:
                pipe.hgetall(self._key(f"s:{name}"))
            tables = await self._call(pipe.execute())
        result = []
        for name, table in zip(sites, tables):
            for field, value in table.items():
                package, _, version = field.decode().partition(SEP)
                if package_id is not None and package != package_id:
                    continue
                at, _, created = value.decode().partition(SEP)
                result.append(Order(package, None if int(version) == LATEST else int(version), name, float(at), float(created)))
        result.sort(key=lambda o: (o.package_id, LATEST if o.version is None else o.version, o.site))
        return result[:MAX_STORED]

    async def cancelled(self, site: str, after: float) -> list[Order]:
        rows = await self._call(
            self.client.zrevrangebyscore(self._key(f"x:{site}"), "+inf", f"({after!r}", start=0, num=MAX_ORDERS, withscores=True)
        )
        result = []
        for member, score in rows:
            package, version, at, created = member.decode().split(SEP)
            result.append(Order(package, None if int(version) == LATEST else int(version), site, float(at), float(created), float(score)))
        return result

    async def sweep(self, now: float) -> int:
        removed = 0
        for name in await self._sites():
            removed += int(await self._call(self.client.zremrangebyscore(self._key(f"x:{name}"), "-inf", f"({now - CANCEL_KEEP!r}")))
        return removed

    async def close(self) -> None:
        return None  # the client belongs to the peer store, which closes it
