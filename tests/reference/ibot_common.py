"""What the PyTorch references of the official iBOT code share, whatever the backbone.

Written from the project's specification of the official code (ibot-reference.md; section
numbers below refer to it), not copied from the repository. `ibot_torch.py` (the ViT) and
`swin_torch.py` (the Swin) build their backbones from the pieces here (drop path, MLP, weight
initialisation) and wrap them with the iBOT head (§2.3) and the multi-crop wrapper (§2.4); the
masks (§3.3, §3.4), the loss and centres (§4) and one training iteration (§5.1 to §5.4, and §5.6
given an autocast context and a GradScaler) are backbone-agnostic, as are the command-line
harness (tensors in and out of safetensors files, the `keys` listing, the `step` iterations) and
the official full checkpoint (§8.1) written and read by `torch.save` / `torch.load`.
"""

import contextlib
import math
from collections import OrderedDict
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import safetensors_io

# ------------------------------------------------------------------------------------------------
# 2.1, 2.2 Building blocks of both backbones
# ------------------------------------------------------------------------------------------------

def trunc_normal_(tensor, std=0.02):
    """Truncated normal with the official bounds: ±2 in absolute value (not in stds)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


def drop_path(x, drop_prob=0.0, training=False):
    """Stochastic depth per sample: x / keep * floor(keep + U[0, 1)), one draw per batch row."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device))
    return x.div(keep) * random_tensor


class DropPath(nn.Module):
    """Module form of `drop_path`; active only in training mode."""

    def __init__(self, drop_prob):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class GivenDropPath(nn.Module):
    """`DropPath` whose per-sample draws are given: call k (one per residual branch, in forward
    order) takes `scales[k]` (rows,), each 0 or 1/keep as our graph's inputs hold them, as the
    keep mask floor(keep + U[0, 1)) and computes x / keep * mask like `drop_path`.
    """

    def __init__(self, drop_prob, scales):
        super().__init__()
        self.drop_prob = drop_prob
        self.scales = list(scales)

    def forward(self, x):
        keep = 1.0 - self.drop_prob
        scales = self.scales.pop(0)
        if not np.all((scales == 0) | np.isclose(scales, 1 / keep, rtol=1e-6)):
            raise ValueError(f"drop-path scales are not 0 or 1/keep = {1 / keep}: {scales}")
        mask = torch.from_numpy(scales > 0).to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return x.div(keep) * mask


