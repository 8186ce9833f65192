"""Small builders shared by the test files (imported as ``from helpers import ...``)."""

from medsg_lib.config import TrainConfig


def tiny_cfg(model: str = "medsg", **kw) -> TrainConfig:
    """A training config of tiny, fast networks at 32 px (4 iterations, log every step, checkpoint every 2)."""
    base = dict(
        model=model, img_size=32, batch_size=4, iterations=4, base_width=8, max_width=32, mapping_hidden=32,
        ngf=8, ndf=8, gan_hidden=64, ds_decay_iters=4, log_every=1, sample_every=2, ckpt_every=2,
        device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})
