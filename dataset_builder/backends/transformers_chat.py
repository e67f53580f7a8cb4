"""Chat backend on a transformers vision-language model (default: Qwen2.5-VL-7B-Instruct).

Why not `pipeline("image-text-to-text")` for the batching itself: the pipeline runs the processor on each chat
alone and then stacks the results with its generic collate function, which (checked on transformers 5.23)
refuses any batch that mixes text-only and image chats ("The elements of the batch contain different keys"),
pads on the side the saved tokenizer happens to declare (right, unless the config says otherwise), and recovers
the answer by searching the decoded prompt inside the decoded output. The judge stage sends image chats and the
text stages send text chats, and a stage may mix both, so this backend uses the same two objects the pipeline
holds (`AutoProcessor` + `AutoModelForImageTextToText`) and batches through the processor's chat template, which
pads the whole batch on the left in one call and handles every model's image layout (LLaVA's stacked pixels,
Qwen-VL's flattened patches). `from_pipeline` accepts a built pipeline, so callers that already have one can reuse
its model and processor; the answers are then those of the pipeline for a single chat (tested).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .base import ChatRequest

DEFAULT_CHAT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


class SeededRowSampler:
    """Logits processor that samples each batch row with its own `torch.Generator`.

    `generate(do_sample=True)` draws every row from the global RNG, so a request's answer would depend on which
    other requests share its batch. This processor draws row i's token from generator i (temperature + nucleus
    filtering applied first) and returns logits that are -inf everywhere except that token, so greedy decoding
    emits exactly the sampled token. Row i's answer then depends only on its prompt and its seed.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float().cpu() / self.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the top token always survives).
        outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        forced = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            pick = torch.multinomial(sorted_probs[row], 1, generator=gen)
            forced[row, order[row, pick].to(scores.device)] = 0.0
        return forced


