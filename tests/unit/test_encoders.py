"""Every registered encoder maps its kind's input to a Gaussian in the latent space."""

import pytest
import torch

from fdrmfl_pipeline.core.encoders import ENCODERS, build_encoder

SHAPES = {
    "mlp": (7,),
    "cnn2d": (3, 8, 8),
    "conv1d_attn": (6, 4),
    "gru_attn": (6, 4),
    "cnn1d": (30,),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("hidden", [5, 16])  # odd widths too
@pytest.mark.parametrize("linear_path", [True, False])
def test_encoder_outputs_mean_and_logvar(name, hidden, linear_path):
    enc = build_encoder(name, SHAPES[name], hidden, 3, 0.0, linear_path)
    mu, logvar = enc(torch.randn(4, *SHAPES[name]))
    assert mu.shape == logvar.shape == (4, 3)
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    (mu.sum() + logvar.sum()).backward()
    assert all(
        p.grad is not None
        for p in enc.parameters()
        if p.requires_grad and p is not enc.head.logvar.bias
    )


def test_unknown_encoder_is_named():
    with pytest.raises(ValueError, match="'transformer'"):
        build_encoder("transformer", (3,), 8, 2, 0.0, True)
