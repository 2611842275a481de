"""The Redis peer store: several tracker processes behind a load balancer share one swarm view.

Layout under ``prefix`` (per torrent ``H`` = info-hash hex, per site ``S``):

* ``H:S:p``  sorted set, member ``ip|port``, score = expiry time (wall clock: the instances
  share these stamps and have no other clock in common, so a step of the wall clock on an
  instance moves its view of expiry; the memory store keeps monotonic stamps)
* ``H:S:d``  hash, member -> ``seeder|expires|peer id hex|subnet|location``
* ``H:sites`` set of sites seen; ``H:done`` hash site -> completed count
* ``addr``   hash ip -> registrations (the per-address limit), ``swarms`` set of ``H:S``

Each announce is one Lua script (atomic, one round trip): drop the swarm's expired members,
check the address limit, add or remove the peer, return the site's live peers. A background
sweep on every instance clears swarms nobody announces to any more. Standalone Redis only:
the scripts touch keys they compute, which Redis Cluster would refuse.
"""

from __future__ import annotations

import time
from typing import Any

from p2pdist.tracker.store import (
    PeerLimitError,
    PeerRecord,
    SiteCounts,
    SiteSwarm,
    StoreError,
    pack_endpoint,
    unpack_endpoint,
)

try:
    from redis.exceptions import RedisError
except ImportError:  # the memory store needs no redis package; from_url says what to install
    RedisError = OSError  # type: ignore[assignment,misc]  # without redis installed: a stand-in nothing raises

ERRORS = (RedisError, OSError)

_EXPIRE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(stale) do
  redis.call('HDEL', KEYS[2], m)
  local ip = string.match(m, '^(.*)|')
  if redis.call('HINCRBY', KEYS[3], ip, -1) <= 0 then redis.call('HDEL', KEYS[3], ip) end
end
if #stale > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
"""

# KEYS: peers, data, addr, swarms, sites
# ARGV: now, member, value, expires, stopped, limit, ip, swarm id, site
ANNOUNCE = (
    _EXPIRE
    + """
local member = ARGV[2]
local known = redis.call('ZSCORE', KEYS[1], member)
if ARGV[5] == '1' then
  if known then
    redis.call('ZREM', KEYS[1], member)
    redis.call('HDEL', KEYS[2], member)
    if redis.call('HINCRBY', KEYS[3], ARGV[7], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[7]) end
  end
else
  if not known then
    local count = tonumber(redis.call('HGET', KEYS[3], ARGV[7]) or '0')
    local limit = tonumber(ARGV[6])
    if limit > 0 and count >= limit then return {'!limit', tostring(count)} end
    redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
  end
  redis.call('ZADD', KEYS[1], ARGV[4], member)
  redis.call('HSET', KEYS[2], member, ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[8])
  redis.call('SADD', KEYS[5], ARGV[9])
end
return redis.call('HGETALL', KEYS[2])
"""
)

# KEYS: peers, data, addr, swarms; ARGV: now, swarm id
SWEEP = (
    _EXPIRE
    + """
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[4], ARGV[2])
end
return #stale
"""
)

# KEYS: sites, done, addr, swarms; ARGV: prefix, info-hash hex
DROP = """
for _, site in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local base = ARGV[1] .. ARGV[2] .. ':' .. site
  for _, m in ipairs(redis.call('ZRANGE', base .. ':p', 0, -1)) do
    local ip = string.match(m, '^(.*)|')
    if redis.call('HINCRBY', KEYS[3], ip, -1) <= 0 then redis.call('HDEL', KEYS[3], ip) end
  end
  redis.call('DEL', base .. ':p', base .. ':d')
  redis.call('SREM', KEYS[4], ARGV[2] .. ':' .. site)
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


def _record(member: bytes, value: bytes) -> PeerRecord:
    ip, _, port = member.decode().rpartition("|")
    seeder, expires, peer_id, subnet, location = value.decode().split("|", 4)
    return PeerRecord(pack_endpoint(ip, int(port)), bytes.fromhex(peer_id), seeder == "1", (location, subnet),
                      int(float(expires)))  # fmt: skip


def _swarm(flat: list[bytes]) -> SiteSwarm:
    swarm = SiteSwarm()
    for i in range(0, len(flat), 2):
        swarm.put(_record(flat[i], flat[i + 1]))
    return swarm


