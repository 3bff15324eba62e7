"""ResNet backbone: shapes, frozen stages, frozen BN statistics, DCNv2, weight loading."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error

import pytest
import torch
import torchvision

from smp_parsing.models.backbone import PretrainedWeightsError, ResNetBackbone
from smp_parsing.models.layers.dcn import ModulatedDeformConv2d, deform_conv2d_sampled


def _bn_stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


@pytest.mark.parametrize("size", [(64, 96), (65, 97)])
def test_r18_outputs_c2_to_c5(size):
    bb = ResNetBackbone(depth=18, pretrained="none")
    feats = bb(torch.randn(1, 3, *size))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512] == bb.out_channels
    for f, stride in zip(feats, (4, 8, 16, 32)):
        # ceil division: odd inputs round up at every stride-2 layer
        assert f.shape[-2:] == (-(-size[0] // stride), -(-size[1] // stride))


def test_frozen_stages_and_bn_stats_survive_a_train_step():
    torch.manual_seed(0)
    bb = ResNetBackbone(depth=18, pretrained="none", frozen_stages=1, norm_eval=True)
    bb.train()
    frozen = {k: v.clone() for k, v in bb.state_dict().items() if k.startswith(("stem", "layer1"))}
    stats = _bn_stats(bb)
    assert all(not p.requires_grad for p in bb.stem.parameters())
    assert all(not p.requires_grad for p in bb.layer1.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())
    opt = torch.optim.SGD([p for p in bb.parameters() if p.requires_grad], lr=0.1)
    loss = sum(f.square().mean() for f in bb(torch.randn(2, 3, 64, 64)))
    loss.backward()
    opt.step()
    after = bb.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), k
    for k, v in stats.items():
        assert torch.equal(after[k], v), k
    assert bb.layer2[0].conv1.weight.grad is not None
    # the BN affine parameters of trainable stages still learn
    assert bb.layer2[0].bn1.weight.grad is not None


def test_without_norm_eval_bn_stats_move():
    bb = ResNetBackbone(depth=18, pretrained="none", frozen_stages=-1, norm_eval=False).train()
    stats = _bn_stats(bb)
    bb(torch.randn(2, 3, 64, 64))
    after = bb.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in stats.items())


def test_dcn_replaces_3x3_convs_of_stages_2_to_4_and_trains():
    bb = ResNetBackbone(depth=18, pretrained="none", dcn_stages=[False, True, True, True])
    assert not isinstance(bb.layer1[0].conv1, ModulatedDeformConv2d)
    for stage in (bb.layer2, bb.layer3, bb.layer4):
        for blk in stage:
            assert isinstance(blk.conv1, ModulatedDeformConv2d)
            assert isinstance(blk.conv2, ModulatedDeformConv2d)
    x = torch.randn(1, 3, 64, 64)
    loss = sum(f.square().mean() for f in bb.train()(x))
    loss.backward()
    dcn = bb.layer3[0].conv1
    assert dcn.weight.grad is not None and dcn.weight.grad.abs().sum() > 0
    # zero-initialised offset branch still receives a gradient (it can learn)
    assert dcn.conv_offset.weight.grad is not None
    assert dcn.conv_offset.weight.grad.abs().sum() > 0


def test_bottleneck_dcn_only_on_conv2():
    bb = ResNetBackbone(depth=50, pretrained="none", dcn_stages=[False, False, False, True])
    blk = bb.layer4[0]
    assert isinstance(blk.conv2, ModulatedDeformConv2d)
    assert isinstance(blk.conv1, torch.nn.Conv2d) and isinstance(blk.conv3, torch.nn.Conv2d)


def test_dcn_at_init_is_half_the_regular_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 4, 3, stride=2, padding=1, bias=False)
    dcn = ModulatedDeformConv2d.from_conv(conv)
    x = torch.randn(2, 8, 11, 13)
    # zero offsets sample the regular grid, the modulation is sigmoid(0) = 0.5
    torch.testing.assert_close(dcn(x), 0.5 * conv(x), atol=1e-5, rtol=1e-4)


def test_loads_weights_from_a_local_file(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetBackbone(depth=18, pretrained=str(path), dcn_stages=[False, True, True, True])
    torch.testing.assert_close(bb.stem[0].weight, ref.conv1.weight)
    torch.testing.assert_close(bb.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    # the DCN keeps the ImageNet 3x3 weights
    torch.testing.assert_close(bb.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    torch.testing.assert_close(bb.layer2[0].bn1.running_mean, ref.layer2[0].bn1.running_mean)


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        ResNetBackbone(depth=18, pretrained=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="bad.pth"):
        ResNetBackbone(depth=18, pretrained=str(bad))
    r50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(PretrainedWeightsError, match="do not fit ResNet-18"):
        ResNetBackbone(depth=18, pretrained=str(r50))


def test_unreachable_torchvision_weights_fail_fast(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match="pretrained=none") as err:
        ResNetBackbone(depth=18, pretrained="torchvision")
    assert "pretrained=/path/to/resnet18.pth" in str(err.value)
    assert time.perf_counter() - t0 < 5.0


def test_stalled_weights_server_fails_after_the_timeout(monkeypatch, tmp_path):
    """A server that accepts the connection and never answers (a network dropping the
    reply) ends in a clear error after ``download_timeout``, not in a hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # the kernel completes the handshake; nobody ever reads or answers
    url = f"http://127.0.0.1:{server.getsockname()[1]}/resnet18-f37072fd.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached file to fall back on
    real = torchvision.models._api.load_state_dict_from_url
    monkeypatch.setattr(
        torchvision.models._api,
        "load_state_dict_from_url",
        lambda _url, *args, **kwargs: real(url, *args, **kwargs),
    )
    outcome: list[BaseException | None] = []

    def build() -> None:
        try:
            ResNetBackbone(depth=18, pretrained="torchvision", download_timeout=0.5)
            outcome.append(None)
        except BaseException as err:  # reported by the main thread
            outcome.append(err)

    worker = threading.Thread(target=build, daemon=True)
    t0 = time.perf_counter()
    try:
        worker.start()
        worker.join(timeout=20)
    finally:
        server.close()
    assert outcome, "the download hung: no timeout reached the socket"
    assert isinstance(outcome[0], PretrainedWeightsError), outcome[0]
    assert "timed out" in str(outcome[0]) and "pretrained=none" in str(outcome[0])
    assert time.perf_counter() - t0 < 10
    assert socket.getdefaulttimeout() is None  # the process-wide default is restored


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        ResNetBackbone(depth=34 + 1, pretrained="none")
    with pytest.raises(ValueError, match="dcn_stages"):
        ResNetBackbone(depth=18, pretrained="none", dcn_stages=[True])


