import pytest
import torch

from moext.nn.moext import ApexDecoder, MoExt, MoExtConfig, MotionExtractor

PAPER_STAGES = [
    (512, 8, 8),
    (512, 7, 7),
    (512, 14, 14),
    (256, 28, 28),
    (128, 56, 56),
    (64, 112, 112),
    (32, 112, 112),
    (32, 224, 224),
    (3, 224, 224),
]


tiny_config = MoExtConfig.tiny  # the tests' tiny network


def test_paper_decoder_stage_shapes():
    dec = ApexDecoder().eval()
    shapes = []
    hooks = [
        s.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        for s in dec.stages()
    ]
    with torch.no_grad():
        out = dec(torch.randn(1, 1024, 1, 1))
    for h in hooks:
        h.remove()
    assert shapes == PAPER_STAGES
    assert out.shape == (1, 3, 224, 224)
    assert out.min() >= 0  # final ReLU


@pytest.mark.parametrize("size", [20, 32, 48, 64, 96, 100, 112, 128])
def test_decoder_returns_input_size(size):
    dec = ApexDecoder(
        in_channels=16,
        image_size=size,
        stem_channels=8,
        up_channels=(8, 8, 8, 8),
        refine_channels=4,
        refine_blocks=1,
    )
    assert dec(torch.randn(2, 16)).shape == (2, 3, size, size)


def test_decoder_resizes_only_off_multiples_of_32():
    assert ApexDecoder(image_size=224).resize is None  # the paper's decoder, untouched
    assert ApexDecoder(image_size=100).resize is not None
    with pytest.raises(ValueError, match="positive"):
        ApexDecoder(image_size=0)


def test_motion_extractor_shapes_and_symmetry_break():
    me = MotionExtractor(8).eval()
    s_on, s_ap = torch.randn(4, 8), torch.randn(4, 8)
    m = me(s_on, s_ap)
    assert m.shape == (4, 8)
    # M depends on S_a beyond |S_a - S_o| (the concat), so swapping onset and apex changes it
    assert not torch.allclose(m, me(s_ap, s_on))


def test_classification_net_has_no_texture_or_decoder():
    net = MoExt(tiny_config(), pretraining=False, num_classes=3)
    assert net.separator.texture is None and net.decoder is None and net.projection is None
    keys = net.state_dict().keys()
    assert not any(k.startswith(("separator.texture", "decoder", "projection")) for k in keys)
    out = net.eval().classify(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3)


def test_timm_backbone_features_only():
    cfg = MoExtConfig(backbone="resnet18", image_size=64, feature_dim=16, branch_channels=8)
    net = MoExt(cfg, pretraining=False, num_classes=2).eval()
    assert net.separator.backbone.out_channels == 512
    assert net.classify(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)).shape == (2, 2)


def test_backbone_local_checkpoint(tmp_path):
    import timm

    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    cfg = MoExtConfig(
        backbone="resnet18",
        backbone_checkpoint=str(path),
        image_size=64,
        feature_dim=16,
        branch_channels=8,
    )
    net = MoExt(cfg, pretraining=False, num_classes=2)
    loaded = net.separator.backbone.body.conv1.weight
    assert torch.equal(loaded, ref.conv1.weight)