def _default_dtype() -> torch.dtype:
    """bf16 on a GPU (the released setup), fp32 on CPU where bf16 matmuls are slow and less exact."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


class TransformersChatBackend:
    """Answers `ChatRequest`s with a transformers image-text-to-text model, in batches, left-padded."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_id: str,
        revision: str | None = None,
        batch_size: int = 8,
        deterministic: bool = True,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
    ) -> None:
        """Wrap an already-built model and processor (e.g. tiny test models, or objects shared with other code).

        `max_new_tokens` is the default answer budget of `generate` (the release uses 512)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"processor {type(processor).__name__} has no tokenizer; a chat model needs one")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer of {model_id} has no pad token; batched generation needs one")
        if getattr(processor, "chat_template", None) is None and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"{model_id} ships no chat template; this backend only sends chat-formatted requests")
        # Decoder-only generation continues from the last column: every prompt must end there, so pad on the left.
        tokenizer.padding_side = "left"
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.batch_size = batch_size
        self.deterministic = deterministic
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens

    @property
    def device(self) -> torch.device:
        """Where the model's first parameters live (its input device)."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The model's parameter dtype."""
        return self.model.dtype

    def with_settings(self, **settings: Any) -> "TransformersChatBackend":
        """Another backend on the SAME model and processor with other generation settings (batch_size,
        deterministic, temperature, top_p, max_new_tokens): how the text and judge roles share one loaded VLM."""
        current = dict(batch_size=self.batch_size, deterministic=self.deterministic, temperature=self.temperature,
                       top_p=self.top_p, max_new_tokens=self.max_new_tokens)
        unknown = sorted(set(settings) - set(current))
        if unknown:
            raise ValueError(f"with_settings: unknown generation setting(s) {unknown}; expected some of {sorted(current)}")
        return TransformersChatBackend(self.model, self.processor, model_id=self.model_id, revision=self.revision,
                                       **{**current, **settings})

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | Path = DEFAULT_CHAT_MODEL,
        *,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | None = None,
        device_map: str | dict | None = None,
        attn_implementation: str | None = None,
        processor: Any = None,
        **kwargs: Any,
    ) -> "TransformersChatBackend":
        """Load a Hub id or a local folder onto this rank's device. dtype defaults to bf16 on GPU / fp32 on CPU.

        `device` defaults to `cuda:<LOCAL_RANK>` (or cpu), see `devices.rank_device`; the weights are loaded straight
        onto it. `device_map="auto"` (one process spreading a model over all visible GPUs) is refused when several
        ranks run, since every rank would then fill GPU 0 first. `processor` overrides loading the processor (the tiny
        Qwen test models need this without torchvision). Remaining keyword arguments go to `__init__`.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from .devices import rank_device

        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = _default_dtype() if dtype is None else dtype
        if device_map is not None:
            if device_map == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ValueError("device_map='auto' with WORLD_SIZE > 1 would put every rank's model on the same GPUs; "
                                 "leave device_map unset (each rank uses cuda:<LOCAL_RANK>) or run one process")
        else:
            target = rank_device(device)
            device_map = None if target == "cpu" else {"": target}
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForImageTextToText.from_pretrained(
            model_id, revision=revision, dtype=dtype, device_map=device_map, **extra
        )
        if processor is None:
            processor = AutoProcessor.from_pretrained(model_id, revision=revision)
        return cls(
            model, processor, model_id=str(model_id), revision=hub_commit(model_id, "config.json", revision), **kwargs
        )

    @classmethod
    def from_pipeline(cls, pipe: Any, *, model_id: str | None = None, **kwargs: Any) -> "TransformersChatBackend":
        """Reuse the model and processor of a built `pipeline("image-text-to-text", ...)`."""
        model_id = model_id or getattr(pipe.model, "name_or_path", None) or "unknown"
        revision = hub_commit(model_id, "config.json", None)
        return cls(pipe.model, pipe.processor, model_id=model_id, revision=revision, **kwargs)

    # ----------------------------------------------------------------------------------------------------------

    def generate(self, requests: list[ChatRequest], max_new_tokens: int | None = None) -> list[str]:
        """Return the newly generated text for each request, in order (batches of `batch_size`)."""
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        for index, request in enumerate(requests):
            _check_request(index, request)
        answers: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            answers.extend(self._generate_batch(requests[start : start + self.batch_size], max_new_tokens))
        return answers

    @torch.inference_mode()
    def _generate_batch(self, batch: list[ChatRequest], max_new_tokens: int) -> list[str]:
        from transformers import LogitsProcessorList

        inputs = self.processor.apply_chat_template(
            [request.messages for request in batch],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        tokenizer = self.processor.tokenizer
        generate_kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            # The model's generation_config may carry sampling knobs (Qwen's does); greedy ignores them.
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if not self.deterministic:
            sampler = SeededRowSampler([r.seed for r in batch], self.temperature, self.top_p)
            generate_kwargs["logits_processor"] = LogitsProcessorList([sampler])
        output = self.model.generate(**inputs, **generate_kwargs)
        # With left padding every prompt ends at the same column, so the answer is everything after it.
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def hub_commit(model_id: str | Path, filename: str, revision: str | None = None) -> str | None:
    """The commit hash of a Hub model as found in the local cache (works offline); None for a local folder.

    Recorded per row so a dataset says exactly which weights produced it, even when loaded by branch name.
    """
    from huggingface_hub import try_to_load_from_cache

    if Path(model_id).exists():
        return revision
    cached = try_to_load_from_cache(str(model_id), filename, revision=revision)
    if isinstance(cached, str) and "/snapshots/" in cached:
        return cached.split("/snapshots/")[1].split("/")[0]
    return revision


def _check_request(index: int, request: ChatRequest) -> None:
    """Reject malformed chats with a message naming the request, before any model work."""
    where = f"request {index} (task={request.task!r})"
    if not isinstance(request.messages, list) or not request.messages:
        raise ValueError(f"{where}: messages must be a non-empty list")
    for turn, message in enumerate(request.messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"{where}, message {turn}: needs 'role' and 'content'")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ValueError(f"{where}, message {turn}: content must be a string or a list of parts")
        for part_index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"{where}, message {turn}, part {part_index}: text part without a string")
            elif kind == "image":
                if not isinstance(part.get("image"), Image.Image):
                    raise ValueError(
                        f"{where}, message {turn}, part {part_index}: image part must hold a PIL image under 'image'"
                    )
            else:
                raise ValueError(f"{where}, message {turn}, part {part_index}: unknown part type {kind!r}")
