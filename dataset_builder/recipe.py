"""Build recipes: YAML files in `dataset_builder/recipes/` mirrored by typed dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from cultureclip_guards import BadInput, read_yaml

RECIPE_DIR = Path(__file__).parent / "recipes"


@dataclass
class BackendSpec:
    """Which backend to build: `kind` is one of the names in `dataset_builder.backends.make_*_backend`."""

    kind: str
    model_id: str | None = None
    revision: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BottomUpSettings:
    """Reading WIT (Wikipedia image-text, its real columns) in streaming mode: the text pre-filter applied before
    any VLM call, the bounds (counted in language entries for wikimedia/wit_base), and the image fetch from
    `image_url` for corpora that do not carry the image."""

    split: str = "train"
    revision: str | None = None
    data_files: list[str] | str | None = None  # for a builder corpus ("csv" + the WIT .tsv.gz files or URLs)
    load_options: dict[str, Any] = field(default_factory=dict)  # extra `datasets.load_dataset` options (sep, ...)
    languages: list[str] = field(default_factory=lambda: ["en"])  # WIT `language`; [] keeps every language
    mime_types: list[str] = field(default_factory=lambda: ["image/jpeg", "image/png", "image/webp"])
    require_main_image: bool = False  # WIT `is_main_image`
    require_country_mention: bool = True  # title/descriptions must name a country or an unambiguous demonym
    max_screened: int = 200_000  # rows read from the stream at most
    max_candidates: int = 5_000  # rows passing the pre-filter that go on to fetch + VLM, at most
    fetch_timeout_s: float = 20.0
    fetch_retries: int = 2  # on 429/5xx and connection errors, with exponential backoff
    fetch_workers: int = 8
    max_image_bytes: int = 20_000_000
    max_image_side: int = 768  # fetched images are downscaled to this longest side before the VLM sees them
    user_agent: str = "CultureCLIP-dataset-builder/0.1 (research dataset build; https://github.com/cultureclip)"


@dataclass
class ConceptSettings:
    """Where concepts come from: `curated` (catalog), `top-down` (text model) or `bottom-up` (corpus + VLM)."""

    source: str = "curated"
    catalog: str | None = None  # curated catalog path; None = the packaged Twemoji catalog
    countries: list[str] | str = "all"  # ISO codes or "all"
    categories: list[str] | str = "all"
    # bottom-up: a WIT-layout corpus: Hub id (wikimedia/wit_base, whose images come embedded), local folder or file
    # (.parquet/.jsonl/.tsv[.gz]), or a datasets builder name ("csv", "parquet", "json") with bottom_up.data_files
    corpus: str | None = None
    bottom_up: BottomUpSettings = field(default_factory=BottomUpSettings)
    prompt: str = "concept.v1"
    bottom_up_prompt: str = "bottomup.v2"


@dataclass
class ImageCheckSettings:
    """Optional image-side twin check after rendering: mean cosine of the pair's CLIP image embeddings."""

    model: str  # CLIP checkpoint (Hub id or folder)
    min_similarity: float
    revision: str | None = None
    batch_size: int = 32


@dataclass
class TwinSettings:
    """Twin proposal and similarity checks (text before rendering, optionally images after)."""

    prompt: str = "twin.v1"
    # "sentence:<hub id or folder>[@revision]", "clip:<folder>" or the offline stand-in "offline-hashed-ngram".
    embedder: str = "sentence:sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
    # Calibrated on the packaged twin catalog (`python -m dataset_builder calibrate-similarity`): keeps >= 95 %
    # of its true twins. Applied to generated twins; curated pairs are recorded, not filtered.
    min_feature_similarity: float = 0.35
    image_check: ImageCheckSettings | None = None  # off by default


@dataclass
class CaptionSettings:
    """Contextual captions per side."""

    prompt: str = "captions.v1"
    per_side: int = 10
    max_words: int = 15  # a caption must have fewer words than this
    max_attempts: int = 3  # re-asks (with derived seeds) until `per_side` valid captions exist


@dataclass
class ImageSettings:
    """Text-to-image settings."""

    width: int = 512
    height: int = 512
    steps: int = 4
    guidance: float = 0.0
    batch_size: int = 8
    prompt_suffix: str = ""


@dataclass
class JudgeSettings:
    """Judge prompt and the keep rule: drop an image if any score <= `drop_if_any_at_most` or mean <= `min_mean`."""

    prompt: str = "judge.v1"
    batch_size: int = 8
    drop_if_any_at_most: int = 1
    min_mean: float = 3.0
    image_max_side: int | None = 512  # images are shrunk (aspect kept) to at most this many pixels a side before judging


