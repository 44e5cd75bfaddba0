"""Model zoo: the papers' parameter counts, output shapes, and AWD-LSTM's weight drop."""

import pytest
import torch
from torch import nn

from optbench.models import build_model, count_parameters
from optbench.models.awd_lstm import WeightDropLSTM, embedding_dropout, locked_dropout
from optbench.models.lstm import detach_state


@pytest.mark.parametrize("name, num_classes, expected", [
    ("resnet34", 10, 21_282_122),   # AggMo's CIFAR-10 ResNet-34
    ("resnet34", 100, 21_328_292),  # ... and CIFAR-100
    ("resnet18", 10, 11_173_962),
    ("resnet20", 10, 269_722),      # He et al. option A: 0.27M
    ("resnet32", 10, 464_154),      # 0.46M
    ("resnet56", 10, 853_018),      # 0.85M
    ("resnet110", 10, 1_727_962),   # 1.7M
    ("vgg16_bn", 10, 15_253_578),   # hypergradient VGG-16 with the 512-512-10 classifier
])
def test_image_model_parameter_counts(name, num_classes, expected):
    assert count_parameters(build_model(name, num_classes=num_classes)) == expected


def test_autoencoder_parameter_count_and_shapes():
    model = build_model("deep_autoencoder")
    assert count_parameters(model) == 2_837_314
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 784)
    code = model.encoder(torch.flatten(x, 1))
    assert code.shape == (3, 30)
    assert (code < 0).any()  # the 30-unit code is linear, not ReLU'd
    r = model.reconstruct(x)
    assert ((r > 0) & (r < 1)).all()


def test_language_model_parameter_counts():
    # YellowFin's PyTorch set-up: tied 2 x 650 on the 10k PTB vocabulary
    assert count_parameters(build_model("lstm_lm", vocab_size=10_000)) == 13_280_400
    # Zaremba's small TF model: 2 x 200 untied
    small = build_model("lstm_lm", vocab_size=10_000, embed_dim=200, hidden=200, dropout=0.0, tie_weights=False)
    assert count_parameters(small) == 4_653_200
    # AWD-LSTM on PTB: the "24M" of Merity et al.
    assert count_parameters(build_model("awd_lstm", vocab_size=10_000)) == 24_221_600


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "vgg16_bn"])
def test_image_models_forward_cifar_batch(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_thin_resnet_depth_is_checked():
    from optbench.models.resnet import thin_resnet

    with pytest.raises(ValueError, match="6n \\+ 2"):
        thin_resnet(21)


def test_tied_weights_share_one_tensor():
    model = build_model("lstm_lm", vocab_size=50, embed_dim=8, hidden=8)
    assert model.decoder.weight is model.encoder.weight
    with pytest.raises(ValueError, match="embed_dim == hidden"):
        build_model("lstm_lm", vocab_size=50, embed_dim=8, hidden=6)


def test_lstm_lm_state_carries_between_calls():
    torch.manual_seed(0)
    model = build_model("lstm_lm", vocab_size=20, embed_dim=6, hidden=6, dropout=0.0).eval()
    tokens = torch.randint(0, 20, (3, 10))
    whole = model(tokens).logits
    first = model(tokens[:, :4])
    second = model(tokens[:, 4:], detach_state(first.state))
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole)


def test_weight_drop_lstm_drops_only_in_training():
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_dropout=0.5)
    ref = nn.LSTM(5, 7, 1, batch_first=True)
    ref.load_state_dict(layer.lstm.state_dict())
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(layer.eval()(x)[0], ref(x)[0])
    assert not torch.allclose(layer.train()(x)[0], ref(x)[0])


def test_weight_drop_masks_hidden_weights_once_per_call():
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_dropout=0.5).train()
    x = torch.randn(2, 4, 5)
    torch.manual_seed(123)
    out, (h, c) = layer(x)
    # the same mask (keep where a uniform draw >= p, scale by 1 / (1 - p)), drawn from the same seed, applied
    # by hand to a copy of the layer
    torch.manual_seed(123)
    weight = layer.lstm.weight_hh_l0.detach()
    dropped = weight * (torch.rand_like(weight) >= 0.5) / 0.5
    ref = nn.LSTM(5, 7, 1, batch_first=True)
    ref.load_state_dict(layer.lstm.state_dict())
    with torch.no_grad():
        ref.weight_hh_l0.copy_(dropped)
    ref_out, (ref_h, ref_c) = ref(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(c, ref_c)
    # the gradient reaches the raw parameter, and is zero exactly where the mask dropped a weight
    out.sum().backward()
    grad = layer.lstm.weight_hh_l0.grad
    assert torch.equal(grad == 0, dropped == 0)
    # the module's parameters are the ordinary ones (no renamed *_raw copies)
    assert set(layer.state_dict()) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
                                       "lstm.bias_hh_l0"}


def test_locked_dropout_shares_the_mask_over_time():
    torch.manual_seed(0)
    y = locked_dropout(torch.ones(4, 9, 6), 0.5, training=True)
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(torch.ones(4, 9, 6), 0.5, training=False), torch.ones(4, 9, 6))


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    embed = nn.Embedding(30, 4)
    tokens = torch.arange(30).repeat(2, 1)
    out = embedding_dropout(embed, tokens, 0.5, training=True)
    dropped_rows = (out[0] == 0).all(1)
    assert 0 < dropped_rows.sum() < 30
    assert torch.equal((out[1] == 0).all(1), dropped_rows)  # same word, same decision
    torch.testing.assert_close(out[0][~dropped_rows], 2 * embed.weight[~dropped_rows])