class Mlp(nn.Module):
    """fc1 (D -> hidden) -> exact (erf) GELU -> fc2 (hidden -> D); dropouts are 0 and omitted."""

    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def init_weights(m):
    """The official `_init_weights` (`apply`'d by both backbones and the head): Linear gets a
    trunc-normal(0.02) weight and a zero bias; LayerNorm 1 and 0; convolutions are untouched."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

# ------------------------------------------------------------------------------------------------
# 2.3 Projection head, 2.4 MultiCropWrapper
# ------------------------------------------------------------------------------------------------


def _weight_norm_linear(in_dim, out_dim, norm_last_layer):
    """Weight-normalised Linear without bias (legacy weight_g (K, 1) / weight_v (K, in)), g = 1."""
    layer = nn.utils.weight_norm(nn.Linear(in_dim, out_dim, bias=False))
    layer.weight_g.data.fill_(1)
    if norm_last_layer:
        layer.weight_g.requires_grad = False
    return layer


class iBOTHead(nn.Module):
    """iBOT projection head (§2.3) without normalisation layers inside the MLP (norm=None).

    MLP (Linear, act, Linear, act, Linear to the bottleneck for nlayers 3) applied to every token,
    L2-normalisation, then `last_layer` on the CLS token and `last_layer2` on the patch tokens.
    With `shared_head` the two last layers are the same module (patch_out_dim is then ignored).
    """

    def __init__(
        self,
        in_dim,
        out_dim,
        patch_out_dim=8192,
        shared_head=False,
        norm_last_layer=True,
        hidden=2048,
        bottleneck=256,
        nlayers=3,
        act="gelu",
    ):
        super().__init__()
        nlayers = max(nlayers, 1)
        make_act = {"gelu": nn.GELU, "relu": nn.ReLU}[act]
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck)
        else:
            act_layer = make_act()  # the official head reuses one activation object
            layers = [nn.Linear(in_dim, hidden), act_layer]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden, hidden), act_layer]
            layers.append(nn.Linear(hidden, bottleneck))
            self.mlp = nn.Sequential(*layers)
        self.apply(init_weights)
        self.last_layer = _weight_norm_linear(bottleneck, out_dim, norm_last_layer)
        if shared_head:
            self.last_layer2 = self.last_layer
        else:
            self.last_layer2 = _weight_norm_linear(bottleneck, patch_out_dim, norm_last_layer)

    def forward(self, x):
        """(B, D) -> (B, K) as DINOHead;
        (B, T, D) -> (CLS logits (B, K), patch logits (B, T-1, Kp)).
        """
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        if x.dim() == 2:
            return self.last_layer(x)
        return self.last_layer(x[:, 0]), self.last_layer2(x[:, 1:])


class MultiCropWrapper(nn.Module):
    """Runs the backbone once per run of equal-width crops, the head once on all (§2.4)."""

    def __init__(self, backbone, head):
        super().__init__()
        backbone.fc, backbone.head = nn.Identity(), nn.Identity()
        self.backbone = backbone
        self.head = head

    def forward(self, x, mask=None, return_backbone_feat=False, **kwargs):
        if not isinstance(x, (list, tuple)):
            x = [x]
            mask = [mask] if mask is not None else None
        widths = torch.tensor([inp.shape[-1] for inp in x])
        ends = torch.cumsum(torch.unique_consecutive(widths, return_counts=True)[1], 0)
        start, outputs = 0, []
        for end in ends.tolist():
            inp = torch.cat(x[start:end])
            if mask is not None:
                kwargs.update(mask=torch.cat(mask[start:end]))
            outputs.append(self.backbone(inp, **kwargs))
            start = end
        output = torch.cat(outputs)
        output_ = self.head(output)
        if return_backbone_feat:
            return output, output_
        return output_


def student_and_teacher(
    backbone,
    out_dim=8192,
    patch_out_dim=8192,
    shared_head=False,
    shared_head_teacher=True,
    norm_last_layer=True,
    head_hidden=2048,
    head_bottleneck=256,
):
    """Student and teacher MultiCropWrappers as in §5.1 steps 3, 4, 6 and 7 (no DDP, no BatchNorm).

    `backbone(student)` builds the student's (True) or the teacher's (False) backbone, each
    followed by its head in that order (the order of the official random draws); the heads take
    the backbone's `num_features`, with `head_hidden` and `head_bottleneck` MLP widths. The
    teacher is loaded from the student's state dict with strict=False (masked_embed ignored; with
    a shared teacher head and a separate student head it ends up with the student's last_layer2,
    as the official code) and all its parameters get requires_grad False.
    """
    widths = dict(hidden=head_hidden, bottleneck=head_bottleneck)
    student_backbone = backbone(True)
    dim = student_backbone.num_features
    student = MultiCropWrapper(
        student_backbone,
        iBOTHead(
            dim,
            out_dim,
            patch_out_dim,
            shared_head=shared_head,
            norm_last_layer=norm_last_layer,
            **widths,
        ),
    )
    teacher = MultiCropWrapper(
        backbone(False),
        iBOTHead(dim, out_dim, patch_out_dim, shared_head=shared_head_teacher, **widths),
    )
    teacher.load_state_dict(student.state_dict(), strict=False)
    for p in teacher.parameters():
        p.requires_grad = False
    return student, teacher


# ------------------------------------------------------------------------------------------------
# 3.3, 3.4 Masks
# ------------------------------------------------------------------------------------------------


def pred_ratio_for_crop(pred_ratio, pred_ratio_var, rng=random, epoch=None, pred_start_epoch=0):
    """`get_pred_ratio` (§3.3): one masking ratio for one crop."""
    if epoch is not None and epoch < pred_start_epoch:
        return 0
    if isinstance(pred_ratio, (list, tuple)):
        variances = pred_ratio_var
        if not isinstance(variances, (list, tuple)):
            variances = [variances] * len(pred_ratio)
        candidates = [
            rng.uniform(m - v, m + v) if v > 0 else m for m, v in zip(pred_ratio, variances)
        ]
        return rng.choice(candidates)
    if pred_ratio_var > 0:
        assert pred_ratio >= pred_ratio_var
        return rng.uniform(pred_ratio - pred_ratio_var, pred_ratio + pred_ratio_var)
    return pred_ratio


def block_mask(height, width, ratio, rng=random, aspect=(0.3, 1 / 0.3)):
    """BEiT-style blockwise mask (§3.4) of shape (height, width), boolean numpy array."""
    mask = np.zeros((height, width), dtype=bool)
    high = ratio * height * width
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    low = (min(height, width) // 3) ** 2
    count = 0
    while count < high:
        remaining = high - count
        added = 0
        for _ in range(10):
            area = rng.uniform(low, remaining)
            ar = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * ar)))
            w = int(round(math.sqrt(area / ar)))
            if w < width and h < height:
                top = rng.randint(0, height - h)
                left = rng.randint(0, width - w)
                new = h * w - int(mask[top : top + h, left : left + w].sum())
                if 0 < new <= remaining:
                    mask[top : top + h, left : left + w] = True
                    added = new
            if added > 0:
                break
        if added == 0:
            break
        count += added
    return mask


def random_mask(height, width, ratio, np_rng=np.random):
    """`pred_shape='rand'`: exactly int(ratio*H*W) cells, chosen by a random permutation."""
    cells = height * width
    count = int(ratio * cells)
    mask = np.hstack([np.zeros(cells - count), np.ones(count)]).astype(bool)
    np_rng.shuffle(mask)
    return mask.reshape(height, width)


# ------------------------------------------------------------------------------------------------
# 4 Loss
# ------------------------------------------------------------------------------------------------


class iBOTLoss(nn.Module):
    """iBOT loss (§4): DINO CLS term on cross-view pairs plus masked-patch term on same-view pairs.

    `forward` returns {'cls', 'patch', 'loss'} (lambdas included) and then updates the centres with
    the raw teacher outputs (§4.3), as the official forward does.
    """

    def __init__(
        self,
        out_dim,
        patch_out_dim,
        ngcrops,
        nlcrops,
        warmup_teacher_temp,
        teacher_temp,
        warmup_teacher_temp2,
        teacher_temp2,
        warmup_teacher_temp_epochs,
        nepochs,
        student_temp=0.1,
        center_momentum=0.9,
        center_momentum2=0.9,
        lambda1=1.0,
        lambda2=1.0,
        mim_start_epoch=0,
    ):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center_momentum2 = center_momentum2
        self.ngcrops = ngcrops
        self.nlcrops = nlcrops
        self.ncrops = ngcrops + nlcrops
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_out_dim))
        w, s = warmup_teacher_temp_epochs, mim_start_epoch
        self.teacher_temp_schedule = np.concatenate(
            (np.linspace(warmup_teacher_temp, teacher_temp, w), np.ones(nepochs - w) * teacher_temp)
        )
        if s == 0:
            self.teacher_temp2_schedule = np.concatenate(
                (
                    np.linspace(warmup_teacher_temp2, teacher_temp2, w),
                    np.ones(nepochs - w) * teacher_temp2,
                )
            )
        else:
            self.teacher_temp2_schedule = np.concatenate(
                (
                    np.ones(s) * warmup_teacher_temp2,
                    np.linspace(warmup_teacher_temp2, teacher_temp2, w),
                    np.ones(nepochs - w - s) * teacher_temp2,
                )
            )

    def forward(self, student_output, teacher_output, student_local_cls, student_mask, epoch):
        """student_output = (Sc (G*B, K), Sp (G*B, N, Kp)), teacher_output likewise (unmasked),
        student_local_cls (Lc*B, K) or None, student_mask a list of per-crop masks (B, h, w) or
        (B, N) of which the first G are used, epoch an integer index into the temperature schedules.
        """
        student_cls, student_patch = student_output
        teacher_cls, teacher_patch = teacher_output
        if student_local_cls is not None:
            student_cls = torch.cat([student_cls, student_local_cls])

        s_cls = (student_cls / self.student_temp).chunk(self.ncrops)
        s_patch = (student_patch / self.student_temp).chunk(self.ngcrops)
        temp = self.teacher_temp_schedule[epoch]
        temp2 = self.teacher_temp2_schedule[epoch]
        t_cls = F.softmax((teacher_cls - self.center) / temp, dim=-1).detach().chunk(self.ngcrops)
        t_patch = F.softmax((teacher_patch - self.center2) / temp2, dim=-1)
        t_patch = t_patch.detach().chunk(self.ngcrops)

        total_cls, n_cls, total_patch, n_patch = 0, 0, 0, 0
        for q in range(len(t_cls)):
            for v in range(len(s_cls)):
                if v == q:
                    ce = torch.sum(-t_patch[q] * F.log_softmax(s_patch[v], dim=-1), dim=-1)
                    mask = student_mask[v]
                    if mask.dim() == 3:
                        mask = mask.flatten(-2, -1)
                    mask = mask.to(ce.dtype)
                    per_image = torch.sum(ce * mask, dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
                    total_patch += per_image.mean()
                    n_patch += 1
                else:
                    ce = torch.sum(-t_cls[q] * F.log_softmax(s_cls[v], dim=-1), dim=-1)
                    total_cls += ce.mean()
                    n_cls += 1
        total_cls = total_cls / n_cls * self.lambda1
        total_patch = total_patch / n_patch * self.lambda2
        result = dict(cls=total_cls, patch=total_patch, loss=total_cls + total_patch)
        self.update_center(teacher_cls, teacher_patch)
        return result

    @torch.no_grad()
    def update_center(self, teacher_cls, teacher_patch):
        """EMA (momentum 0.9) of the batch mean of raw teacher CLS logits and of the per-image mean
        over all patches of the raw teacher patch logits; summed over processes when distributed.
        """
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        cls_center = torch.sum(teacher_cls, dim=0, keepdim=True)
        patch_center = torch.sum(teacher_patch.mean(1), dim=0, keepdim=True)
        if world > 1:
            dist.all_reduce(cls_center)
            dist.all_reduce(patch_center)
        cls_center = cls_center / (len(teacher_cls) * world)
        patch_center = patch_center / (len(teacher_patch) * world)
        m, m2 = self.center_momentum, self.center_momentum2
        self.center = self.center * m + cls_center * (1 - m)
        self.center2 = self.center2 * m2 + patch_center * (1 - m2)


# ------------------------------------------------------------------------------------------------
# 5 Training loop helpers
# ------------------------------------------------------------------------------------------------


def cosine_scheduler(
    base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0
):
    """Per-iteration schedule (§5.3): linear warm-up linspace(start, base, warmup_epochs*niter),
    then final + 0.5 (base - final) (1 + cos(pi j / L)) for j = 0..L-1.
    """
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.array([])
    if warmup_epochs > 0:
        warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (
        1 + np.cos(np.pi * iters / len(iters))
    )
    schedule = np.concatenate((warmup, cosine))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def get_params_groups(model):
    """Group 0 (regularised): names not ending in '.bias' with ndim > 1; group 1: the rest, wd 0.
    Parameters with requires_grad False are skipped.
    """
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def clip_gradients(model, clip):
    """Per-parameter-tensor clip: grad *= clip / (||grad|| + 1e-6) when that factor is below 1."""
    norms = []
    for _, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    """Drops the gradient of every parameter whose name contains 'last_layer' while
    epoch < freeze_last_layer (so AdamW neither updates nor decays them).
    """
    if epoch >= freeze_last_layer:
        return
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


@torch.no_grad()
def ema_update(student, teacher, momentum):
    """theta_t <- m theta_t + (1 - m) theta_s for parameters with the same name on both sides."""
    student_params = dict(student.named_parameters())
    for name, param_k in teacher.named_parameters():
        if name in student_params:
            param_k.data.mul_(momentum).add_((1 - momentum) * student_params[name].detach().data)


def train_step(
    student,
    teacher,
    ibot_loss,
    optimizer,
    images,
    masks,
    epoch,
    lr,
    wd,
    momentum,
    clip_grad=3.0,
    freeze_last_layer=1,
    autocast=contextlib.nullcontext,
    scaler=None,
):
    """One iteration of §5.4, without fp16 unless `autocast` and `scaler` are given.

    images: list of A crop batches, the G global crops first (G = ibot_loss.ngcrops), then the
    local crops. masks: list of per-crop boolean masks (B, h, w), at least the G global ones.
    lr, wd, momentum: this iteration's schedule values (lr_schedule[it], wd_schedule[it],
    momentum_schedule[it]); epoch indexes the teacher temperatures and the last-layer freeze.
    autocast: a factory of the context the forward passes and the loss run in, as the official
    `torch.cuda.amp.autocast` with fp16 (e.g. `lambda: torch.autocast("cuda", torch.float16)`).
    scaler: a GradScaler for the update (see `update_student`), or None.
    Returns {'loss', 'cls', 'patch', 'acc'} as Python floats.
    """
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if i == 0:
            group["weight_decay"] = wd

    g = ibot_loss.ngcrops
    with autocast():
        # The teacher's parameters do not require gradients, so no graph is recorded for it.
        teacher_output = teacher(images[:g])
        student_output = student(images[:g], mask=masks[:g])
        student_local_cls = None
        if len(images) > g:
            flag = student.backbone.masked_im_modeling
            student.backbone.masked_im_modeling = False
            student_local_cls = student(images[g:])[0]
            student.backbone.masked_im_modeling = flag
        all_loss = ibot_loss(student_output, teacher_output, student_local_cls, masks, epoch)
    loss = all_loss["loss"]
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"Loss is {loss.item()}, stopping training")

    # Logging statistic: teacher argmax on global crop 0 against student argmax on global crop 1.
    with torch.no_grad():
        t_pred = teacher_output[0].chunk(g)[0].argmax(dim=1)
        s_pred = student_output[0].chunk(g)[min(1, g - 1)].argmax(dim=1)
        acc = (t_pred == s_pred).float().mean().item()

    optimizer.zero_grad()
    update_student(student, optimizer, loss, epoch, clip_grad, freeze_last_layer, scaler)
    ema_update(student, teacher, momentum)
    return {k: v.item() for k, v in all_loss.items()} | {"acc": acc}


def update_student(student, optimizer, loss, epoch, clip_grad, freeze_last_layer, scaler=None):
    """§5.4 step 6 from the loss: backward, per-tensor clip (clip_grad > 0), last-layer
    cancellation and the AdamW step. With a GradScaler, as the official fp16 path: scale the loss,
    backward, unscale the gradients before the clip, and `scaler.step` (which skips the step when
    a gradient is inf or NaN) then `scaler.update`.
    """
    if scaler is None:
        loss.backward()
        if clip_grad:
            clip_gradients(student, clip_grad)
        cancel_gradients_last_layer(epoch, student, freeze_last_layer)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        clip_gradients(student, clip_grad)
    cancel_gradients_last_layer(epoch, student, freeze_last_layer)
    scaler.step(optimizer)
    scaler.update()


# ------------------------------------------------------------------------------------------------
# Command-line harness
# ------------------------------------------------------------------------------------------------

def count_params(module, skip=()):
    """Number of distinct parameter elements (shared modules counted once), minus names in skip."""
    return sum(p.numel() for n, p in module.named_parameters() if n not in skip)


def print_keys(student, teacher):
    """The `keys` mode: under `# student` and `# teacher`, one line `name [d0,d1,...]` per
    state-dict key, then `# params <part> <count>` lines (masked_embed counted apart)."""
    for title, model in (("student", student), ("teacher", teacher)):
        print(f"# {title}")
        for name, tensor in model.state_dict().items():
            print(f"{name} [{','.join(str(d) for d in tensor.shape)}]")
    print(f"# params student.backbone {count_params(student.backbone, {'masked_embed'})}")
    print(f"# params student.backbone.masked_embed {student.backbone.masked_embed.numel()}")
    print(f"# params student.head {count_params(student.head)}")
    print(f"# params teacher.backbone {count_params(teacher.backbone)}")
    print(f"# params teacher.head {count_params(teacher.head)}")


def scalar(data, name):
    """The Python number stored as a one-element tensor `name`."""
    return data[name].reshape(-1)[0].item()


def load_parameters(module, data, prefix):
    """Copies `<prefix>.<name>` into each parameter of `module.named_parameters()`; IN must have
    exactly these names under the prefix."""
    names = {name for name, _ in module.named_parameters()}
    given = {key[len(prefix) + 1 :] for key in data if key.startswith(prefix + ".")}
    if given != names:
        raise KeyError(f"{prefix}: missing {names - given}, unexpected {given - names}")
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.from_numpy(data[f"{prefix}.{name}"]))


def give_drop_path(blocks, data, k):
    """Replaces the `DropPath` of each of the student's `blocks` (in forward order, each with one
    `drop_path` module used by both residual branches) by a `GivenDropPath` holding iteration k's
    draws `drop_path.<k>.global` and `drop_path.<k>.local` (blocks, 2, rows) of `data`: attention
    then MLP branch, of the global crops' forward and then of the local crops'."""
    local = data.get(f"drop_path.{k}.local")
    for i, block in enumerate(blocks):
        rate = getattr(block.drop_path, "drop_prob", 0.0)  # nn.Identity where the rate is 0
        scales = list(data[f"drop_path.{k}.global"][i])
        if local is not None:
            scales += list(local[i])
        if rate == 0:
            if not all(np.all(s == 1) for s in scales):
                raise ValueError(f"block {i} has no drop path but its scales are not all 1")
            continue
        block.drop_path = GivenDropPath(rate, scales)


def adamw_with_state(student, data):
    """AdamW over `get_params_groups(student)` resuming from its state after the int64
    `optimizer_step` steps: `exp_avg.student.<name>` and `exp_avg_sq.student.<name>` of `data`
    for each parameter that has state (the others start fresh), in the parameter's dtype."""
    optimizer = torch.optim.AdamW(get_params_groups(student))
    for name, param in student.named_parameters():
        if f"exp_avg.student.{name}" in data:
            optimizer.state[param] = {
                "step": torch.tensor(float(scalar(data, "optimizer_step"))),
                "exp_avg": torch.from_numpy(data[f"exp_avg.student.{name}"]).to(param.dtype),
                "exp_avg_sq": torch.from_numpy(data[f"exp_avg_sq.student.{name}"]).to(param.dtype),
            }
    return optimizer


