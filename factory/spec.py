"""The dataset spec: pydantic models, YAML loading with line-precise errors, and the content hash.

This module imports nothing heavy (no torch, no dagster, no duckdb): every other stage consumes a
validated :class:`Spec`, and a spec can be checked on any machine in milliseconds.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

Method = Literal["attrprompt", "simprompt", "zeroshot", "fewshot"]
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StrictModel(BaseModel):
    """Base of every spec section: unknown keys are errors, with the closest valid key suggested."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = set(cls.model_fields)
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
                    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(allowed))}"
                    raise PydanticCustomError("unknown_key", "unknown key '{key}'" + hint, {"key": str(key)})
        return data


class ClassSpec(StrictModel):
    """One label. A bare string in YAML is shorthand for ``{name: ...}``."""

    name: str = Field(min_length=1)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("class name must not be blank")
        return value.strip()


class ElicitSpec(StrictModel):
    """Ask the LLM for ``n`` values of a dimension (per class when the dimension is ``per_class``)."""

    n: int = Field(default=10, gt=0, le=200)
    instructions: str | None = None


class RangeSpec(StrictModel):
    """A numeric dimension such as length: values ``min, min+step, ..., max``."""

    min: int = Field(gt=0)
    max: int = Field(gt=0)
    step: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def values(self) -> list[str]:
        step = self.step or max(self.max - self.min, 1)
        points = list(range(self.min, self.max + 1, step))
        if points[-1] != self.max:
            points.append(self.max)
        return [str(p) for p in points]


Values = list[str] | dict[str, list[str]]


class AttributeSpec(StrictModel):
    """An attribute dimension. Exactly one source: ``values``, ``values_file``, ``elicit`` or ``range``."""

    per_class: bool = False
    description: str | None = None
    unit: str | None = None
    values: Values | None = None
    values_file: str | None = None
    elicit: ElicitSpec | None = None
    range: RangeSpec | None = None

    @field_validator("values", mode="before")
    @classmethod
    def _scalars_to_str(cls, value: Any) -> Any:
        def norm(items: Any) -> Any:
            if isinstance(items, list):
                return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in items]
            return items

        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return norm(value)

    @field_validator("values")
    @classmethod
    def _non_empty(cls, value: Values | None) -> Values | None:
        lists = value.values() if isinstance(value, dict) else [value] if value is not None else []
        for items in lists:
            if not items:
                raise ValueError("values must not be empty")
            if len({v.strip().lower() for v in items}) != len(items):
                raise ValueError("values must not repeat (case-insensitive)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> AttributeSpec:
        given = [k for k in ("values", "values_file", "elicit", "range") if getattr(self, k) is not None]
        if len(given) != 1:
            what = " and ".join(given) if given else "none"
            raise ValueError(f"give exactly one of values, values_file, elicit, range (got {what})")
        if isinstance(self.values, dict) and not self.per_class:
            raise ValueError("values per class (a mapping) need per_class: true")
        if self.per_class and isinstance(self.values, list):
            raise ValueError("per_class: true needs values as a mapping class -> list")
        if self.per_class and self.range is not None:
            raise ValueError("a range cannot be per_class")
        return self


class SimilarClassesSpec(StrictModel):
    """The k most similar classes of each class (elicited), or given by hand in ``given``."""

    k: int = Field(default=3, ge=0)
    given: dict[str, list[str]] | None = None


class FiltersSpec(StrictModel):
    """Which filters run on generated samples, and class-agnostic filtering of attribute values."""

    caf: bool = True
    refusal: bool = True
    dedup: bool = True
    near_dup: float | None = Field(default=0.95, gt=0, le=1)
    min_words: int = Field(default=5, ge=0)
    max_words: int | None = Field(default=None, gt=0)
    label_consistency: Literal["off", "classifier", "llm"] = "off"

    @model_validator(mode="after")
    def _bounds(self) -> FiltersSpec:
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) must be >= min_words ({self.min_words})")
        return self


class GenerationSpec(StrictModel):
    """How text is generated, and from which OpenAI-compatible endpoint."""

    method: Method = "attrprompt"
    model: str = "smollm2"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=256, gt=0)
    seed: int = 42
    n: int = Field(default=1, gt=0, le=16)
    template: str | None = None
    stratified: bool = False
    fewshot_k: int = Field(default=3, gt=0, le=20)
    diversity_chain: int = Field(default=4, gt=0, le=50)
    max_concurrency: int = Field(default=64, gt=0, le=4096)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # split generation into this many parts, each its own Dagster run (pod), all writing to the one store;
    # how the work is executed, not what is generated: not part of the spec hash
    shards: int = Field(default=1, ge=1, le=256)

    @field_validator("api_key_env")
    @classmethod
    def _is_env_name(cls, value: str) -> str:
        return _env_name(value)


