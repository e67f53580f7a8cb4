"""A CultureVerse-style benchmark built from a concept catalog.

For each concept the text model writes a short description and three multiple-choice questions (see
`prompts/cultureverse_mcq.v1.txt`):
- recognition: what the picture shows, with near-miss distractors we choose (the concept's curated twins first,
  then same-category concepts of the same continent, then the rest of the category);
- cultural knowledge: a fact about the pictured concept, without naming it;
- scene reasoning: a situation that needs recognition plus reasoning.
Answers are parsed strictly (malformed ones are counted rejections), the concept is drawn by the image backend, and
the rows (one per question) are exported Hub-native by `cultureverse_export`, split by concept.

Records live in `RUN/cultureverse_mcq/` and `RUN/cultureverse_images/`, one per concept, written atomically, so a
killed build resumes where it stopped and gives the same rows.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .backends.base import ChatBackend, ChatRequest, ImageBackend
from .catalog import all_countries
from .parsing import Rejected, check_fields, extract_json_object
from .prompts import load_prompt, make_request
from .runstore import StageStore, atomic_write_bytes, atomic_write_json, derive_seed, sha256_bytes
from .schema import Concept, make_concept
from .twin_catalog import DEFAULT_CATALOG, CatalogError, load_twin_catalog

logger = logging.getLogger(__name__)

PROMPT_VERSION = "cultureverse_mcq.v1"
TASK = "cultureverse_mcq"
QUESTION_TYPES = ("recognition", "cultural_knowledge", "scene_reasoning")
LETTERS = "ABCD"
N_OPTIONS = 4
OFFLINE_CV_TEXT_ID = "offline/cultureverse-template-writer"


# ----------------------------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ConceptCatalog:
    """Concepts by id plus the curated twin links (concept id -> twin ids)."""

    source: str
    concepts: dict[str, Concept]
    twins: dict[str, set[str]] = field(default_factory=dict)


def _row_concept(row: Any, where: str) -> tuple[Concept, list[str]]:
    if not isinstance(row, dict):
        raise CatalogError(f"{where}: expected a mapping, got {type(row).__name__}")
    for name in ("concept", "category", "context", "visual_features"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise CatalogError(f"{where}.{name}: missing or empty (expected a non-empty string)")
    country = row.get("iso_code") or row.get("country")
    if not isinstance(country, str) or not country.strip():
        raise CatalogError(f"{where}: needs 'iso_code' or 'country'")
    twins = row.get("twins", [])
    if not isinstance(twins, list) or not all(isinstance(t, str) for t in twins):
        raise CatalogError(f"{where}.twins: expected a list of concept names")
    try:
        concept = make_concept(row["concept"], country, row["category"], row["context"], row["visual_features"],
                               source="curated", emoji=row.get("emoji"))
    except ValueError as exc:
        raise CatalogError(f"{where} ({row['concept']!r}): {exc}") from None
    return concept, twins


def load_concept_catalog(path: str | Path | None = None) -> ConceptCatalog:
    """The curated twin catalog (default), a twin-catalog-style YAML, a YAML list/`concepts:` mapping, or JSONL.

    Plain rows need concept, iso_code (or country), category, context, visual_features; optional emoji and
    `twins` (names of look-alike concepts in the same file). Errors name the file, row and field.
    """
    path = Path(path) if path is not None else DEFAULT_CATALOG
    if not path.is_file():
        raise FileNotFoundError(f"concept catalog {path} not found")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CatalogError(f"{path}: line {number}: invalid JSON ({exc})") from None
        label = "line"
    else:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CatalogError(f"{path}: cannot read YAML ({exc})") from None
        if isinstance(data, dict) and "pairs" in data:
            twin = load_twin_catalog(path, check_pixels=False)
            links: dict[str, set[str]] = {cid: set() for cid in twin.concepts}
            for a, b in twin.pairs:
                links[a].add(b)
                links[b].add(a)
            return ConceptCatalog(str(path), dict(twin.concepts), links)
        rows = data.get("concepts") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CatalogError(f"{path}: expected a list of concepts or a mapping with a 'concepts' list")
        label = "concepts"
    concepts: dict[str, Concept] = {}
    names: dict[str, str] = {}
    wanted: dict[str, list[str]] = {}
    for i, row in enumerate(rows):
        where = f"{path}: {label} {i + 1}" if label == "line" else f"{path}: concepts[{i}]"
        concept, twin_names = _row_concept(row, where)
        if concept.concept_id in concepts or concept.concept.casefold() in names:
            raise CatalogError(f"{where}: duplicate concept {concept.concept!r}")
        concepts[concept.concept_id] = concept
        names[concept.concept.casefold()] = concept.concept_id
        wanted[concept.concept_id] = twin_names
    links = {cid: set() for cid in concepts}
    for cid, twin_names in wanted.items():
        for name in twin_names:
            if name.casefold() not in names:
                raise CatalogError(f"{path}: concept {concepts[cid].concept!r}: unknown twin {name!r}")
            links[cid].add(names[name.casefold()])
            links[names[name.casefold()]].add(cid)
    return ConceptCatalog(str(path), concepts, links)


# ----------------------------------------------------------------------------------------------------------------
# Distractors
# ----------------------------------------------------------------------------------------------------------------


def recognition_distractors(cid: str, catalog: ConceptCatalog, rng: np.random.Generator, k: int = N_OPTIONS - 1) -> list[str]:
    """k near-miss concept names: twins, then same category and continent, then same category, then the rest."""
    me = catalog.concepts[cid]
    others = sorted(c for c in catalog.concepts if c != cid)
    tiers: list[list[str]] = [
        [c for c in others if c in catalog.twins.get(cid, set())],
        [c for c in others if catalog.concepts[c].category == me.category and catalog.concepts[c].continent == me.continent],
        [c for c in others if catalog.concepts[c].category == me.category],
        [c for c in others if catalog.concepts[c].continent == me.continent],
        others,
    ]
    picked: list[str] = []
    seen = {me.concept.casefold()}
    for tier in tiers:
        for index in rng.permutation(len(tier)):
            name = catalog.concepts[tier[index]].concept
            if name.casefold() not in seen and len(picked) < k:
                picked.append(name)
                seen.add(name.casefold())
    if len(picked) < k:
        raise ValueError(f"concept {me.concept!r}: the catalog has only {len(picked)} other distinct concepts; "
                         f"recognition questions need {k} distractors")
    return picked


def country_distractors(concept: Concept, rng: np.random.Generator, k: int = N_OPTIONS - 1) -> list[str]:
    """k other countries, neighbours (same continent) first: plausible wrong answers to an origin question."""
    same = [c.name for c in all_countries() if c.continent == concept.continent and c.iso_code != concept.iso_code]
    rest = [c.name for c in all_countries() if c.continent != concept.continent]
    pool = [same[i] for i in rng.permutation(len(same))] + [rest[i] for i in rng.permutation(len(rest))]
    return pool[:k]


def request_fields(cid: str, catalog: ConceptCatalog, seed: int) -> dict[str, Any]:
    """Everything the prompt is rendered from (and the offline writer answers from) for one concept."""
    c = catalog.concepts[cid]
    rng = np.random.default_rng(seed)
    distractors = recognition_distractors(cid, catalog, rng)
    answer_index = int(rng.integers(N_OPTIONS))
    options = list(distractors)
    options.insert(answer_index, c.concept)
    by_name = {x.concept: x for x in catalog.concepts.values()}
    return {
        "concept": c.concept, "country": c.country, "category": c.category, "context": c.context,
        "visual_features": c.visual_features,
        "recognition_options": json.dumps(options, ensure_ascii=False),
        "recognition_answer": LETTERS[answer_index],
        "country_options": json.dumps(country_distractors(c, rng), ensure_ascii=False),
        "scene_contexts": json.dumps([by_name[d].context for d in distractors], ensure_ascii=False),
    }


# ----------------------------------------------------------------------------------------------------------------
# Strict answer parsing
# ----------------------------------------------------------------------------------------------------------------

_QUESTION_SPEC = {"question": str, "options": list, "answer": str, "rationale": str}


def _parse_question(obj: Any, qtype: str, concept: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise Rejected(f"not_object:{qtype}")
    try:
        check_fields(obj, _QUESTION_SPEC)
    except Rejected as exc:
        raise Rejected(f"{qtype}:{exc.reason}", exc.detail) from None
    options = obj["options"]
    if len(options) != N_OPTIONS or not all(isinstance(o, str) and o.strip() for o in options):
        raise Rejected(f"{qtype}:bad_options", f"need {N_OPTIONS} non-empty strings, got {options!r}")
    options = [" ".join(o.split()) for o in options]
    if len({o.casefold() for o in options}) != N_OPTIONS:
        raise Rejected(f"{qtype}:duplicate_options", str(options))
    answer = obj["answer"].strip().upper().strip("().")
    if answer not in LETTERS:
        raise Rejected(f"{qtype}:bad_answer_letter", repr(obj["answer"]))
    question = " ".join(obj["question"].split())
    if qtype != "recognition" and concept.casefold() in question.casefold():
        raise Rejected(f"{qtype}:question_names_concept", question)
    return {"question": question, "options": options, "answer": answer, "rationale": " ".join(obj["rationale"].split())}


def parse_cultureverse(answer: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """Parse a cultureverse_mcq.v1 answer; recognition must use the given options and answer letter."""
    obj = check_fields(extract_json_object(answer), {"description": str, **{q: dict for q in QUESTION_TYPES}})
    out: dict[str, Any] = {"description": " ".join(obj["description"].split())}
    for qtype in QUESTION_TYPES:
        out[qtype] = _parse_question(obj[qtype], qtype, fields["concept"])
    recognition = out["recognition"]
    if recognition["options"] != json.loads(fields["recognition_options"]):
        raise Rejected("recognition:options_changed", str(recognition["options"]))
    if recognition["answer"] != fields["recognition_answer"]:
        raise Rejected("recognition:wrong_answer_key", recognition["answer"])
    return out


def balance_positions(parsed: dict[str, Any], seed: int) -> dict[str, Any]:
    """Shuffle the model-written options (seeded) so the correct letter is not always where the model put it."""
    rng = np.random.default_rng(seed)
    for qtype in QUESTION_TYPES[1:]:
        q = parsed[qtype]
        correct = q["options"][LETTERS.index(q["answer"])]
        order = rng.permutation(N_OPTIONS)
        q["options"] = [q["options"][i] for i in order]
        q["answer"] = LETTERS[q["options"].index(correct)]
    return parsed


# ----------------------------------------------------------------------------------------------------------------
# Offline template writer
# ----------------------------------------------------------------------------------------------------------------


class CultureVerseTemplateWriter:
    """A ChatBackend answering cultureverse_mcq requests from `request.fields`, in the requested JSON format."""

    model_id = OFFLINE_CV_TEXT_ID
    revision: str | None = "v1"

    def generate(self, requests: list[ChatRequest], max_new_tokens: int = 512) -> list[str]:
        """One JSON answer per request (other tasks are a programming error)."""
        return [self._answer(r) for r in requests]

    def _answer(self, req: ChatRequest) -> str:
        if req.task != TASK:
            raise ValueError(f"CultureVerseTemplateWriter cannot answer task {req.task!r}")
        f, rng = req.fields, np.random.default_rng(req.seed & 0xFFFFFFFF)
        options = json.loads(f["recognition_options"])
        near_miss = next(o for o in options if o != f["concept"])
        noun = f["category"].lower()

        def question(text: str, correct: str, wrong: list[str], rationale: str) -> dict[str, Any]:
            at = int(rng.integers(N_OPTIONS))
            opts = list(wrong[: N_OPTIONS - 1])
            opts.insert(at, correct)
            return {"question": text, "options": opts, "answer": LETTERS[at], "rationale": rationale}

        return json.dumps({
            "description": f"{f['context']} It is recognisable by: {f['visual_features']}.",
            "recognition": {"question": "Which of these is shown in the image?", "options": options,
                            "answer": f["recognition_answer"],
                            "rationale": f"The image shows {f['visual_features']}, which marks {f['concept']} "
                                         f"rather than the look-alike {near_miss}."},
            "cultural_knowledge": question(
                f"With which country is the {noun} item in the image most closely associated?", f["country"],
                json.loads(f["country_options"]), f"It belongs to {f['country']}: {f['context']}"),
            "scene_reasoning": question(
                "A traveller photographs the item in the image and asks a local about it. Which account of where "
                "and how it is used fits what the picture shows?", f["context"], json.loads(f["scene_contexts"]),
                f"Recognising {f['concept']} from {f['visual_features']} points to this account."),
        }, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class BuildSettings:
    """Knobs of one benchmark build."""

    seed: int = 0
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 768
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    license: str = "cc-by-4.0"
    pretty_name: str = "CultureVerse-style cultural VQA"


def _question_stage(catalog: ConceptCatalog, ids: Sequence[str], text: ChatBackend, store: StageStore,
                    settings: BuildSettings) -> Counter[str]:
    prompt = load_prompt(PROMPT_VERSION)
    todo = [cid for cid in ids if not store.has(cid)]
    counts: Counter[str] = Counter(resumed=len(ids) - len(todo))
    for start in range(0, len(todo), settings.batch_size):
        batch = todo[start : start + settings.batch_size]
        requests = []
        for cid in batch:
            seed = derive_seed(settings.seed, "cultureverse_mcq", cid)
            requests.append(make_request(TASK, prompt, request_fields(cid, catalog, seed), seed))
        answers = text.generate(requests, max_new_tokens=settings.max_new_tokens)
        if len(answers) != len(requests):
            raise RuntimeError(f"text backend {text.model_id} returned {len(answers)} answers for {len(requests)}")
        for cid, req, answer in zip(batch, requests, answers):
            try:
                parsed = balance_positions(parse_cultureverse(answer, req.fields), req.seed)
                store.put(cid, {"status": "ok", "seed": req.seed, **parsed})
                counts["accepted"] += 1
            except Rejected as exc:
                store.put(cid, {"status": "rejected", "reason": exc.reason, "answer": str(answer)[:400]})
                counts[f"rejected:{exc.reason}"] += 1
    return counts


def _image_stage(catalog: ConceptCatalog, ids: Sequence[str], images: ImageBackend, store: StageStore,
                 settings: BuildSettings) -> None:
    todo = [cid for cid in ids if not store.has(cid)]
    for start in range(0, len(todo), settings.batch_size):
        batch = todo[start : start + settings.batch_size]
        concepts = [catalog.concepts[cid] for cid in batch]
        prompts = [f"A photo of {c.concept} from {c.country}, showing {c.visual_features}." for c in concepts]
        seeds = [derive_seed(settings.seed, "cultureverse_image", cid) for cid in batch]
        rendered = images.render(prompts, seeds, [c.to_dict() for c in concepts])
        for cid, prompt, seed, image in zip(batch, prompts, seeds, rendered):
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            data = buffer.getvalue()
            path = store.file_path(cid, ".png")
            atomic_write_bytes(path, data)
            store.put(cid, {"file": path.name, "sha256": sha256_bytes(data), "seed": seed, "prompt": prompt,
                            "model_id": images.model_id, "revision": images.revision})


def _check_run_manifest(run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume a run folder started with other settings (its records would mix two builds)."""
    path = run_dir / "cultureverse_manifest.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            raise ValueError(f"{run_dir}: this run folder was started with different settings (fields {diff}); "
                             f"use a new output folder")
    else:
        atomic_write_json(path, settings)