def run_train_steps(data, student, teacher, drop_path_blocks, target):
    """The iterations of the `step` mode (see `ibot_torch.py`'s docstring) on `student` and
    `teacher`, any backbone: loads their parameters from `data` in float64, runs `train_step`
    `steps` times and writes the outputs to `target`. `drop_path_blocks`: the student's blocks in
    forward order whose drop-path draws `data` gives (see `give_drop_path`), or None without drop
    path.
    """

    def get(name):
        return scalar(data, name)

    student, teacher = student.double(), teacher.double()
    load_parameters(student, data, "student")
    load_parameters(teacher, data, "teacher")

    n_global = get("n_global")
    count = sum(1 for key in data if key.startswith("crops."))
    images = [torch.from_numpy(data[f"crops.{i}"]).double() for i in range(count)]
    masks = [torch.from_numpy(data[f"masks.{i}"]) > 0.5 for i in range(n_global)]
    epoch = get("epoch")
    t1, t2 = get("teacher_temp"), get("teacher_patch_temp")
    loss_fn = iBOTLoss(
        get("out_dim"),
        get("patch_out_dim"),
        n_global,
        len(images) - n_global,
        t1,
        t1,
        t2,
        t2,
        warmup_teacher_temp_epochs=1,
        nepochs=epoch + 1,
        lambda1=get("lambda1"),
        lambda2=get("lambda2"),
    ).double()
    loss_fn.center.copy_(torch.from_numpy(data["center"]))
    loss_fn.center2.copy_(torch.from_numpy(data["center2"]))
    optimizer = adamw_with_state(student, data)
    result = {}
    for k in range(get("steps")):
        if drop_path_blocks is not None:
            give_drop_path(drop_path_blocks, data, k)
        stats = train_step(
            student,
            teacher,
            loss_fn,
            optimizer,
            images,
            masks,
            epoch,
            lr=get("lr"),
            wd=get("wd"),
            momentum=get("momentum"),
            clip_grad=get("clip_grad"),
            freeze_last_layer=get("freeze_last_layer"),
        )
        for name, param in student.named_parameters():
            if param.grad is not None:
                result[f"grad.{k}.student.{name}"] = param.grad.numpy().copy()

    result.update({name: np.array([value], dtype=np.float64) for name, value in stats.items()})
    for name, param in student.named_parameters():
        result[f"student.{name}"] = param.detach().numpy().copy()
        state = optimizer.state.get(param)
        if state:
            result[f"exp_avg.student.{name}"] = state["exp_avg"].numpy().copy()
            result[f"exp_avg_sq.student.{name}"] = state["exp_avg_sq"].numpy().copy()
    for name, param in teacher.named_parameters():
        result[f"teacher.{name}"] = param.detach().numpy().copy()
    result["center"] = loss_fn.center.numpy().copy()
    result["center2"] = loss_fn.center2.numpy().copy()
    safetensors_io.save(target, result)


