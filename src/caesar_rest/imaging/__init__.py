"""Image input: reading FITS images with their WCS and beam, and sky-geometry helpers."""

from caesar_rest.imaging.fits_image import (
    Beam,
    FitsImage,
    ImageError,
    celestial_frame_name,
    load_image,
    pixel_ellipse_to_sky,
    pixel_to_radec,
    sky_ellipse_to_pixel,
    sky_jacobian,
)

__all__ = [
    "Beam",
    "FitsImage",
    "ImageError",
    "celestial_frame_name",
    "load_image",
    "pixel_ellipse_to_sky",
    "pixel_to_radec",
    "sky_ellipse_to_pixel",
    "sky_jacobian",
]
