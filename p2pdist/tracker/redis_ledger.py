"""The console's ledger in Redis, for site servers that share their peer store there.

The same rules as ``ledger.SqliteLedger`` (read its theory of operation), with one Lua script
per report, so a PC's old contribution leaves the counters and its new one enters them
atomically whichever instance took the report. Layout under ``prefix`` (``\\x1f`` separates
the parts of a name; PackageIDs, versions and labels never hold it):

* ``a:<address>``  hash: ``<package>\\x1f<version>`` -> the PC's row
  (``site, info-hash, labels, from peers, from web seed, uploaded, updated, state, kind,
  progress, error``), and ``#unknown``: its rows without a torrent (capped)
* ``t`` / ``o``  sorted sets of ``<address>\\n<package>\\x1f<version>`` by update time: rows that
  count, rows aged out of the counters (forgotten after ``history_days``)
* ``c``  hash: ``<package>\\x1f<version>\\x1f<site>\\x1f<label>`` -> count
* ``b``  hash: ``<package>\\x1f<version>\\x1f<site>\\x1f<source>`` -> bytes so far
* ``h:<day>``  the same per UTC day, expiring after ``history_days``
* ``e``  set of the rows (as in ``t``) that have a problem, for the list of stuck PCs
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from p2pdist.tracker.ledger import DAY, AgentRow, DayBytes, Tally, TallyKey, day_of
from p2pdist.tracker.redis_store import ERRORS
from p2pdist.tracker.reports import KIND_LABEL, ReportEntry
from p2pdist.tracker.store import StoreError

SEP = "\x1f"
SOURCES = ("from_peers", "from_webseed", "uploaded")
SWEEP_BATCH = 2000

_HELPERS = r"""
local SEP = '\31'
local SOURCES = {'from_peers', 'from_webseed', 'uploaded'}
local function fields(row)
  local out, start = {}, 1
  for i = 1, 6 do
    local stop = string.find(row, SEP, start, true)
    if stop then
      out[i] = string.sub(row, start, stop - 1)
      start = stop + 1
    else
      out[i] = string.sub(row, start)
      start = #row + 2
    end
  end
  out[7] = string.sub(row, start)
  return out
end
local function move(tallies, pkgver, site, labels, by)
  for label in string.gmatch(labels, '%S+') do
    local name = pkgver .. SEP .. site .. SEP .. label
    if redis.call('HINCRBY', tallies, name, by) == 0 then redis.call('HDEL', tallies, name) end
  end
end
local function int(x) return string.format('%.0f', x) end
"""

# KEYS: agents, live times, tallies, totals, today, stuck, old times
# ARGV: address, now, history ttl, unknown cap, site, entry count, then 9 per entry:
#       package, version, info-hash, labels, from peers, from web seed, uploaded, rest, problem
RECORD = (
    _HELPERS
    + r"""