def optimizer_outputs(student, state_dict):
    """The `checkpoint-read` outputs of the optimizer state `state_dict` loaded into AdamW."""
    optimizer = torch.optim.AdamW(get_params_groups(student))
    optimizer.load_state_dict(state_dict)
    names = {id(p): n for n, p in student.named_parameters()}
    result = {}
    for param, state in optimizer.state.items():
        for key, value in state.items():
            result[f"optimizer.{key}.{names[id(param)]}"] = value.reshape(-1).numpy().copy()
    groups = [[len(g["params"]), g["weight_decay"]] for g in optimizer.param_groups]
    result["optimizer.groups"] = np.array(groups, dtype=np.float64)
    for param in student.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    return result


def checkpoint_head_options(args):
    """The head arguments of `student_and_teacher` (as the build functions name them) from a
    checkpoint's `args` Namespace; where it has no head widths, the official 2048 and 256."""
    return dict(
        out_dim=args.out_dim,
        patch_out_dim=args.patch_out_dim,
        shared_head=args.shared_head,
        shared_head_teacher=args.shared_head_teacher,
        norm_last_layer=getattr(args, "norm_last_layer", True),
        head_hidden=getattr(args, "head_hidden_dim", 2048),
        head_bottleneck=getattr(args, "head_bottleneck_dim", 256),
    )


