"""Data sets and loaders."""

from rediffuse.data.images import (
    ImageSet,
    load_array,
    load_digits,
    load_image_folder,
    load_images,
    load_mnist_idx,
    random_hflip,
)

__all__ = [
    "ImageSet",
    "load_array",
    "load_digits",
    "load_image_folder",
    "load_images",
    "load_mnist_idx",
    "random_hflip",
]
