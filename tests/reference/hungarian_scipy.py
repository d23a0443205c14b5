"""Reference for tests/eval/hungarian_test.ts, with scipy's linear_sum_assignment.

Usage: hungarian_scipy.py CASES.json

CASES.json holds {"assignments": [{"cost": [[...], ...], "maximize": bool}, ...],
"accuracies": [{"label": [...], "pred": [...]}, ...]}. Prints one JSON object:
{"assignments": [{"total": float, "rows": [...], "cols": [...]}, ...], "accuracies": [float, ...]}.

An accuracy is the official evaluation/unsupervised/unsup_cls.py eval_pred adjusted accuracy,
written anew from its behaviour: sklearn's confusion matrix (rows true labels, columns predicted
ids, both over the sorted union of the values), the cost of pairing cluster j with label i as
(images in cluster j) - (images of label i in cluster j) over the first n_classes rows and
columns, the optimal pairing (scipy here, the Munkres package there) and the share of images
whose mapped cluster equals their label.
"""

import json
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment


def assignment(case):
    cost = np.asarray(case["cost"], dtype=np.float64).reshape(len(case["cost"]), -1)
    rows, cols = linear_sum_assignment(cost, maximize=case["maximize"])
    return {"total": float(cost[rows, cols].sum()), "rows": rows.tolist(), "cols": cols.tolist()}


def eval_pred_accuracy(case):
    label = np.asarray(case["label"], dtype=np.int64)
    pred = np.asarray(case["pred"], dtype=np.int64)
    values = np.unique(np.concatenate([label, pred]))
    position = {v: k for k, v in enumerate(values)}
    confusion = np.zeros((len(values), len(values)), dtype=np.int64)
    for t, p in zip(label, pred):
        confusion[position[t], position[p]] += 1
    n_clusters = len(set(label.tolist()))
    cost = np.zeros((n_clusters, n_clusters))
    for j in range(n_clusters):
        in_cluster = confusion[:, j].sum()
        for i in range(n_clusters):
            cost[j, i] = in_cluster - confusion[i, j]
    rows, cols = linear_sum_assignment(cost)
    cluster_to_label = np.zeros(n_clusters)
    cluster_to_label[rows] = cols
    shifted = pred - pred.min() if pred.min() != 0 else pred
    mapped = cluster_to_label[shifted]
    return float(np.mean(mapped == label))


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    print(json.dumps({
        "assignments": [assignment(c) for c in cases["assignments"]],
        "accuracies": [eval_pred_accuracy(c) for c in cases["accuracies"]],
    }))


if __name__ == "__main__":
    main()
