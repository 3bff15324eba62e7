"""The SMP network end to end: config, shapes, losses, gradients, prediction, MIR stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from smp_parsing.models import SMP
from smp_parsing.models.outputs import SMPOutputs

CONF = Path(__file__).resolve().parents[2] / "conf"
# narrow heads and ResNet-18: the CPU-sized network used by every test here
NARROW = [
    "model.net.backbone.pretrained=none",
    "model.net.fpn_channels=32",
    "model.net.kernel_channels=16",
    "model.net.mask_feature.feat_channels=16",
    "model.net.mask_feature.num_groups=8",
    "model.net.part_head.tower_width=16",
    "model.net.part_head.num_convs=1",
    "model.net.part_head.num_groups=8",
    "model.net.rfr_module.num_groups=8",
    "model.net.rfr_module.warp_groups=4",
    "model.net.center_head.fusion_channels=16",
    "model.net.center_head.tower_width=16",
    "model.net.center_head.num_convs=1",
    "model.net.center_head.num_groups=8",
    "model.net.offset_head.branch_channels=4",
    "model.net.mir_head.feat_channels=16",
    "model.net.mir_head.num_convs=1",
    "model.net.mir_head.num_groups=8",
    "model.net.mir_head.fc_channels=32",
    "model.net.mir_head.roi_size=7",
]


def net_config(*overrides: str, num_classes: int = 5, backbone: str = "r18", grid: str = "0.5x"):
    """Compose ``model.net`` the way Hydra does: net defaults, backbone/grid groups, overrides."""
    root = OmegaConf.create(
        {
            "data": {"num_classes": num_classes},
            "model": {"net": OmegaConf.load(CONF / "model/net/smp.yaml")},
        }
    )
    root.model.net.backbone = OmegaConf.load(CONF / f"backbone/{backbone}.yaml")
    root.model.net = OmegaConf.merge(root.model.net, OmegaConf.load(CONF / f"grid/{grid}.yaml"))
    root = OmegaConf.merge(root, OmegaConf.from_dotlist(list(overrides)))
    return root.model.net


def build(*overrides: str, narrow: bool = True, **kw) -> SMP:
    torch.manual_seed(0)
    return instantiate(net_config(*(NARROW if narrow else []), *overrides, **kw))


def person_maps(h: int, w: int, boxes_per_person: list[list[tuple[int, int, int, int, int]]]):
    """``(N, H, W)`` uint8 person maps from ``(label, y0, y1, x0, x1)`` rectangles."""
    maps = torch.zeros(len(boxes_per_person), h, w, dtype=torch.uint8)
    for i, parts in enumerate(boxes_per_person):
        for label, y0, y1, x0, x1 in parts:
            maps[i, y0:y1, x0:x1] = label
    return maps


TWO_PERSONS = [
    [(1, 4, 12, 6, 14), (2, 12, 30, 4, 16), (3, 30, 44, 6, 14)],
    [(1, 8, 16, 40, 50), (2, 16, 40, 38, 52), (4, 40, 60, 40, 50)],
]


def test_train_config_composes_with_the_groups():
    """The real Hydra tree: backbone/grid groups and a dotted override reach the network."""
    from smp_parsing.utils.compose import compose_config

    overrides = ["experiment=synthetic", "backbone=r18", "grid=0.5x",
                 "model.net.center_head.tower_width=64", "model.net.offset_head.branch_channels=4"]  # fmt: skip
    cfg = compose_config("train", overrides)
    assert cfg.model.net.grid_scale == 0.5 and cfg.model.net.backbone.depth == 18
    net = instantiate(cfg.model.net)
    assert net.center_head.tower[0][0].out_channels == 64
    half = [max(1, round(g * 0.5)) for g in cfg.model.net.num_grids]
    assert net.part_grids == half and net.center_grid == round(cfg.model.net.center_grid * 0.5)
    assert net.part_grids != list(cfg.model.net.num_grids)
    assert net.num_classes == cfg.data.num_classes


def test_plain_kwargs_construction_and_clashes():
    from smp_parsing.models import ResNetBackbone

    kw = dict(num_classes=4, backbone=ResNetBackbone(depth=18, pretrained="none"), fpn_channels=32,
              kernel_channels=16, grid_scale=0.25, mask_feature={"feat_channels": 16, "num_groups": 8},
              center_head={"fusion_channels": 16, "tower_width": 16, "num_convs": 1, "num_groups": 8},
              offset_head={"branch_channels": 2}, rfr=False)  # fmt: skip
    net = SMP(**kw, part_head={"tower_width": 16, "num_convs": 1, "num_groups": 8})
    assert net.part_grids == [10, 9, 6, 4, 3] and net.part_head.rfr is None
    with pytest.raises(ValueError, match="set by SMP"):
        SMP(**kw, part_head={"num_classes": 3, "tower_width": 16, "num_groups": 8})


def test_hydra_override_reaches_the_module():
    net = build("model.net.center_head.tower_width=24")
    assert net.center_head.tower[0][0].out_channels == 24
    assert net.part_head.cate_tower[0][0].out_channels == 16


@pytest.mark.parametrize(
    ("grid", "parts", "center"),
    [
        ("0.5x", [20, 18, 12, 8, 6], 20),
        ("1x", [40, 36, 24, 16, 12], 40),
        ("2x", [80, 72, 48, 32, 24], 80),
    ],
)
def test_grid_configs(grid, parts, center):
    net = build(grid=grid)
    assert net.part_grids == parts and net.center_grid == center
    out = net(torch.randn(1, 3, 97, 131))  # odd size: F_mask is ceil(/4)
    assert [c.shape for c in out.cate] == [(1, 4, s, s) for s in parts]
    assert [k.shape for k in out.kernels] == [(1, 16, s, s) for s in parts]
    assert out.center.shape == (1, 1, center, center)
    assert out.offsets.shape == (1, 4, 2, center, center)
    assert out.mask_feat.shape == (1, 16, 25, 33)


def test_densepose_grids_double_the_base():
    net = build("model.net.num_grids=[80,72,48,32,24]", "model.net.center_grid=80", grid="1x",
                num_classes=15)  # fmt: skip
    out = net(torch.randn(1, 3, 97, 131))
    assert [c.shape[1:] for c in out.cate] == [(14, s, s) for s in (80, 72, 48, 32, 24)]
    assert [k.shape[1:] for k in out.kernels] == [(16, s, s) for s in (80, 72, 48, 32, 24)]
    assert out.center.shape == (1, 1, 80, 80) and out.offsets.shape == (1, 14, 2, 80, 80)
    assert out.mask_feat.shape == (1, 16, 25, 33)


@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_forward_shapes_on_any_size(size):
    net = build("model.net.mir=true")
    out = net(torch.randn(2, 3, *size))
    assert isinstance(out, SMPOutputs)
    h4, w4 = -(-size[0] // 4), -(-size[1] // 4)
    assert out.center.shape == (2, 1, 20, 20)
    assert out.offsets.shape == (2, 4, 2, 20, 20)
    assert [c.shape for c in out.cate] == [(2, 4, s, s) for s in (20, 18, 12, 8, 6)]
    assert [k.shape for k in out.kernels] == [(2, 16, s, s) for s in (20, 18, 12, 8, 6)]
    assert out.mask_feat.shape == (2, 16, h4, w4)
    assert out.mir_feat.shape == (2, 16, h4, w4) and out.mir_semantic.shape == (2, 5, h4, w4)


def test_loss_needs_maps_at_the_padded_size():
    net = build()
    out = net(torch.randn(1, 3, 97, 131))
    with pytest.raises(ValueError, match="multiple of 4"):
        net.loss(out, [torch.zeros(0, 97, 131, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="expects images"):
        net(torch.randn(3, 64, 64))


def _check_all_grads(net: SMP):
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    bad = [
        n
        for n, p in net.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    assert not bad, bad


@pytest.mark.parametrize(("rfr", "mir"), [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("persons", ["half_empty", "all_empty"])
def test_losses_finite_and_every_parameter_gets_a_gradient(rfr, mir, persons):
    net = build(f"model.net.rfr={str(rfr).lower()}", f"model.net.mir={str(mir).lower()}").train()
    parsing = [
        person_maps(64, 64, TWO_PERSONS)
        if persons == "half_empty"
        else torch.zeros(0, 64, 64, dtype=torch.uint8),
        torch.zeros(0, 64, 64, dtype=torch.uint8),
    ]
    losses = net.loss(net(torch.randn(2, 3, 64, 64)), parsing)
    expected = {"loss", "loss_center", "loss_part", "loss_mask", "loss_offset"} | (
        {"loss_mir"} if mir else set()
    )
    assert set(losses) == expected
    for k, v in losses.items():
        assert v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v), k
    total = sum(v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], total)
    if persons == "half_empty":
        assert losses["loss_mask"] > 0 and losses["loss_offset"] > 0
    losses["loss"].backward()
    _check_all_grads(net)


def test_training_reduces_the_loss_on_one_image():
    net = build("model.net.rfr=true").train()
    images = torch.randn(1, 3, 64, 64)
    parsing = [person_maps(64, 64, TWO_PERSONS)]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    first = None
    for _ in range(8):
        loss = net.loss(net(images), parsing)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_predict_returns_maps_at_the_original_size():
    net = build("model.net.mir=true").eval()
    metas = [
        {"img_size": (60, 90), "ori_size": (120, 180), "pad_size": (64, 96)},
        {"img_size": (64, 80), "ori_size": (32, 40), "pad_size": (64, 96)},
    ]
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 96))
        # force a confident human so the decoder really runs its part path
        out.center[:, 0, 10, 10] = 10.0
        for c in out.cate:
            c[:, :, c.shape[-1] // 2, c.shape[-1] // 2] = 10.0
        preds = net.predict(out, metas, return_intermediates=True)
    assert len(preds) == 2
    for pred, meta in zip(preds, metas):
        p = pred["parsing"]
        assert p.dtype == torch.uint8 and p.shape[1:] == meta["ori_size"]
        assert pred["scores"].shape == (p.shape[0],)
        assert int(p.max()) < 5 if p.numel() else True
        assert pred["center_heatmap"].shape == (20, 20)
        assert pred["offsets"].shape == (4, 2, 20, 20)


def test_nan_input_gives_no_garbage_detections():
    net = build().eval()
    with torch.no_grad():
        out = net(torch.full((1, 3, 64, 64), float("nan")))
        preds = net.predict(out, [{"img_size": (64, 64), "ori_size": (64, 64)}])
    assert torch.isnan(out.center).all()  # the NaN did reach the heads
    assert preds[0]["scores"].numel() == 0 and preds[0]["parsing"].shape == (0, 64, 64)


def test_mir_relabel_repaints_per_person_classes():
    net = build("model.net.mir=true", "model.net.test_cfg.mir_score_thr=0.0").eval()
    # a classifier that always says class index 2 (label 3)
    torch.nn.init.zeros_(net.mir_head.fc[-1].weight)
    with torch.no_grad():
        net.mir_head.fc[-1].bias.copy_(torch.tensor([-5.0, -5.0, 5.0, -5.0]))
    parsing = person_maps(64, 64, TWO_PERSONS)
    pred = {"parsing": parsing, "scores": torch.tensor([0.9, 0.8])}
    out = net.mir_relabel(torch.randn(1, 16, 16, 16), pred, {"img_size": (64, 64)})
    assert torch.equal(out["parsing"] > 0, parsing > 0)
    assert set(out["parsing"].unique().tolist()) == {0, 3}
    # above the threshold nothing changes
    net.mir_score_thr = 0.999
    same = net.mir_relabel(torch.randn(1, 16, 16, 16), pred, {"img_size": (64, 64)})
    assert torch.equal(same["parsing"], parsing)


def test_mir_relabel_classifies_each_person_part_separately():
    net = build("model.net.mir=true", "model.net.test_cfg.mir_score_thr=0.5").eval()
    parsing = person_maps(64, 64, TWO_PERSONS)  # person 0: labels 1,2,3; person 1: 1,2,4
    seen = {}

    def fake_classify(mir_feat, masks, batch_idx):
        # loop reference of the (person, class) masks at stride 4
        small = parsing[:, ::4, ::4]
        ref = [
            (small[p] == c).float() for p in range(2) for c in range(1, 5) if (small[p] == c).any()
        ]
        seen["ok"] = torch.equal(masks, torch.stack(ref))
        # rotate each class: label l -> l % 4 + 1; person 1's label 4 stays (low confidence)
        logits = torch.full((masks.shape[0], 4), -5.0)
        order = [(p, c) for p in range(2) for c in range(1, 5) if (small[p] == c).any()]
        for r, (p, c) in enumerate(order):
            if (p, c) != (1, 4):
                logits[r, c % 4] = 5.0
        return logits

    net.mir_head.classify = fake_classify
    out = net.mir_relabel(torch.randn(1, 16, 16, 16), {"parsing": parsing}, {"img_size": (64, 64)})
    assert seen["ok"]
    expected = parsing.clone()
    for p, c in [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2)]:
        expected[p][parsing[p] == c] = c % 4 + 1
    assert torch.equal(out["parsing"], expected)


def test_freeze_for_mir_trains_only_mir():
    net = build("model.net.mir=true")
    net.freeze_for_mir()
    net.train()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("mir_head.") for n in trainable)
    assert not net.part_head.training and net.mir_head.training
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    losses = net.loss(net(torch.randn(1, 3, 64, 64)), [person_maps(64, 64, TWO_PERSONS)])
    assert losses["loss_mask"] == 0 and losses["loss_mir"] > 0
    losses["loss"].backward()
    _check_all_grads(net)
    assert all(p.grad is None for n, p in net.named_parameters() if not n.startswith("mir_head."))
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())
    with pytest.raises(RuntimeError, match="mir=true"):
        build().freeze_for_mir()


def test_channels_last_matches_contiguous():
    net = build().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out.center, ref.center, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out.offsets, ref.offsets, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out.mask_feat, ref.mask_feat, atol=1e-4, rtol=1e-3)


def test_autocast_bfloat16_train_step_and_predict():
    net = build("model.net.mir=true", "model.net.backbone.dcn_stages=[false,true,true,true]")
    parsing = [person_maps(64, 64, TWO_PERSONS), torch.zeros(0, 64, 64, dtype=torch.uint8)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.train()(torch.randn(2, 3, 64, 64))
        assert out.center.dtype == torch.bfloat16  # the network really ran in half
        losses = net.loss(out, parsing)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    _check_all_grads(net)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        preds = net.eval().predict(
            net(torch.randn(1, 3, 64, 64)), [{"img_size": (64, 64), "ori_size": (64, 64)}]
        )
    assert preds[0]["parsing"].shape[1:] == (64, 64)


def test_num_parameters_adds_up():
    net = build()
    counts = net.num_parameters()
    assert counts["total"] == sum(p.numel() for p in net.parameters())
    trainable = net.num_parameters(trainable_only=True)["total"]
    assert (
        trainable == sum(p.numel() for p in net.parameters() if p.requires_grad) < counts["total"]
    )


@pytest.mark.parametrize("backbone", ["r50", "r50_dcn", "r101", "r101_dcn"])
def test_paper_parameter_counts(backbone):
    """Paper-width SMP (MHP v2, 59 classes, 1x grids, RFR on, MIR off); run with -s to read."""
    net = build("model.net.backbone.pretrained=none", narrow=False, backbone=backbone,
                num_classes=59, grid="1x")  # fmt: skip
    counts = net.num_parameters()
    print(
        f"\n[params] SMP {backbone}: " + ", ".join(f"{k}={v / 1e6:.2f}M" for k, v in counts.items())
    )
    resnet = {"r50": 23.51e6, "r101": 42.50e6}[backbone.split("_")[0]]
    # torchvision ResNet trunk without fc, plus the DCN offset convs
    assert abs(counts["backbone"] - resnet) < (3e6 if "dcn" in backbone else 0.1e6)
    assert counts["fpn"] > 3e6 and counts["part_head"] > 9e6
    # the figures of the README table (M, 2 decimals)
    readme = {"r50": (23.51, 72.97), "r50_dcn": (24.38, 73.84), "r101": (42.50, 91.96),
              "r101_dcn": (44.43, 93.89)}[backbone]  # fmt: skip
    assert (round(counts["backbone"] / 1e6, 2), round(counts["total"] / 1e6, 2)) == readme


@pytest.mark.slow
def test_paper_width_forward_shapes():
    net = build("model.net.backbone.pretrained=none", "model.net.mir=true", narrow=False,
                backbone="r50_dcn", num_classes=59, grid="1x").eval()  # fmt: skip
    with torch.no_grad():
        out = net(torch.randn(1, 3, 128, 160))
    assert out.center.shape == (1, 1, 40, 40) and out.offsets.shape == (1, 58, 2, 40, 40)
    assert [c.shape[1] for c in out.cate] == [58] * 5
    assert out.mask_feat.shape == (1, 256, 32, 40)


class MatmulDtypes(TorchDispatchMode):
    """Records the output dtype of every matrix product the dispatcher runs (after autocast
    has cast its inputs)."""

    PRODUCTS = ("mm", "bmm", "addmm", "baddbmm", "matmul")

    def __init__(self):
        super().__init__()
        self.dtypes: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in self.PRODUCTS:
            self.dtypes.append((name, out.dtype))
        return out


def test_losses_targets_and_decode_run_in_fp32_under_autocast():
    """bf16 autocast around net.loss / net.predict changes nothing: every loss term equals
    its fp32 value on the same outputs and every matrix product inside is float32."""
    low = [f"model.net.test_cfg.{k}=0.0" for k in ("ctr_score_thr", "cate_score_thr",
                                                  "cand_score_thr", "update_thr")]  # fmt: skip
    net = build(*low).train()
    parsing = [person_maps(64, 64, TWO_PERSONS), torch.zeros(0, 64, 64, dtype=torch.uint8)]
    out = net(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    want = net.loss(out, parsing)
    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as record:
        got = net.loss(out, parsing)
    assert {name for name, _ in record.dtypes} >= {"bmm"}  # the Dice term's mask logits
    assert all(dtype == torch.float32 for _, dtype in record.dtypes), record.dtypes
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=0, msg=key)
    got["loss"].backward()  # the graph through the fp32 region is intact
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)

    metas = [{"img_size": (64, 64), "ori_size": (64, 64)}] * 2
    with torch.no_grad():
        want_preds = net.eval().predict(out, metas)
        with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as record:
            got_preds = net.predict(out, metas)
    assert record.dtypes and all(dtype == torch.float32 for _, dtype in record.dtypes)
    assert sum(len(p["scores"]) for p in want_preds) > 0
    for got_pred, want_pred in zip(got_preds, want_preds):
        assert torch.equal(got_pred["parsing"], want_pred["parsing"])
        torch.testing.assert_close(got_pred["scores"], want_pred["scores"], rtol=0, atol=0)
