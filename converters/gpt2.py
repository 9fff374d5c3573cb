"""A plain-torch GPT-2 forward with an explicit KV cache, loading a Hugging Face checkpoint's weights.

transformers 5's GPT2LMHeadModel builds its masks with ops that exporters choke on (Core ML has no
``diff``); this forward uses only matmul, softmax, layer norm, gelu and comparisons, so it exports
cleanly to ONNX and through ``torch.export`` to Core ML, and computes the same logits.

Inputs and outputs follow the usual decoder-with-past convention:
    input_ids [batch, seq], attention_mask [batch, past + seq] (1 = attend), position_ids [batch, seq],
    past keys/values [batch, heads, past, head_dim] per layer -> logits [batch, seq, vocab] and the
    present keys/values [batch, heads, past + seq, head_dim].
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, eps: float):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, eps=eps)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd, eps=eps)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.fc_out = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        b, s, e = x.shape
        d = e // self.n_head
        q, k, v = self.qkv(self.ln_1(x)).split(e, dim=-1)
        q = q.view(b, s, self.n_head, d).transpose(1, 2)
        k = torch.cat([past_k, k.view(b, s, self.n_head, d).transpose(1, 2)], dim=2)
        v = torch.cat([past_v, v.view(b, s, self.n_head, d).transpose(1, 2)], dim=2)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + bias
        attn = torch.softmax(scores, dim=-1) @ v
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, e))
        x = x + self.fc_out(nn.functional.gelu(self.fc(self.ln_2(x)), approximate="tanh"))
        return x, k, v


class GPT2Forward(nn.Module):
    """GPT-2 as a pure function of (ids, mask, positions, cache); see the module docstring."""

    def __init__(self, n_layer: int, n_head: int, n_embd: int, n_positions: int, vocab_size: int,
                 eps: float = 1e-5):
        super().__init__()
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, eps) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=eps)
        self.register_buffer("zero_bias", torch.zeros(vocab_size), persistent=False)

    @classmethod
    def from_hf(cls, model: nn.Module) -> GPT2Forward:
        """Copy the weights of a transformers ``GPT2LMHeadModel`` (Conv1D weights are transposed)."""
        c = model.config
        if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {c.activation_function!r} (GPT-2 uses gelu_new)")
        if not c.tie_word_embeddings:
            raise ValueError("GPT-2 with an untied output head is not supported; udrl trains tied models")
        out = cls(c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size, c.layer_norm_epsilon)
        sd = model.state_dict()
        mapped = {"wte.weight": sd["transformer.wte.weight"], "wpe.weight": sd["transformer.wpe.weight"],
                  "ln_f.weight": sd["transformer.ln_f.weight"], "ln_f.bias": sd["transformer.ln_f.bias"]}
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            for ours, theirs, conv in (("ln_1", "ln_1", False), ("ln_2", "ln_2", False), ("qkv", "attn.c_attn", True),
                                       ("proj", "attn.c_proj", True), ("fc", "mlp.c_fc", True),
                                       ("fc_out", "mlp.c_proj", True)):
                w = sd[p + theirs + ".weight"]
                mapped[f"blocks.{i}.{ours}.weight"] = w.t().contiguous() if conv else w
                mapped[f"blocks.{i}.{ours}.bias"] = sd[p + theirs + ".bias"]
        out.load_state_dict(mapped)
        return out.eval()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def empty_cache(self, batch: int = 1, length: int = 0) -> list[torch.Tensor]:
        shape = (batch, self.n_head, length, self.head_dim)
        return [torch.zeros(shape) for _ in range(2 * self.n_layer)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = input_ids.shape[1]
        total = attention_mask.shape[1]
        # Query i sits at absolute slot (total - s + i); it may see key j when j <= that slot and the
        # mask lets it through. Built from comparisons only, so every exporter understands it.
        query_slot = torch.arange(s, device=input_ids.device).unsqueeze(1) + (total - s)
        key_slot = torch.arange(total, device=input_ids.device).unsqueeze(0)
        allowed = torch.logical_and((key_slot <= query_slot).unsqueeze(0).unsqueeze(0),
                                    attention_mask[:, None, None, :] > 0)
        bias = torch.where(allowed, torch.zeros((), dtype=torch.float32),
                           torch.full((), torch.finfo(torch.float32).min, dtype=torch.float32))
        x = self.wte(input_ids) + self.wpe(position_ids)
        present: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, bias, past[2 * i], past[2 * i + 1])
            present += [k, v]
        # linear with a bias on 2-D input exports as Gemm(transB=1), which reads the tied embedding in
        # place; `x @ wte.t()` would make exporters store a transposed copy of the largest matrix.
        h = self.ln_f(x)
        logits = nn.functional.linear(h.reshape(-1, self.n_embd), self.wte.weight, self.zero_bias)
        return (logits.reshape(h.shape[0], h.shape[1], -1), *present)
