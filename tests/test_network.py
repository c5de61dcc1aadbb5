"""Shapes of every block and of the whole network at several resolutions."""

import pytest
import torch

from model import NetworkConfig, SegmenterConfig
from model.nets.blocks import GatedImageExchange, ResBlock, SelfAttention, TimestepEmbedding
from model.nets.mlffm import ChannelAttention, MultiLevelFusion, PlainSkip, SpatialAttention
from model.nets.network import DualPathUNet


@pytest.mark.parametrize("size", [16, 32, 48])
def test_blocks_keep_spatial_shape(size):
    x = torch.randn(2, 8, size, size)
    temb = TimestepEmbedding(16)(torch.tensor([0, 999]))
    assert temb.shape == (2, 16)
    assert ResBlock(8, 12, 16)(x, temb).shape == (2, 12, size, size)
    assert ResBlock(8, 8)(x).shape == (2, 8, size, size)
    assert GatedImageExchange(8)(x, torch.randn_like(x)).shape == x.shape
    assert SelfAttention(8)(x).shape == x.shape
    assert ChannelAttention(8)(x).shape == x.shape
    assert SpatialAttention()(x).shape == x.shape


def test_time_conditioned_block_requires_embedding():
    with pytest.raises(ValueError, match="temb"):
        ResBlock(4, 4, 8)(torch.randn(1, 4, 8, 8))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("fusion_cls", [MultiLevelFusion, PlainSkip])
def test_skip_fusion_outputs_target_level_shape(size, fusion_cls):
    widths = (8, 16, 24)
    features = [torch.randn(3, w, size // 2**k, size // 2**k) for k, w in enumerate(widths)]
    for level in range(len(widths) - 1):
        out = fusion_cls(widths, level, widths[level])(features)
        assert out.shape == (3, widths[level], size // 2**level, size // 2**level)


def test_mlffm_level_weights_are_a_distribution():
    widths = (8, 16)
    fusion = MultiLevelFusion(widths, 0, 8)
    features = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)]
    fusion(features)
    assert fusion.level_prior.shape == (2,)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("fusion", ["mlffm", "plain"])
def test_network_shapes(size, fusion):
    config = NetworkConfig(widths=(8, 16, 32), time_dim=16, fusion=fusion)
    net = DualPathUNet(config)
    image = torch.randn(2, 3, size, size)
    features = net.encode_image(image)
    assert [f.shape[-1] for f in features.levels] == [size, size // 2, size // 4]
    assert [s.shape[1:] for s in features.skips] == [(8, size, size), (16, size // 2, size // 2)]
    x_t = torch.randn(2, 1, size, size)
    out = net.denoise(features, x_t, torch.tensor([5, 700]))
    assert out.shape == (2, 1, size, size)
    assert torch.allclose(out, net(image, x_t, torch.tensor([5, 700])), atol=1e-5)


def test_one_image_features_broadcast_to_many_samples():
    net = DualPathUNet(NetworkConfig(widths=(8, 16), time_dim=16))
    features = net.encode_image(torch.randn(1, 3, 16, 16))
    out = net.denoise(features, torch.randn(5, 1, 16, 16), torch.full((5,), 10))
    assert out.shape == (5, 1, 16, 16)
    with pytest.raises(ValueError):
        net.encode_image(torch.randn(2, 3, 16, 16)).expand(5)


def test_config_validation_and_round_trip():
    config = SegmenterConfig(size=64, network=NetworkConfig(widths=(8, 16, 32), fusion="plain"))
    assert SegmenterConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="multiple"):
        SegmenterConfig(size=30, network=NetworkConfig(widths=(8, 16, 32)))
    with pytest.raises(ValueError, match="fusion"):
        NetworkConfig(fusion="concat")
    with pytest.raises(ValueError, match="unknown"):
        SegmenterConfig.from_dict({**config.to_dict(), "colour": "red"})


def test_plain_unet_ablation_ignores_the_noisy_mask_and_is_smaller():
    from model.config import DiffusionConfig

    torch.manual_seed(0)
    full = DualPathUNet(NetworkConfig(widths=(8, 16, 32), time_dim=16))
    plain = DualPathUNet(NetworkConfig(widths=(8, 16, 32), time_dim=16, fusion="plain", mask_path=False))
    assert not hasattr(plain, "mask_stem") and not hasattr(plain, "time_embedding")
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(plain) < count(full)
    image = torch.randn(2, 3, 32, 32)
    a = plain(image, torch.randn(2, 1, 32, 32), torch.tensor([3, 900]))
    b = plain(image, torch.zeros(2, 1, 32, 32), torch.tensor([999, 999]))
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b)
    with pytest.raises(ValueError, match="direct"):
        SegmenterConfig(size=32, network=NetworkConfig(widths=(8, 16, 32), mask_path=False))
    SegmenterConfig(size=32, network=NetworkConfig(widths=(8, 16, 32), mask_path=False), diffusion=DiffusionConfig(prediction="direct"))


@pytest.mark.parametrize("fusion", ["mlffm", "plain"])
def test_a_wide_image_path_feeds_a_narrow_denoiser(fusion):
    config = NetworkConfig(widths=(16, 32, 48), mask_widths=(8, 8, 16), time_dim=16, fusion=fusion)
    assert config.denoiser_widths == (8, 8, 16)
    net = DualPathUNet(config)
    features = net.encode_image(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in features.levels] == [16, 32, 48]
    assert [s.shape[1] for s in features.skips] == [8, 8]  # fused skips come at the decoder's width
    out = net.denoise(features, torch.randn(3, 1, 32, 32), torch.tensor([1, 500, 999]))
    assert out.shape == (3, 1, 32, 32)
    # The per-step part is lighter than with equal widths; the image path is the same.
    same = DualPathUNet(NetworkConfig(widths=(16, 32, 48), time_dim=16, fusion=fusion))
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    assert count([net.mask_blocks, net.decoder_blocks]) < count([same.mask_blocks, same.decoder_blocks])
    assert count([net.image_blocks]) == count([same.image_blocks])
    round_trip = SegmenterConfig(size=32, network=config)
    assert SegmenterConfig.from_dict(round_trip.to_dict()) == round_trip


def test_mask_widths_are_validated():
    with pytest.raises(ValueError, match="mask_widths"):
        NetworkConfig(widths=(8, 16, 32), mask_widths=(8, 16))
    with pytest.raises(ValueError, match="mask_widths"):
        NetworkConfig(widths=(8, 16), mask_widths=(8, 2))
    with pytest.raises(ValueError, match="mask path"):
        NetworkConfig(widths=(8, 16), mask_widths=(8, 8), mask_path=False)