def test_awd_lstm_penalty_and_state():
    torch.manual_seed(0)
    model = build_model("awd_lstm", vocab_size=40, embed_dim=8, hidden=12, layers=3)
    tokens = torch.randint(0, 40, (2, 6))
    out = model(tokens)
    assert out.logits.shape == (2, 6, 40)
    assert len(out.state) == 3 and out.state[2][0].shape == (1, 2, 8)
    assert out.penalty is not None and out.penalty.item() > 0
    model.eval()
    first = model(tokens[:, :3])
    assert first.penalty is None
    torch.testing.assert_close(torch.cat([first.logits, model(tokens[:, 3:], first.state).logits], 1),
                               model(tokens).logits)


# ------------------------------------------------------------------ YellowFin's CIFAR models (issue 16)
@pytest.mark.parametrize("name, num_classes, expected", [
    ("resnet164", 10, 1_703_258),             # He et al. 2016 (identity mappings): ResNet-164 "1.7M"
    ("resnet164", 100, 1_726_388),            # ... on CIFAR-100, the YellowFin paper's model there
    ("resnet_tf", 10, 464_154),               # CIFAR10-release.py: 5 basic units per stage = 32 layers, 0.46M
    ("resnet_tf_bottleneck", 100, 520_820),   # CIFAR100-release.py: 5 bottleneck units per stage = 47 layers
    ("resnext29_2x64d", 10, 9_128_778),       # kuangliu/pytorch-cifar ResNeXt29(2x64d): 9.13M
    ("resnext29_32x4d", 10, 4_774_218),       # ... ResNeXt29(32x4d): 4.77M
])
def test_yellowfin_model_parameter_counts(name, num_classes, expected):
    assert count_parameters(build_model(name, num_classes=num_classes)) == expected


def _weighted_layers(model: nn.Module) -> int:
    """Convolutions and linear layers on the main path (a ResNet's depth; shortcut projections not counted)."""
    shortcuts = {id(m) for name, mod in model.named_modules() if name.endswith("shortcut") for m in mod.modules()}
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in shortcuts for m in model.modules())


@pytest.mark.parametrize("name, depth", [("resnet164", 164), ("resnet_tf", 32), ("resnet_tf_bottleneck", 47),
                                         ("resnext29_2x64d", 29)])
def test_yellowfin_models_have_their_depth_and_classify_a_cifar_batch(name, depth):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    assert _weighted_layers(model) == depth
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_tf_release_resnet_is_resnet_model_py():
    """cifar/model/resnet_model.py: leaky ReLU 0.1, BN epsilon 1e-3, 5 units per stage; only the first unit
    (activate_before_residual) bypasses the pre-activated input; basic units change shape through an average
    pool and zero channels, bottleneck units through a bare 1x1 projection with the stride; the stride sits on
    a unit's first convolution."""
    from optbench.models.preact_resnet import PoolPadShortcut

    basic, bottleneck = build_model("resnet_tf"), build_model("resnet_tf_bottleneck")
    for model in (basic, bottleneck):
        units = list(model.units)
        assert len(units) == 15 and [u.shared for u in units] == [True] + [False] * 14
        assert all(u.leak == 0.1 for u in units) and model.leak == 0.1
        assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
        assert [u.convs[0].stride for u in units[::5]] == [(1, 1), (2, 2), (2, 2)]
    assert [type(u.shortcut).__name__ for u in list(basic.units)[::5]] == ["Identity", "PoolPadShortcut",
                                                                            "PoolPadShortcut"]
    assert all(isinstance(u.shortcut, nn.Conv2d) and u.shortcut.bias is None for u in list(bottleneck.units)[::5])
    assert [u.convs[-1].out_channels for u in list(bottleneck.units)[::5]] == [64, 128, 256]
    x = torch.randn(2, 16, 4, 4)
    out = PoolPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 2, 2) and not out[:, :8].any() and not out[:, 24:].any()
    torch.testing.assert_close(out[:, 8:24], torch.nn.functional.avg_pool2d(x, 2))


def test_resnet164_is_the_identity_mappings_bottleneck():
    """KaimingHe/resnet-1k-layers resnet-pre-act.lua: 18 bottleneck units per stage (outputs 64-128-256), ReLU,
    the units that change shape share their BN-ReLU with a 1x1 projection, the others add the raw input."""
    model = build_model("resnet164")
    units = list(model.units)
    assert len(units) == 54 and all(u.leak == 0.0 for u in units)
    assert [i for i, u in enumerate(units) if u.shared] == [0, 18, 36]
    assert [i for i, u in enumerate(units) if isinstance(u.shortcut, nn.Conv2d)] == [0, 18, 36]
    assert [u.convs[1].out_channels for u in units[::18]] == [16, 32, 64]
    with pytest.raises(ValueError, match="9n \\+ 2"):
        from optbench.models.preact_resnet import preact_resnet

        preact_resnet(165)


def test_resnext29_2x64d_is_kuangliu_s():
    """Grouped 3x3 convolutions with 2 groups, the group width 128 -> 256 -> 512 (doubling per stage), blocks
    output twice that, a 1x1 stem of 64 channels."""
    model = build_model("resnext29_2x64d")
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 9 and {m.groups for m in grouped} == {2}
    assert [m.out_channels for m in grouped[::3]] == [128, 256, 512] and model.linear.in_features == 1024
    assert model.conv1.kernel_size == (1, 1) and model.conv1.out_channels == 64
