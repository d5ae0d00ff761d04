"""SRMCL's network: the paper-size shapes, positions, patches, and what the masking hides."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from moext.nn.srmcl import SRMCL, SRMCLConfig, patchify, random_token_mask, sincos_pos_embed


def test_paper_size_network_output_shapes():
    """The authors' configuration (patch 16, 768 x 3 + last block, 16 heads, mlp 2, decoder
    512 x 3) on 224 x 224 x 3 flow images; built on the meta device, so nothing is computed."""
    with torch.device("meta"):
        net = SRMCL(SRMCLConfig(), num_classes=5)
        flow = torch.rand(2, 3, 224, 224)
        feature, preds, masks = net.forward_train(flow, ratio=0.75, rounds=2)
        logits = net.classify(flow)
        target = net.target(flow)
    assert feature.shape == (2, 768) and logits.shape == (2, 5)
    assert [p.shape for p in preds] == [(2, 196, 16 * 16 * 3)] * 2 == [target.shape] * 2
    assert [m.shape for m in masks] == [(2, 196)] * 2
    assert len(net.encoder.blocks) == 3 and len(net.decoder.blocks) == 3
    assert net.encoder.blocks[0].attn.num_heads == 16
    assert net.encoder.blocks[0].mlp.fc1.out_features == 1536  # mlp ratio 2
    assert net.decoder.embed.out_features == 512 and net.decoder.mask_token.shape == (1, 1, 768)
    n_params = sum(p.numel() for p in net.parameters())
    assert 26.5e6 < n_params < 26.7e6  # 26.6 M, as counted from the authors' code


def mae_pos_embed(dim, grid):
    """util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True), transcribed."""

    def one_d(d, pos):
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)))
    g = g.reshape(2, 1, grid, grid)
    emb = np.concatenate([one_d(dim // 2, g[0]), one_d(dim // 2, g[1])], axis=1)
    return np.concatenate([np.zeros((1, dim)), emb])


def test_positions_are_the_mae_sin_cos_embedding():
    np.testing.assert_allclose(sincos_pos_embed(32, 4).numpy(), mae_pos_embed(32, 4), atol=1e-6)


def test_patchify_order_is_the_code_s():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    out = patchify(x, 2)  # 2 x 3 patches of 2 x 2 x 3 values
    assert out.shape == (2, 6, 12)
    n, row, col, i, j, c = 1, 1, 2, 1, 0, 2
    assert out[n, row * 3 + col, (i * 2 + j) * 3 + c] == x[n, c, row * 2 + i, col * 2 + j]


@pytest.mark.parametrize(
    ("length", "ratio", "masked"), [(196, 0.75, 147), (196, 0.5, 98), (16, 0.75, 12), (10, 0.33, 4)]
)
def test_mask_ratio_holds_in_every_row(length, ratio, masked):
    mask = random_token_mask(5, length, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == [masked] * 5
    assert masked == length - int(length * (1 - ratio))  # the code's len_keep
    assert len({tuple(r.tolist()) for r in mask}) > 1  # a fresh mask per sample


@pytest.fixture
def net():
    torch.manual_seed(0)
    return SRMCL(SRMCLConfig.tiny(image_size=32), num_classes=3).eval()


def test_tokens_site_masked_positions_carry_only_the_mask_token(net):
    flow = torch.rand(3, 3, 32, 32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sequences, masks = net.masked_sequences(flow, 0.75, rounds=2, site="tokens", generator=g)
        encoded = net.encoder(net.normalize(flow))
    token = net.decoder.mask_token[0, 0]
    for seq, mask in zip(sequences, masks, strict=True):
        assert mask.sum(1).tolist() == [12] * 3  # 16 positions, ratio 0.75
        assert (seq[:, 1:][mask] == token).all()
    first, second = sequences
    torch.testing.assert_close(first[:, 1:][~masks[0]], encoded[:, 1:][~masks[0]])
    torch.testing.assert_close(first[:, 0], encoded[:, 0])  # the cls token is never masked
    kept_twice = ~masks[0] & ~masks[1]
    torch.testing.assert_close(second[:, 1:][kept_twice], encoded[:, 1:][kept_twice])
    # the code's round 2 re-masks the round-1 sequence: a position masked in round 1 stays masked
    assert (second[:, 1:][masks[0]] == token).all()


def test_patches_site_hides_masked_patches_from_the_encoder(net):
    flow = torch.rand(2, 3, 32, 32)

    def run(x):
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return net.forward_train(x, 0.5, rounds=2, site="patches", generator=g)

    feature, preds, masks = run(flow)
    first = masks[0].view(2, 4, 4)  # 4 x 4 patches of 8 x 8 pixels
    masked_patch = [tuple(torch.nonzero(first[i])[0].tolist()) for i in range(2)]
    kept_patch = [tuple(torch.nonzero(~first[i])[0].tolist()) for i in range(2)]

    def changed(patches):
        x = flow.clone()
        for i, (r, c) in enumerate(patches):
            x[i, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = torch.rand(3, 8, 8)
        return x

    same = run(changed(masked_patch))
    torch.testing.assert_close(same[0], feature)  # the encoder never saw those pixels
    for a, b in zip(same[1], preds, strict=True):
        torch.testing.assert_close(a, b)
    other = run(changed(kept_patch))
    assert not torch.allclose(other[0], feature)  # ...while a kept patch is seen
    with torch.no_grad():
        seqs, _ = net.masked_sequences(flow, 0.5, 2, "patches", torch.Generator().manual_seed(7))
    assert (seqs[0][:, 1:][masks[0]] == net.decoder.mask_token[0, 0]).all()


def test_test_path_masks_nothing_and_is_deterministic(net):
    flow = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = net.classify(flow), net.classify(flow)
        expected = net.head(net.last_block(net.encoder(net.normalize(flow)))[:, 0])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, expected)


def test_memory_is_a_saved_buffer_and_pretraining_has_no_head():
    cls = SRMCL(SRMCLConfig.tiny(), num_classes=4)
    state = cls.state_dict()
    assert state["memory.prototypes"].shape == (4, 32) and not state["memory.prototypes"].any()
    assert "memory.prototypes" not in dict(cls.named_parameters())
    pre = SRMCL(SRMCLConfig.tiny(), num_classes=None).state_dict()
    assert not any(k.startswith(("head.", "memory.", "last_block.")) for k in pre)
    assert not any("pos_embed" in k for k in pre)  # fixed, rebuilt from the config


def test_initialisation_follows_the_code():
    net = SRMCL(SRMCLConfig.tiny(), num_classes=3)
    assert net.head[1].bias.abs().sum() == 0 and torch.equal(net.head[0].weight, torch.ones(32))
    w = net.decoder.embed.weight
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))  # xavier uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert 0.005 < net.encoder.cls_token.std() < 0.05


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SRMCLConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="3 channels"):
        SRMCLConfig(in_channels=4)
    with pytest.raises(ValueError, match="mask ratio"):
        random_token_mask(1, 4, 1.0)
    with pytest.raises(ValueError, match="decoder_prenorm"):
        SRMCLConfig(decoder_prenorm="sometimes")


def decoded_as_the_code(net, flow, mask, prenorm):
    """The code's decoding of one masked round, transcribed (``VIT_SR.py:210-226`` without the
    LayerNorm before the blocks, ``VIT_SRMCL.py:240-250`` with it [246]): encoder, the mask
    token at the masked positions, ``decoder_embed``, (``decoder_norm``), + positions, blocks,
    ``decoder_norm``, ``decoder_pred``, cls output dropped."""
    d = net.decoder
    x = net.encoder(net.normalize(flow))
    x = torch.cat([x[:, :1], torch.where(mask[..., None], d.mask_token, x[:, 1:])], dim=1)
    x = d.embed(x)
    x = (d.norm(x) if prenorm else x) + d.pos_embed
    for block in d.blocks:
        x = block(x)
    return d.pred(d.norm(x))[:, 1:]


def test_pretraining_decodes_as_the_code_s_reconstruction_only_path():
    """``decoder_prenorm: code``: no LayerNorm before the decoder blocks in the pretraining
    network, one in the classifier's; ``always`` / ``never`` force either."""
    torch.manual_seed(0)
    flow = torch.rand(2, 3, 32, 32)
    pre = SRMCL(SRMCLConfig.tiny(), num_classes=None).eval()
    joint = SRMCL(SRMCLConfig.tiny(), num_classes=3).eval()
    joint.load_state_dict(pre.state_dict(), strict=False)  # the same encoder and decoder
    forced = {
        p: SRMCL(replace(SRMCLConfig.tiny(), decoder_prenorm=p), num_classes=n).eval()
        for p, n in (("always", None), ("never", 3))
    }
    for net in forced.values():
        net.load_state_dict(pre.state_dict(), strict=False)
    with torch.no_grad():
        for net, prenorm in (
            (pre, False),
            (joint, True),
            *((n, p == "always") for p, n in forced.items()),
        ):
            _, preds, masks = net.forward_train(
                flow, 0.75, rounds=1, generator=torch.Generator().manual_seed(3)
            )
            assert len(preds) == 1 and net.decoder_prenorm is prenorm
            torch.testing.assert_close(preds[0], decoded_as_the_code(net, flow, masks[0], prenorm))
            other = decoded_as_the_code(net, flow, masks[0], not prenorm)
            assert not torch.allclose(preds[0], other, atol=1e-3)  # the choice shows


def test_the_pretraining_stage_masks_one_round_by_default():
    from moext.tasks import SRMCLPretrainTask

    torch.manual_seed(0)
    task = SRMCLPretrainTask(net=SRMCLConfig.tiny())
    assert task.hparams.mask_rounds == 1 and task.net.decoder_prenorm is False
    assert set(task.losses(torch.rand(2, 3, 32, 32))) == {"rec1", "sr"}
