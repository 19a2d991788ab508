import io

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessorPil

from mqt_llava.data.images import ImageError, decode_image, preprocess_image, to_rgb
from mqt_llava.model.image_settings import ImageSettings

SETTINGS = ImageSettings.square_of(32)


def wide_image(width=64, height=32, colour=(200, 10, 10)):
    return Image.new("RGB", (width, height), colour)


def encode(image, fmt="PNG"):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_pad_expands_to_a_square_of_the_mean_colour_then_resizes():
    out = preprocess_image(wide_image(), SETTINGS, "pad")
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    background = np.array(SETTINGS.background, dtype=np.uint8)
    assert (background == out[:, 0, :].T).all()  # top rows are padding
    assert (background == out[:, -1, :].T).all()
    assert (out[:, 16, 16] == [200, 10, 10]).all()  # the image itself is in the middle
    assert SETTINGS.background == (122, 116, 104)  # LLaVA: int(mean * 255)


def test_square_resizes_the_shortest_edge_and_centre_crops():
    image = wide_image()
    image.paste((0, 0, 255), (0, 0, 8, 32))  # a blue stripe at the far left is cropped away
    out = preprocess_image(image, SETTINGS, "square")
    assert out.shape == (3, 32, 32)
    assert (out == np.array([200, 10, 10], dtype=np.uint8)[:, None, None]).all()


def test_square_matches_the_clip_image_processor_exactly():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    settings = ImageSettings.from_processor(processor)
    ours = preprocess_image(image, settings, "square").astype(np.float32) / 255
    ours = (ours - np.array(settings.mean)[:, None, None]) / np.array(settings.std)[:, None, None]
    theirs = processor(images=image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "I", "F", "1", "LA", "YCbCr"])
def test_any_mode_becomes_rgb(mode):
    image = wide_image().convert(mode) if mode not in ("I;16", "I", "F") else Image.new(mode, (8, 8), 1000)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size


def test_transparent_pixels_become_white_and_16_bit_is_rescaled():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0)) == (255, 255, 255)


def test_decode_accepts_jpeg_and_png():
    for fmt in ("JPEG", "PNG"):
        assert decode_image(encode(wide_image(), fmt)).size == (64, 32)


def test_decode_rejects_broken_and_oversized_images():
    with pytest.raises(ImageError) as info:
        decode_image(b"not an image")
    assert info.value.reason == "undecodable_image"
    truncated = encode(wide_image(), "PNG")[:60]
    with pytest.raises(ImageError) as info:
        decode_image(truncated)
    assert info.value.reason == "undecodable_image"
    with pytest.raises(ImageError) as info:
        decode_image(encode(wide_image()), max_pixels=64 * 32 - 1)
    assert info.value.reason == "image_too_large"


def test_unknown_aspect_is_refused():
    with pytest.raises(ValueError, match="aspect"):
        preprocess_image(wide_image(), SETTINGS, "stretch")


def test_settings_round_trip_through_a_saved_processor(tmp_path):
    settings = ImageSettings(shortest_edge=40, crop_height=36, crop_width=32, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    settings.to_processor().save_pretrained(tmp_path)
    assert ImageSettings.from_processor(CLIPImageProcessorPil.from_pretrained(tmp_path)) == settings


def test_square_of_an_extreme_panorama_equals_the_full_resize_and_crop():
    # 40000 x 2 at shortest edge 32 is 640000 x 32 resized: past EXACT_SIDE^2, so only the crop's
    # span is resampled; the pixels must still be those of the literal resize then centre crop.
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (2, 40000, 3), dtype=np.uint8))
    full = image.resize((640000, 32), resample=SETTINGS.resample)
    left = (640000 - 32) // 2
    expected = np.asarray(full.crop((left, 0, left + 32, 32)), dtype=np.uint8).transpose(2, 0, 1)
    np.testing.assert_array_equal(preprocess_image(image, SETTINGS, "square"), expected)


def literal_pad(image, settings):
    """LLaVA's expand2square followed by the processor's resize and crop, written out."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), settings.background)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    resized = square.resize((settings.shortest_edge,) * 2, resample=settings.resample)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)


def test_pad_of_a_long_image_is_exact_below_the_bound_and_shrunk_above_it():
    rng = np.random.default_rng(2)
    small = Image.fromarray(rng.integers(0, 256, (5, 3000, 3), dtype=np.uint8))
    np.testing.assert_array_equal(preprocess_image(small, SETTINGS, "pad"), literal_pad(small, SETTINGS))
    out = preprocess_image(wide_image(20000, 1), SETTINGS, "pad")  # literally a 20000^2 square: 1.2 GB
    assert out.shape == (3, 32, 32)
    assert (out[:, 0, :] == np.array(SETTINGS.background, dtype=np.uint8)[:, None]).all()  # padding above


BOUNDED = r"""
import resource, sys
from PIL import Image
from mqt_llava.data.images import preprocess_image
from mqt_llava.model.image_settings import ImageSettings

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

shapes = [(16_000_000, 1), (1, 4_000_000)]
images = [Image.new("RGB", shape, (200, 10, 10)) for shape in shapes]  # built before the limit
limit = vm_bytes() + 512 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
settings = ImageSettings.square_of(336)
for image in images:
    for aspect in ("pad", "square"):
        assert preprocess_image(image, settings, aspect).shape == (3, 336, 336)
print("bounded")
"""


def test_extreme_shapes_preprocess_under_a_memory_limit():
    import subprocess
    import sys

    # 16,000,000 x 1 is inside the default pixel limit; padded literally it is 2.56e14 pixels, resized
    # literally (square) 5.4e9 x 336. Both modes must finish within 512 MiB more address space.
    done = subprocess.run([sys.executable, "-c", BOUNDED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "bounded" in done.stdout, done.stderr[-2000:]