def _env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key")
    return value


ELICITATION_TEMPERATURE = 0.7


class ElicitationSpec(StrictModel):
    """The model (and endpoint) that elicits values, similar classes and CAF verdicts: a few dozen requests,
    so it may be stronger than the one generating thousands. Unset fields default to ``generation``'s;
    ``temperature`` defaults to :data:`ELICITATION_TEMPERATURE`."""

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)

    @field_validator("api_key_env")
    @classmethod
    def _is_env_name(cls, value: str | None) -> str | None:
        return None if value is None else _env_name(value)


class Price(StrictModel):
    """USD per million tokens."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)


class BudgetSpec(StrictModel):
    """How much to generate, and hard caps that stop a run cleanly."""

    samples_per_class: int = Field(default=100, gt=0)
    max_samples: int = Field(default=10_000_000, gt=0)
    max_requests: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_usd: float | None = Field(default=None, gt=0)
    prices: dict[str, Price] = Field(default_factory=dict)

    def price(self, model: str) -> Price:
        return self.prices.get(model, Price())


class DatasetRef(StrictModel):
    """A labelled file (JSONL, CSV or Parquet). ``path`` may use ``${VAR}`` or ``${VAR:-default}``."""

    path: str
    text_field: str = "text"
    label_field: str = "label"
    # instance-level subjectivity: the share of annotators who chose the label (a number in [0, 1]; default:
    # an ``agreement`` column where the file has one), or each text's raw annotations (a list of labels)
    agreement_field: str | None = None
    annotations_field: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_optional(self, handler: Any) -> dict[str, Any]:
        """Unset subjectivity fields are left out of the dump, so they leave older specs' hashes alone."""
        data = handler(self)
        for name in ("agreement_field", "annotations_field"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


def _as_dataset_ref(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


class EvaluationSpec(StrictModel):
    """The real, human-labelled data that judges the generated set."""

    test_set: DatasetRef | None = None
    train_set: DatasetRef | None = None
    compare: list[Literal["synthetic", "gold", "synthetic+gold"]] = Field(default_factory=lambda: ["synthetic"])

    _refs = field_validator("test_set", "train_set", mode="before")(classmethod(lambda cls, v: _as_dataset_ref(v)))


class ResourcesSpec(StrictModel):
    cpu: str = "1"
    memory: str = "4Gi"
    gpu: int = Field(default=0, ge=0)


class TrainingSpec(StrictModel):
    """The classifier trained on the generated data, and where it runs."""

    trainer: Literal["linear_probe", "finetune"] = "linear_probe"
    base_model: str = "all-MiniLM-L6-v2"
    runner: Literal["local", "kubernetes"] = "local"
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    image: str | None = None
    epochs: int = Field(default=3, gt=0)
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=16, gt=0)
    max_length: int = Field(default=128, gt=0)
    seed: int = 0
    budget_fractions: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0])


