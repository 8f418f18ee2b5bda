"""Grow a trained inverter into a wider one that computes the same function (``train --init --width``).

Every convolution of the wide network keeps the narrow one's weights between the old channels. The new
output channels start from the wide network's own random initialisation, and the weights from new
input channels into old output channels start at zero, so before the first step the old channels and
the image are exactly what the narrow network computed; the new channels only join in as training
moves those zeros. (Net2Net, Chen et al. 2016, copies channels instead; zero blocks need no noise to
break the symmetry of copies.) The inverters have no normalisation layers, so nothing else couples
old and new channels.
"""
from __future__ import annotations

import torch
from torch import nn

# Also what --init says when a file's metadata shows the fc form (warmstart.init_refusal), before any
# network is built.
CANNOT_WIDEN_FC = "networks with fully connected layers (the fc form) cannot be widened"


def _kept(old: int, new: int, blocks: int) -> torch.Tensor:
    """Indices of the old channels among the new ones. An input made by concatenating ``blocks`` maps of
    equal width (a U-Net merge: up-sampled, skip) keeps the old channels at the start of each block."""
    if old % blocks or new % blocks or old > new:
        raise ValueError(f"cannot widen {old} channels in {blocks} blocks to {new}")
    o, n = old // blocks, new // blocks
    return torch.cat([torch.arange(b * n, b * n + o) for b in range(blocks)])


def _shape(m: nn.Module) -> tuple:
    """Everything of a convolution but its channel counts."""
    return type(m), m.kernel_size, m.stride, m.padding, m.dilation, m.groups


def concatenated_inputs(network: nn.Module) -> dict[str, int]:
    """Layer name -> how many equal-width maps its input concatenates (1 unless the network says)."""
    return {f"{prefix}.{name}" if name else prefix: blocks
            for prefix, blocks in getattr(network, "CONCATENATED_INPUTS", {}).items()
            for name, m in getattr(network, prefix).named_modules() if isinstance(m, nn.Conv2d)}


@torch.no_grad()
def widen(narrow: nn.Module, wide: nn.Module, check: bool = False) -> nn.Module:
    """Write ``narrow``'s weights into ``wide`` (same architecture, at least as many channels per layer)
    so that ``wide`` computes what ``narrow`` does. Returns ``wide``. ``check``: run both on a random
    input and raise ValueError if they differ (a concatenation the network did not declare would)."""
    layers = dict(narrow.named_modules())
    blocks = concatenated_inputs(wide)
    for name, big in wide.named_modules():
        if isinstance(big, nn.Linear):
            raise ValueError(CANNOT_WIDEN_FC)
        if not isinstance(big, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        small = layers.get(name)
        if small is None or _shape(small) != _shape(big):
            raise ValueError(f"layer {name}: the networks differ in more than width")
        if big.groups != 1:
            raise ValueError(f"layer {name}: grouped convolutions cannot be widened")
        ins = _kept(small.in_channels, big.in_channels, blocks.get(name, 1))
        outs = _kept(small.out_channels, big.out_channels, 1)
        # Conv2d weights are (out, in, kh, kw); ConvTranspose2d's are (in, out, kh, kw).
        flip = isinstance(big, nn.ConvTranspose2d)
        w = big.weight.transpose(0, 1) if flip else big.weight  # a view: writes land in big.weight
        old = small.weight.transpose(0, 1) if flip else small.weight
        w[outs] = 0.0
        w[outs[:, None], ins[None, :]] = old.to(w.dtype)
        if big.bias is not None:
            big.bias[outs] = small.bias.to(big.bias.dtype)
    if check:
        x = torch.randn(2, narrow.in_channels, 4, 4, generator=torch.Generator().manual_seed(0))
        a, b = narrow(x), wide(x)
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()) + 1e-6):
            raise ValueError(f"the grown network does not compute what the narrow one did "
                             f"(differs by {float((a - b).abs().max()):.3g})")
    return wide