def save_full_checkpoint(path, student, teacher, optimizer, epoch, args, centers):
    """`torch.save`s the official full checkpoint (§8.1): `student` (keys with the DDP
    `module.`), `teacher`, `optimizer`, `epoch`, `args` (a Namespace), `ibot_loss` (the
    OrderedDict of `center` and `center2`) and `fp16_scaler` None."""
    checkpoint = {
        "student": OrderedDict(("module." + k, v) for k, v in student.state_dict().items()),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "args": args,
        "ibot_loss": centers,
        "fp16_scaler": None,
    }
    torch.save(checkpoint, path)


def checkpoint_read_outputs(path, build, outputs):
    """The `checkpoint-read` mode: `torch.load`s an official full checkpoint, builds the student
    and teacher with `build(args)` from its `args` Namespace, loads `student` (`module.` stripped)
    and `teacher` strictly, and returns `outputs(student, teacher)` and, when the checkpoint has an
    optimizer, its `optimizer_outputs` (taken last: their AdamW step moves the student).

    The file holds a pickled Namespace, which torch >= 2.6 refuses by default (weights_only
    True); weights_only=False, accepted since torch 1.13, reads it in both.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    student, teacher = build(checkpoint["args"])
    prefix = "module."
    student_state = {k[len(prefix) :]: v for k, v in checkpoint["student"].items()}
    student.load_state_dict(student_state, strict=True)
    teacher.load_state_dict(checkpoint["teacher"], strict=True)
    result = outputs(student, teacher)
    if checkpoint.get("optimizer"):
        result.update(optimizer_outputs(student, checkpoint["optimizer"]))
    return result