@dataclass
class ExportSettings:
    """Hub export settings."""

    license: str = "cc-by-4.0"
    pretty_name: str = "CulTwin"
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    rows_per_shard: int = 2000
    # "matched": row k pairs caption/image k of both sides (at most N rows per pair); "all": every (i, j) combination
    # of a side's kept images with the twin's (up to N x N rows per pair, as the released training data).
    caption_pairing: str = "matched"
    license_name: str | None = None  # for license "other": the Hub card's license_name / license_link
    license_link: str | None = None
    model_licenses: dict[str, str] = field(default_factory=dict)  # model id -> its licence, listed in the card


CAPTION_PAIRINGS = ("matched", "all")


@dataclass
class RuntimeSettings:
    """How a build runs, not what it produces: never part of the resume check."""

    keep_backends_loaded: bool = False  # True: every backend stays resident until the end (more memory, no reloads)
    barrier_timeout_s: float = 86400.0  # how long a rank that finished its share waits for the others


# Backend options that change where or how fast a backend runs but not what it answers: a run folder may be resumed
# with other values (another GPU, an offload mode, more servers, other timeouts).
RUNTIME_OPTIONS = frozenset({"device", "cpu_offload", "base_urls", "max_in_flight", "timeout_s", "connect_timeout_s",
                             "max_retries", "backoff_s", "max_backoff_s", "api_key_env"})


