from __future__ import annotations

import pytest
import torch

from darec.models.llm.backbone import BackboneError, decoder_layers, keep_first_layers, layer_count, load_backbone
from darec.models.llm.masking import item_attention_mask


def _families():
    from transformers import (
        Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
        LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
    )

    small = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4}
    return {
        "llama": LlamaForCausalLM(LlamaConfig(**small, num_key_value_heads=2)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**small, num_key_value_heads=2)),
        "gemma3": Gemma3ForCausalLM(Gemma3TextConfig(**small, num_key_value_heads=2, head_dim=8)),
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=3, n_head=4)),
        "gpt-neox": GPTNeoXForCausalLM(GPTNeoXConfig(**small)),
    }


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2", "gpt-neox"])
def test_layer_resolver_and_truncation(family: str) -> None:
    model = _families()[family].eval()
    assert len(decoder_layers(model)) == 3
    keep_first_layers(model, 2)
    assert len(decoder_layers(model)) == 2
    out = model(torch.randint(3, 300, (2, 7)), output_hidden_states=True)
    assert len(out.hidden_states) == 3  # embeddings + 2 layers: the truncated model really runs 2
    with pytest.raises(BackboneError, match="between 1 and 2"):
        keep_first_layers(model, 5)


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_layer_count_reads_the_config_alone(family: str, tmp_path) -> None:
    _families()[family].config.save_pretrained(tmp_path)  # no weights: the count must come from config.json
    assert layer_count(str(tmp_path)) == 3 and layer_count(f"random:{tmp_path}", 2) == 2
    assert layer_count("tiny") == len(load_backbone("tiny").layers)
    with pytest.raises(BackboneError, match="between 1 and 3"):
        layer_count(str(tmp_path), 4)
    with pytest.raises(BackboneError, match="cannot read a model config"):
        layer_count(str(tmp_path / "missing"))


def test_tiny_backbone() -> None:
    backbone = load_backbone("tiny", keep_layers=1)
    assert len(backbone.layers) == 1 and backbone.hidden_size == 64
    assert backbone.encode("ab") == [ord("a") + 3, ord("b") + 3]


def test_random_backbone_takes_the_shape_of_a_config(tmp_path) -> None:
    _families()["qwen2"].config.save_pretrained(tmp_path)  # a config.json, no weights, no tokenizer
    backbone = load_backbone(f"random:{tmp_path}", keep_layers=2)
    assert type(backbone.model).__name__ == "Qwen2ForCausalLM" and len(backbone.layers) == 2 and backbone.hidden_size == 32
    assert backbone.encode("a") == [ord("a") + 3]  # no tokenizer there: bytes
    with pytest.raises(BackboneError, match="no such model directory"):
        load_backbone(f"random:{tmp_path / 'missing'}")


def _spans(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([[i for i, n in enumerate(lengths) for _ in range(n)]])


def test_block_mask_shape() -> None:
    idx = torch.cat([_spans([2, 3]), torch.tensor([[-1]])], dim=1)  # item 0: 2 tokens, item 1: 3, one pad
    m = item_attention_mask(idx)[0, 0]
    assert m[0, 1] and m[1, 0]  # inside an item: both ways
    assert not m[1, 2] and m[2, 1]  # item 0 never sees item 1; item 1 sees item 0
    assert m[2, 4] and m[4, 2]  # bidirectional inside item 1
    assert not m[:5, 5].any() and m[5, 5]  # nobody sees padding; padding sees itself only
    causal = item_attention_mask(idx, "causal")[0, 0]
    assert not causal[2, 4] and causal[4, 2]


def test_semantic_mask_isolates_semantic_tokens() -> None:
    idx = _spans([3, 3])  # each item: text, semantic token, item token
    semantic = torch.tensor([[False, True, False, False, True, False]])
    text = torch.tensor([[True, False, False, True, False, False]])
    m = item_attention_mask(idx, "semantic", semantic, text)[0, 0]
    assert m[4].tolist() == [False, False, False, True, True, False]  # own text and itself, not the ID token after it
    assert m[3].tolist() == [True, True, True, True, False, False]  # text: earlier items and own text, not own specials
    assert m[5].tolist() == [True, True, True, True, True, True]  # the item token keeps the block mask


@pytest.mark.parametrize("mode", ["block", "causal"])
def test_no_leakage_from_later_items_through_the_backbone(mode: str) -> None:
    model = load_backbone("tiny").model.eval()
    spans = [3, 2, 4]
    idx = _spans(spans)
    mask = item_attention_mask(idx, mode)
    tokens = torch.randint(3, 259, idx.shape)
    changed = tokens.clone()
    changed[0, spans[0] + spans[1]:] = torch.randint(3, 259, (spans[2],))  # perturb the last item only
    with torch.no_grad():
        a = model.model(input_ids=tokens, attention_mask=mask).last_hidden_state
        b = model.model(input_ids=changed, attention_mask=mask).last_hidden_state
    first_two = spans[0] + spans[1]
    assert torch.allclose(a[0, :first_two], b[0, :first_two], atol=1e-6)  # earlier items untouched
    assert not torch.allclose(a[0, first_two:], b[0, first_two:])  # the perturbation is real


def test_tokens_inside_an_item_see_each_other() -> None:
    model = load_backbone("tiny").model.eval()
    idx = _spans([3, 2])
    tokens = torch.randint(3, 259, idx.shape)
    changed = tokens.clone()
    changed[0, 2] = (tokens[0, 2] + 1 - 3) % 256 + 3  # the last token of item 0
    with torch.no_grad():
        block = [model.model(input_ids=t, attention_mask=item_attention_mask(idx)).last_hidden_state for t in (tokens, changed)]
        causal = [model.model(input_ids=t, attention_mask=item_attention_mask(idx, "causal")).last_hidden_state for t in (tokens, changed)]
    assert not torch.allclose(block[0][0, 0], block[1][0, 0])  # the first token sees the last one of its item
    assert torch.allclose(causal[0][0, 0], causal[1][0, 0], atol=1e-6)  # under a causal mask it does not


def test_a_backbone_folder_that_is_not_there_is_named(tmp_path) -> None:
    for missing in (str(tmp_path / "no-model"), "./no-model", "a/b/c"):
        with pytest.raises(BackboneError, match=f"backbone {missing!r}: no such model directory"):
            load_backbone(missing)
