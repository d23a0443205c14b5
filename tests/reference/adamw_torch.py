"""PyTorch reference for one `torch.optim.AdamW` step in float32, resumed from a given state.

Usage: adamw_torch.py IN OUT. IN (safetensors) holds, for each parameter NAME, the float32 tensors
`param.NAME`, `grad.NAME`, `exp_avg.NAME` and `exp_avg_sq.NAME` (the moments after `step.NAME`
steps), the int64 scalars `step.NAME` (steps taken so far, t - 1) and `decay.NAME` (1: in the
decayed group 0, 0: in group 1 with weight decay 0), and the float64 scalars `lr` and
`weight_decay`. AdamW has PyTorch's defaults otherwise (betas (0.9, 0.999), eps 1e-8, amsgrad
off). Writes `param.NAME`, `exp_avg.NAME` and `exp_avg_sq.NAME` after one `optimizer.step()`,
in float32.
"""

import sys

import torch

import safetensors_io


def main(source, target):
    data = safetensors_io.load(source)
    names = sorted(key[len("param."):] for key in data if key.startswith("param."))
    params = {name: torch.nn.Parameter(torch.from_numpy(data[f"param.{name}"])) for name in names}
    decayed = [params[n] for n in names if data[f"decay.{n}"].item()]
    others = [params[n] for n in names if not data[f"decay.{n}"].item()]
    optimizer = torch.optim.AdamW(
        [{"params": decayed}, {"params": others, "weight_decay": 0.0}],
        lr=data["lr"].item(),
        weight_decay=data["weight_decay"].item(),
    )
    for name, param in params.items():
        param.grad = torch.from_numpy(data[f"grad.{name}"])
        optimizer.state[param] = {
            "step": torch.tensor(float(data[f"step.{name}"].item())),
            "exp_avg": torch.from_numpy(data[f"exp_avg.{name}"]),
            "exp_avg_sq": torch.from_numpy(data[f"exp_avg_sq.{name}"]),
        }
    optimizer.step()
    result = {}
    for name, param in params.items():
        state = optimizer.state[param]
        result[f"param.{name}"] = param.detach().numpy().copy()
        result[f"exp_avg.{name}"] = state["exp_avg"].numpy().copy()
        result[f"exp_avg_sq.{name}"] = state["exp_avg_sq"].numpy().copy()
    safetensors_io.save(target, result)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2])
