"""Bottom-up from WIT: the real columns read by `datasets` (streaming), the text pre-filter before any fetch or VLM
call, images fetched from `image_url` (a real HTTP server on 127.0.0.1, or an injected handler), counted drops."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from builder_helpers import run_cli

from dataset_builder.recipe import RECIPE_DIR, load_recipe
from dataset_builder.stages import concepts as concepts_stage
from dataset_builder.stages.bottom_up import screening_summary
from dataset_builder.stages.common import RunContext, status_counts
from dataset_builder.twemoji import emoji_on_white
from dataset_builder.wit import WIT_COLUMNS, CorpusError, FetchError, HttpImageFetcher, open_corpus, screen


def _png(emoji: str, size: int = 72) -> bytes:
    buf = io.BytesIO()
    emoji_on_white(emoji).resize((size, size)).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """Serves /img/<name> from a dict on 127.0.0.1; /flaky/<name> answers 500 once, then the image."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.hits, self.failed = files, [], set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                outer.hits.append((self.path, self.headers.get("User-Agent")))
                kind, _, name = self.path.strip("/").partition("/")
                if kind == "flaky" and name not in outer.failed:
                    outer.failed.add(name)
                    self.send_error(500)
                    return
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def wit_row(title: str, url: str, context: str = "", language: str = "en", mime: str = "image/png", **extra) -> dict:
    """One row with all 17 google/wit columns and their types (None where WIT has no value)."""
    row = {c: None for c in WIT_COLUMNS}
    row.update(language=language, page_url=f"https://{language}.wikipedia.org/wiki/{title.replace(' ', '_')}",
               image_url=url, page_title=title, hierarchical_section_title=title, mime_type=mime,
               original_height=72, original_width=72, is_main_image=True, attribution_passes_lang_id=True,
               page_changed_recently=False, context_page_description=context or None,
               context_section_description=context or None,
               caption_attribution_description=f"English: {title}", caption_reference_description=None)
    row.update(extra)
    return row


def corpus_rows(base: str) -> list[dict]:
    return [
        wit_row("Kimono", f"{base}/img/kimono.png", "The kimono is a traditional Japanese garment."),
        wit_row("Flag of Ivory Coast", f"{base}/img/ci.png", "The national flag of Ivory Coast has three bands."),
        wit_row("Brezel", f"{base}/img/kimono.png", "Eine Brezel ist ein Gebäck aus Deutschland.", language="de"),
        wit_row("List of Japanese dishes", f"{base}/img/kimono.png", "Dishes of Japan."),
        wit_row("Quarterly sales", f"{base}/img/kimono.png", "Numbers for the last quarter."),
        wit_row("Kimono", f"{base}/img/ci.png", "The kimono is a traditional Japanese garment.", is_main_image=False),
        wit_row("Jiaozi", f"{base}/img/missing.png", "Jiaozi are Chinese dumplings."),
        wit_row("Pierogi", f"{base}/flaky/pierogi.png", "Pierogi are filled dumplings from Polish cuisine.",
                caption_reference_description="A plate of pierogi"),
        wit_row("Atlantean vase", f"{base}/img/kimono.png", "A vase said to come from Greece."),
        wit_row("Hanbok", f"{base}/img/not-an-image.png", "The hanbok is the traditional dress of South Korea."),
        wit_row("Eiffel Tower", f"{base}/img/kimono.png", "A tower in Paris, France.", mime="image/svg+xml"),
        wit_row("Matryoshka doll", "", "Russian nesting dolls."),
        wit_row("Tea", f"{base}/img/kimono.png", "Tea is drunk in China and everywhere else."),
        wit_row("Sushi", f"{base}/img/kimono.png", "Sushi is a Japanese dish."),  # beyond max_screened
    ]


