"""Tiny random models saved to a folder, for tests and benchmarks that must run offline on a CPU.

Every builder writes a complete Hub-style folder (config, safetensors weights, tokenizer, processor or scheduler
files) so that the same loading code the real backends use (`AutoProcessor`, `AutoModelForImageTextToText`,
`pipeline("image-text-to-text", ...)`, `AutoPipelineForText2Image.from_pretrained`) reads it without network access.
The weights are random: the models produce gibberish, but every tensor shape, special token, chat template and
processor step is the real one, so the real code paths run end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

# A small English corpus the tiny byte-level BPE tokenizers are trained on. Its only job is to give the vocabulary
# some multi-byte merges so that tokenisation looks like a real model's; any text still encodes (byte fallback).
_CORPUS = [
    "A photo of a traditional castle on a hill at sunset.",
    "Dumplings served in a bamboo steamer at a busy market.",
    "The flag has three vertical stripes of blue, yellow and red.",
    "A woman wearing a silk kimono walks through a garden.",
    "A carved wooden mask hangs on the wall of a village house.",
    "Score the image for authenticity, consistency and cultural fidelity from 1 to 5.",
    "Return JSON with the fields concept, context and visual features.",
    "Propose a visually similar concept from a different country in the same category.",
    "Write ten short captions, each under fifteen words, that mention the key visual features.",
    "shape material colour size festival clothing cuisine architecture symbol art daily life animals plants",
]

_SEED = 1234


def _atomic_dir(out_dir: Path) -> tuple[Path, Path]:
    """Return (final, staging) paths; the caller fills staging and `_publish` swaps it in atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    return out_dir, staging


def _publish(final: Path, staging: Path) -> Path:
    """Replace `final` by the fully written `staging` folder, so a crash never leaves a half-written model."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def _train_bpe(special_tokens: list[str], vocab_size: int = 320):
    """Train a byte-level BPE tokenizer (`tokenizers` library) on the small corpus; specials get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok


# --------------------------------------------------------------------------------------------------------------
# Chat VLMs
# --------------------------------------------------------------------------------------------------------------

# Qwen-style turn markup. Images become <|vision_start|><|image_pad|><|vision_end|>; the processor later expands the
# single <|image_pad|> into one token per merged vision patch.
_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# LLaVA-style markup: "USER: <image>\n... ASSISTANT:"; the processor expands <image> to one token per patch.
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

CHAT_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava")


def _fast_tokenizer(tok, **special: str):
    """Wrap a `tokenizers.Tokenizer` as a transformers fast tokenizer with the given special-token roles."""
    from transformers import PreTrainedTokenizerFast

    # Batched generation in a decoder-only model needs each prompt flush against its first generated token.
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **special)


# The language model of every tiny VLM: hidden 32 with 2 heads (head_dim 16), one key/value head, 2 layers.
_TINY_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, max_position_embeddings=512)


def _qwen_parts(family: str, tokenizer):
    """Model config, model class and (processor class, PIL image processor) for a tiny Qwen2-VL / Qwen2.5-VL."""
    from transformers import Qwen2VLImageProcessorPil

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    # hidden 32 with 2 heads -> head_dim 16; multimodal RoPE splits head_dim/2 = 8 rotary pairs over (t, h, w).
    text = dict(
        vocab_size=len(tokenizer),
        **_TINY_DECODER,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(depth=1, num_heads=2, in_channels=3, patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
    special_ids = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        vision.update(embed_dim=16, hidden_size=32, mlp_ratio=2)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **special_ids)
        model_cls, proc_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        # window_size is in pixels; 16 = one 2x2 block of merged 4-px patches, fullatt on the only block.
        vision.update(hidden_size=16, intermediate_size=32, out_hidden_size=32, window_size=16, fullatt_block_indexes=[0])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special_ids)
        model_cls, proc_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    # Small pixel budget: a 32x32 image gives (32/4)^2 = 64 patches -> 16 image tokens after the 2x2 merge.
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=4, temporal_patch_size=2, merge_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 32 * 32}
    )
    return config, model_cls, (proc_cls, image_processor)


def _assemble_qwen_processor(proc_cls, image_processor, tokenizer, chat_template: str):
    """Build a Qwen-VL processor without its video half.

    transformers 5.23 cannot construct `Qwen2VLProcessor`/`Qwen2_5_VLProcessor` without torchvision: the constructor
    type-checks `video_processor` against `VideoProcessorMixin`, which is only exported when torchvision is
    installed, and `None` is rejected too. Images and text never touch the video processor, so we create the object
    and set the attributes its constructor would set. Used only where `AutoProcessor` cannot load the folder.
    """
    processor = proc_cls.__new__(proc_cls)
    processor.chat_template = chat_template
    processor.image_processor = image_processor
    processor.tokenizer = tokenizer
    processor.video_processor = None
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    processor.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return processor


