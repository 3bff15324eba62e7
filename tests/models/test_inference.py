"""prepare_for_inference: the one place predict / evaluate / benchmarks apply the switches."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from smp_parsing.models.deploy import inference_options, prepare_for_inference
from smp_parsing.models.deploy.winograd import WinogradConv2d
from smp_parsing.utils.compose import compose_config


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 4, 1),
    )  # fmt: skip


def test_prepare_applies_every_switch_and_keeps_outputs():
    net = _net().eval()
    net[1].running_var.fill_(2.0)
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        expected = net(x)
        done = prepare_for_inference(net, winograd_min_channels=16, channels_last=True)
        out = net(x.contiguous(memory_format=torch.channels_last))
    assert done == {"folded_bn": 1, "winograd_convs": 1, "channels_last": True}
    assert isinstance(net[1], nn.Identity) and isinstance(net[3], WinogradConv2d)
    assert net[4].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_prepare_refuses_training_and_skips_winograd_off_the_cpu():
    with pytest.raises(RuntimeError, match="eval mode"):
        prepare_for_inference(_net().train())
    net = _net().eval()
    done = prepare_for_inference(net, winograd_min_channels=16, channels_last=False,
                                 device="cuda")  # fmt: skip
    assert done["winograd_convs"] == 0 and done["folded_bn"] == 1


def test_inference_options_read_the_config_keys():
    cfg = OmegaConf.create({"fold_batchnorm": False, "winograd": True, "winograd_tile": 2,
                            "other": 1})  # fmt: skip
    assert inference_options(cfg) == {"fold_batchnorm": False, "winograd": True, "winograd_tile": 2}
    # a job config with the inference group: its node is read
    assert inference_options(OmegaConf.create({"inference": cfg, "winograd": False})) == {
        "fold_batchnorm": False, "winograd": True, "winograd_tile": 2,
    }  # fmt: skip
    switches = {}
    for name in ("predict", "eval"):  # both entry points carry every switch
        switches[name] = inference_options(compose_config(name))
        assert set(switches[name]) == {
            "fold_batchnorm",
            "winograd",
            "winograd_tile",
            "winograd_min_channels",
            "channels_last",
        }
    # evaluate scores the network as trained; predict runs the deploy rewrites
    assert not any(switches["eval"][k] for k in ("fold_batchnorm", "winograd", "channels_last"))
    assert switches["predict"]["fold_batchnorm"] and switches["predict"]["winograd"]
    deploy = inference_options(compose_config("eval", ["inference=deploy"]))
    assert deploy == switches["predict"]
