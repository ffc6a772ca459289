"""The static gallery page (parsed, not rendered) and the names it exports."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from navcuda.cli import main
from navcuda.gallery import NamesError, apply_names, build_gallery, set_digest
from navcuda.models.checkpoints import save_generator

VOID = {"meta", "img", "input", "br", "hr", "link", "source", "wbr", "area", "col", "embed"}


class Page(HTMLParser):
    """Records the tag structure, every img, the cards and the text of the inline scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_page_structure_images_scores_and_escaping(
    tmp_path, tiny_generator, svd_set, scores, evil_name
):
    EVIL = evil_name

    index = build_gallery(
        tiny_generator,
        svd_set,
        tmp_path / "site",
        seeds=[0, 1],
        ts=[-1, 0, 1],
        scores=scores,
        source="dirs.nav",
    )
    assert index == tmp_path / "site" / "index.html"
    page = parse(index)
    assert not page.errors and page.stack == [], (page.errors, page.stack)
    cards = [a for t, a in page.tags if t == "article" and "card" in a.get("class", "")]
    assert [c["data-index"] for c in cards] == ["0", "1", "2", "3"]
    imgs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(imgs) == 8  # a strip and a GIF per direction
    for src in imgs:
        assert src.startswith("data:") or (index.parent / src).is_file(), src
    assert {Path(s).suffix for s in imgs} == {".png", ".gif"}
    # Nothing is loaded from the network.
    for _, a in page.tags:
        for key in ("src", "href"):
            assert not str(a.get(key, "")).startswith(("http:", "https:", "//")), a
    # Exactly the two inline scripts of the template: the data block and the code; the name that
    # looks like markup is an attribute value / text, not a tag.
    assert [a.get("type") for t, a in page.tags if t == "script"] == ["application/json", None]
    names = [a["value"] for t, a in page.tags if t == "input" and "name" in a.get("class", "")]
    assert names == ["sv0", "sv1", "sv2", EVIL]
    raw = index.read_text(encoding="utf-8")
    assert "<script>alert" not in raw and "&lt;script&gt;alert" in raw
    data = json.loads(page.scripts[0])
    assert data["set"]["directions"] == set_digest(svd_set) and data["set"]["file"] == "dirs.nav"
    assert data["directions"][3]["name"] == EVIL
    assert data["scoreKeys"] == ["disentanglement", "toy: hue"]
    # Scores: a table on the cards that have them, and sort options for each key.
    text = " ".join(page.text)
    assert text.count("disentanglement") >= 3 and "toy: hue" in text
    captions = [a for t, a in page.tags if t == "table"]
    assert len(captions) == 3
    options = [a["value"] for t, a in page.tags if t == "option"]
    assert "score:disentanglement" in options and "value" in options and "index" in options
    assert "singular value" in text
    # The keyboard shortcuts are documented on the page.
    kbd = set(re.findall(r"<kbd>([^<]+)</kbd>", raw))
    assert {"g", "b", "n", "Enter", "Tab", "/", "e"} <= kbd
    # The strip is rows x columns of 16 px images with 2 px padding.
    from PIL import Image

    assert Image.open(index.parent / imgs[0]).size == (3 * 18 + 2, 2 * 18 + 2)
    assert Image.open(index.parent / imgs[1]).n_frames == 4


def test_no_scores_and_bad_scores(tmp_path, tiny_generator, svd_set):
    index = build_gallery(tiny_generator, svd_set.subset([0]), tmp_path, seeds=1, ts=[0, 1])
    page = parse(index)
    assert not [a for t, a in page.tags if t == "table"]
    with pytest.raises(ValueError, match="out of range"):
        build_gallery(tiny_generator, svd_set, tmp_path, seeds=1, ts=[0], scores={7: {"a": 1}})
    with pytest.raises(ValueError, match="number or a string"):
        build_gallery(tiny_generator, svd_set, tmp_path, seeds=1, ts=[0], scores=[{"a": [1]}])


