"""sam2prune extends sam2 1.1.0 and copies a few pieces of it (sam2prune/sam2_copies.py): these
tests fail when the installed sam2 changes any function copied, overridden or relied on, and
check that an untested sam2 version is refused with a clear message."""

from __future__ import annotations

import pytest

from sam2prune import sam2_copies
from sam2prune.errors import InputError


@pytest.mark.parametrize("qualified_name", sorted(sam2_copies.FINGERPRINTS))
def test_sam2_source_is_the_one_the_copies_were_made_from(qualified_name):
    expected, why = sam2_copies.FINGERPRINTS[qualified_name]
    assert sam2_copies.source_fingerprint(qualified_name) == expected, (
        f"sam2's {qualified_name} changed ({why}): review sam2prune against the new source, then update its "
        "fingerprint in sam2prune/sam2_copies.py"
    )


def test_every_method_sam2prune_overrides_is_fingerprinted():
    """An override of a sam2 method that nobody fingerprinted could silently diverge."""
    import inspect

    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from sam2prune.predictor import PrunedSAM2VideoPredictor, SAM2Predictor

    overridden = set()
    for cls in (SAM2Predictor, PrunedSAM2VideoPredictor):
        for name, value in vars(cls).items():
            if inspect.isfunction(value) and not name.startswith("__"):
                for base in SAM2VideoPredictor.__mro__:
                    if name in vars(base):
                        overridden.add(f"{base.__module__}:{base.__qualname__}.{name}")
                        break
    missing = sorted(overridden - set(sam2_copies.FINGERPRINTS))
    assert not missing, f"overridden without a fingerprint: {missing}"


def test_a_changed_source_is_noticed(monkeypatch):
    name = "sam2.modeling.sam.transformer:RoPEAttention.forward"
    monkeypatch.setattr(sam2_copies.inspect, "getsource", lambda obj: "def forward(self): return 'changed'\n")
    assert sam2_copies.source_fingerprint(name) != sam2_copies.FINGERPRINTS[name][0]


def test_an_untested_sam2_version_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.setattr(sam2_copies, "installed_sam2_version", lambda: "1.2.0")
    monkeypatch.delenv(sam2_copies.ALLOW_UNTESTED_SAM2, raising=False)
    with pytest.raises(
        InputError, match=r"sam2 1\.2\.0 is installed, but sam2prune extends sam2 1\.1\.0.*pip install sam2==1\.1\.0"
    ):
        sam2_copies.check_sam2_version()
    from sam2prune import build_predictor

    with pytest.raises(InputError, match=r"1\.2\.0"):
        build_predictor(random_weights=True, image_size=128)
    monkeypatch.setenv(sam2_copies.ALLOW_UNTESTED_SAM2, "1")
    sam2_copies.check_sam2_version()
    monkeypatch.setattr(sam2_copies, "installed_sam2_version", lambda: "1.1.0")
    monkeypatch.delenv(sam2_copies.ALLOW_UNTESTED_SAM2)
    sam2_copies.check_sam2_version()
