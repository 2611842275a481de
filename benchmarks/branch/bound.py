"""The fluid lower bound on the time until every client holds the package.

Fluid model: data is infinitely divisible and every link runs at its rate from t = 0 (no
latency, no protocol overhead). With F the package size, for a branch of N clients behind a
WAN link of downstream rate W, client download rate d and upload rate u:

    T_branch >= max(F/W, F/d, N*F / (W + N*u))

F/W: the branch has nothing until a whole copy crossed its WAN link. F/d: each client must
receive F. N*F/(W + N*u): the branch's clients receive N*F in all, and it can only come in over
the WAN or out of the clients' own uploads.

Across branches: HQ's uplink H carries every byte that leaves HQ. Under the locality policy
(each branch fetches its own copy from HQ; no relaying through another branch, which would
cross two WAN links), it carries at least B*F for B branches, so T >= B*F/H; and the whole
enterprise receives sum(N)*F from the uplink and every client's upload, so
T >= sum(N)*F / (H + sum(N)*u). The run's bound is the largest of all these terms; with
identical branches the last one is the per-branch term with the branch's fair share H/B of
the uplink in place of W, which is what "branches share HQ's uplink when it is the bottleneck"
means.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.branch.topology import Params


@dataclass(frozen=True)
class Bound:
    seconds: float
    term: str  # which term binds: "F/W", "F/d", "N*F/(W+N*u)", "B*F/H", "sum(N)*F/(H+sum(N)*u)"
    terms: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {"seconds": self.seconds, "binding_term": self.term, "terms": self.terms}


def fluid_bound(params: Params) -> Bound:
    """The lower bound for ``params`` (all branches alike), in seconds."""
    f = params.size_bytes * 8.0  # bits
    mbit = 1e6
    w, d, u = params.wan_mbit * mbit, params.lan_mbit * mbit, params.lan_mbit * mbit
    n, b = params.clients, params.branches
    terms = {"F/W": f / w, "F/d": f / d, "N*F/(W+N*u)": n * f / (w + n * u)}
    if params.hq_mbit:
        h = params.hq_mbit * mbit
        terms["B*F/H"] = b * f / h
        terms["sum(N)*F/(H+sum(N)*u)"] = b * n * f / (h + b * n * u)
    term = max(terms, key=lambda key: terms[key])
    return Bound(terms[term], term, terms)


def http_bound(params: Params) -> float:
    """The same model for the HTTP-only baseline: every client pulls F over the WAN, no sharing."""
    f = params.size_bytes * 8.0
    mbit = 1e6
    per_branch = max(params.clients * f / (params.wan_mbit * mbit), f / (params.lan_mbit * mbit))
    if params.hq_mbit:
        per_branch = max(per_branch, params.branches * params.clients * f / (params.hq_mbit * mbit))
    return per_branch
