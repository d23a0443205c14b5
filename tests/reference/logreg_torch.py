"""PyTorch reference for the L2-regularised multinomial logistic regression without intercept.

Usage: logreg_torch.py IN OUT. IN (safetensors) holds the float32 `features` [n, dim], the int64
`labels` [n] and `classes` [1], and the float64 `lambda` [1]. The objective, in float64, is

    F(W) = mean_i cross_entropy(W x_i, y_i) + lambda / 2 * ||W||^2,   W of shape [classes, dim],

minimised from W = 0 by torch.optim.LBFGS with the strong-Wolfe line search until the gradient
is below 1e-12. Writes the float64 `weight` [classes, dim], `objective` [1] and `gradient_norm` [1].
"""

import sys

import torch

import safetensors_io


def main(source, target):
    data = safetensors_io.load(source)
    x = torch.from_numpy(data["features"]).double()
    y = torch.from_numpy(data["labels"])
    classes = int(data["classes"][0])
    lambd = float(data["lambda"][0])
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight],
        lr=1,
        max_iter=10000,
        tolerance_grad=1e-12,
        tolerance_change=0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective():
        return torch.nn.functional.cross_entropy(x @ weight.T, y) + 0.5 * lambd * weight.pow(2).sum()

    def closure():
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    optimizer.step(closure)
    value = closure()
    safetensors_io.save(target, {
        "weight": weight.detach().numpy(),
        "objective": value.detach().numpy().reshape(1),
        "gradient_norm": weight.grad.norm().numpy().reshape(1),
    })


if __name__ == "__main__":
    main(*sys.argv[1:])
