"""What a spec will cost before any spend: combinations, requests, tokens and USD against the budget.

Counted, not listed: the plan's sizes come from combinatorics and its prompt sizes from a sample of its
first units, so a plan of any size is estimated in constant memory and time."""

from __future__ import annotations

from dataclasses import dataclass, field

from factory.attributes.lock import attribute_set
from factory.attributes.stage import existing_lock
from factory.attributes.values import (
    ALL,
    AttributeSet,
    NeedsElicitation,
    method_values,
    needs_similar,
)
from factory.attributes.elicit import TOKENS_PER_VALUE
from factory.generation.llm.budget import cost_usd
from factory.generation.plan import Plan
from factory.spec import AttributeSpec, Spec, SpecError

TOKENS_PER_WORD = 1.35
ELICIT_PROMPT_TOKENS = 150  # a value, similar-class or CAF prompt, about
CAF_REPLY_TOKENS = 64  # factory.attributes.caf asks for at most this much
SAMPLED_UNITS = 64  # units per class whose prompts are rendered to estimate prompt tokens


@dataclass
class Estimate:
    combinations: dict[str, int]
    values_per_dimension: dict[str, int]
    generation_requests: int
    elicitation_requests: int
    prompt_tokens: int
    completion_tokens_expected: int
    completion_tokens_max: int
    usd_expected: float
    usd_max: float
    elicited: list[str] = field(default_factory=list)
    elicitation_tokens_max: int = 0
    elicitation_usd_max: float = 0.0  # priced as the elicitation model (Spec.elicitation_generation)
    warnings: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.generation_requests + self.elicitation_requests

    @property
    def tokens_expected(self) -> int:
        return self.prompt_tokens + self.completion_tokens_expected


def _placeholder_attributes(spec: Spec) -> tuple[AttributeSet, list[str]]:
    """The spec's own values and its lock's, else ``n`` placeholders per elicited dimension."""
    try:
        found = existing_lock(spec)
        return attribute_set(spec, found[0] if found else None), []
    except (NeedsElicitation, SpecError):
        pass
    elicited: list[str] = []

    def placeholders(dim: str, attr: AttributeSpec) -> dict[str, list[str]]:
        elicited.append(dim)
        n = attr.elicit.n if attr.elicit else 10
        return {k: [f"<{dim} {i + 1}>" for i in range(n)] for k in (spec.class_names if attr.per_class else [ALL])}

    values, _ = method_values(spec, placeholders)
    k = spec.similar_classes.k
    similar = spec.similar_classes.given or {c: [o for o in spec.class_names if o != c][:k] for c in spec.class_names}
    return AttributeSet(values, similar), elicited


def _elicitation_requests(spec: Spec, elicited: list[str]) -> tuple[int, int]:
    """Elicitation requests (first asks) and their completion tokens at most."""
    n_classes = len(spec.classes)
    total = completion = 0
    for dim in elicited:
        attr = spec.attributes[dim]
        n = attr.elicit.n if attr.elicit else 10
        asks = n_classes if attr.per_class else 1
        total += asks
        completion += asks * (TOKENS_PER_VALUE * n + 24)
        if attr.per_class and spec.filters.caf and attr.elicit and spec.task == "multiclass":
            total += n_classes * n
            completion += n_classes * n * CAF_REPLY_TOKENS
    if elicited and needs_similar(spec):
        total += n_classes
        completion += n_classes * (12 * spec.similar_classes.k + 24)
    return total, completion


def _expected_words(spec: Spec, attrs: AttributeSet) -> float:
    lengths = [float(v) for v in attrs.values.get("length", {}).get(ALL, []) if v.replace(".", "", 1).isdigit()]
    if lengths:
        return sum(lengths) / len(lengths)
    return float(spec.filters.max_words or 0.6 * spec.generation.max_tokens / TOKENS_PER_WORD)


def _prompt_tokens(plan: Plan) -> int:
    """Prompt tokens of the whole plan, from the mean of the first units of every class (a zero-shot
    conversation re-sends its growing history at every step)."""
    gen = plan.spec.generation
    sample = plan.head(SAMPLED_UNITS * len(plan.spec.classes))
    if not sample:
        return 0
    per_request = sum(plan.request(u).prompt_tokens_estimate() for u in sample) / len(sample)
    if not plan.method.conversational:
        return round(per_request * plan.requests)
    chain, samples = gen.diversity_chain, plan.spec.budget.samples_per_class
    full, rest = divmod(samples, chain)
    steps_history = full * sum(range(chain)) + sum(range(rest))  # earlier turns re-sent, per class
    return round(per_request * plan.requests + steps_history * len(plan.spec.classes) * (gen.max_tokens // 2 + 30))


def estimate(spec: Spec) -> Estimate:
    """Count combinations and estimate requests, tokens and cost; warn where the budget caps the run."""
    attrs, elicited = _placeholder_attributes(spec)
    gen = spec.generation
    plan = Plan(spec, attrs, [])
    prompt_tokens = _prompt_tokens(plan)
    samples = plan.samples
    expected = int(min(gen.max_tokens, _expected_words(spec, attrs) * TOKENS_PER_WORD) * samples)
    most = gen.max_tokens * samples
    price = spec.budget.price(gen.model)
    elicit_requests, elicit_completion = _elicitation_requests(spec, elicited)
    elicit_prompt = elicit_requests * ELICIT_PROMPT_TOKENS
    est = Estimate(plan.combinations(), {d: max(len(v) for v in attrs.values[d].values()) for d in attrs.values},
                   plan.requests, elicit_requests, prompt_tokens, expected, most,
                   cost_usd(price, prompt_tokens, expected), cost_usd(price, prompt_tokens, most), elicited,
                   elicit_prompt + elicit_completion,
                   cost_usd(spec.budget.price(spec.elicitation_generation.model), elicit_prompt, elicit_completion))
    est.warnings = _budget_warnings(spec, est)
    return est


def _budget_warnings(spec: Spec, est: Estimate) -> list[str]:
    b = spec.budget
    out = []
    if b.max_requests and est.requests > b.max_requests:
        out.append(f"needs ~{est.requests} requests but max_requests={b.max_requests}: the run will stop early")
    if b.max_tokens and est.tokens_expected > b.max_tokens:
        out.append(f"needs ~{est.tokens_expected} tokens but max_tokens={b.max_tokens}: the run will stop early")
    if b.max_usd and est.usd_expected + est.elicitation_usd_max > b.max_usd:
        out.append(f"needs ~${est.usd_expected + est.elicitation_usd_max:.2f} but max_usd={b.max_usd}: "
                   "the run will stop early")
    models = dict.fromkeys([spec.generation.model] + ([spec.elicitation_generation.model] if est.elicited else []))
    for model in models:
        if b.max_usd and model not in b.prices:
            out.append(f"max_usd is set but budget.prices has no entry for {model!r}: cost counts as $0")
    for cls, n in est.combinations.items():
        if spec.generation.method == "attrprompt" and n < b.samples_per_class / 2:
            out.append(f"class {cls!r}: only {n} attribute combinations for {b.samples_per_class} samples")
            break
    return out
