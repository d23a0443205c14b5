"""PyTorch reference of the occlusion, shuffle and part-wise probing analyses of the official code
(bytedance/ibot `analysis/occlusion/eval.py`, `analysis/linear_part/eval.py`), written from their
behaviour, not copied. The ViT is `ibot_torch.VisionTransformer` in float64.

Usage: occlusion_torch.py MODE IN OUT, IN and OUT safetensors.

IN holds the backbone weights under their official names (`cls_token`, `blocks.0.…`), the scalars
`patch_size`, `depth`, `heads`, `img_size`, `n_last_blocks` and `grid_h`, `grid_w`, the classifier
`linear.weight` and `linear.bias`, `images` (B, 3, S, S), and per mode:

- `subset`: `keep` (K,) int64 patch numbers. OUT: `removed_logits`, the linear-probed model
  (CLS tokens of the last n blocks through the final norm, then `linear`) on the sequence whose
  patch tokens (content plus position embedding) outside `keep` are taken out after
  `prepare_tokens`; `zeroed_logits`, the same model on the images whose `keep` cells of the
  grid_h×grid_w grid are zeroed (the official random drop zeroes the dropped cells).
- `shuffle`: `order` (grid_h·grid_w,) int64. OUT: `shuffled` images (the official rearrange into
  grid cells, `img[:, order, :]`, and back) and `shuffled_logits`, the model on them.
- `part`: `topk` (1,) int64. OUT: `part_features` (B, D), the mean of the last block's output
  tokens (no final norm: the official model uses mean pooling, whose norm is Identity) of the topk
  patches with the largest head-mean CLS attention of the last block.
- `saliency`: `attention` (B, N) and `lambda` (1,) float64. OUT: `salient` (B, N), 1 where the
  official threshold (sorted ascending, normalised cumulative sum > 1 − λ, mapped back) keeps.
"""

import sys

import numpy as np
import torch

import ibot_torch
import safetensors_io


def scalar(data, name):
    return int(data[name].reshape(-1)[0])


def build(data):
    model = ibot_torch.VisionTransformer(
        img_size=scalar(data, "img_size"),
        patch_size=scalar(data, "patch_size"),
        embed_dim=data["cls_token"].shape[-1],
        depth=scalar(data, "depth"),
        num_heads=scalar(data, "heads"),
    ).double()
    state = {k: torch.from_numpy(data[k]).double() for k in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def classify(model, data, tokens):
    """The linear-probed model on a token sequence (B, 1 + K, D): VisionTransformerLinearEval with
    avgpool 0."""
    n = scalar(data, "n_last_blocks")
    outputs = []
    x = tokens
    for i, blk in enumerate(model.blocks):
        x = blk(x)
        if len(model.blocks) - i <= n:
            outputs.append(model.norm(x)[:, 0])
    features = torch.cat(outputs, dim=-1)
    weight = torch.from_numpy(data["linear.weight"]).double()
    bias = torch.from_numpy(data["linear.bias"]).double()
    return features @ weight.T + bias


def to_cells(img, grid_h, grid_w):
    """'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'."""
    b, c, height, width = img.shape
    p1, p2 = height // grid_h, width // grid_w
    x = img.reshape(b, c, grid_h, p1, grid_w, p2).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, grid_h * grid_w, p1 * p2 * c), (c, p1, p2)


def from_cells(cells, grid_h, grid_w, shape):
    """'b (h w) (p1 p2 c) -> b c (h p1) (w p2)'."""
    c, p1, p2 = shape
    b = cells.shape[0]
    x = cells.reshape(b, grid_h, grid_w, p1, p2, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, grid_h * p1, grid_w * p2)


def run_subset(data):
    model = build(data)
    images = torch.from_numpy(data["images"]).double()
    keep = torch.from_numpy(data["keep"])
    grid_h, grid_w = scalar(data, "grid_h"), scalar(data, "grid_w")
    with torch.no_grad():
        tokens = model.prepare_tokens(images)
        index = torch.cat([torch.zeros(1, dtype=torch.long), keep + 1])
        removed = classify(model, data, tokens[:, index])
        cells, shape = to_cells(images.clone(), grid_h, grid_w)
        cells[:, keep, :] = 0.0
        zeroed_images = from_cells(cells, grid_h, grid_w, shape)
        zeroed = classify(model, data, model.prepare_tokens(zeroed_images))
    return {"removed_logits": removed.numpy(), "zeroed_logits": zeroed.numpy()}


def run_shuffle(data):
    model = build(data)
    images = torch.from_numpy(data["images"]).double()
    order = torch.from_numpy(data["order"])
    grid_h, grid_w = scalar(data, "grid_h"), scalar(data, "grid_w")
    cells, shape = to_cells(images, grid_h, grid_w)
    shuffled = from_cells(cells[:, order, :], grid_h, grid_w, shape)
    with torch.no_grad():
        logits = classify(model, data, model.prepare_tokens(shuffled))
    return {"shuffled": shuffled.numpy(), "shuffled_logits": logits.numpy()}


def run_part(data):
    model = build(data)
    images = torch.from_numpy(data["images"]).double()
    topk = scalar(data, "topk")
    with torch.no_grad():
        x = model.prepare_tokens(images)
        for i, blk in enumerate(model.blocks):
            if i == len(model.blocks) - 1:
                attn = blk(x, return_attention=True)
            x = blk(x)
        attentions = attn[:, :, 0, 1:].mean(1)
        pos = attentions.topk(topk, dim=-1)[1]
        output = x[:, 1:]
        pos = pos.unsqueeze(-1).repeat(1, 1, output.size(-1))
        features = torch.gather(output, 1, pos).mean(1)
    return {"part_features": features.numpy()}


def run_saliency(data):
    attentions = torch.from_numpy(data["attention"]).double()
    drop_lambda = float(data["lambda"].reshape(-1)[0])
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - drop_lambda)
    idx2 = torch.argsort(idx)
    for b in range(th_attn.shape[0]):
        th_attn[b] = th_attn[b][idx2[b]]
    return {"salient": th_attn.double().numpy()}


MODES = {"subset": run_subset, "shuffle": run_shuffle, "part": run_part, "saliency": run_saliency}


def main(argv):
    mode, source, target = argv
    safetensors_io.save(target, MODES[mode](safetensors_io.load(source)))


if __name__ == "__main__":
    main(sys.argv[1:])