local address, now, site = ARGV[1], ARGV[2], ARGV[5]
local unknown = tonumber(redis.call('HGET', KEYS[1], '#unknown') or '0')
local cap = tonumber(ARGV[4])
local refused = {}
for i = 0, tonumber(ARGV[6]) - 1 do
  local b = 7 + i * 9
  local pkg, ver, info, labels = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local amounts = {tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])}
  local pkgver = pkg .. SEP .. ver
  local member = address .. '\n' .. pkgver
  local old = redis.call('HGET', KEYS[1], pkgver)
  local ok = true
  if not old and info == '' then
    if unknown >= cap then ok = false; refused[#refused + 1] = pkg else unknown = unknown + 1 end
  end
  if ok then
    if ver ~= '-1' then
      local stale_key = pkg .. SEP .. '-1'
      local stale = redis.call('HGET', KEYS[1], stale_key)
      if stale then
        local f = fields(stale)
        move(KEYS[3], stale_key, f[1], f[3], -1)
        local stale_member = address .. '\n' .. stale_key
        redis.call('HDEL', KEYS[1], stale_key)
        redis.call('ZREM', KEYS[2], stale_member)
        redis.call('ZREM', KEYS[7], stale_member)
        redis.call('SREM', KEYS[6], stale_member)
        unknown = unknown - 1
      end
    end
    local sent = {amounts[1], amounts[2], amounts[3]}
    if old then
      local f = fields(old)
      move(KEYS[3], pkgver, f[1], f[3], -1)
      for s = 1, 3 do
        local was = tonumber(f[3 + s])
        if amounts[s] >= was then sent[s] = amounts[s] - was end
      end
    end
    move(KEYS[3], pkgver, site, labels, 1)
    local base = pkgver .. SEP .. site .. SEP
    for s = 1, 3 do
      if sent[s] > 0 then
        redis.call('HINCRBY', KEYS[4], base .. SOURCES[s], int(sent[s]))
        redis.call('HINCRBY', KEYS[5], base .. SOURCES[s], int(sent[s]))
      end
    end
    redis.call('HSET', KEYS[1], pkgver, site .. SEP .. info .. SEP .. labels .. SEP .. ARGV[b + 4] .. SEP
      .. ARGV[b + 5] .. SEP .. ARGV[b + 6] .. SEP .. now .. SEP .. ARGV[b + 7])
    redis.call('ZADD', KEYS[2], now, member)
    redis.call('ZREM', KEYS[7], member)
    if ARGV[b + 8] == '1' then redis.call('SADD', KEYS[6], member) else redis.call('SREM', KEYS[6], member) end
  end
end
redis.call('HSET', KEYS[1], '#unknown', unknown)
redis.call('EXPIRE', KEYS[5], ARGV[3])
return refused
"""
)

# KEYS: live times, tallies, stuck, old times; ARGV: cutoff, batch, agents key prefix
SWEEP = (
    _HELPERS
    + r"""
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #found, 2 do
  local member, score = found[i], found[i + 1]
  local nl = string.find(member, '\n', 1, true)
  local agents, pkgver = ARGV[3] .. string.sub(member, 1, nl - 1), string.sub(member, nl + 1)
  local row = redis.call('HGET', agents, pkgver)
  if row then
    local f = fields(row)
    move(KEYS[2], pkgver, f[1], f[3], -1)
    redis.call('HSET', agents, pkgver, f[1] .. SEP .. f[2] .. SEP .. SEP .. f[4] .. SEP .. f[5] .. SEP .. f[6] .. SEP .. f[7])
  end
  redis.call('ZREM', KEYS[1], member)
  redis.call('SREM', KEYS[3], member)
  redis.call('ZADD', KEYS[4], score, member)
end
return #found / 2
"""
)

# KEYS: old times; ARGV: cutoff, batch, agents key prefix
FORGET = r"""
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(found) do
  local nl = string.find(member, '\n', 1, true)
  local agents, pkgver = ARGV[3] .. string.sub(member, 1, nl - 1), string.sub(member, nl + 1)
  if redis.call('HDEL', agents, pkgver) == 1 and string.sub(pkgver, -3) == '\31-1' then
    redis.call('HINCRBY', agents, '#unknown', -1)
  end
  redis.call('ZREM', KEYS[1], member)
end
return #found
"""


class RedisLedger:
    def __init__(self, client: Any, prefix: str, *, seen_days: float, history_days: int, unknown_per_address: int) -> None:
        self.client = client
        self.prefix = prefix
        self.seen_seconds = seen_days * DAY
        self.history_days = history_days
        self.unknown_per_address = unknown_per_address
        self._record = client.register_script(RECORD)
        self._sweep = client.register_script(SWEEP)
        self._forget = client.register_script(FORGET)

    def _key(self, name: str) -> str:
        return self.prefix + name

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except ERRORS as exc:
            raise StoreError(f"console ledger (Redis): {exc}") from None

    async def record(self, entries: list[ReportEntry], site: str, address: str, now: float) -> list[str]:
        args: list[object] = [address, repr(now), (self.history_days + 1) * DAY, self.unknown_per_address, site, len(entries)]
        for entry in entries:
            labels = entry.labels()
            problem = any(label.startswith(KIND_LABEL) for label in labels)
            rest = SEP.join((str(entry.state), str(entry.problem) if problem else "", repr(entry.progress), entry.error or ""))
            args += [entry.package_id, entry.stored_version, entry.info_hash or "", " ".join(labels),
                     entry.from_peers, entry.from_webseed, entry.uploaded, rest, int(problem)]  # fmt: skip
        keys = [self._key(f"a:{address}"), self._key("t"), self._key("c"), self._key("b"),
                self._key(f"h:{day_of(now)}"), self._key("e"), self._key("o")]  # fmt: skip
        refused = await self._call(self._record(keys=keys, args=args))
        return [f"{name.decode()}: more than {self.unknown_per_address} packages without a torrent from this address" for name in refused]

    async def tallies(self, package_id: str | None = None) -> dict[TallyKey, Tally]:
        counts, totals = await self._call(self._both(self._key("c"), self._key("b")))
        result: dict[TallyKey, Tally] = {}
        for name, value in counts.items():
            key, label = _split(name.decode())
            if package_id is None or key[0] == package_id:
                result.setdefault(key, Tally()).labels[label] = int(value)
        for name, value in totals.items():
            key, source = _split(name.decode())
            if package_id is None or key[0] == package_id:
                setattr(result.setdefault(key, Tally()), source, int(value))
        return result

    async def _both(self, first: str, second: str) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(first)
            pipe.hgetall(second)
            one, two = await pipe.execute()
        return one, two

    async def history(self, first_day: int, last_day: int, package_id: str | None = None) -> list[DayBytes]:
        days = list(range(max(first_day, last_day - self.history_days), last_day + 1))

        async def read() -> list[dict[bytes, bytes]]:
            async with self.client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self._key(f"h:{day}"))
                return await pipe.execute()

        result = []
        for day, table in zip(days, await self._call(read())):
            per: dict[TallyKey, Counter[str]] = {}
            for name, value in table.items():
                key, source = _split(name.decode())
                if package_id is None or key[0] == package_id:
                    per.setdefault(key, Counter())[source] = int(value)
            for key, amounts in sorted(per.items()):
                result.append(DayBytes(day, *key, *(amounts[s] for s in SOURCES)))
        return result

    async def stuck(self, package_id: str | None = None, site: str | None = None, limit: int = 100) -> list[AgentRow]:
        async def read() -> list[AgentRow]:
            found: list[AgentRow] = []
            cursor = 0
            for _ in range(1000):  # bounded: 1000 scans of ~500 members
                cursor, members = await self.client.sscan(self._key("e"), cursor, count=500)
                wanted = []
                for member in members:
                    address, _, pkgver = member.decode().partition("\n")
                    if package_id is None or pkgver.split(SEP)[0] == package_id:
                        wanted.append((address, pkgver))
                if wanted:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for address, pkgver in wanted:
                            pipe.hget(self._key(f"a:{address}"), pkgver)
                        rows = await pipe.execute()
                    for (address, pkgver), row in zip(wanted, rows):
                        if row is not None and (parsed := _agent_row(address, pkgver, row.decode())) is not None:
                            if site is None or parsed.site == site:
                                found.append(parsed)
                if cursor == 0 or len(found) >= 10 * limit:
                    break
            return sorted(found, key=lambda row: -row.updated_at)[:limit]

        return await self._call(read())

    async def sweep(self, now: float) -> int:
        changed = 0
        agents = self._key("a:")
        for _ in range(10_000):  # bounded: 20M rows a sweep at most
            done = int(await self._call(self._sweep(keys=[self._key("t"), self._key("c"), self._key("e"), self._key("o")],
                                                    args=[repr(now - self.seen_seconds), SWEEP_BATCH, agents])))  # fmt: skip
            changed += done
            if done < SWEEP_BATCH:
                break
        for _ in range(10_000):
            done = int(await self._call(self._forget(keys=[self._key("o")], args=[repr(now - self.history_days * DAY), SWEEP_BATCH, agents])))
            changed += done
            if done < SWEEP_BATCH:
                break
        return changed

    async def close(self) -> None:
        return None  # the client belongs to the peer store, which closes it


def _split(name: str) -> tuple[TallyKey, str]:
    """``package\\x1fversion\\x1fsite\\x1flast`` -> ((package, version, site), last); the site may hold anything."""
    package, version, rest = name.split(SEP, 2)
    site, _, last = rest.rpartition(SEP)
    return (package, int(version), site), last


def _agent_row(address: str, pkgver: str, row: str) -> AgentRow | None:
    package, _, version = pkgver.partition(SEP)
    parts = row.split(SEP)
    if len(parts) < 11:
        return None
    # site, info-hash, labels, peers, web seed, uploaded, updated, state, kind, progress, error...
    site, labels = parts[0], parts[2]
    if not labels:
        return None
    error = SEP.join(parts[10:])
    return AgentRow(address, package, int(version), site, parts[7], parts[8], error, float(parts[9]), float(parts[6]))
