"""Family E (models/fame): anatomy randomisation over families A, C and D (plan-1.3.md round 10).

Determinism, twins sharing the anatomy draw, the drawn overrides staying in their declared ranges
(and covering each base family's own ranges), the base family's stream being untouched, and the
generator hashes: E's covers the families it wraps, A's, C's and D's do not move."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from fame import BASES, RANGES, draw_style, make_pair, make_plate
from plateqc_model import data as D
from synth.artifacts import ARTIFACT_NAMES, GLOBAL_TYPES

LOCAL = [t for t in ARTIFACT_NAMES if t not in GLOBAL_TYPES]
SCALE = 0.6


def _same(a, b):
    assert a.stored.tobytes() == b.stored.tobytes()
    assert a.brightness.tobytes() == b.brightness.tobytes()
    assert np.array_equal(a.diagnostic_mask, b.diagnostic_mask)
    assert a.artifacts == b.artifacts and a.usable == b.usable
    assert sorted(a.masks) == sorted(b.masks)
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k])
    assert a.info["fame"] == b.info["fame"]


@pytest.mark.parametrize("base", BASES)
def test_same_seed_same_pair(base):
    for seed in (3, 40):
        p1, t1 = make_pair(seed, scale=SCALE, style={"fame_base": base})
        p2, t2 = make_pair(seed, scale=SCALE, style={"fame_base": base})
        _same(p1, p2)
        assert p1.info["fame"]["base"] == base
        assert (t1 is None) == (t2 is None)
        if t1 is not None:
            _same(t1, t2)
    p, _ = make_pair(11, scale=SCALE, twin=False)
    _same(make_plate(11, scale=SCALE), p)


def _base_pair(base):
    if base == "a":
        from synth.plate import make_pair as mp
    elif base == "c":
        from famc import make_pair as mp
    else:
        from famd import make_pair as mp
    return mp


@pytest.mark.parametrize("base", BASES)
def test_base_family_runs_untouched_with_the_overrides(base):
    """E's plate is the base family's make_pair with the drawn style, bit for bit (so labels,
    artifacts, noise and display are the base family's own)."""
    seed = 5
    b, over = draw_style(seed, base)
    assert b == base
    p, t = make_pair(seed, scale=SCALE, style={"fame_base": base})
    q, u = _base_pair(base)(seed, scale=SCALE, style=dict(over))
    assert p.stored.tobytes() == q.stored.tobytes() and p.usable == q.usable
    assert p.artifacts == q.artifacts
    assert (t is None) == (u is None)
    assert p.info["fame"] == {"base": base, "style": over}


@pytest.mark.parametrize("base", BASES)
def test_twin_shares_the_anatomy(base):
    for i, seed in enumerate((60, 61)):
        arts = [dict(type=LOCAL[(3 * i + "acd".index(base)) % len(LOCAL)], severity=2,
                     placement="diag"),
                dict(type=LOCAL[(3 * i + 5) % len(LOCAL)], severity=1, placement="any")]
        p, tw = make_pair(seed, scale=SCALE, artifacts=arts, style={"fame_base": base})
        assert tw is not None and tw.usable and tw.artifacts == [] and tw.masks == {}
        assert tw.info["twin_of"] == seed
        assert tw.info["fame"] == p.info["fame"]
        # the twin is the clean rendering of the very same scene
        clean, none = make_pair(seed, scale=SCALE, artifacts=[], style={"fame_base": base})
        assert none is None
        assert clean.brightness.tobytes() == tw.brightness.tobytes()
        assert clean.stored.tobytes() == tw.stored.tobytes()
        if base in ("c", "d"):   # these families' twins equal the plate outside the masks
            union = np.zeros(p.stored.shape, bool)
            for m in p.masks.values():
                union |= m
            assert union.any()
            assert np.array_equal(p.brightness[~union], tw.brightness[~union])
            assert np.array_equal(p.stored[~union], tw.stored[~union])


def _own_styles(base, n):
    rng = np.random.default_rng(123)
    if base == "a":
        from synth.anatomy import sample_style
        return [sample_style(rng) for _ in range(n)]
    if base == "c":
        from famc.scene import sample_style
        return [sample_style(rng, False) for _ in range(n)]
    from famd.scene import sample_style
    return [sample_style(rng, None) for _ in range(n)]


def test_overrides_lie_in_the_declared_ranges_and_bases_cover_a_c_d():
    seen = []
    for seed in range(30):
        base, over = draw_style(31_000_000 + seed)
        seen.append(base)
        assert base in BASES
        assert set(over) == set(RANGES[base])
        for k, v in over.items():
            spec = RANGES[base][k]
            if spec[0] == "choice":
                assert v in spec[1]
            else:
                assert spec[1] <= v <= spec[2], (base, k, v)
        assert draw_style(31_000_000 + seed) == (base, over)
    assert set(seen) == set(BASES)
    # a forced base does not move the draws of that family's overrides
    for seed in range(5):
        b, over = draw_style(seed)
        assert draw_style(seed, b) == (b, over)


@pytest.mark.parametrize("base", BASES)
def test_ranges_are_keys_the_family_accepts_and_cover_its_own(base):
    own = _own_styles(base, 300)
    for k, spec in RANGES[base].items():
        assert k in own[0], f"{base} has no style key {k!r}"
        vals = [s[k] for s in own]
        if spec[0] == "choice":
            assert set(vals) <= set(spec[1])
            continue
        assert spec[1] >= 0 or k in ("overlap_mm", "overlap")
        assert spec[1] <= min(vals) and max(vals) <= spec[2], (base, k, min(vals), max(vals))
        if spec[0] == "log":
            assert spec[1] > 0 and math.isfinite(math.log(spec[1]))


def _hashes(monkeypatch, fams):
    out = {}
    for f in fams:
        monkeypatch.setattr(D, "FAMILY", [f])
        monkeypatch.setattr(D, "_IMPORT_HASH", [None])
        out[f] = D.data_hash({})
    return out


def test_generator_hashes(tmp_path, monkeypatch):
    srcs = {f: D.family_sources(f) for f in "acde"}
    e = srcs["e"]
    assert len(e) == len(set(e))
    assert {p.parent.name for p in e[:2]} == {"fame"}
    for f in "acd":
        assert set(srcs[f]) <= set(e), f"family E's hash misses family {f.upper()}'s files"
        assert not any(p.parent.name == "fame" for p in srcs[f])
    assert any(p.parent.name == "famd" for p in e) and any(p.name == "anatomy.py" for p in e)
    # on a copy of the sources: an edit to D changes D's and E's hash only, one to fame E's only
    for p in e:
        q = tmp_path / p.relative_to(D.HERE)
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, q)
    monkeypatch.setattr(D, "HERE", tmp_path)
    h0 = _hashes(monkeypatch, "acde")
    assert len(set(h0.values())) == 4
    with open(tmp_path / "famd" / "scene.py", "a") as fh:
        fh.write("\n# edit\n")
    h1 = _hashes(monkeypatch, "acde")
    assert [h1[f] != h0[f] for f in "acde"] == [False, False, True, True]
    with open(tmp_path / "fame" / "plate.py", "a") as fh:
        fh.write("\n# edit\n")
    h2 = _hashes(monkeypatch, "acde")
    assert [h2[f] != h1[f] for f in "acde"] == [False, False, False, True]
