"""Independent PyTorch reference of the official fine-tuning with layer-wise lr decay
(bytedance/ibot `evaluation/classification_layer_decay`, BEiT's recipe), written from the
project's specification of the official code (ibot-reference.md §6.3), not copied from it.

The model is the fine-tuning ViT: the iBOT backbone blocks (ibot_torch.py), then either the
final-normed CLS token (`use_cls`) or the mean patch token through `fc_norm` (mean pooling, no
final `norm`), then `head` Linear(D -> C), or, fine-tuning from the projection head's first layer
(semi-supervised `eval_cls.py`, `ClassProjHead` with finetune_layer 1), `head.mlp.0`
Linear(D -> hidden), GELU, `head.cls_head` Linear(hidden -> C). Parameter groups follow `get_parameter_groups` with
`get_num_layer_for_vit`; the loss is timm's SoftTargetCrossEntropy; the optimizer torch's AdamW.

Command-line modes:

    finetune_torch.py groups DEPTH DIM HEADS PATCH IMG CLASSES USE_CLS LAYER_DECAY WEIGHT_DECAY
        Prints the parameter groups as JSON: a list, in the optimizer's order, of
        {"name", "lr_scale", "weight_decay", "params"}.

    finetune_torch.py step IN OUT
        IN (safetensors) holds the float64 scalars (shape [1]) `depth`, `heads`, `patch_size`,
        `img_size`, `classes`, `use_cls`, `drop_path`, `layer_decay`, `lr`, `weight_decay`,
        `clip_grad` (< 0: no clipping), `projection_hidden` (0: the linear head); `param.<key>` float32 for every official key; `images`
        (B, 3, S, S), `targets` (B, C) and `drop_path_scales` (depth, 2, B), the per-sample
        drop-path factors (0 or 1/keep) of the attention and MLP branches. Runs one training
        iteration in float32 (forward in training mode with these draws, loss, backward, optional
        clip_grad_norm_, AdamW step with each group's lr = lr * lr_scale) and writes `loss`
        (float64, [1]) and the updated `param.<key>` (float32).

    finetune_torch.py pos IN OUT
        IN holds `pos_embed` (1, 1 + n*n, D) and the float64 scalar `size` m; writes `pos_embed`
        (1, 1 + m*m, D) in float64 as the fine-tuning script resizes a checkpoint's table for
        another input size (the CLS entry kept, the patch table bicubic to size (m, m)).
"""

import json
import sys

import numpy as np
import torch
import torch.nn as nn

import ibot_torch
import safetensors_io


class ProjectionClassifier(nn.Module):
    """The projection head's first layer and GELU (`mlp`), then the classifier `cls_head`."""

    def __init__(self, in_dim, hidden_dim, num_classes):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU())
        self.cls_head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x):
        return self.cls_head(self.mlp(x))


class FinetuneViT(nn.Module):
    """The fine-tuning ViT of modeling_finetune.py, without relative position bias or layer scale."""

    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, num_classes, use_cls,
                 drop_path_rate=0.0, projection_hidden=0):
        super().__init__()
        self.patch_embed = ibot_torch.PatchEmbed(img_size, patch_size, 3, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            [ibot_torch.Block(embed_dim, num_heads, 4.0, True, rates[i]) for i in range(depth)]
        )
        self.use_cls = use_cls
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_cls else nn.Identity()
        self.fc_norm = None if use_cls else nn.LayerNorm(embed_dim, eps=1e-6)
        if projection_hidden > 0:
            self.head = ProjectionClassifier(embed_dim, projection_hidden, num_classes)
        else:
            self.head = nn.Linear(embed_dim, num_classes)

    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        features = x[:, 0] if self.use_cls else self.fc_norm(x[:, 1:].mean(1))
        return self.head(features)


