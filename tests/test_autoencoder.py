import pytest
import torch

from avfast.data.autoencoder import SD_VAE_SCALING, StableDiffusionVAE, TinyAutoencoder


def test_tiny_autoencoder_shapes_and_range():
    ae = TinyAutoencoder(channels=8)
    video = torch.rand(2, 3, 5, 64, 64) * 2 - 1
    z = ae.encode(video)
    assert z.shape == (2, 4, 5, 8, 8)
    out = ae.decode(z)
    assert out.shape == video.shape and out.min() >= -1 and out.max() <= 1


def test_chunking_does_not_change_results_and_keeps_frame_order():
    video = torch.rand(1, 3, 7, 32, 32) * 2 - 1
    whole = TinyAutoencoder(channels=8, max_frames_per_chunk=64).encode(video)
    chunked = TinyAutoencoder(channels=8, max_frames_per_chunk=2, progress=False).encode(video)
    torch.testing.assert_close(whole, chunked)
    single = TinyAutoencoder(channels=8).encode(video[:, :, 3:4])
    torch.testing.assert_close(whole[:, :, 3:4], single)


def test_bad_shapes_are_named():
    ae = TinyAutoencoder(channels=8)
    with pytest.raises(ValueError, match="video"):
        ae.encode(torch.zeros(3, 4, 32, 32))
    with pytest.raises(ValueError, match="multiples of 8"):
        ae.encode(torch.zeros(1, 3, 2, 30, 32))
    with pytest.raises(ValueError, match="latents"):
        ae.decode(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="max_frames_per_chunk"):
        TinyAutoencoder(max_frames_per_chunk=0)


def test_sd_vae_needs_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        StableDiffusionVAE.from_pretrained(tmp_path / "stabilityai" / "sd-vae-ft-mse")


def test_sd_vae_wrapper_loads_local_folder_and_scales(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers (avfast[vae]) provides AutoencoderKL")
    torch.manual_seed(0)
    # Same structure as sd-vae-ft-mse (4 stages -> /8, 4 latent channels), tiny widths.
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4,
                                  block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    wrapped = StableDiffusionVAE.from_pretrained(tmp_path / "vae", max_frames_per_chunk=2, progress=False)
    video = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    z = wrapped.encode(video)
    assert z.shape == (1, 4, 3, 4, 4)
    with torch.no_grad():
        ref = vae.eval().encode(video[:, :, 1]).latent_dist.mean * SD_VAE_SCALING
    torch.testing.assert_close(z[:, :, 1], ref, atol=1e-5, rtol=1e-4)
    assert wrapped.decode(z).shape == video.shape


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 5, 3, 7), (144, 64, 8, 8)])
def test_frame_codec_upsample_equals_torch_nearest_forward_and_backward(shape):
    """FrameCodec's x2 upsample is a broadcast copy (faster than torch's CPU kernel); it must be the same op."""
    import torch.nn.functional as F

    from avfast.data.frame_codec import _nearest_x2

    torch.manual_seed(0)
    base = torch.randn(shape[0], shape[1], shape[3], shape[2])
    ours = base.transpose(2, 3).requires_grad_(True)  # [N, C, H, W], a non-contiguous view
    ref = base.clone().transpose(2, 3).requires_grad_(True)
    assert ours.shape == shape and not ours.is_contiguous()
    out, expected = _nearest_x2(ours), F.interpolate(ref, scale_factor=2.0, mode="nearest")
    assert out.shape == expected.shape and torch.equal(out, expected)
    g = torch.randn_like(expected)
    out.backward(g)
    expected.backward(g)
    # the backward sums each output's 4 copies in another order: equal to float rounding, scaled to the gradient
    assert ours.grad.abs().max() > 0
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-6, atol=1e-6 * float(ref.grad.abs().max()))
