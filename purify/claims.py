"""Claims as data: what an experiment asserts, declared before its run, and decided by the runner.

A `Claim` is an id, the sentence it asserts (a template filled from the statistic's `where`),
the direction and threshold, the smallest effect of interest with the reason it matters to
the science, the Holm family, the model families whose numbers it reads, the measurement
resolution that floors its standard error, and the validity gates its statistic must pass.
Its `digest` hashes the declaration, so a verdict names the exact rule it was decided under.

An experiment's `run` returns statistics, not verdicts: `statistic(claim_id, values, ...)`
per instance (one per d, per noise level, ...). `decide` turns them into verdicts with
`purify.stats`, adjusts each family by Holm-Bonferroni and records every claim's hash, so the
verdicts re-derive from the record's `statistics` alone.

Phases. A run on the development seeds is *exploratory*: every claim declared here was set
after those seeds' results had been seen, which `chosen_after` says, and its verdicts are
marked post hoc. A run with `--confirm` draws the seeds of `CONFIRMATORY_SEEDS`, which no
development run touched, with the claims frozen by their hashes; those verdicts are the
headline. A claim whose hash differs from the one its confirmatory verdict was computed
under is post hoc (`confirmation_status`).

    >>> c = Claim("gain", "FGM beats clean at tau={tau:g}", ">", 0.0, min_effect=0.02,
    ...           why="two accuracy points", models=("clean net", "FGM net"), resolution="accuracy difference")
    >>> v = decide((c,), [statistic("gain", [0.05, 0.06, 0.07, 0.05], tau=0.25)], n_eval=1024)
    >>> v[0]["verdict"], v[0]["claim"]
    ('holds', 'FGM beats clean at tau=0.25')
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import stats

# The development seeds: every committed exploratory record uses seeds below 1000, and so does
# every test. The confirmatory blocks start far above them, one block per confirmation round:
# round r draws --confirm's n seeds from CONFIRMATORY_START + r * ROUND_STRIDE on. A claim
# declared or changed after an experiment's round-r seeds were seen is confirmed on round r + 1
# (the experiment's `confirmation_round`), never again on seeds whose results shaped it.
CONFIRMATORY_START = 1_000_000
ROUND_STRIDE = 1_000_000
DEVELOPMENT_SEEDS_BELOW = 1000

# Every claim declared so far was written, with its threshold and smallest effect, after the
# exploratory seeds' results were committed (the smallest effects first appear in commit
# d8c00ae); the default evaluation was chosen on the audit's own seeds.
SET_AFTER_RESULTS = (
    "threshold and smallest effect set after the exploratory seeds' results were seen (min_effect first appears "
    "in commit d8c00ae, after every result was committed): exploratory only, decided again on fresh seeds by "
    "--confirm"
)

RESOLUTIONS = {
    None: 0,  # a statistic with no finite-sample measurement error of its own (a weight statistic)
    "accuracy": 1,  # one accuracy on an evaluation set
    "accuracy difference": 2,  # a difference of two independently measured accuracies
}
GATES = {
    "above chance": "no more than half of the runs entering the statistic are dropped as failed, diverged, at "
    "chance (clean accuracy <= 0.6) or collapsed; the dropped ones are excluded and counted",
    "attack converged": "the robust accuracies the statistic reads were re-measured with the reference attack "
    "(APGD from the FGM point, the dense direction and random starts, and a gradient-free random search) on a "
    "subsample of the same models and inputs: the upper 95% bound of the mean gap (default - reference) lies below "
    "half the claim's smallest effect, and at most ATTACK_TOLERANCE where that is 0",
    "trained": "every run entering the statistic has settled: its clean accuracy moved by at most "
    "TRAINED_DRIFT over the last fifth of training (from the last log step at or before 80% of the steps); a "
    "contrastive run, which has no labels, has settled when its held-out objective moved over that stretch by at "
    "most TRAINED_LOSS_SHARE of its whole change over training",
    "robust settled": "every run entering the statistic has settled in robustness too: its robust accuracy at the "
    "sweep's evaluation radius (eval.taus[0]) moved by at most ROBUST_DRIFT over the last fifth of training, so "
    "a claim about how robust training makes a network does not read a network still on its way",
}
ROBUST_DRIFT = 0.03  # three points: above an attack's log-to-log jitter on a fixed batch, below a claim's ten
TRAINED_DRIFT = 0.02  # two accuracy points over the last fifth of training: the accuracy has settled
TRAINED_LOSS_SHARE = 0.1  # the last fifth moved the objective a tenth as much as the whole of training did
ATTACK_TOLERANCE = 0.01  # the attack gap allowed for a claim whose smallest effect is 0 (attack-audit's rule)


@dataclass(frozen=True)
class Claim:
    """One declared claim. See the module docstring; fields are data, hashed by `digest`.

    text: the sentence asserted, a str.format template over the statistic's `where`.
    direction, threshold, min_effect: the claim is mean > threshold + min_effect ('>') or
    mean < threshold - min_effect ('<'). why: the smallest effect's relevance to the science.
    models: the model families whose numbers the statistic reads. family: the Holm family
    (None: the experiment's own). resolution: a key of RESOLUTIONS, the measurement whose
    finite evaluation set floors the standard error. gates: keys of GATES the statistic's
    runs must pass. chosen_after: why the rule is post hoc on the exploratory seeds, or None.
    replaces: the id of a claim this one superseded; its verdict is kept as `original`.
    exact: a deterministic claim (violations over cases), decided exactly.
    """

    id: str
    text: str
    direction: str = ">"
    threshold: float = 0.0
    min_effect: float = 0.0
    why: str = ""
    models: tuple[str, ...] = ()
    family: str | None = None
    resolution: str | None = None
    gates: tuple[str, ...] = ("above chance",)
    chosen_after: str | None = SET_AFTER_RESULTS
    replaces: str | None = None
    exact: bool = False
    note: str = field(default="", compare=False)

    def __post_init__(self):
        if self.direction not in (">", "<"):
            raise ValueError(f"Claim {self.id!r}: direction={self.direction!r} is not allowed: must be '>' or '<'")
        if not (math.isfinite(self.min_effect) and self.min_effect >= 0):
            raise ValueError(f"Claim {self.id!r}: min_effect={self.min_effect!r} is not allowed: must be >= 0")
        if not self.exact and not self.why:
            raise ValueError(f"Claim {self.id!r}: why is required: say why the smallest effect matters")
        if self.resolution not in RESOLUTIONS:
            raise ValueError(
                f"Claim {self.id!r}: resolution={self.resolution!r} is not allowed: must be one of {list(RESOLUTIONS)}"
            )
        unknown = set(self.gates) - set(GATES)
        if unknown:
            raise ValueError(f"Claim {self.id!r}: gates {sorted(unknown)} are not allowed: must be among {list(GATES)}")
        if not self.models:
            raise ValueError(f"Claim {self.id!r}: models is required: name the model families its numbers come from")

    def declaration(self) -> dict:
        """The hashed part: everything that decides the verdict (the note is commentary)."""
        d = asdict(self)
        d.pop("note")
        d["models"], d["gates"] = list(self.models), list(self.gates)
        return d

    def digest(self) -> str:
        blob = json.dumps(self.declaration(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def statistic(
    claim: str, values=None, *, flagged=None, n_eval: int | None = None, gates=None, pair_key=None, **where
) -> dict:
    """One instance of a claim's per-seed statistic, as an experiment returns it.

    values (S,): one value per seed; flagged (S,) bool: runs dropped (failed, diverged, at
    chance); n_eval: the evaluation-set size behind an accuracy (default: the config's);
    gates: {gate: (S,) bool of runs that pass it} for the claim's gates other than
    'above chance', and for 'attack converged' the (S,) per-seed attack gap (the largest over
    the models the statistic reads, `purify.evaluate.reference_gaps`); pair_key: what pairs a replaced claim's instance with its successor's
    (default: equal `where`); where: the values that fill the claim's text (d=64, tau=0.25).
    """
    v = np.asarray(values, float).ravel()
    out = {"claim": claim, "values": v.tolist(), "where": {k: _plain(x) for k, x in where.items()}}
    if flagged is not None:
        out["flagged"] = np.asarray(flagged, bool).ravel().tolist()
    if n_eval is not None:
        out["n_eval"] = int(n_eval)
    if gates:
        out["gates"] = {
            g: np.asarray(m, float if g == "attack converged" else bool).ravel().tolist() for g, m in gates.items()
        }
    if pair_key is not None:
        out["pair_key"] = str(pair_key)
    return out


def exact_statistic(claim: str, violations: int, total: int, *, flagged_runs: int = 0, **where) -> dict:
    """One instance of an exact claim: violations over checked cases."""
    return {
        "claim": claim,
        "violations": int(violations),
        "total": int(total),
        "flagged_runs": int(flagged_runs),
        "where": {k: _plain(x) for k, x in where.items()},
    }


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    return x


def _gate_outcomes(claim: Claim, stat: dict, values: np.ndarray, dropped: np.ndarray) -> dict:
    out = {}
    for g in claim.gates:
        if g == "above chance":
            n, k = len(values), int(dropped.sum())
            out[g] = {
                "passed": k <= n / 2,
                "detail": f"{k} of {n} runs dropped (failed, diverged, at chance or collapsed)",
            }
            continue
        masks = stat.get("gates", {})
        if g not in masks:
            raise ValueError(f"the statistic of claim {claim.id!r} lacks gate {g!r}: the experiment must measure it")
        if g == "attack converged":
            gap = np.asarray(masks[g], float)[~dropped]
            _, _, hi = stats.mean_ci(gap)
            tol = claim.min_effect / 2 if claim.min_effect > 0 else ATTACK_TOLERANCE
            out[g] = {
                "passed": bool(math.isfinite(hi) and hi < tol),
                "detail": f"mean gap {np.mean(gap) if len(gap) else math.nan:+.4f}, upper 95% bound {hi:+.4f} "
                f"against {tol:g}",
                "gap_upper95": hi,
                "tolerance": tol,
            }
            continue
        ok = np.asarray(masks[g], bool)
        used = ~dropped
        bad = int((~ok & used).sum())
        out[g] = {"passed": bad == 0, "detail": f"{bad} of {int(used.sum())} runs entering the statistic miss it"}
    return out


def decide_one(claim: Claim, stat: dict, n_eval: int, *, post_hoc: str | None) -> dict:
    """The verdict of one statistic under its claim (before the family's Holm adjustment)."""
    text = claim.text.format(**stat.get("where", {}))
    if claim.exact:
        v = stats.exact_verdict(stat["violations"], stat["total"], text, flagged_runs=stat.get("flagged_runs", 0))
    else:
        values = np.asarray(stat["values"], float)
        dropped = ~np.isfinite(values)
        if "flagged" in stat:
            dropped |= np.asarray(stat["flagged"], bool)
        gates = _gate_outcomes(claim, stat, values, dropped)
        terms = RESOLUTIONS[claim.resolution]
        n = int(stat.get("n_eval", n_eval))
        v = stats.verdict(
            values,
            claim.direction,
            claim.threshold,
            text,
            min_effect=claim.min_effect,
            why=claim.why,
            flagged=dropped,
            post_hoc=post_hoc,
            resolution=stats.accuracy_resolution(n, terms) if terms else 0.0,
            gates={g: o for g, o in gates.items() if g != "above chance"},
        )
        v["gates"] = gates  # 'above chance' is the dropped-runs rule of stats.verdict, recorded here by name
    if claim.exact and post_hoc is not None:
        v["post_hoc"], v["post_hoc_reason"] = True, post_hoc
    v.update(
        claim_id=claim.id,
        claim_hash=claim.digest(),
        where=stat.get("where", {}),
        models=list(claim.models),
        family=claim.family,
    )
    return v


def decide(
    claims: Sequence[Claim],
    statistics: Iterable[dict],
    *,
    n_eval: int,
    phase: str = "exploratory",
    family: str = "",
    frozen: dict[str, str] | None = None,
) -> list[dict]:
    """Verdicts for an experiment's statistics, each family adjusted by Holm-Bonferroni.

    phase 'exploratory': a claim's `chosen_after` makes its verdict post hoc. 'confirmatory':
    the claims are frozen; frozen {claim id: hash} are the hashes of an earlier confirmation
    on the same seeds, and a claim declared differently since is post hoc. A replaced claim's
    verdict rides along as its successor's `original`.
    """
    if phase not in ("exploratory", "confirmatory"):
        raise ValueError(f"phase={phase!r} is not allowed: must be 'exploratory' or 'confirmatory'")
    by_id = {c.id: c for c in claims}
    if len(by_id) != len(claims):
        raise ValueError(f"claim ids repeat: {[c.id for c in claims]}")
    raw, originals = [], {}
    for s in statistics:
        c = by_id.get(s["claim"])
        if c is None:
            raise ValueError(f"statistic for claim {s['claim']!r}, which is not declared: declared {sorted(by_id)}")
        reason = None
        if phase == "exploratory":
            reason = c.chosen_after
        elif frozen and c.id in frozen and frozen[c.id] != c.digest():
            reason = (
                f"the declaration changed (hash {frozen[c.id]} -> {c.digest()}) after its confirmatory seeds were seen"
            )
        v = decide_one(c, s, n_eval, post_hoc=reason)
        key = s.get("pair_key") or json.dumps(v["where"], sort_keys=True)
        replaced_by = [r for r in claims if r.replaces == c.id]
        if replaced_by:
            originals.setdefault((replaced_by[0].id, key), v)
        else:
            raw.append((key, v))
    keys, raw = [k for k, _ in raw], [v for _, v in raw]
    for key, v in zip(keys, raw):
        o = originals.pop((v["claim_id"], key), None)
        if o is not None:
            v["original"] = o
    if originals:
        raise ValueError(f"statistics of replaced claims without their successor: {sorted(k[0] for k in originals)}")
    families: dict[str, list[int]] = {}
    for i, v in enumerate(raw):
        families.setdefault(v["family"] or family, []).append(i)
    out = list(raw)
    for name, idx in families.items():
        for i, adjusted in zip(idx, stats.holm([raw[i] for i in idx])):
            adjusted["family"] = name
            out[i] = adjusted
    return out


def confirmatory_seeds(n: int, round: int = 0) -> list[int]:
    """The first n seeds of confirmation round `round`'s block.

    >>> confirmatory_seeds(2), confirmatory_seeds(2, round=1)
    ([1000000, 1000001], [2000000, 2000001])
    """
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"round={round!r} is not allowed: must be an integer >= 0")
    if n > ROUND_STRIDE:
        raise ValueError(f"n={n!r} is not allowed: a round holds at most {ROUND_STRIDE} seeds")
    start = CONFIRMATORY_START + round * ROUND_STRIDE
    return list(range(start, start + int(n)))


def seeds_round(seeds: Sequence[int]) -> int | None:
    """The confirmation round whose block holds every one of `seeds`; None for development
    seeds or seeds from several blocks."""
    rounds = {(int(s) - CONFIRMATORY_START) // ROUND_STRIDE if s >= CONFIRMATORY_START else None for s in seeds}
    return rounds.pop() if len(rounds) == 1 else None


def confirmation_status(claims: Sequence[Claim], record: dict | None, round: int = 0) -> dict[str, str]:
    """Per claim id: 'confirmed' (a confirmatory verdict under this declaration, on the seeds of
    confirmation round `round`), 'confirmed on round r, awaiting round `round`' (its declaration
    is unchanged but the experiment moved to a fresh block), 'changed since confirmation' (post
    hoc: its hash differs from the confirmatory one), or 'exploratory only'."""
    conf, seen = {}, 0
    if record and record.get("phase") == "confirmatory":
        conf = {v["claim_id"]: v["claim_hash"] for v in record.get("verdicts", []) if "claim_id" in v}
        seen = seeds_round(record.get("seeds", []))
    out = {}
    for c in claims:
        if c.id not in conf:
            out[c.id] = "exploratory only"
        elif conf[c.id] != c.digest():
            out[c.id] = "changed since confirmation"
        elif seen != round:
            out[c.id] = f"confirmed on round {seen}, awaiting round {round}"
        else:
            out[c.id] = "confirmed"
    return out