def _save_qwen_processor(folder: Path, proc_cls, image_processor, tokenizer) -> None:
    """Write the files `AutoProcessor` reads for a Qwen-VL processor (it needs torchvision to load them)."""
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(_QWEN_TEMPLATE, encoding="utf-8")
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": proc_cls.__name__}, indent=2))
    video = {
        "video_processor_type": "Qwen2VLVideoProcessor",
        "patch_size": image_processor.patch_size,
        "temporal_patch_size": image_processor.temporal_patch_size,
        "merge_size": image_processor.merge_size,
        "size": dict(image_processor.size),
    }
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))


def load_tiny_chat_processor(folder: str | Path):
    """Load the processor of a folder written by `build_tiny_chat_vlm`.

    `AutoProcessor.from_pretrained` whenever it can; for the Qwen families without torchvision, the same files are
    read piece by piece (tokenizer, PIL image processor, chat template) and assembled without the video processor.
    """
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer, Qwen2VLImageProcessorPil
    from transformers.utils import is_torchvision_available

    folder = Path(folder)
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type not in ("qwen2_vl", "qwen2_5_vl") or is_torchvision_available():
        return AutoProcessor.from_pretrained(folder)
    proc_name = json.loads((folder / "processor_config.json").read_text())["processor_class"]
    import transformers

    proc_cls = getattr(transformers, proc_name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return _assemble_qwen_processor(proc_cls, image_processor, tokenizer, template)


def _llava_parts(tokenizer, decoder: dict | None = None):
    """Model config and processor for a LLaVA style tiny model (CLIP vision tower + Llama text model)."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    image_size, patch = 32, 8
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=16,
    )
    text = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        **(decoder or _TINY_DECODER),
        bos_token_id=tokenizer.convert_tokens_to_ids("<s>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("</s>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<pad>"),
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    # "default" strategy drops CLS, so one image = (32/8)^2 = 16 <image> tokens; the processor needs the same count.
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_TEMPLATE,
    )
    return config, LlavaForConditionalGeneration, processor


def build_tiny_chat_vlm(out_dir: str | Path, family: str = "qwen2_5_vl", seed: int = _SEED) -> Path:
    """Write a tiny random chat VLM (model, tokenizer, image processor, chat template) to `out_dir`.

    `family` is one of "qwen2_vl", "qwen2_5_vl" (the default model's architecture) or "llava". The folder loads with
    `AutoProcessor.from_pretrained`, `AutoModelForImageTextToText.from_pretrained` and
    `pipeline("image-text-to-text", model=out_dir)`. Same seed -> byte-identical weights.
    """
    if family not in CHAT_FAMILIES:
        raise ValueError(f"unknown tiny VLM family {family!r}; expected one of {CHAT_FAMILIES}")
    final, staging = _atomic_dir(Path(out_dir))
    try:
        if family == "llava":
            tok = _fast_tokenizer(
                _train_bpe(_LLAVA_SPECIALS), unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
            )
            tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
            config, model_cls, processor = _llava_parts(tok)
        else:
            tok = _fast_tokenizer(
                _train_bpe(_QWEN_SPECIALS), eos_token="<|im_end|>", pad_token="<|endoftext|>"
            )
            tok.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS[1:]})
            config, model_cls, (proc_cls, image_processor) = _qwen_parts(family, tok)
        torch.manual_seed(seed)
        model = model_cls(config).eval()
        model.generation_config.eos_token_id = config.get_text_config().eos_token_id
        model.generation_config.pad_token_id = config.get_text_config().pad_token_id
        model.generation_config.do_sample = False
        model.save_pretrained(staging)
        if family == "llava":
            processor.save_pretrained(staging)
        else:
            _save_qwen_processor(staging, proc_cls, image_processor, tok)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(final, staging)


def _scripted_template(triggers: list[str]) -> str:
    """The LLaVA template plus a dispatch: after "ASSISTANT:" it writes <|slot_k|> for the first trigger found in
    the text of the last user turn (or <|slot_none|>), the only token the scripted weights look at."""
    collect = (
        "{% set ns = namespace(text='') %}"
        "{% for message in messages %}{% if message['role'] == 'user' %}"
        "{% if message['content'] is string %}{% set ns.text = message['content'] %}"
        "{% else %}{% set ns.text = '' %}{% for part in message['content'] %}"
        "{% if part['type'] == 'text' %}{% set ns.text = ns.text + part['text'] %}{% endif %}"
        "{% endfor %}{% endif %}{% endif %}{% endfor %}"
    )
    dispatch = "".join(
        ("{% if " if k == 0 else "{% elif ") + f"{json.dumps(t)} in ns.text %}}<|slot_{k}|>" for k, t in enumerate(triggers)
    )
    dispatch += ("{% else %}" if triggers else "") + "<|slot_none|>" + ("{% endif %}" if triggers else "")
    head, _, _ = _LLAVA_TEMPLATE.rpartition("{% if add_generation_prompt %}")
    return collect + head + "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}" + dispatch + "{% endif %}"


def build_scripted_chat_vlm(out_dir: str | Path, answers: dict[str, str], fallback: str = "I cannot answer that.",
                            decoder: dict | None = None, seed: int = _SEED) -> Path:
    """Write a tiny LLaVA whose answer is fixed by its prompt: `answers[trigger]` for the first trigger (a substring
    of the last user turn's text) that occurs, else `fallback`. Greedy and sampled decoding give the same answer.

    A real model in every respect the serving and pipeline code sees (safetensors weights, tokenizer, processor,
    chat template, images through the vision tower), built so tests can run a build end to end through a real
    server: the chat template appends a per-trigger slot token, each answer is one added token, and the weights map
    slot k -> answer token k -> end of sequence (attention and MLP outputs are zeroed, so the residual stream is the
    token embedding; embeddings and the output head are set on orthogonal directions). `decoder` overrides the
    language model's shape (e.g. a larger hidden size for memory benchmarks).
    """
    from tokenizers import AddedToken

    triggers = list(answers)
    texts = [answers[t] for t in triggers] + [fallback]
    decoder = {**_TINY_DECODER, **(decoder or {})}
    if 2 * len(texts) > decoder["hidden_size"]:
        raise ValueError(f"{len(texts)} answers need hidden_size >= {2 * len(texts)}, got {decoder['hidden_size']}")
    final, staging = _atomic_dir(Path(out_dir))
    try:
        tok = _fast_tokenizer(_train_bpe(_LLAVA_SPECIALS), unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>")
        slots = [f"<|slot_{k}|>" for k in range(len(triggers))] + ["<|slot_none|>"]
        tok.add_special_tokens({"additional_special_tokens": ["<image>", *slots]})
        tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False) for t in texts])
        answer_ids = [tok.convert_tokens_to_ids(t) for t in texts]
        slot_ids = tok.convert_tokens_to_ids(slots)
        for text, token_id in zip(texts, answer_ids):
            if tok.decode([token_id]) != text:
                raise ValueError(f"answer {text!r} does not survive decoding as one token")
        config, model_cls, processor = _llava_parts(tok, decoder)
        processor.chat_template = _scripted_template(triggers)
        torch.manual_seed(seed)
        model = model_cls(config).eval()
        if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
            raise ValueError("scripted VLM needs untied input and output embeddings")
        width = decoder["hidden_size"]
        n = len(texts)
        eos = tok.convert_tokens_to_ids("</s>")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")) and "language_model" in name:
                    param.zero_()
            embed = model.get_input_embeddings().weight
            head = model.get_output_embeddings().weight
            head.zero_()
            basis = torch.eye(width)
            for k in range(n):
                embed[slot_ids[k]] = basis[k] * width**0.5  # RMS 1: the final norm leaves it unchanged
                embed[answer_ids[k]] = basis[n + k] * width**0.5
                head[answer_ids[k]] = basis[k] * 10.0  # logit 10*sqrt(width) for the right answer, 0 for the rest
                head[eos] += basis[n + k] * 10.0
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<pad>")
        model.generation_config.do_sample = False
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(final, staging)


# --------------------------------------------------------------------------------------------------------------
# Stable Diffusion
# --------------------------------------------------------------------------------------------------------------


def _write_clip_tokenizer_files(folder: Path) -> None:
    """Write a tiny CLIP BPE vocabulary (vocab.json + merges.txt) covering every byte, so any prompt encodes."""
    from tokenizers.pre_tokenizers import ByteLevel

    byte_chars = sorted(ByteLevel.alphabet())
    # CLIP marks the last symbol of each word with "</w>": every byte exists in both forms.
    vocab_tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges = ["t h", "th e</w>", "a n", "i n", "o n</w>", "e r</w>", "a r", "o f</w>"]
    for merge in merges:
        vocab_tokens.append(merge.replace(" ", ""))
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tiny_sd_pipeline(out_dir: str | Path, seed: int = _SEED, sample_size: int = 32,
                           block_out_channels: tuple[int, int] = (8, 16)) -> Path:
    """Write a tiny random Stable Diffusion pipeline to `out_dir` (UNet, VAE, CLIP text encoder, tokenizer, scheduler).

    `AutoPipelineForText2Image.from_pretrained(out_dir)` loads it as a `StableDiffusionPipeline`. Images come out at
    `sample_size` x `sample_size` pixels by default (the VAE downsamples by 2). Wider `block_out_channels` give a
    larger UNet (for memory benchmarks); the default is the smallest that runs.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    final, staging = _atomic_dir(Path(out_dir))
    try:
        tok_dir = staging / "_tok_src"
        _write_clip_tokenizer_files(tok_dir)
        tokenizer = CLIPTokenizer(
            str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77, pad_token="<|endoftext|>"
        )
        bos, eos = tokenizer.convert_tokens_to_ids("<|startoftext|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=32,
                bos_token_id=bos,
                eos_token_id=eos,  # not 2: 2 switches CLIP to legacy argmax pooling
                pad_token_id=eos,
            )
        ).eval()
        unet = UNet2DConditionModel(
            sample_size=sample_size // 2,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=4,
        ).eval()
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=4,
            sample_size=sample_size,
        ).eval()
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(staging, safe_serialization=True)
        shutil.rmtree(tok_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(final, staging)