def test_dcn_gradcheck_tiny():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(2, 2, 3, padding=1).double()
    torch.nn.init.normal_(dcn.conv_offset.weight, std=0.1)
    x = torch.randn(1, 2, 5, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dcn(t), (x,), eps=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    ("c_in", "c_out", "w_groups", "off_groups", "stride", "padding", "dilation", "with_mask"),
    [
        (4, 6, 1, 1, 1, 1, 1, True),
        (6, 4, 2, 2, 2, 1, 1, True),
        (6, 6, 3, 3, 1, 2, 2, False),
        (4, 2, 1, 2, 2, 0, 1, True),
        (32, 4, 1, 1, 1, 1, 1, True),  # 2 channel chunks of 16 in grid_sample
        (64, 8, 4, 2, 2, 1, 1, True),  # 2 offset groups x 2 chunks
    ],
)
def test_sampled_deform_conv_equals_torchvision(
    c_in, c_out, w_groups, off_groups, stride, padding, dilation, with_mask
):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 7, 9, dtype=torch.double, requires_grad=True)
    weight = torch.randn(c_out, c_in // w_groups, 3, 3, dtype=torch.double, requires_grad=True)
    bias = torch.randn(c_out, dtype=torch.double)
    ho = (7 + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (9 + 2 * padding - dilation * 2 - 1) // stride + 1
    # large offsets: many taps fall outside the image or on its border
    offset = (3 * torch.randn(2, 2 * off_groups * 9, ho, wo, dtype=torch.double)).requires_grad_()
    mask = torch.rand(2, off_groups * 9, ho, wo, dtype=torch.double) if with_mask else None
    kw = dict(stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation))
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kw)
    out = deform_conv2d_sampled(x, offset, weight, bias, mask=mask, **kw)
    torch.testing.assert_close(out, ref)
    g_ref = torch.autograd.grad(ref.square().sum(), (x, weight, offset))
    g_out = torch.autograd.grad(out.square().sum(), (x, weight, offset))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)


def test_base_width_scales_every_stage_and_keeps_structure():
    narrow = ResNetBackbone(depth=18, pretrained="none", base_width=16, frozen_stages=-1)
    wide = ResNetBackbone(depth=18, pretrained="none", frozen_stages=-1)
    assert narrow.out_channels == [16, 32, 64, 128]
    feats = narrow(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 16, 24),
        (2, 32, 8, 12),
        (2, 64, 4, 6),
        (2, 128, 2, 3),
    ]
    assert [len(s) for s in narrow.stages] == [len(s) for s in wide.stages]
    # 4x fewer channels -> about 16x fewer weights
    n_narrow = sum(p.numel() for p in narrow.parameters())
    n_wide = sum(p.numel() for p in wide.parameters())
    assert 12 < n_wide / n_narrow < 20


def test_base_width_refuses_imagenet_weights():
    with pytest.raises(ValueError, match="pretrained=none"):
        ResNetBackbone(depth=18, pretrained="torchvision", base_width=32)