def test_gallery_streams_cards_and_takes_a_range_of_seeds(tmp_path, tiny_generator, svd_set,
                                                          monkeypatch):  # fmt: skip
    """Each direction's strip and GIF are on disk as soon as they are rendered (an interrupted
    build leaves them); a ``range`` of seeds is never listed, and the page names it briefly."""
    import navcuda.rendering as rendering
    from navcuda.gallery import estimate_gallery

    real, calls = rendering.synthesize_shifted, []

    def synthesize(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(rendering, "synthesize_shifted", synthesize)
    with pytest.raises(KeyboardInterrupt):  # batches of one direction's 2 x 2 images
        build_gallery(tiny_generator, svd_set, tmp_path, seeds=2, ts=[0, 1], batch_size=4)
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["000.gif", "000.png"]
    monkeypatch.undo()

    index = build_gallery(tiny_generator, svd_set.subset([0]), tmp_path / "r",
                          seeds=range(10**9, 10**9 + 9), ts=[0])  # fmt: skip
    text = index.read_text(encoding="utf-8")
    assert "seeds 1000000000, 1000000001, 1000000002, ..., 1000000008 (9 seeds)" in text
    with pytest.raises(ValueError, match=r"strip holds every seed: 10000000000 seeds x 1 "):
        build_gallery(tiny_generator, svd_set, tmp_path / "x", seeds=range(10**10), ts=[0])
    assert not (tmp_path / "x").exists()
    est = estimate_gallery(tiny_generator, 4, 10**6, 5, seconds_per_image=1e-3)
    assert est.files == 8 and est.bytes_in_memory >= 4 * 10**6 * 5 * 3 * 16 * 16
    assert "8 files" in est.describe()


def _names_file(path, ds, entries, **set_extra):
    info = {"file": "dirs.nav", "directions": set_digest(ds), **set_extra}
    path.write_text(json.dumps({"set": info, "names": entries}))
    return path


def test_apply_names(tmp_path, svd_set):
    f = _names_file(
        tmp_path / "names.json",
        svd_set,
        {
            "0": {"name": " Smile ", "mark": "good"},
            "1": {"name": None, "mark": "bad"},
            "2": {"mark": None},
        },
    )
    out = apply_names(svd_set, f)
    assert out.names[:3] == ["Smile", None, "sv2"]
    assert out.extra["marks"] == {"0": "good", "1": "bad"}
    assert out.by_name("smile").meta["set_index"] == 0
    assert svd_set.names[0] == "sv0" and "marks" not in svd_set.extra  # the input is unchanged
    assert torch.equal(out.coefficients, svd_set.coefficients)
    # Clearing a mark removes it.
    again = apply_names(out, {"names": {"0": {"mark": None}}})
    assert again.extra["marks"] == {"1": "bad"}


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ({"9": {"name": "x"}}, r"unknown direction index 9: the set has 4 directions \(0\.\.3\)"),
        ({"-1": {"name": "x"}}, "bad direction index"),
        ({"a": {"name": "x"}}, "bad direction index"),
        ({"0": {"mark": "great"}}, "must be 'good', 'bad' or null"),
        ({"0": {"name": 3}}, "must be a string"),
        ({"0": {"nom": "x"}}, "unknown fields"),
        ({"0": {"name": "Same"}, "1": {"name": "same"}}, "both be called"),
    ],
)
def test_apply_names_rejects(tmp_path, svd_set, entries, match):
    with pytest.raises(NamesError, match=match):
        apply_names(svd_set, _names_file(tmp_path / "n.json", svd_set, entries))