@dataclass
class Recipe:
    """A full build recipe."""

    name: str
    seed: int
    text_backend: BackendSpec
    image_backend: BackendSpec
    judge_backend: BackendSpec
    concepts: ConceptSettings = field(default_factory=ConceptSettings)
    twins: TwinSettings = field(default_factory=TwinSettings)
    captions: CaptionSettings = field(default_factory=CaptionSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    text_batch_size: int = 8
    limit_pairs: int | None = None
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    departures: list[str] = field(default_factory=list)  # from the file's `# departure:` header lines (documentation)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for provenance)."""
        return asdict(self)

    def output_dict(self) -> dict[str, Any]:
        """`to_dict` without the settings that cannot change the rows (runtime section, RUNTIME_OPTIONS): what a
        resumed run must match."""
        data = self.to_dict()
        data.pop("runtime", None)
        data.pop("departures", None)
        for role in ("text_backend", "image_backend", "judge_backend"):
            data[role]["options"] = {k: v for k, v in data[role]["options"].items() if k not in RUNTIME_OPTIONS}
        return data


def _optional_dataclass(hint: Any) -> type | None:
    """The dataclass behind a field's type hint (`X` or `X | None`), else None."""
    options = [hint, *get_args(hint)]
    return next((h for h in options if isinstance(h, type) and is_dataclass(h)), None)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's type hint (ints are accepted for floats, never bools for numbers)."""
    if hint is Any:
        return True
    origin, args = get_origin(hint), get_args(hint)
    if isinstance(hint, types.UnionType) or origin is Union:
        return any(_type_ok(value, option) for option in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(item, args[0]) for item in value) if args else \
            isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _type_ok(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not get_args(hint) else None
    return text or str(hint).replace("typing.", "")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise BadInput(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BadInput(f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = _optional_dataclass(hints[key])
        if hint is not None and value is not None:
            kwargs[key] = _build(hint, value, f"{where}.{key}")
            continue
        if not _type_ok(value, hints[key]):
            raise BadInput(f"{where}.{key}: expected {_type_name(hints[key])}, got {value!r}")
        kwargs[key] = float(value) if hints[key] is float else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BadInput(f"{where}: {exc}") from None


CONCEPT_SOURCES = ("curated", "top-down", "bottom-up")
SPLIT_NAMES = ("train", "validation", "test")


def _at_least(minimum: float) -> tuple[Any, str]:
    return (lambda v: v is None or v >= minimum), f">= {minimum:g}"


# (dotted field, test, what was expected): checked after types, before any work
_RANGES: tuple[tuple[str, Any, str], ...] = (
    ("text_batch_size", *_at_least(1)), ("limit_pairs", *_at_least(1)),
    ("captions.per_side", *_at_least(1)), ("captions.max_words", *_at_least(2)),
    ("captions.max_attempts", *_at_least(1)),
    ("images.width", *_at_least(8)), ("images.height", *_at_least(8)), ("images.steps", *_at_least(1)),
    ("images.batch_size", *_at_least(1)), ("images.guidance", *_at_least(0)),
    ("judge.batch_size", *_at_least(1)), ("judge.image_max_side", *_at_least(16)),
    ("export.rows_per_shard", *_at_least(1)),
    ("twins.min_feature_similarity", lambda v: -1.0 <= v <= 1.0, "a cosine similarity in [-1, 1]"),
    ("twins.image_check.min_similarity", lambda v: -1.0 <= v <= 1.0, "a cosine similarity in [-1, 1]"),
    ("twins.image_check.batch_size", *_at_least(1)),
    ("concepts.bottom_up.max_screened", *_at_least(1)), ("concepts.bottom_up.max_candidates", *_at_least(1)),
    ("concepts.bottom_up.fetch_workers", *_at_least(1)), ("concepts.bottom_up.fetch_retries", *_at_least(0)),
    ("concepts.bottom_up.fetch_timeout_s", lambda v: v > 0, "> 0 seconds"),
    ("concepts.bottom_up.max_image_bytes", *_at_least(1)), ("concepts.bottom_up.max_image_side", *_at_least(16)),
    ("runtime.barrier_timeout_s", lambda v: v > 0, "> 0 seconds"),
    ("concepts.source", lambda v: v in CONCEPT_SOURCES, f"one of {list(CONCEPT_SOURCES)}"),
    ("export.caption_pairing", lambda v: v in CAPTION_PAIRINGS, f"one of {list(CAPTION_PAIRINGS)}"),
)


def _field(recipe: Recipe, dotted: str) -> tuple[bool, Any]:
    value: Any = recipe
    for part in dotted.split("."):
        if value is None:
            return False, None
        value = getattr(value, part)
    return True, value


def validate_recipe(recipe: Recipe, where: str) -> None:
    """Range-check every count, fraction and choice of a recipe; raise BadInput naming the field."""
    for dotted, test, expected in _RANGES:
        present, value = _field(recipe, dotted)
        if present and value is not None and not test(value):
            raise BadInput(f"{where}: {dotted}: expected {expected}, got {value!r}")
    fractions = recipe.export.split_fractions
    unknown = sorted(set(fractions) - set(SPLIT_NAMES))
    if unknown:
        raise BadInput(f"{where}: export.split_fractions: unknown split(s) {unknown}; expected {list(SPLIT_NAMES)}")
    bad = {k: v for k, v in fractions.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise BadInput(f"{where}: export.split_fractions: each fraction must be in [0, 1], got {bad}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise BadInput(f"{where}: export.split_fractions: the fractions must sum to 1, got {dict(fractions)} "
                       f"(sum {sum(fractions.values()):g})")
    from .catalog import CATEGORIES, lookup_country

    countries, categories = recipe.concepts.countries, recipe.concepts.categories
    if countries != "all":
        if not isinstance(countries, list) or not countries:
            raise BadInput(f"{where}: concepts.countries: expected 'all' or a non-empty list, got {countries!r}")
        for i, value in enumerate(countries):
            try:
                lookup_country(str(value))
            except ValueError as exc:
                raise BadInput(f"{where}: concepts.countries[{i}]: {exc}") from None
    if categories != "all":
        if not isinstance(categories, list) or not categories:
            raise BadInput(f"{where}: concepts.categories: expected 'all' or a non-empty list, got {categories!r}")
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise BadInput(f"{where}: concepts.categories: unknown {unknown}; expected some of {list(CATEGORIES)}")


def header_departures(text: str) -> list[str]:
    """The `# departure: ...` lines of a recipe's leading comment block (continuation lines start with `#   `)."""
    out: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:].strip()
        if body.lower().startswith("departure:"):
            out.append(body.split(":", 1)[1].strip())
        elif out and line.startswith("#   ") and body:
            out[-1] += " " + body
    return out


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load `paper`/`demo` (packaged) or a YAML path into a Recipe; errors name the file and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"recipe {name_or_path!r} not found (packaged recipes: {known}, or a YAML file path)")
    text = path.read_text(encoding="utf-8")
    data = read_yaml(path, "recipe")
    # a recipe written back from provenance (`Recipe.to_dict`) lists its departures as a field; a hand-written one
    # states them in its header comments
    listed = data.get("departures", []) if isinstance(data, dict) else []
    if not (isinstance(listed, list) and all(isinstance(item, str) for item in listed)):
        raise BadInput(f"{path}: departures must be a list of strings, got {listed!r}")
    recipe = _build(Recipe, data, str(path))
    recipe.departures = list(dict.fromkeys([*recipe.departures, *header_departures(text)]))
    validate_recipe(recipe, str(path))
    from .embedders import check_embedder_spec

    check_embedder_spec(recipe.twins.embedder, f"{path}: twins.embedder")
    return recipe
