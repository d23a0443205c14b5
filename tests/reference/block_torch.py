"""PyTorch reference for one pre-norm ViT block trained with AdamW.

Usage: block_torch.py INPUT OUTPUT. INPUT (safetensors) holds the block's parameters under their
official names, `x` [B, N, D], `r` [B, N, D] (loss weights), and scalars `heads`, `lr`,
`weight_decay`, `steps`. The loss is sum(block(x) * r). Writes to OUTPUT: `y` (first forward),
`grad.<name>` and `grad.x` (first backward), and `final.<name>` after `steps` AdamW steps
(decay on tensors with ndim > 1 and not ending in .bias, as the official parameter groups).
"""

import sys

import torch
import torch.nn as nn

import safetensors_io


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def main(source, target):
    data = safetensors_io.load(source)
    x = torch.from_numpy(data["x"]).double().requires_grad_(True)
    r = torch.from_numpy(data["r"]).double()
    dim = x.shape[-1]
    hidden = data["mlp.fc1.weight"].shape[0]
    block = Block(dim, int(data["heads"][0]), hidden).double()
    state = {k: torch.from_numpy(v).double() for k, v in data.items() if k in block.state_dict()}
    block.load_state_dict(state, strict=True)
    decay = [p for n, p in block.named_parameters() if not n.endswith(".bias") and p.ndim > 1]
    plain = [p for n, p in block.named_parameters() if n.endswith(".bias") or p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": plain, "weight_decay": 0.0}],
        lr=float(data["lr"][0]),
        weight_decay=float(data["weight_decay"][0]),
    )
    out = {}
    for step in range(int(data["steps"][0])):
        optimizer.zero_grad()
        x.grad = None
        y = block(x)
        (y * r).sum().backward()
        if step == 0:
            out["y"] = y.detach().numpy()
            out["grad.x"] = x.grad.numpy().copy()
            for name, p in block.named_parameters():
                out["grad." + name] = p.grad.numpy().copy()
        optimizer.step()
    for name, p in block.named_parameters():
        out["final." + name] = p.detach().numpy().copy()
    safetensors_io.save(target, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2])