# What the scripted VLM says about each page it is shown (keyed by page title).
VERDICTS = {
    "Kimono": {"keep": True, "country": "Japan", "category": "Clothing", "context": "Worn at festivals.",
               "visual_features": "wide sleeves; wrapped front; broad sash"},
    "Flag of Ivory Coast": {"keep": True, "country": "Ivory Coast", "category": "Symbol", "context": "Flown on holidays.",
                            "visual_features": "vertical tricolour; orange band; green band"},
    "Pierogi": {"keep": True, "country": "Poland", "category": "Cuisine", "context": "Eaten at Christmas Eve.",
                "visual_features": "half-moon dumplings; crimped edges"},
    "Atlantean vase": {"keep": True, "country": "Atlantis", "category": "Art", "context": "A vase.",
                       "visual_features": "painted clay; two handles"},
    "Tea": {"keep": False, "country": "", "category": "", "context": "", "visual_features": ""},
}


class ScriptedVLM:
    model_id, revision = "scripted-vlm", None

    def __init__(self):
        self.asked: list[str] = []
        self.image_sizes: list[tuple[int, int]] = []

    def generate(self, requests, max_new_tokens=256):
        out = []
        for r in requests:
            assert r.task == "bottomup" and "Image caption:" in r.messages[0]["content"][-1]["text"]
            self.asked.append(r.fields["title"])
            self.image_sizes.append(r.messages[0]["content"][0]["image"].size)
            out.append(json.dumps(VERDICTS[r.fields["title"]]))
        return out


def _recipe(corpus: str, **bottom_up):
    recipe = load_recipe("demo")
    settings = dataclasses.replace(recipe.concepts.bottom_up, max_screened=13, max_image_side=48, **bottom_up)
    return dataclasses.replace(recipe, concepts=dataclasses.replace(
        recipe.concepts, source="bottom-up", corpus=corpus, bottom_up=settings))


# google/wit's column types: strings, two integer sizes and three booleans.
WIT_SCHEMA = pa.schema([(c, pa.int64() if c.startswith("original_") else
                         pa.bool_() if c in ("is_main_image", "attribution_passes_lang_id", "page_changed_recently")
                         else pa.string()) for c in WIT_COLUMNS])


def _parquet_folder(tmp_path: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "wit"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:7], schema=WIT_SCHEMA), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[7:], schema=WIT_SCHEMA), folder / "train-00001-of-00002.parquet")
    return folder


@pytest.fixture
def server():
    files = {"kimono.png": _png("👘"), "ci.png": _png("🇨🇮"), "pierogi.png": _png("🥟", 200),
             "not-an-image.png": b"<html>not an image</html>"}
    with Server(files) as s:
        yield s


def test_wit_bottom_up_through_a_local_http_server(tmp_path, server):
    folder = _parquet_folder(tmp_path, corpus_rows(server.base))
    recipe = _recipe(str(folder), fetch_retries=1)
    vlm = ScriptedVLM()
    ctx = RunContext(run_dir=tmp_path / "run", recipe=recipe, text_backend=vlm, progress=False)
    kept = concepts_stage.run(ctx, fetch=HttpImageFetcher(timeout_s=5, retries=1, backoff_s=0.01,
                                                          user_agent="cultureclip-test"))
    # page_title is the concept; countries resolved through the alias layer ("Ivory Coast" -> CI)
    assert sorted((c.concept, c.iso_code, c.category, c.subregion, c.source) for c in kept) == [
        ("Flag of Ivory Coast", "CI", "Symbol", "Western Africa", "bottom-up"),
        ("Kimono", "JP", "Clothing", "Eastern Asia", "bottom-up"),
        ("Pierogi", "PL", "Cuisine", "Eastern Europe", "bottom-up")]
    # the text pre-filter ran first, bounded, and every drop is counted
    summary = screening_summary(ctx)
    assert summary["screened"] == 13 and summary["stopped_by"] == "max_screened" and summary["candidates"] == 7
    assert summary["dropped"] == {"duplicate_title": 1, "language": 1, "mime_type": 1, "no_country_mention": 1,
                                  "no_image_url": 1, "not_a_thing_title": 1}
    assert status_counts(ctx.store("concepts").all_records()) == {
        "kept": 3, "rejected:fetch_failed": 1, "rejected:not_cultural": 1, "rejected:unknown_country": 1,
        "rejected:unreadable_image": 1}
    # no VLM call for rows the pre-filter or the fetch dropped; images reach it downscaled
    assert sorted(vlm.asked) == ["Atlantean vase", "Flag of Ivory Coast", "Kimono", "Pierogi", "Tea"]
    assert max(max(s) for s in vlm.image_sizes) <= 48
    # only candidates were fetched; the 500 was retried; the user agent was sent
    paths = [p for p, _ in server.hits]
    assert sorted(set(paths)) == ["/flaky/pierogi.png", "/img/ci.png", "/img/kimono.png", "/img/missing.png",
                                  "/img/not-an-image.png"]
    assert paths.count("/flaky/pierogi.png") == 2 and paths.count("/img/missing.png") == 1  # 404 is not retried
    assert {ua for _, ua in server.hits} == {"cultureclip-test"}
    # resume: nothing fetched or asked twice
    before = len(server.hits)
    again = concepts_stage.run(ctx, fetch=HttpImageFetcher(timeout_s=5, retries=1, backoff_s=0.01))
    assert len(server.hits) == before and len(vlm.asked) == 5 and [c.concept_id for c in again] == [
        c.concept_id for c in kept]


