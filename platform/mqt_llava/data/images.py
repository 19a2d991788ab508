"""LLaVA's image preprocessing, kept in uint8 until the model normalises.

`pad` (LLaVA-1.5's image_aspect_ratio="pad"): expand to a square filled with the processor's mean
colour, then resize. `square` (LLaVA's default): resize the shortest edge and centre-crop. Both use
the CLIP image processor's size, crop size, resampling and mean, so a vision tower's own processor
config is the single source of truth.

Cost is bounded by the output, whatever the aspect ratio. Up to `EXACT_SIDE` pixels on a side (every
LLaVA image), the pixels are exactly LLaVA's. Past it, neither mode allocates what a literal reading
would (a 16,000,000 x 1 image padded is 2.56e14 pixels; resized to a 336 shortest edge it is 5.4e9):
`pad` first shrinks the long side to `EXACT_SIDE`, `square` resamples only the span the crop keeps,
which is the same resampling (the same filter centres and support) as the full resize then crop.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image

from mqt_llava.model.image_settings import ImageSettings

Aspect = Literal["pad", "square"]
ASPECTS: tuple[str, ...] = ("pad", "square")
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # far above any LLaVA image; stops decompression bombs
EXACT_SIDE = 4096  # past this side (pad) or this side squared (square's resize), the bounded path runs


class ImageError(ValueError):
    """An image that cannot be used; `reason` is a stable key for reject counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> RGB PIL image, checking the pixel count from the header before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError("image_too_large", f"{width}x{height} exceeds the {max_pixels} pixel limit")
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("image_too_large", str(exc)) from exc
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageError("undecodable_image", f"{type(exc).__name__}: {exc}") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels are composited onto white, as transformers'
    convert_to_rgb does; 16-bit and float grayscale are rescaled to 8 bits rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        gray = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, P, CMYK, YCbCr, 1, ...


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA's expand2square; an image longer than EXACT_SIDE is first shrunk to that long side (the
    square would otherwise be max(w, h)^2 pixels, 1.9 GB for a 143-byte 20000 x 1 PNG)."""
    width, height = image.size
    if width == height:
        return image
    if max(width, height) > EXACT_SIDE:
        scale = EXACT_SIDE / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((width, height), resample=Image.Resampling.BOX)
    side = max(width, height)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def resize_and_crop(image: Image.Image, settings: ImageSettings) -> Image.Image:
    """The CLIP processor's resize (shortest edge, long edge truncated as transformers does) and
    centre crop."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = settings.shortest_edge, int(settings.shortest_edge * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    left = (size[0] - settings.crop_width) // 2
    top = (size[1] - settings.crop_height) // 2
    if size[0] * size[1] > EXACT_SIDE * EXACT_SIDE:
        # Resample only the crop's span of the source: output pixel i of the full resize is centred at
        # (i + 0.5) * scale, so the box from left * scale keeps every centre and filter support.
        sx, sy = width / size[0], height / size[1]
        box = (left * sx, top * sy, (left + settings.crop_width) * sx, (top + settings.crop_height) * sy)
        return image.resize((settings.crop_width, settings.crop_height), resample=settings.resample, box=box)
    if size != image.size:
        image = image.resize(size, resample=settings.resample)
    return image.crop((left, top, left + settings.crop_width, top + settings.crop_height))


def preprocess_image(image: Image.Image, settings: ImageSettings, aspect: Aspect = "pad") -> np.ndarray:
    """PIL image -> (3, H, W) uint8 array ready for the model."""
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    image = to_rgb(image)
    if aspect == "pad":
        image = expand_to_square(image, settings.background)
    image = resize_and_crop(image, settings)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
