"""The iBOT training iteration of `ibot_torch.train_step`, doing only the work that
`lib/train/step.ts` does: the same loss, gradients and updates, with the head run on fewer tokens.

- The student's head runs on the CLS token of every crop and on the masked patches of the global
  crops, gathered into S "slots" on one flat axis across the batch (the masked patches row by row,
  then padding of weight 0), as `fillMaskInputs` of `lib/train/batch_inputs.ts` lays them out; the
  official code runs it on every token, the local crops' patch tokens included, and multiplies the
  unmasked patches' cross-entropy by 0.
- The teacher's head MLP runs on every token of the global crops (the patch centre needs the mean
  of all patch logits); its last layer runs on the CLS token, on the slots, and on the mean
  bottleneck vector of each crop row, whose logits are the mean patch logits because the layer is
  linear.
- A Swin backbone's attention runs its qkv and proj Linear layers on the real tokens only, as
  `lib/models/window_attention.ts` does (`swin_torch.real_token_projections`); the official code
  also projects the zero padding that rounds each stage's grid up to a multiple of the window.
- S is one of our step's slot buckets (`slot_buckets` and `pick_slot_bucket`, the rule of
  `lib/train/slot_buckets.ts`), so that both sides run the head on as many slots.

Used by `ibot_step_torch.py --work equal` and `gpu_torch_step.py --work equal`, so that a
comparison at equal work measures engine speed rather than the algorithm's shortcut.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

import ibot_torch
import swin_torch

SLOT_BUCKET_COUNT = 8
SLOT_BUCKET_GRANULE = 8


def slot_buckets(max_slots):
    """Our step's slot bucket sizes for a batch that can hold at most `max_slots` masked patches
    (G·B times the most masked patches of one crop): k/8 of `max_slots` for k = 1..8, each rounded
    up to a multiple of 8 and capped at `max_slots`, without repeats, ascending."""
    if not isinstance(max_slots, int) or max_slots < 1:
        raise ValueError(f"the largest slot count must be a positive integer, got {max_slots}")
    sizes = set()
    for k in range(1, SLOT_BUCKET_COUNT + 1):
        share = -(-max_slots * k // SLOT_BUCKET_COUNT)
        granules = -(-share // SLOT_BUCKET_GRANULE)
        sizes.add(min(max_slots, granules * SLOT_BUCKET_GRANULE))
    return sorted(sizes)


def pick_slot_bucket(buckets, masked):
    """The smallest of `buckets` (ascending) that holds `masked` patches; the smallest when
    nothing is masked."""
    for size in buckets:
        if size >= masked:
            return size
    raise ValueError(
        f"the batch has {masked} masked patches, more than the {buckets[-1]} slots of the "
        "largest bucket"
    )


def slot_table(masks, slots):
    """The flat slots of a batch from its masks (rows, N) bool, rows = G·B: token indices (slots,)
    int64 into the rows' (rows · (1 + N)) tokens (CLS first in each row), the masked patches in
    row-major order then padding pointing at row 0's first patch, and weights (slots,) float64,
    1 / (max(masked patches of the row, 1) · rows) for a masked patch and 0 for padding."""
    rows, patches = masks.shape
    counts = masks.sum(1)
    masked = int(counts.sum())
    if masked > slots:
        raise ValueError(
            f"the batch has {masked} masked patches, more than the {slots} slots given"
        )
    cells = torch.arange(rows * patches, device=masks.device)
    tokens = cells + cells // patches + 1
    flat = masks.flatten()
    indices = torch.ones(slots, dtype=torch.int64, device=masks.device)
    indices[:masked] = tokens[flat]
    row_weights = 1.0 / (counts.clamp(min=1).to(torch.float64) * rows)
    weights = torch.zeros(slots, dtype=torch.float64, device=masks.device)
    weights[:masked] = row_weights[cells[flat] // patches]
    return indices, weights


def gather_slots(tokens, indices):
    """tokens (rows, T, D) at flat indices (S,) into the (rows · T) tokens → (S, D)."""
    return tokens.flatten(0, 1).index_select(0, indices)


def slot_loss(loss_fn, student_cls, student_slots, teacher_cls, teacher_slots, weights, epoch):
    """`iBOTLoss.forward`'s terms on slots: the CLS term over cross-view pairs, and the patch term
    as the weighted sum of the slots' cross-entropy (slots × K logits). Returns {'cls', 'patch',
    'loss'}."""
    temp = loss_fn.teacher_temp_schedule[epoch]
    temp2 = loss_fn.teacher_temp2_schedule[epoch]
    g = loss_fn.ngcrops
    s_cls = (student_cls / loss_fn.student_temp).chunk(loss_fn.ncrops)
    t_cls = F.softmax((teacher_cls - loss_fn.center) / temp, dim=-1).detach().chunk(g)
    s_slots = F.log_softmax(student_slots / loss_fn.student_temp, dim=-1)
    center2 = loss_fn.center2.reshape(1, -1)
    t_slots = F.softmax((teacher_slots - center2) / temp2, dim=-1).detach()
    ce = torch.sum(-t_slots * s_slots, dim=-1)
    total_cls, pairs = 0, 0
    for q in range(g):
        for v in range(len(s_cls)):
            if v != q:
                total_cls += torch.sum(-t_cls[q] * F.log_softmax(s_cls[v], dim=-1), dim=-1).mean()
                pairs += 1
    cls = total_cls / pairs * loss_fn.lambda1
    patch = torch.sum(ce * weights.to(ce.dtype)) * loss_fn.lambda2
    return dict(cls=cls, patch=patch, loss=cls + patch)


@torch.no_grad()
def update_centers(loss_fn, teacher_cls, teacher_patch_mean):
    """`iBOTLoss.update_center` from the CLS logits and each row's mean patch logits."""
    m, m2 = loss_fn.center_momentum, loss_fn.center_momentum2
    cls_center = torch.sum(teacher_cls, dim=0, keepdim=True) / len(teacher_cls)
    patch_center = torch.sum(teacher_patch_mean, dim=0, keepdim=True)[None] / len(
        teacher_patch_mean
    )
    loss_fn.center = loss_fn.center * m + cls_center * (1 - m)
    loss_fn.center2 = loss_fn.center2 * m2 + patch_center * (1 - m2)


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
    autocast=contextlib.nullcontext,
    scaler=None,
):
    """One iteration with the arguments and result of `ibot_torch.train_step` (`autocast` and
    `scaler` included: the forward passes and the loss run in `autocast()`, the update goes
    through `ibot_torch.update_student`); `slots` is S, the flat patch slots of the batch
    (default: its masked patches, at least 1)."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr
        if i == 0:
            group["weight_decay"] = wd

    g = loss_fn.ngcrops
    crops = torch.cat(images[:g])
    mask = torch.cat([m.flatten(1) for m in masks[:g]]).bool()
    indices, weights = slot_table(mask, slots or max(1, int(mask.sum())))

    with autocast(), swin_torch.real_token_projections(student, teacher):
        with torch.no_grad():
            head = teacher.head
            bottleneck = F.normalize(head.mlp(teacher.backbone(crops)), dim=-1)
            teacher_cls = head.last_layer(bottleneck[:, 0])
            teacher_patch_mean = head.last_layer2(bottleneck[:, 1:].mean(1))
            teacher_slots = head.last_layer2(gather_slots(bottleneck, indices))

        tokens = student.backbone(crops, mask=mask)
        rows = [tokens[:, 0]]
        if len(images) > g:
            flag = student.backbone.masked_im_modeling
            student.backbone.masked_im_modeling = False
            rows.append(student.backbone(torch.cat(images[g:]))[:, 0])
            student.backbone.masked_im_modeling = flag
        cls_rows = sum(r.shape[0] for r in rows)
        rows.append(gather_slots(tokens, indices))
        head = student.head
        bottleneck = F.normalize(head.mlp(torch.cat(rows)), dim=-1)
        student_cls = head.last_layer(bottleneck[:cls_rows])
        student_slots = head.last_layer2(bottleneck[cls_rows:])

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
    ibot_torch.update_student(student, optimizer, loss, epoch, clip_grad, freeze_last_layer, scaler)
    ibot_torch.ema_update(student, teacher, momentum)
    return {k: v.item() for k, v in terms.items()} | {"acc": acc}