def test_apply_names_refuses_another_directions_default_label(tmp_path, svd_set, capsys):
    """An unnamed direction is labelled method + index ("svd0"): naming another direction that
    (any case) would give two directions one label, in subsets (``--only``) and renders."""
    unnamed = {"0": {"name": None}}
    for entries, i, n in [
        ({**unnamed, "2": {"name": "svd0"}}, 2, "'svd0'"),
        ({**unnamed, "1": {"name": " SVD0 "}}, 1, "'SVD0'"),
        ({"2": None, "0": "svd2"}, 0, "'svd2'"),
    ]:
        j = 2 if i == 0 else 0
        with pytest.raises(
            NamesError,
            match=rf"^names: direction {i} would be called {n}, the label of direction {j}, "
            rf"which has no name .*; name direction {j} too, or rename direction {i}$",
        ):
            apply_names(svd_set, {"names": entries})
    # Clearing a name can clash too: direction 1 of this subset is explicitly "svd0" (the label
    # subset wrote for it), and direction 0 would fall back to "svd0" as well.
    picked = apply_names(svd_set, {"names": unnamed}).subset([1, 0])
    assert picked.names == ["sv1", "svd0"]
    with pytest.raises(NamesError, match="direction 1 would be called 'svd0', the label of dir"):
        apply_names(picked, {"names": unnamed})
    # A direction named its own label, or another's while that one is named too, is fine.
    assert apply_names(svd_set, {"names": {"0": "svd0"}}).names[0] == "svd0"
    out = apply_names(svd_set, {"names": {"0": "smile", "2": "svd0"}})
    assert [d.name for d in out][:3] == ["smile", "sv1", "svd0"]
    # The command line says the same and leaves the file alone.
    path = apply_names(svd_set, {"names": unnamed}).save(tmp_path / "dirs.nav")
    before = path.read_bytes()
    names = _names_file(tmp_path / "names.json", svd_set, {"3": {"name": "svd0"}})
    assert main(["name", str(path), str(names)]) == 2
    err = capsys.readouterr().err
    assert "direction 3 would be called 'svd0', the label of direction 0" in err
    assert path.read_bytes() == before


def test_apply_names_file_errors(tmp_path, svd_set):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NamesError, match="not valid JSON"):
        apply_names(svd_set, bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        apply_names(svd_set, tmp_path / "missing.json")
    with pytest.raises(NamesError, match="'names'"):
        apply_names(svd_set, {"set": {}, "names": []})
    other = {"set": {"directions": "0123456789abcdef"}, "names": {"0": {"name": "x"}}}
    with pytest.raises(NamesError, match="another direction set"):
        apply_names(svd_set, other)
    assert apply_names(svd_set, other, allow_other_set=True).names[0] == "x"


def test_cli_gallery_name_and_serve(tmp_path, tiny_generator, svd_set, monkeypatch, capsys):
    import http.server

    ckpt = str(save_generator(tiny_generator, tmp_path / "g.safetensors"))
    dirs = svd_set.subset([0, 1]).save(tmp_path / "dirs.nav")
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"0": {"disentanglement": 0.7}}))
    served = {}

    def fake_serve_forever(self, *a, **k):
        served["address"] = self.server_address
        raise KeyboardInterrupt

    monkeypatch.setattr(http.server.ThreadingHTTPServer, "serve_forever", fake_serve_forever)
    args = ["gallery", str(dirs), "-o", str(tmp_path / "site"), "--checkpoint", ckpt]
    args += ["--seeds", "0", "--t", "-1:1:3", "--scores", str(scores), "--serve", "--port", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert served["address"][0] == "127.0.0.1"
    assert f"http://127.0.0.1:{served['address'][1]}/" in out
    page = parse(tmp_path / "site" / "index.html")
    assert len([a for t, a in page.tags if t == "article"]) == 2
    assert "disentanglement" in " ".join(page.text)

    names = _names_file(
        tmp_path / "names.json", svd_set.subset([0, 1]), {"1": {"name": "Smile", "mark": "good"}}
    )
    named = tmp_path / "named.nav"
    assert main(["name", str(dirs), str(names), "-o", str(named)]) == 0
    assert "1 marked good" in capsys.readouterr().out
    from navcuda.io.directions import DirectionSet

    ds = DirectionSet.load(named)
    assert ds.names == ["sv0", "Smile"] and ds.extra["marks"] == {"1": "good"}
    bad = _names_file(tmp_path / "bad.json", svd_set.subset([0, 1]), {"5": {"name": "x"}})
    assert main(["name", str(dirs), str(bad)]) == 2
    assert "unknown direction index 5" in capsys.readouterr().err
    assert DirectionSet.load(dirs).names == ["sv0", "sv1"]  # untouched on error