def build_cultureverse(output_dir: str | Path, text: ChatBackend, images: ImageBackend, catalog: str | Path | None = None,
                       run_dir: str | Path | None = None, settings: BuildSettings | None = None) -> dict[str, Any]:
    """Build (or resume) the benchmark into `output_dir` (parquet + card); returns the summary with counts.

    `run_dir` (default `output_dir/run`) holds the per-concept records that make a rerun resume.
    """
    from .cultureverse_export import export_benchmark

    settings = settings or BuildSettings()
    output_dir = Path(output_dir)
    run_dir = Path(run_dir) if run_dir is not None else output_dir / "run"
    cat = load_concept_catalog(catalog)
    _check_run_manifest(run_dir, {"seed": settings.seed, "catalog": cat.source, "text_model": text.model_id,
                                  "image_model": images.model_id, "prompt": load_prompt(PROMPT_VERSION).sha256})
    ids = sorted(cat.concepts)[: settings.limit] if settings.limit else sorted(cat.concepts)
    if len(cat.concepts) < N_OPTIONS:
        raise ValueError(f"catalog {cat.source}: {len(cat.concepts)} concepts; need at least {N_OPTIONS} for options")
    q_store, i_store = StageStore(run_dir, "cultureverse_mcq"), StageStore(run_dir, "cultureverse_images")
    counts = _question_stage(cat, ids, text, q_store, settings)
    records = {cid: q_store.get(cid) for cid in ids}
    accepted = [cid for cid in ids if records[cid]["status"] == "ok"]
    rejections = Counter(r["reason"] for r in records.values() if r["status"] != "ok")
    for reason, n in sorted(rejections.items()):
        logger.warning("cultureverse: %d concept(s) rejected: %s", n, reason)
    _image_stage(cat, accepted, images, i_store, settings)
    image_records = {cid: i_store.get(cid) for cid in accepted}
    provenance = {"text_model": text.model_id, "text_revision": text.revision, "image_model": images.model_id,
                  "image_revision": images.revision, "catalog": cat.source, "seed": settings.seed,
                  "prompt": {PROMPT_VERSION: load_prompt(PROMPT_VERSION).sha256}}
    stats = {"concepts": len(ids), "accepted": len(accepted), "rejected": dict(sorted(rejections.items())),
             "this_session": dict(sorted(counts.items()))}
    summary = export_benchmark(output_dir, cat.concepts, accepted, records, image_records, i_store, settings,
                               provenance, stats)
    return {**summary, "statistics": stats}


