"""The image settings a model is exported with: the CLIP image processor's size, crop, mean, std
and resampling. They belong to the model (its vision tower was trained with them, its export saves
them as preprocessor_config.json); the data pipeline and the inference engine read them from here
to preprocess images (mqt_llava.data.images)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from mqt_llava.model.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


@dataclass(frozen=True)
class ImageSettings:
    shortest_edge: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = Image.Resampling.BICUBIC

    @classmethod
    def square_of(cls, size: int, **kwargs) -> ImageSettings:
        return cls(shortest_edge=size, crop_height=size, crop_width=size, **kwargs)

    @classmethod
    def from_processor(cls, processor) -> ImageSettings:
        """Settings of a Hugging Face CLIP image processor (either backend)."""
        return cls(
            shortest_edge=processor.size["shortest_edge"],
            crop_height=processor.crop_size["height"],
            crop_width=processor.crop_size["width"],
            mean=tuple(processor.image_mean),
            std=tuple(processor.image_std),
            resample=int(processor.resample),
        )

    def to_processor(self):
        """The CLIP image processor with these settings, to save beside a model (from_processor's
        inverse)."""
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil(
            size={"shortest_edge": self.shortest_edge},
            crop_size={"height": self.crop_height, "width": self.crop_width},
            image_mean=list(self.mean),
            image_std=list(self.std),
            resample=self.resample,
        )

    @property
    def background(self) -> tuple[int, int, int]:
        """LLaVA's padding colour: the mean, in 0..255."""
        return tuple(int(x * 255) for x in self.mean)
