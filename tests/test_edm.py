"""EDM preconditioning identities and the Karras sampling schedule."""

import math

import pytest
import torch

from w4rl_core.models.edm import Denoiser, EDMConfig
from w4rl_core.models.sampler import SamplerConfig, karras_sigmas, sample_next_frame
from w4rl_core.models.unet import FrameUNet, UNetConfig


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    net = FrameUNet(UNetConfig(image_size=16, context_frames=2, channels=(16, 16), norm_groups=8), action_features=6)
    return Denoiser(net, EDMConfig()).eval()


def test_preconditioning_coefficients(denoiser):
    sd = 0.5
    sigma = torch.tensor([0.1, 1.0, 10.0])
    c_in, c_out, c_skip, c_noise = denoiser.precondition(sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    assert torch.allclose(c_in, 1 / torch.sqrt(s**2 + sd**2))
    assert torch.allclose(c_skip, sd**2 / (s**2 + sd**2))
    assert torch.allclose(c_out, s * sd / torch.sqrt(s**2 + sd**2))
    assert torch.allclose(c_noise, torch.log(sigma) / 4)
    # EDM's design: unit-variance network input and unit-variance training target
    # ((y - c_skip x_noisy) / c_out with Var(y) = sd^2, x_noisy = y + sigma n).
    assert torch.allclose(c_in**2 * (s**2 + sd**2), torch.ones_like(s))
    assert torch.allclose(((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2, torch.ones_like(s))


def test_denoiser_is_the_identity_as_sigma_goes_to_zero(denoiser):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ctx = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    act = torch.rand(2, 2, 6)
    out = denoiser.denoise(x, torch.full((2,), 1e-6), ctx, act)
    assert (out - x).abs().max() < 1e-4


def test_training_loss_is_finite_and_uses_the_target(denoiser):
    frames = torch.rand(4, 3, 3, 16, 16) * 2 - 1
    loss, logs = denoiser(frames, torch.rand(4, 2, 6), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(float(loss))


def test_karras_schedule_endpoints_and_order():
    cfg = SamplerConfig(steps=5, sigma_min=2e-3, sigma_max=5.0, rho=7.0)
    s = karras_sigmas(cfg)
    assert len(s) == 6 and s[-1] == 0
    assert s[0].item() == pytest.approx(5.0, rel=1e-5) and s[-2].item() == pytest.approx(2e-3, rel=1e-4)
    assert torch.all(s[:-1] > s[1:])
    one = karras_sigmas(SamplerConfig(steps=1))
    assert one.tolist() == pytest.approx([5.0, 0.0])
    # rho = 1 is a linear ramp
    lin = karras_sigmas(SamplerConfig(steps=3, sigma_min=1.0, sigma_max=3.0, rho=1.0))
    assert lin.tolist() == pytest.approx([3.0, 2.0, 1.0, 0.0])


@pytest.mark.parametrize("method, calls", [("euler", 3), ("heun", 5)])
def test_sampler_steps_and_range(denoiser, method, calls, monkeypatch):
    count = {"n": 0}
    real = denoiser.denoise

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(denoiser, "denoise", counting)
    ctx = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    out = sample_next_frame(denoiser, ctx, torch.rand(2, 2, 6), SamplerConfig(steps=3, method=method),
                            torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert count["n"] == calls  # Heun: one extra evaluation per step except the last


def test_configs_are_validated():
    with pytest.raises(ValueError):
        SamplerConfig(method="ddim")
    with pytest.raises(ValueError):
        EDMConfig(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(channels=(30, 30))
    assert math.isclose(EDMConfig().sigma_data, 0.5)


def test_context_noise_level_reaches_the_network_in_training_and_is_zero_at_sampling():
    from w4rl_core.models.accel import AccelConfig, FastSampler
    from w4rl_core.models.world_model import WorldModel, WorldModelConfig

    torch.manual_seed(0)
    cfg = WorldModelConfig(action_low=(-1.0,) * 2, action_high=(1.0,) * 2,
                           unet=UNetConfig(image_size=16, context_frames=2, channels=(16, 16), norm_groups=8,
                                           context_noise_embedding=True),
                           edm=EDMConfig(context_noise_max=0.1))
    model = WorldModel(cfg)
    seen = []
    mlp = model.denoiser.net.context_noise_mlp
    handle = mlp.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    frames = torch.rand(8, 3, 3, 16, 16) * 2 - 1
    model.loss(frames, torch.rand(8, 2, 2) * 2 - 1, torch.Generator().manual_seed(1))
    levels = seen.pop() / 10  # the embedding sees 10 x sigma_ctx
    assert levels.shape == (8,) and (levels >= 0).all() and (levels <= 0.1).all() and levels.std() > 0
    ctx, act = frames[:, :2], torch.rand(8, 2, 2) * 2 - 1
    model.predict(ctx, act, generator=torch.Generator().manual_seed(2))
    FastSampler(model, cfg.sampler, "cpu", AccelConfig(precision="float32"))(ctx, act, torch.Generator().manual_seed(2))
    handle.remove()
    assert len(seen) >= 2 and all(torch.equal(s, torch.zeros(8)) for s in seen)  # every sampler call: level 0


def test_mid_block_attention_is_normalised_and_output_starts_at_zero():
    net = FrameUNet(UNetConfig(image_size=16, context_frames=2, channels=(16, 16), norm_groups=8), action_features=6)
    attn = net.unet.mid_block.attentions[0]
    assert isinstance(attn.group_norm, torch.nn.GroupNorm) and attn.group_norm.num_groups == 8
    assert torch.count_nonzero(net.unet.conv_out.weight) == 0 and torch.count_nonzero(net.unet.conv_out.bias) == 0
    # The noise-level embedding is smooth in ln(sigma): nearby levels give nearby embeddings, over
    # the whole training range (the earlier 1000 x c_noise sinusoid wrapped within one std of ln sigma).
    c = torch.linspace(-1.6, 0.8, 200)
    emb = net.unet.time_proj(c)
    step = (emb[1:] - emb[:-1]).norm(dim=1)
    assert step.max() < 0.5 * emb[0].norm() / 2