# ----------------------------------------------------------------------------------------------------------------
# Command line (`python -m dataset_builder build-cultureverse ...`)
# ----------------------------------------------------------------------------------------------------------------


def add_cli(sub: Any) -> None:
    """Register the `build-cultureverse` sub-command on an argparse sub-parser set."""
    from .backends.transformers_chat import DEFAULT_CHAT_MODEL

    p = sub.add_parser("build-cultureverse", help="build a CultureVerse-style MCQ benchmark from a concept catalog")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--catalog", default=None, help="YAML/JSONL concept catalog (default: the curated twin catalog)")
    p.add_argument("--text-backend", choices=("transformers-chat", "offline-template"), default="transformers-chat")
    p.add_argument("--text-model", default=DEFAULT_CHAT_MODEL)
    p.add_argument("--image-backend", choices=("offline-twemoji", "diffusers"), default="offline-twemoji")
    p.add_argument("--image-model", default="stabilityai/stable-diffusion-3.5-large-turbo")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="first N concepts (by id) only")
    p.add_argument("--batch-size", type=int, default=8)


def run_cli(args: Any) -> dict[str, Any]:
    """Run `build-cultureverse` from parsed arguments; returns the summary."""
    if args.text_backend == "offline-template":
        text: ChatBackend = CultureVerseTemplateWriter()
    else:
        from .backends.transformers_chat import TransformersChatBackend

        text = TransformersChatBackend.from_pretrained(args.text_model, batch_size=args.batch_size)
    if args.image_backend == "offline-twemoji":
        from .backends.offline import TwemojiImageSource

        images: ImageBackend = TwemojiImageSource(width=args.image_size, height=args.image_size, flag_when_missing=True)
    else:
        from .backends.diffusers_images import DiffusersImageBackend

        images = DiffusersImageBackend.from_pretrained(args.image_model, height=args.image_size, width=args.image_size,
                                                       batch_size=args.batch_size)
    settings = BuildSettings(seed=args.seed, limit=args.limit, batch_size=args.batch_size)
    return build_cultureverse(args.output_dir, text, images, catalog=args.catalog, settings=settings)


__all__ = ["BuildSettings", "ConceptCatalog", "CultureVerseTemplateWriter", "QUESTION_TYPES", "add_cli",
           "balance_positions", "build_cultureverse", "load_concept_catalog", "parse_cultureverse",
           "recognition_distractors", "request_fields", "run_cli"]