class Spec(StrictModel):
    """A dataset spec: what to generate, how, within which budget, and how to judge it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    task: Literal["multiclass", "multilabel"] = "multiclass"
    domain: str = Field(min_length=1)
    data_source: str | None = None
    classes: list[ClassSpec] = Field(min_length=2)
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict)
    similar_classes: SimilarClassesSpec = Field(default_factory=SimilarClassesSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    elicitation: ElicitationSpec = Field(default_factory=ElicitationSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    filters: FiltersSpec = Field(default_factory=FiltersSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("classes", mode="before")
    @classmethod
    def _class_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, (str, int)) else v for v in value]
        return value

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: list[ClassSpec]) -> list[ClassSpec]:
        seen: set[str] = set()
        for c in value:
            if c.name.lower() in seen:
                raise ValueError(f"duplicate class '{c.name}'")
            seen.add(c.name.lower())
        return value

    @model_validator(mode="after")
    def _per_class_covers_classes(self) -> Spec:
        names = self.class_names
        for dim, attr in self.attributes.items():
            if isinstance(attr.values, dict):
                _check_class_keys(attr.values, names, f"attributes.{dim}.values")
        if self.similar_classes.given:
            _check_class_keys(self.similar_classes.given, names, "similar_classes.given", need_all=False)
            for cls_name, similar in self.similar_classes.given.items():
                unknown = sorted(set(similar) - set(names))
                if unknown:
                    raise _field_error(f"similar_classes.given.{cls_name}", f"unknown classes {unknown}")
        if self.generation.method == "fewshot" and self.evaluation.train_set is None:
            raise _field_error("generation.method", "fewshot needs evaluation.train_set (the real examples to show)")
        total = self.budget.samples_per_class * len(self.classes)
        if total > self.budget.max_samples:
            raise _field_error(
                "budget.samples_per_class",
                f"{self.budget.samples_per_class:,} per class x {len(self.classes)} classes = {total:,} samples, over "
                f"budget.max_samples ({self.budget.max_samples:,}); raise budget.max_samples explicitly if you mean it")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def elicitation_generation(self) -> GenerationSpec:
        """The generation settings elicitation requests are sent with: ``generation`` overridden by the set
        fields of ``elicitation`` (model, endpoint, key variable)."""
        e = self.elicitation
        changes = {k: v for k, v in (("model", e.model), ("base_url", e.base_url), ("api_key_env", e.api_key_env))
                   if v is not None}
        return self.generation.model_copy(update=changes) if changes else self.generation

    @property
    def elicitation_temperature(self) -> float:
        e = self.elicitation.temperature
        return ELICITATION_TEMPERATURE if e is None else e

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def hash(self) -> str:
        """A stable content hash: the same meaning gives the same hash, whatever the YAML formatting."""
        # max_samples is a guard that changes nothing generated; leaving it out keeps older specs' hashes, and
        # so does leaving out an elicitation section that sets nothing
        # (generation.shards only says how the same work is split up)
        exclude: dict[str, Any] = {"budget": {"max_samples"}, "generation": {"shards"}}
        if self.elicitation == ElicitationSpec():
            exclude["elicitation"] = True
        dumped = self.model_dump(mode="json", exclude=exclude)
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def resolve_path(self, raw: str) -> Path:
        """Expand ``${VAR}``/``${VAR:-default}`` and make a relative path relative to the spec file."""
        expanded = expand_env(raw)
        path = Path(expanded).expanduser()
        if not path.is_absolute() and self._source is not None:
            path = self._source.parent / path
        return path

    def existing_file(self, ref: DatasetRef | None) -> Path | None:
        """The file ``ref`` names when it resolves to a file here; None when there is no ref, its
        ``${VAR}`` is unset, or nothing is at that path."""
        if ref is None:
            return None
        try:
            path = self.resolve_path(ref.path)
        except ValueError:  # an unset ${VAR}
            return None
        return path if path.is_file() else None

    def text(self) -> str:
        """The spec as its file says it (the YAML text), or as JSON for a spec that has no file."""
        return self._source.read_text(encoding="utf-8") if self._source else self.model_dump_json()


def _field_error(where: str, message: str) -> PydanticCustomError:
    """An error raised by a whole-spec check, pinned to the field (and so the line) it is about."""
    return PydanticCustomError("spec_field", message, {"field": where})


def _check_class_keys(mapping: dict[str, Any], names: list[str], where: str, need_all: bool = True) -> None:
    missing = [n for n in names if n not in mapping] if need_all else []
    unknown = [k for k in mapping if k not in names]
    if missing:
        raise _field_error(where, f"missing classes {missing}")
    if unknown:
        raise _field_error(where, f"unknown classes {unknown} (classes are {names})")


def unset_env_vars(raw: str) -> list[str]:
    """The variables ``raw`` names as ``${VAR}`` (no default) that are unset or empty."""
    return [m.group(1) for m in ENV_REF.finditer(raw) if m.group(2) is None and not os.environ.get(m.group(1))]


def expand_env(raw: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without a default is an error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise SpecError([SpecIssue(None, None, raw, f"environment variable {name} is not set")])

    return ENV_REF.sub(sub, raw)


# --------------------------------------------------------------------------------------------------
# Loading: YAML -> line map -> validation -> errors that name the file, the line and the field.


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec file."""

    file: str | None
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "<spec>")
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot be used; ``issues`` lists every problem found, each with its line."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def _line_map(node: yaml.Node, path: Loc, lines: dict[Loc, int], file: str) -> None:
    """Record the 1-based line of every key and item; reject duplicate keys (YAML would keep the last)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise SpecError([SpecIssue(file, key_node.start_mark.line + 1, _dotted(path + (key,)), "duplicate key")])
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines, file)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _yaml_keys(loc: tuple[Any, ...], data: Any) -> Loc:
    """Drop pydantic's type tags (e.g. ``list[str]``) from a loc, keeping only the keys present in the YAML."""
    kept: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            kept.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            kept.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not re.search(r"[\[\]-]", part):
            kept.append(part)  # a missing key: still name it
            node = None
    return tuple(kept)


