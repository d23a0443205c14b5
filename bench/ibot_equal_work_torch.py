"""The iBOT training iteration of `ibot_torch.train_step`, doing only the work that
`lib/train/step.ts` does: the same loss, gradients and updates, with the head run on fewer tokens.

- The student's head runs on the CLS token of every crop and on the masked patches of the global
  crops, gathered into M "slots" per crop row (masked patches first, then padding of weight 0);
  the official code runs it on every token, the local crops' patch tokens included, and multiplies
  the unmasked patches' cross-entropy by 0.
- The teacher's head MLP runs on every token of the global crops (the patch centre needs the mean
  of all patch logits); its last layer runs on the CLS token, on the slots, and on the mean
  bottleneck vector of each crop row, whose logits are the mean patch logits because the layer is
  linear.

Used by `ibot_step_torch.py --work equal`, so that a comparison at equal work measures engine
speed rather than the algorithm's shortcut.
"""

import math

import torch
import torch.nn.functional as F

import ibot_torch


def slot_table(masks, slots):
    """Slots of each crop row from its mask (rows, N) bool: token indices (rows, slots) int64 into
    the (rows, 1 + N) tokens (CLS first), masked patches first and padding pointing at the first
    patch, and weights (rows, slots), 1 for a masked patch and 0 for padding."""
    counts = masks.sum(1)
    if int(counts.max()) > slots:
        raise ValueError(f"a mask has {int(counts.max())} masked patches, more than {slots} slots")
    order = torch.sort((~masks).to(torch.uint8), dim=1, stable=True).indices[:, :slots]
    weights = torch.arange(slots) < counts[:, None]
    indices = torch.where(weights, order + 1, torch.ones_like(order))
    return indices, weights


def gather_tokens(tokens, indices):
    """tokens (rows, T, D) at indices (rows, M) → (rows, M, D)."""
    return torch.gather(tokens, 1, indices[..., None].expand(-1, -1, tokens.shape[-1]))


def slot_loss(loss_fn, student_cls, student_slots, teacher_cls, teacher_slots, weights, epoch):
    """`iBOTLoss.forward`'s terms on slots: the CLS term over cross-view pairs, and the patch term
    as the weighted mean of the slots' cross-entropy per image. Returns {'cls', 'patch', 'loss'}."""
    temp = loss_fn.teacher_temp_schedule[epoch]
    temp2 = loss_fn.teacher_temp2_schedule[epoch]
    g = loss_fn.ngcrops
    s_cls = (student_cls / loss_fn.student_temp).chunk(loss_fn.ncrops)
    s_slots = F.log_softmax(student_slots / loss_fn.student_temp, dim=-1).chunk(g)
    t_cls = F.softmax((teacher_cls - loss_fn.center) / temp, dim=-1).detach().chunk(g)
    t_slots = F.softmax((teacher_slots - loss_fn.center2) / temp2, dim=-1).detach().chunk(g)
    slot_weights = weights.to(student_slots.dtype).chunk(g)
    total_cls, pairs, total_patch = 0, 0, 0
    for q in range(g):
        ce = torch.sum(-t_slots[q] * s_slots[q], dim=-1)
        w = slot_weights[q]
        total_patch += (torch.sum(ce * w, dim=-1) / w.sum(dim=-1).clamp(min=1.0)).mean()
        for v in range(len(s_cls)):
            if v != q:
                total_cls += torch.sum(-t_cls[q] * F.log_softmax(s_cls[v], dim=-1), dim=-1).mean()
                pairs += 1
    cls = total_cls / pairs * loss_fn.lambda1
    patch = total_patch / g * loss_fn.lambda2
    return dict(cls=cls, patch=patch, loss=cls + patch)


@torch.no_grad()
def update_centers(loss_fn, teacher_cls, teacher_patch_mean):
    """`iBOTLoss.update_center` from the CLS logits and each row's mean patch logits."""
    m, m2 = loss_fn.center_momentum, loss_fn.center_momentum2
    loss_fn.center = loss_fn.center * m + teacher_cls.mean(0, keepdim=True) * (1 - m)
    patch_mean = teacher_patch_mean.mean(0, keepdim=True)[None]
    loss_fn.center2 = loss_fn.center2 * m2 + patch_mean * (1 - m2)


def equal_work_step(
    student,
    teacher,
    loss_fn,
    optimizer,
    images,
    masks,
    epoch,
    lr,
    wd,
    momentum,
    clip_grad=3.0,
    freeze_last_layer=1,
    slots=None,
):
    """One iteration with the arguments and result of `ibot_torch.train_step`; `slots` is M, the
    slots per crop row (default: the most masked patches of any row)."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if i == 0:
            group["weight_decay"] = wd

    g = loss_fn.ngcrops
    crops = torch.cat(images[:g])
    mask = torch.cat([m.flatten(1) for m in masks[:g]]).bool()
    indices, weights = slot_table(mask, slots or int(mask.sum(1).max()))

    with torch.no_grad():
        head = teacher.head
        bottleneck = F.normalize(head.mlp(teacher.backbone(crops)), dim=-1)
        teacher_cls = head.last_layer(bottleneck[:, 0])
        teacher_patch_mean = head.last_layer2(bottleneck[:, 1:].mean(1))
        teacher_slots = head.last_layer2(gather_tokens(bottleneck, indices))

    tokens = student.backbone(crops, mask=mask)
    rows = [tokens[:, 0]]
    if len(images) > g:
        flag = student.backbone.masked_im_modeling
        student.backbone.masked_im_modeling = False
        rows.append(student.backbone(torch.cat(images[g:]))[:, 0])
        student.backbone.masked_im_modeling = flag
    cls_rows = sum(r.shape[0] for r in rows)
    rows.append(gather_tokens(tokens, indices).flatten(0, 1))
    head = student.head
    bottleneck = F.normalize(head.mlp(torch.cat(rows)), dim=-1)
    student_cls = head.last_layer(bottleneck[:cls_rows])
    student_slots = head.last_layer2(bottleneck[cls_rows:]).reshape(*indices.shape, -1)

    terms = slot_loss(
        loss_fn, student_cls, student_slots, teacher_cls, teacher_slots, weights, epoch
    )
    update_centers(loss_fn, teacher_cls, teacher_patch_mean)
    loss = terms["loss"]
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"Loss is {loss.item()}, stopping training")

    with torch.no_grad():
        t_pred = teacher_cls.chunk(g)[0].argmax(dim=1)
        s_pred = student_cls[: crops.shape[0]].chunk(g)[min(1, g - 1)].argmax(dim=1)
        acc = (t_pred == s_pred).float().mean().item()

    optimizer.zero_grad()
    loss.backward()
    if clip_grad:
        ibot_torch.clip_gradients(student, clip_grad)
    ibot_torch.cancel_gradients_last_layer(epoch, student, freeze_last_layer)
    optimizer.step()
    ibot_torch.ema_update(student, teacher, momentum)
    return {k: v.item() for k, v in terms.items()} | {"acc": acc}
