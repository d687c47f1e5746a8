"""The image loader against files built here with Pillow, each decoded independently for the expected pixels."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ardet import ImageDecodeError, ImageTooLargeError, load_image, to_image

RNG = np.random.default_rng(0)


def _rgb(h=6, w=8):
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _expected(arr):
    return torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)


def test_png_is_exact_and_reports_size_and_id(tmp_path):
    arr = _rgb(5, 7)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.pixels.dtype == torch.float32 and img.pixels.shape == (3, 5, 7)
    assert img.size == (5, 7) and img.id == "a" and img.path.endswith("a.png")
    assert torch.equal(img.pixels, _expected(arr))
    Image.fromarray(arr).save(tmp_path / "000042.png")
    assert load_image(tmp_path / "000042.png").id == 42  # a COCO-style file name is an integer id
    Image.fromarray(arr).save(tmp_path / "\u00b2.png")
    assert load_image(tmp_path / "\u00b2.png").id == "\u00b2"  # a digit to str.isdigit, not to int()


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("WEBP", "webp")])
def test_lossy_formats_decode_like_pillow(tmp_path, fmt, ext):
    path = tmp_path / f"a.{ext}"
    Image.fromarray(_rgb(16, 16)).save(path, fmt, quality=90)
    assert torch.equal(load_image(path).pixels, _expected(np.asarray(Image.open(path).convert("RGB"))))


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = RNG.integers(0, 256, size=(4, 5), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    px = load_image(tmp_path / "g.png").pixels
    assert torch.equal(px, torch.from_numpy(gray / np.float32(255)).float().expand(3, -1, -1))


def test_rgba_composited_on_white_or_alpha_dropped(tmp_path):
    rgba = np.concatenate([_rgb(3, 3), RNG.integers(0, 256, size=(3, 3, 1), dtype=np.uint8)], axis=2)
    rgba[0, 0, 3] = 0  # fully transparent pixel -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    white = load_image(tmp_path / "t.png").pixels
    a = rgba[..., 3:].astype(np.float64) / 255
    reference = rgba[..., :3] / 255 * a + (1 - a)
    assert torch.allclose(white, torch.from_numpy(reference).float().permute(2, 0, 1), atol=1e-6)
    assert torch.equal(white[:, 0, 0], torch.ones(3))
    dropped = load_image(tmp_path / "t.png", alpha="drop").pixels
    assert torch.equal(dropped, _expected(rgba[..., :3]))


def test_palette_with_and_without_transparency(tmp_path):
    im = Image.fromarray(_rgb(6, 6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    im.save(tmp_path / "p.png")
    assert torch.equal(load_image(tmp_path / "p.png").pixels, _expected(np.asarray(im.convert("RGB"))))
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    px = load_image(tmp_path / "pt.png").pixels
    transparent = np.asarray(Image.open(tmp_path / "pt.png")) == 0
    assert transparent.any() and torch.equal(px[:, torch.from_numpy(transparent)], torch.ones(3, int(transparent.sum())))


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # pure red in CMYK
    px = load_image(tmp_path / "c.jpg").pixels
    assert px.shape == (3, 8, 8)
    assert torch.allclose(px.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")  # really stored as 16-bit
    px = load_image(tmp_path / "d.png").pixels
    assert torch.allclose(px[0, 0], torch.tensor(values[0] / 65535.0, dtype=torch.float32), atol=1e-7)
    assert 0.49 < px[0, 0, 2] < 0.51  # an 8-bit clip would give 1.0
    # 32-bit integer pixels (a TIFF) have no known range: values beyond 16 bits are refused, not clipped to white
    Image.fromarray(np.array([[0, 100000]], dtype=np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(ImageDecodeError, match="outside the 16-bit range"):
        load_image(tmp_path / "i32.tif")


def test_16bit_colour_png_says_it_comes_at_8_bits(tmp_path, caplog):
    rgb = np.array([[[200, 40000, 65535]]], dtype=">u2")  # Pillow cannot write 16-bit colour: a PNG by hand

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 16, 2, 0, 0, 0))  # 1x1, bit depth 16, colour type RGB
    (tmp_path / "c16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" + rgb.tobytes()))
                                      + chunk(b"IEND", b""))
    px = load_image(tmp_path / "c16.png").pixels[:, 0, 0]
    assert "16-bit colour PNG, decoded at 8 bits" in caplog.text
    assert px.tolist() == pytest.approx([0.0, 156 / 255, 1.0])  # Pillow keeps each value's high byte


def test_exif_orientation_ignored_by_default_applied_on_request(tmp_path):
    arr = _rgb(2, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "e.jpg", exif=exif, quality=100, subsampling=0)
    stored = np.asarray(Image.open(tmp_path / "e.jpg").convert("RGB"))
    ignored = load_image(tmp_path / "e.jpg")
    applied = load_image(tmp_path / "e.jpg", exif="apply")
    assert ignored.size == (2, 4) and applied.size == (4, 2)
    assert torch.equal(applied.pixels, _expected(np.ascontiguousarray(np.rot90(stored, k=-1))))


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "one.png")
    assert torch.equal(load_image(tmp_path / "one.png").pixels, torch.tensor([1.0, 0, 0]).view(3, 1, 1))


def test_truncated_corrupt_and_empty_files_name_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:-40])
    (tmp_path / "noise.jpg").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("cut.jpg", "cut.png", "noise.jpg", "empty.png", "missing.png"):
        with pytest.raises(ImageDecodeError, match=name):
            load_image(tmp_path / name)
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image(tmp_path / "empty.png")


def test_max_pixels_guards_against_bombs(tmp_path):
    Image.new("RGB", (100, 60)).save(tmp_path / "big.png")
    with pytest.raises(ImageTooLargeError, match="big.png.*6,000 pixels"):
        load_image(tmp_path / "big.png", max_pixels=5_999)
    assert load_image(tmp_path / "big.png", max_pixels=6_000).size == (60, 100)


def test_to_image_accepts_arrays_pil_and_bytes():
    arr = _rgb(3, 4)  # [h, w, 3] with h == 3: the layout must come from the type, not be guessed from the shape
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    for source in (arr, chw, Image.fromarray(arr), chw / 255.0):
        assert torch.allclose(to_image(source, image_id=7).pixels, _expected(arr), atol=1e-7)
    assert torch.equal(to_image(arr[..., 0]).pixels, _expected(arr[..., :1].repeat(3, axis=2)))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert torch.equal(to_image(buf.getvalue()).pixels, _expected(arr))


@pytest.mark.parametrize("bad, match", [
    (torch.full((3, 2, 2), float("nan")), "NaN"),
    (torch.full((3, 2, 2), 2.0), r"\[0, 1\]"),
    (torch.zeros(4, 2, 2), "channels"),
    (torch.zeros(3, 0, 2), "no pixels"),
])
def test_to_image_rejects_bad_tensors(bad, match):
    with pytest.raises(ImageDecodeError, match=match):
        to_image(bad)


def test_float_mode_pil_images_are_taken_as_0_to_1_like_float_tensors():
    gray = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    assert torch.equal(to_image(Image.fromarray(gray, "F")).pixels, torch.from_numpy(gray).expand(3, -1, -1))
    with pytest.raises(ImageDecodeError, match=r"\[0, 1\]"):  # Pillow's convert("F") keeps 0-255: not clipped white
        to_image(Image.fromarray(_rgb(3, 4)).convert("F"))