def test_injected_fetch_and_the_google_wit_tsv_layout(tmp_path):
    """Google's wit_v1 .tsv.gz layout (empty cells, read through pandas) with an in-process fetch handler."""
    rows = corpus_rows("https://upload.wikimedia.org/wikipedia/commons")
    path = tmp_path / "wit_v1.train.all-00000-of-00010.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(WIT_COLUMNS) + "\n")
        for r in rows:
            fh.write("\t".join("" if r[c] is None else str(r[c]) for c in WIT_COLUMNS) + "\n")
    images = {"kimono.png": _png("👘"), "ci.png": _png("🇨🇮"), "pierogi.png": _png("🥟")}
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        name = url.rsplit("/", 1)[1]
        if name not in images:
            raise FetchError("HTTP 404")
        return images[name]

    ctx = RunContext(run_dir=tmp_path / "run", recipe=_recipe(str(path)), text_backend=ScriptedVLM(), progress=False)
    kept = concepts_stage.run(ctx, fetch=fetch)
    assert sorted(c.iso_code for c in kept) == ["CI", "JP", "PL"]
    assert len(fetched) == 7  # candidates only
    assert screening_summary(ctx)["dropped"]["no_image_url"] == 1  # the empty TSV cell


# wikimedia/wit_base (the Hub's parquet WIT): one row per image with the image embedded, and the page fields per
# language in `wit_features`, as its dataset card declares them.
WIT_BASE_ENTRY = ("language", "page_url", "image_url", "attribution_passes_lang_id", "caption_alt_text_description",
                  "caption_reference_description", "caption_title_and_reference_description",
                  "context_page_description", "context_section_description", "hierarchical_section_title",
                  "is_main_image", "page_changed_recently", "page_title", "section_title")
WIT_BASE_BOOLS = ("attribution_passes_lang_id", "is_main_image", "page_changed_recently")
WIT_BASE_CARD = """---
license: cc-by-sa-4.0
dataset_info:
  features:
  - {name: image, dtype: image}
  - {name: image_url, dtype: string}
  - {name: embedding, sequence: float32}
  - {name: metadata_url, dtype: string}
  - {name: original_height, dtype: int32}
  - {name: original_width, dtype: int32}
  - {name: mime_type, dtype: string}
  - {name: caption_attribution_description, dtype: string}
  - name: wit_features
    sequence:
%s
  splits:
  - {name: train, num_bytes: 1270000, num_examples: 5}
---
""" % "\n".join("    - {name: %s, dtype: %s}" % (c, "bool" if c in WIT_BASE_BOOLS else "string") for c in WIT_BASE_ENTRY)


