"""Training and fine-tuning loops."""

from codesign.train.loops import distillation_loss, set_bn_frozen, train

__all__ = ["distillation_loss", "set_bn_frozen", "train"]
