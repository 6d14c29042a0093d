"""Which test images a model classified right, stored compactly beside its top-1.

A paired test (:mod:`codesign.stats`) judges two models from the images on which they
disagree, so each scored variant keeps its per-image correctness of the test split: one bit per
image in the split's fixed order (``numpy.packbits``, most significant bit first, base64), the
number of images, and the sha256 of the split's images and labels. Two vectors are paired only
when that digest matches: they then cover the same images in the same order. 1,017 CIFAR-10
test images take 128 bytes (172 base64 characters); 50,000 ImageNet images about 8 kB.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from codesign.errors import ResultError
from codesign.io import check_json_keys


@dataclasses.dataclass(frozen=True)
class PerImageCorrect:
    """Correctness of ``samples`` test images (``bits``: base64 of the packed bits, image 0
    in the most significant bit of byte 0; padding bits are 0) on the split whose images and
    labels hash to ``split_sha256``."""

    samples: int
    split_sha256: str
    bits: str

    @classmethod
    def of(cls, correct: Any, split_sha256: str) -> PerImageCorrect:
        """From a boolean vector [samples] (torch tensor, on any device, or numpy array).

        >>> PerImageCorrect.of(np.array([True, False, True]), "d").bits
        'oA=='
        """
        if hasattr(correct, "detach"):
            correct = correct.detach().cpu().numpy()
        vector = np.asarray(correct, dtype=np.bool_)
        if vector.ndim != 1 or vector.size == 0:
            raise ResultError(f"per-image correctness must be a non-empty vector: {vector.shape}")
        packed = np.packbits(vector, bitorder="big").tobytes()
        return cls(int(vector.size), split_sha256, base64.b64encode(packed).decode("ascii"))

    def vector(self) -> np.ndarray:
        """The correctness as a boolean numpy vector [samples]."""
        return _unpack(self.bits, self.samples)

    @property
    def correct(self) -> int:
        """How many images are right."""
        return int(np.count_nonzero(self.vector()))

    def pairs_with(self, other: PerImageCorrect) -> bool:
        """True when both cover the same images in the same order (same split digest and
        size): only then is a paired test meaningful."""
        return self.split_sha256 == other.split_sha256 and self.samples == other.samples

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PerImageCorrect:
        """The inverse of :meth:`to_json`; a :class:`ResultError` for anything that does not
        decode to exactly ``samples`` bits with zero padding."""
        check_json_keys(data, ("samples", "split_sha256", "bits"), "per-image correctness")
        samples, digest, bits = data["samples"], data["split_sha256"], data["bits"]
        if type(samples) is not int or samples < 1 or not isinstance(digest, str):
            raise ResultError("per-image correctness: samples must be >= 1, digest a string")
        if not isinstance(bits, str):
            raise ResultError("per-image correctness: bits must be a base64 string")
        _unpack(bits, samples)
        return cls(samples, digest, bits)


def _unpack(bits: str, samples: int) -> np.ndarray:
    try:
        packed = base64.b64decode(bits.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ResultError("per-image correctness: bits are not base64") from None
    if len(packed) != (samples + 7) // 8:
        raise ResultError(
            f"per-image correctness: {len(packed)} bytes do not hold {samples} images"
        )
    unpacked = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), bitorder="big")
    if unpacked[samples:].any():
        raise ResultError("per-image correctness: padding bits are not zero")
    return unpacked[:samples].astype(np.bool_)