def wit_base_rows(base: str) -> list[dict]:
    def entry(language: str, title: str, context: str) -> dict:
        e = {c: None for c in WIT_BASE_ENTRY}
        e.update(language=language, page_url=f"https://{language}.wikipedia.org/wiki/{title.replace(' ', '_')}",
                 page_title=title, context_page_description=context, is_main_image=True,
                 attribution_passes_lang_id=True, page_changed_recently=False)
        return e

    def row(name: str, image: bytes | None, *entries: dict) -> dict:
        url = f"{base}/{name}"
        return {"image": None if image is None else {"bytes": image, "path": name}, "image_url": url,
                "embedding": [0.01] * 2048, "metadata_url": f"https://commons.wikimedia.org/wiki/File:{name}",
                "original_height": 600, "original_width": 800, "mime_type": "image/png",
                "caption_attribution_description": f"English: {name}",
                "wit_features": [{**e, "image_url": url} for e in entries]}

    return [
        row("Kimono.png", _png("👘", 300), entry("en", "Kimono", "The kimono is a traditional Japanese garment."),
            entry("ja", "着物", "日本の伝統衣装。")),
        row("Flag_CI.png", _png("🇨🇮", 300), entry("fr", "Drapeau de la Côte d'Ivoire", "Le drapeau ivoirien."),
            entry("en", "Flag of Ivory Coast", "The national flag of Ivory Coast has three bands.")),
        row("Pierogi.png", _png("🥟", 300), entry("en", "Pierogi", "Pierogi are filled dumplings from Polish cuisine."),
            entry("pl", "Pierogi", "Pierogi to potrawa kuchni polskiej.")),
        row("Vase.png", b"<html>not an image</html>", entry("en", "Atlantean vase", "A vase said to come from Greece.")),
        row("Tea.png", None, entry("en", "Tea", "Tea is drunk in China and everywhere else.")),
    ]


