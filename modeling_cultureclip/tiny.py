"""Tiny CLIP-family building blocks for tests, benchmarks and the offline demo.

A word-level tokenizer built from a word list, a small `CultureCLIPConfig`, and a `CLIPProcessor` that pairs them
with the PIL image processor (no torchvision). Everything here is built locally; nothing touches the Hub.

The tokenizer folds text to lower-case ASCII-like words before splitting (NFKD, then combining marks stripped:
"Côte d'Ivoire" -> "cote d ' ivoire", "döner" -> "doner"), and `words_of` splits with the very same normalizer and
pre-tokenizer, so a tokenizer built from `words_of(texts)` spells every one of those texts without <unk>.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPImageProcessorPil, CLIPProcessor, PreTrainedTokenizerFast

from .configuration_cultureclip import CultureCLIPConfig

# CLIP's text pooling in transformers 5 reads the first EOS token, except that eos_token_id == 2 selects the legacy
# argmax pooling; keep EOS at 3.
SPECIAL_TOKENS = ["<pad>", "<bos>", "<unused>", "<eos>", "<unk>"]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 3, 4


# One normalizer and one pre-tokenizer for both the vocabulary and the tokenizer: they cannot disagree on a word.
def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()])


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Whitespace()  # runs of word characters, and runs of other non-space characters


_NORMALIZER, _PRE_TOKENIZER = _normalizer(), _pre_tokenizer()


def normalize_text(text: str) -> str:
    """`text` as the word tokenizer sees it: NFKD, combining marks stripped, lower-cased."""
    return _NORMALIZER.normalize_str(text)


def words_of(texts: Iterable[str]) -> list[str]:
    """Sorted distinct words and punctuation runs of `texts`, normalised and split exactly as the tokenizer does."""
    return sorted({word for text in texts for word, _ in _PRE_TOKENIZER.pre_tokenize_str(normalize_text(text))})


def build_word_tokenizer(vocabulary: Iterable[str], max_length: int = 32) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `vocabulary` (normalised like the text; unknown words map to <unk>), framed
    <bos> ... <eos>."""
    words = [w for w in dict.fromkeys(normalize_text(w) for w in vocabulary) if w not in SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = _normalizer()
    core.pre_tokenizer = _pre_tokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", BOS_ID), ("<eos>", EOS_ID)]
    )
    core.enable_truncation(max_length)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=max_length, padding_side="right",
    )


def tiny_config(
    vocab_size: int,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 64,
    vision_layers: int = 2,
    text_layers: int = 2,
    heads: int = 4,
    projection_dim: int = 32,
    max_text_length: int = 32,
    **objective,
) -> CultureCLIPConfig:
    """A small CultureCLIPConfig whose special token ids match `build_word_tokenizer`."""
    return CultureCLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=text_layers,
            num_attention_heads=heads, max_position_embeddings=max_text_length,
            pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        ),
        vision_config=dict(
            hidden_size=width, intermediate_size=4 * width, num_hidden_layers=vision_layers,
            num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
        ),
        projection_dim=projection_dim,
        **objective,
    )


def tiny_processor(tokenizer: PreTrainedTokenizerFast, image_size: int = 32) -> CLIPProcessor:
    """A CLIPProcessor resizing straight to `image_size` squares, with CLIP's normalisation constants."""
    image_processor = CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


__all__ = ["EOS_ID", "PAD_ID", "UNK_ID", "build_word_tokenizer", "normalize_text", "tiny_config", "tiny_processor",
           "words_of"]
