"""The shared roofline / FLOP helpers every benchmark reports against."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.roofline import (  # noqa: E402
    Rate, check_output, count_flops, linear_params, machine_info, matmul_peak, transformer_flops, write_report,
)


def test_count_flops_matches_the_matmul_shapes():
    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(5, 16)
    assert count_flops(lambda: layer(x)) == 2 * 5 * 16 * 8
    x.requires_grad_(True)
    # a training step: forward, then the input and weight gradients (two more matmuls of the same size)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 5 * 16 * 8


def test_analytic_estimate_matches_the_count_for_a_transformer_layer():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    model = CLIPVisionModel(config).eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        counted = count_flops(lambda: model(pixel_values=pixels))
    patches = 16
    analytic = 3 * (2 * model.embeddings.patch_embedding.weight.numel() * patches
                    + transformer_flops(linear_params(model.encoder), patches + 1, 2, 32))
    assert counted == pytest.approx(analytic, rel=1e-6)


def test_matmul_peak_and_rate_fraction():
    peak = matmul_peak("fp32", sizes=(64,), repeats=1)
    assert peak["flops_per_s"] > 0 and peak["size"] == 64
    rate = Rate("x", items_per_s=10.0, flops_per_item=1e6, precision="fp32")
    assert rate.flops_per_s == 1e7
    assert rate.roofline_fraction({"fp32": {"flops_per_s": 2e7, "size": 64}}) == 0.5
    info = machine_info("cpu")
    assert info["torch_threads"] == torch.get_num_threads() and isinstance(info["cpu_flags"], list)


def test_report_is_not_overwritten_without_the_flag(tmp_path, capsys):
    path = tmp_path / "out.json"
    write_report(str(path), {"a": 1})
    assert path.read_text().strip().startswith("{")
    with pytest.raises(SystemExit) as exit_info:
        check_output(str(path), overwrite=False)
    assert exit_info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    check_output(str(path), overwrite=True)


def test_cpu_attention_is_counted_forward_and_backward():
    q = torch.randn(2, 2, 17, 16, requires_grad=True)
    forward = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert forward == 4 * 2 * 2 * 17 * 17 * 16  # QK^T and AV, 2 FLOPs per multiply-add
    both = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward())
    assert both > 2 * forward