@pytest.mark.parametrize("layout", ["hub card", "bare parquet"])
def test_wikimedia_wit_base_layout_uses_its_embedded_images(tmp_path, layout):
    """wikimedia/wit_base as published: with its card (wit_features read as a dict of lists, the image as
    datasets.Image) and as a bare parquet file (a list of structs); one candidate per language entry."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    base = "https://upload.wikimedia.org/wikipedia/commons"
    rows = wit_base_rows(base)
    folder = tmp_path / "wit_base"
    (folder / "data").mkdir(parents=True)
    shard = folder / "data" / "train-00000-of-00330.parquet"
    if layout == "hub card":
        kinds = {c: Value("bool" if c in WIT_BASE_BOOLS else "string") for c in WIT_BASE_ENTRY}
        features = Features({"image": ImageFeature(), "image_url": Value("string"),
                             "embedding": Sequence(Value("float32")), "metadata_url": Value("string"),
                             "original_height": Value("int32"), "original_width": Value("int32"),
                             "mime_type": Value("string"), "caption_attribution_description": Value("string"),
                             "wit_features": Sequence(kinds)})
        # datasets' Sequence of a dict is a dict of equal-length lists, in and out
        columnar = [{**r, "wit_features": {c: [e[c] for e in r["wit_features"]] for c in WIT_BASE_ENTRY}}
                    for r in rows]
        Dataset.from_list(columnar, features=features).to_parquet(str(shard))
        (folder / "README.md").write_text(WIT_BASE_CARD, encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), shard)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return _png("🍵")

    vlm = ScriptedVLM()
    ctx = RunContext(run_dir=tmp_path / "run", recipe=_recipe(str(folder)), text_backend=vlm, progress=False)
    kept = concepts_stage.run(ctx, fetch=fetch)
    assert sorted((c.concept, c.iso_code) for c in kept) == [("Flag of Ivory Coast", "CI"), ("Kimono", "JP"),
                                                              ("Pierogi", "PL")]
    summary = screening_summary(ctx)
    assert summary["screened"] == 8 and summary["dropped"] == {"language": 3} and summary["candidates"] == 5
    # the corpus's own images were used; only the row without one was fetched
    assert fetched == [f"{base}/Tea.png"]
    records = ctx.store("concepts").all_records()
    assert sorted((r.get("title"), r.get("image_source")) for r in records) == [
        ("Atlantean vase", "embedded"), ("Flag of Ivory Coast", "embedded"), ("Kimono", "embedded"),
        ("Pierogi", "embedded"), ("Tea", "fetched")]
    assert status_counts(records) == {"kept": 3, "rejected:not_cultural": 1, "rejected:unreadable_image": 1}
    assert sorted(vlm.asked) == ["Flag of Ivory Coast", "Kimono", "Pierogi", "Tea"]
    assert max(max(s) for s in vlm.image_sizes) <= 48  # embedded 300 px images are downscaled like fetched ones


def test_a_loading_script_corpus_gets_a_pointer_to_the_parquet_copy(tmp_path):
    folder = tmp_path / "wit"
    folder.mkdir()
    (folder / "wit.py").write_text("import datasets\n")  # what google/wit on the Hub is
    with pytest.raises(CorpusError, match=r"Dataset scripts are no longer supported.*use wikimedia/wit_base"):
        list(open_corpus(str(folder), load_recipe("demo").concepts.bottom_up))


def test_screen_bounds_and_languages():
    rows = corpus_rows("http://h")
    settings = dataclasses.replace(load_recipe("demo").concepts.bottom_up, max_screened=100, max_candidates=2)
    out = screen(iter(rows), settings)
    assert [c.title for c in out.candidates] == ["Kimono", "Flag of Ivory Coast"] and out.stopped_by == "max_candidates"
    assert out.candidates[1].countries == ["CI"]
    everything = screen(iter(rows), dataclasses.replace(settings, max_candidates=100, languages=[],
                                                        require_country_mention=False))
    assert everything.stopped_by is None and everything.screened == len(rows)
    assert "Brezel" in [c.title for c in everything.candidates] and "Quarterly sales" in [
        c.title for c in everything.candidates]


def test_corpus_errors_are_one_line(tmp_path):
    settings = load_recipe("demo").concepts.bottom_up
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"title": "x", "image": "a.png"}) + "\n")
    with pytest.raises(CorpusError, match=r"other.jsonl: not a WIT layout: missing column\(s\) \['page_title', "
                                          r"'image_url'\]"):
        list(open_corpus(str(other), settings))
    with pytest.raises(CorpusError, match="cannot open it"):
        list(open_corpus(str(tmp_path / "no-such-folder"), settings))
    with pytest.raises(CorpusError, match="set concepts.bottom_up.data_files"):
        list(open_corpus("csv", settings))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    rows = corpus_rows("http://h")
    pq.write_table(pa.Table.from_pylist(rows[:2], schema=WIT_SCHEMA), mixed / "train-00000-of-00002.parquet")
    (mixed / "train-00001-of-00002.parquet").write_bytes(b"PAR1 truncated shard PAR1")
    with pytest.raises(CorpusError, match=r"mixed: cannot read row 2"):
        list(open_corpus(str(mixed), settings))


def test_bottom_up_build_end_to_end_through_the_cli(tmp_path, server):
    """`python -m dataset_builder build` with a WIT-layout folder whose image_url points at the loopback server."""
    titles = [("Festival dress of Peru", "Peru"), ("Flag of Japan", "Japan"), ("Castle of Germany", "Germany"),
              ("Festival robe of India", "India"), ("Doll of Russia", "Russia")]
    server.files.update({f"{i}.png": _png(e) for i, e in enumerate("👘🇯🇵🏰🥻🪆")})
    rows = [wit_row(t, f"{server.base}/img/{i}.png", f"A thing from {c}.") for i, (t, c) in enumerate(titles)]
    folder = tmp_path / "wit"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=WIT_SCHEMA), folder / "train-00000-of-00001.parquet")
    recipe = yaml.safe_load((RECIPE_DIR / "demo.yaml").read_text())
    recipe["concepts"] = {"source": "bottom-up", "corpus": str(folder), "bottom_up": {"fetch_timeout_s": 5}}
    recipe["image_backend"]["options"]["flag_when_missing"] = True  # bottom-up concepts have no emoji: draw flags
    recipe["judge_backend"]["options"] = {"flag_when_missing": True}
    path = tmp_path / "wit.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    out = tmp_path / "out"
    res = run_cli(["build", "--recipe", str(path), "--output-dir", str(out), "--no-progress"], timeout=600)
    assert res.returncode == 0, res.stderr
    assert "bottom-up: screened 5 rows" in res.stderr
    from datasets import load_dataset

    ds = load_dataset(str(out))
    rows_out = [r for split in ds.values() for r in split]
    assert rows_out and {r["source"] for r in rows_out} == {"bottom-up"}
    assert {r["concept"] for r in rows_out} <= {t for t, _ in titles}
    assert all(r["subregion"] and r["twin_subregion"] for r in rows_out)
