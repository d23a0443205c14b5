"""PyTorch reference of bench/knn_bench.ts: the weighted k-NN of iBOT's eval_knn.py, timed.

Usage: knn_torch.py TRAIN_FILE TEST_FILE T K [K ...]

Reads two feature files (safetensors: `features` F32 [rows, dim], L2-normalised, and `labels` I64
[rows], as lib/eval/feature_file.ts writes them) and classifies the test rows two ways:

- `official`: the official knn_classifier loop, once per k: 100 chunks of test rows, similarity
  by torch.mm against the transposed bank, topk(k), the one-hot weighted vote exp(s / T), a
  descending sort of the class scores, top-1 and top-5 hits;
- `equal_work`: the same chunks, but topk once for the largest k and each k voting with a prefix
  of those neighbours, which is the work lib/eval/knn.ts does.

Each variant runs twice and the faster run counts, as load on the machine varies. Prints one JSON
line: `seconds` (the official variant's, then the equal-work variant's), each
variant's results (`official`, `equal_work`: k, top1, top5 in percent), `peak_rss_mib` and `blas`. Run with OMP_NUM_THREADS set to the core count (bench/knn_bench.ts
does this through bench/torch_timing.ts).
"""

import json
import os
import struct
import sys
import time

import torch

from torch_process import loaded_blas, peak_rss_mib


def read_feature_file(path):
    """The features [rows, dim] and labels [rows] of a feature file."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, dtype in (("features", torch.float32), ("labels", torch.int64)):
        entry = header[name]
        begin, end = entry["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).view(entry["shape"])
    return tensors["features"], tensors["labels"]


def vote_hits(sims, neighbour_labels, targets, temperature, num_classes):
    """Top-1 and top-5 hits of one chunk: exp(s / T) votes per class, classes sorted by score."""
    weights = (sims / temperature).exp()
    one_hot = torch.zeros(*neighbour_labels.shape, num_classes)
    one_hot.scatter_(2, neighbour_labels.unsqueeze(2), 1)
    scores = (one_hot * weights.unsqueeze(2)).sum(1)
    _, ranking = scores.sort(1, True)
    correct = ranking.eq(targets.view(-1, 1))
    return correct[:, :1].sum().item(), correct[:, :5].sum().item()


def official(train, train_labels, test, test_labels, ks, temperature, num_classes):
    """The official knn_classifier, called once per k."""
    bank = train.t()
    chunk = max(1, test.shape[0] // 100)
    results = []
    for k in ks:
        top1 = top5 = 0
        for start in range(0, test.shape[0], chunk):
            similarity = torch.mm(test[start:start + chunk], bank)
            sims, rows = similarity.topk(k, largest=True, sorted=True)
            hits = vote_hits(sims, train_labels[rows], test_labels[start:start + chunk], temperature, num_classes)
            top1 += hits[0]
            top5 += hits[1]
        results.append(dict(k=k, top1=top1 * 100.0 / test.shape[0], top5=top5 * 100.0 / test.shape[0]))
    return results


def equal_work(train, train_labels, test, test_labels, ks, temperature, num_classes):
    """One topk for the largest k per chunk; every k votes with a prefix of the neighbours."""
    bank = train.t()
    chunk = max(1, test.shape[0] // 100)
    k_max = max(ks)
    top1 = {k: 0 for k in ks}
    top5 = {k: 0 for k in ks}
    for start in range(0, test.shape[0], chunk):
        similarity = torch.mm(test[start:start + chunk], bank)
        sims, rows = similarity.topk(k_max, largest=True, sorted=True)
        neighbour_labels = train_labels[rows]
        for k in ks:
            hits = vote_hits(sims[:, :k], neighbour_labels[:, :k], test_labels[start:start + chunk], temperature, num_classes)
            top1[k] += hits[0]
            top5[k] += hits[1]
    n = test.shape[0]
    return [dict(k=k, top1=top1[k] * 100.0 / n, top5=top5[k] * 100.0 / n) for k in ks]


@torch.no_grad()
def main():
    train_path, test_path, temperature = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ks = [int(k) for k in sys.argv[4:]]
    torch.set_num_threads(os.cpu_count())
    train, train_labels = read_feature_file(train_path)
    test, test_labels = read_feature_file(test_path)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    report = dict(seconds=[], blas=loaded_blas())
    for name, variant in (("official", official), ("equal_work", equal_work)):
        times = []
        for _ in range(2):
            start = time.perf_counter()
            report[name] = variant(train, train_labels, test, test_labels, ks, temperature, num_classes)
            times.append(time.perf_counter() - start)
        report["seconds"].append(min(times))
    report["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