class RedisPeerStore:
    clock = staticmethod(time.time)  # see the module doc

    def __init__(self, client: Any, prefix: str = "p2pdist:") -> None:
        self.client = client
        self.prefix = prefix
        self._announce = client.register_script(ANNOUNCE)
        self._sweep = client.register_script(SWEEP)
        self._drop = client.register_script(DROP)
        self._addr = prefix + "addr"
        self._swarms = prefix + "swarms"

    @classmethod
    def from_url(cls, url: str, prefix: str = "p2pdist:") -> RedisPeerStore:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            from p2pdist.config import ConfigError

            raise ConfigError("store.backend = 'redis' needs the redis package (pip install 'p2pdist[redis]')") from None
        return cls(aioredis.Redis.from_url(url, decode_responses=False), prefix)

    def _keys(self, ih: str, site: str) -> tuple[str, str, str]:
        swarm = f"{ih}:{site}"
        return self.prefix + swarm + ":p", self.prefix + swarm + ":d", swarm

    async def _run(self, script: Any, keys: list[str], args: list[object]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except ERRORS as exc:
            raise StoreError(f"peer store (Redis): {exc}") from None

    async def announce(
        self, info_hash: bytes, site: str, record: PeerRecord, stopped: bool, now: float, per_address: int
    ) -> SiteSwarm:
        ih = info_hash.hex()
        peers, data, swarm = self._keys(ih, site)
        location, subnet = record.group
        ip, port = unpack_endpoint(record.endpoint)
        value = f"{int(record.seeder)}|{record.expires}|{record.peer_id.hex()}|{subnet}|{location}"
        args = [repr(now), f"{ip}|{port}", value, record.expires, int(stopped), per_address, ip, swarm, site]
        keys = [peers, data, self._addr, self._swarms, self.prefix + ih + ":sites"]
        flat = await self._run(self._announce, keys, args)
        if flat and flat[0] == b"!limit":
            raise PeerLimitError(f"address {ip} already has {flat[1].decode()} registrations")
        return _swarm(flat)

    async def add_completed(self, info_hash: bytes, site: str) -> None:
        ih = info_hash.hex()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.prefix + ih + ":done", site, 1)
                pipe.sadd(self.prefix + ih + ":sites", site)
                await pipe.execute()
        except ERRORS as exc:
            raise StoreError(f"peer store (Redis): {exc}") from None

    async def counts(self, info_hash: bytes, now: float) -> dict[str, SiteCounts]:
        ih = info_hash.hex()
        try:
            sites = sorted(s.decode() for s in await self.client.smembers(self.prefix + ih + ":sites"))
            done = await self.client.hgetall(self.prefix + ih + ":done")
            async with self.client.pipeline(transaction=False) as pipe:
                for site in sites:
                    pipe.hgetall(self._keys(ih, site)[1])
                tables = await pipe.execute()
        except ERRORS as exc:
            raise StoreError(f"peer store (Redis): {exc}") from None
        result = {}
        for site, table in zip(sites, tables):
            seeders, leechers = _swarm([x for pair in table.items() for x in pair]).live(now)
            result[site] = SiteCounts(seeders, leechers, int(done.get(site.encode(), 0)))
        return result

    async def drop(self, info_hash: bytes) -> None:
        ih = info_hash.hex()
        keys = [self.prefix + ih + ":sites", self.prefix + ih + ":done", self._addr, self._swarms]
        await self._run(self._drop, keys, [self.prefix, ih])

    async def sweep(self, now: float) -> int:
        removed = 0
        try:
            swarms = [s.decode() for s in await self.client.smembers(self._swarms)]
        except ERRORS as exc:
            raise StoreError(f"peer store (Redis): {exc}") from None
        for swarm in swarms:
            keys = [self.prefix + swarm + ":p", self.prefix + swarm + ":d", self._addr, self._swarms]
            removed += int(await self._run(self._sweep, keys, [repr(now), swarm]))
        return removed

    async def peer_count(self) -> int:
        try:
            return sum(int(v) for v in await self.client.hvals(self._addr))
        except ERRORS as exc:
            raise StoreError(f"peer store (Redis): {exc}") from None

    async def close(self) -> None:
        await self.client.aclose()