def _message(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "greater_than":
        return f"must be > {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch" and err.get("loc") == ("name",):
        return (f"'{err.get('input')}' must be a lower-case slug (letters, digits, '_', '.', '-', starting with a "
                "letter or digit), e.g. 'agnews'")
    if kind == "too_short" and err.get("loc") == ("classes",):
        return f"needs at least {ctx.get('min_length', 2)} classes"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(err.get("input")), expected, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"'{err.get('input')}' is not one of {', '.join(expected)}{hint}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _issues_from(exc: ValidationError, data: Any, lines: dict[Loc, int], file: str) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors():
        loc = _yaml_keys(tuple(err["loc"]), data)
        if err["type"] == "unknown_key":
            loc = loc + (err["ctx"]["key"],)
        elif err["type"] == "spec_field":
            loc = loc + tuple(err["ctx"]["field"].split("."))
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        field, message = _dotted(loc), _message(err)
        if (field, message) not in seen:
            seen.add((field, message))
            issues.append(SpecIssue(file, line, field, message))
    return issues


def parse_yaml_model(text: str, model: type[M], file: str = "<yaml>") -> M:
    """Validate YAML text against a pydantic model; raise :class:`SpecError` naming file, line and field."""
    return _validate_yaml(text, model, file)[0]


def _validate_yaml(text: str, model: type[M], file: str) -> tuple[M, dict[Loc, int]]:
    """The validated model and the line of every key and item."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError([SpecIssue(file, line, "", f"invalid YAML: {exc.problem or exc}")]) from None
    if root is None or data is None:
        raise SpecError([SpecIssue(file, 1, "", "the file is empty")])
    if not isinstance(data, dict):
        raise SpecError([SpecIssue(file, 1, "", "the file must be a mapping of keys")])
    lines: dict[Loc, int] = {}
    _line_map(root, (), lines, file)
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        raise SpecError(_issues_from(exc, data, lines, file)) from None


def _path_fields(spec: Spec) -> Iterator[tuple[Loc, str, bool]]:
    """Every path the spec names: (where, the raw value, whether the file must exist at load time)."""
    for dim, attr in spec.attributes.items():
        if attr.values_file is not None:
            yield ("attributes", dim, "values_file"), attr.values_file, True
    if spec.generation.template is not None:
        yield ("generation", "template"), spec.generation.template, True
    for name in ("test_set", "train_set"):
        ref: DatasetRef | None = getattr(spec.evaluation, name)
        if ref is not None:  # may live elsewhere (another machine, a mounted volume): not required here
            yield ("evaluation", name, "path"), ref.path, False


def class_values_file(folder: Path, class_name: str) -> Path | None:
    """A per-class ``values_file`` folder's file for ``class_name``: ``<class>.txt``, else ``<class>.jsonl``."""
    return next((p for p in (folder / f"{class_name}.txt", folder / f"{class_name}.jsonl") if p.is_file()), None)


def values_file_problem(spec: Spec, path: Path) -> str | None:
    """Why a ``values_file`` (a file, or a folder of per-class files) cannot be read; None when it can."""
    if path.is_dir():
        missing = [n for n in spec.class_names if class_values_file(path, n) is None]
        return f"no {missing[0]}.txt or {missing[0]}.jsonl in {path}" if missing else None
    return None if path.is_file() else f"{path} does not exist"


def _path_issues(spec: Spec, lines: dict[Loc, int], file: str) -> list[SpecIssue]:
    """Unset ``${VAR}`` in any path, and values files and templates that are not there."""
    issues: list[SpecIssue] = []
    for loc, raw, must_exist in _path_fields(spec):
        known = next((loc[:i] for i in range(len(loc), 0, -1) if loc[:i] in lines), loc)  # test_set: x -> no .path
        line, field = lines.get(known), _dotted(known)
        unset = unset_env_vars(raw)
        if unset:
            issues += [SpecIssue(file, line, field, f"environment variable {name} is not set") for name in unset]
            continue
        if not must_exist:
            continue
        path = spec.resolve_path(raw)
        problem = values_file_problem(spec, path) if loc[-1] == "values_file" else (
            None if path.is_file() else f"{path} does not exist")
        if problem:
            issues.append(SpecIssue(file, line, field, problem))
    return issues


def parse_spec(text: str, file: str = "<spec>", source: Path | None = None) -> Spec:
    """Validate a spec from YAML text; raise :class:`SpecError` naming file, line and field.

    With ``source`` (the spec file), its paths are checked too: no unset ``${VAR}``, and values files and
    templates (relative to the spec file) exist."""
    spec, lines = _validate_yaml(text, Spec, file)
    spec._source = source
    if source is not None:
        issues = _path_issues(spec, lines, file)
        if issues:
            raise SpecError(issues)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file, and the files it names."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([SpecIssue(str(path), None, "", "no such spec file")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecIssue(str(path), None, "", f"cannot read the spec file: {exc}")]) from None
    return parse_spec(text, file=str(path), source=path.resolve())
