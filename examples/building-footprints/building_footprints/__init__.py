"""Building footprints from OpenAerialMap drone imagery: a PyTorch U-Net model package."""
