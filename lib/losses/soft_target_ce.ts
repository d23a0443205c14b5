/**
 * Soft-target cross-entropy (timm's `SoftTargetCrossEntropy`), the loss of fine-tuning with mixup,
 * cutmix or label smoothing: the mean over the batch of Σ_c −t_c · log softmax(z)_c. With one-hot
 * targets it is the ordinary cross-entropy; with targets (1 − s)·one-hot + s/C it is timm's
 * `LabelSmoothingCrossEntropy(s)`. The gradient comes from our autodiff (log-softmax's VJP).
 *
 * @module
 */

import { sameShape, type Tensor } from "../graph/tensor.ts";
import { crossEntropySoft, logSoftmax } from "../graph/nn.ts";
import { mean } from "../graph/reduce.ts";

/**
 * The batch-mean soft-target cross-entropy of `logits` [B, C] against `targets` [B, C] (each row a
 * distribution over the C classes, e.g. mixed smoothed one-hots); a scalar in nats.
 */
export function softTargetCrossEntropy(logits: Tensor, targets: Tensor): Tensor {
  if (logits.rank !== 2 || !sameShape(logits.dims, targets.dims)) {
    logits.graph.fail(
      "softTargetCrossEntropy",
      `logits ${logits} and targets ${targets} must both be [batch, classes]`,
    );
  }
  return mean(crossEntropySoft(targets, logSoftmax(logits, -1)));
}
