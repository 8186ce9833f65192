"""medsg: reproducible companion to Med-StyleGAN2 (chest X-ray synthesis with a style-based GAN)."""

__version__ = "0.1.0"