def layer_id_for_vit(name, num_max_layer):
    """The layer of a parameter: 0 for the embeddings, block j -> j + 1, the rest last."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_max_layer - 1


def parameter_groups(model, weight_decay, layer_decay):
    """Groups keyed layer_<id>_<decay|no_decay> (or decay|no_decay without layer decay), in order
    of first appearance, each with its lr_scale and weight decay."""
    num_layers = len(model.blocks)
    scales = [layer_decay ** (num_layers + 1 - i) for i in range(num_layers + 2)]
    skip = model.no_weight_decay()
    groups = {}
    for name, param in model.named_parameters():
        no_decay = param.ndim == 1 or name.endswith(".bias") or name in skip
        group = "no_decay" if no_decay else "decay"
        scale = 1.0
        if layer_decay < 1.0:
            layer = layer_id_for_vit(name, len(scales))
            group = f"layer_{layer}_{group}"
            scale = scales[layer]
        if group not in groups:
            groups[group] = {
                "name": group,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "params": [],
                "tensors": [],
            }
        groups[group]["params"].append(name)
        groups[group]["tensors"].append(param)
    return list(groups.values())


def run_groups(args):
    depth, dim, heads, patch, img, classes, use_cls = (int(a) for a in args[:7])
    layer_decay, weight_decay = float(args[7]), float(args[8])
    model = FinetuneViT(img, patch, dim, depth, heads, classes, bool(use_cls))
    groups = parameter_groups(model, weight_decay, layer_decay)
    print(json.dumps([{k: g[k] for k in ("name", "lr_scale", "weight_decay", "params")}
                      for g in groups]))


def run_step(source, target):
    data = safetensors_io.load(source)

    def get(name):
        return data[name].reshape(-1)[0].item()

    depth = int(get("depth"))
    embed_dim = data["param.cls_token"].shape[-1]
    model = FinetuneViT(int(get("img_size")), int(get("patch_size")), embed_dim, depth,
                        int(get("heads")), int(get("classes")), bool(get("use_cls")),
                        get("drop_path"), int(get("projection_hidden")))
    state = {k[len("param."):]: torch.from_numpy(v) for k, v in data.items()
             if k.startswith("param.")}
    model.load_state_dict(state, strict=True)
    scales = data["drop_path_scales"]
    for i, block in enumerate(model.blocks):
        if isinstance(block.drop_path, ibot_torch.DropPath):
            block.drop_path = ibot_torch.GivenDropPath(block.drop_path.drop_prob,
                                                       [scales[i, 0], scales[i, 1]])
    model.train()
    groups = parameter_groups(model, get("weight_decay"), get("layer_decay"))
    lr = get("lr")
    optimizer = torch.optim.AdamW(
        [{"params": g["tensors"], "weight_decay": g["weight_decay"], "lr": lr * g["lr_scale"]}
         for g in groups],
        lr=lr,
    )
    images = torch.from_numpy(data["images"])
    targets = torch.from_numpy(data["targets"])
    logits = model(images)
    loss = torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()
    optimizer.zero_grad()
    loss.backward()
    if get("clip_grad") >= 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), get("clip_grad"))
    optimizer.step()
    result = {"loss": np.array([loss.item()], dtype=np.float64)}
    for name, param in model.named_parameters():
        result[f"param.{name}"] = param.detach().numpy().copy()
    safetensors_io.save(target, result)


def run_pos(source, target):
    data = safetensors_io.load(source)
    pos = torch.from_numpy(data["pos_embed"]).double()
    size = int(data["size"].reshape(-1)[0])
    n = int(round((pos.shape[1] - 1) ** 0.5))
    tokens = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    tokens = torch.nn.functional.interpolate(tokens, size=(size, size), mode="bicubic",
                                             align_corners=False)
    tokens = tokens.permute(0, 2, 3, 1).flatten(1, 2)
    safetensors_io.save(target, {"pos_embed": torch.cat((pos[:, :1], tokens), dim=1).numpy()})


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) == 11 and sys.argv[1] == "groups":
        run_groups(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "step":
        run_step(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "pos":
        run_pos(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
