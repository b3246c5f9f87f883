"""GSB tooling: the rating page, ratings files, scores, and the objective proxy."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest

from models.errors import InvalidInput
from models.gsb import (
    DIMENSIONS,
    export_pairs,
    gsb_scores,
    gsb_table,
    load_ratings,
    proxy_judge,
    proxy_ratings,
)


@pytest.fixture()
def pairs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    out = []
    for i in range(6):
        for name in ("a", "b", "drive"):
            (src / f"{i}_{name}.mp4").write_bytes(f"{i}{name}".encode())
        (src / f"{i}_ref.png").write_bytes(b"png")
        out.append({"id": f"clip-{i}", "video_a": src / f"{i}_a.mp4",
                    "video_b": src / f"{i}_b.mp4", "driving": src / f"{i}_drive.mp4",
                    "reference": src / f"{i}_ref.png", "prompt": f"prompt {i}"})
    return out


def page_data(html: str) -> dict:
    return json.loads(re.search(r'id="gsb-data"[^>]*>(.*?)</script>', html, re.S).group(1))


def test_export_writes_one_static_page_and_copies_media(pairs, tmp_path):
    page = export_pairs(pairs, tmp_path / "gsb", model_a="student", model_b="teacher", seed=3)
    html = page.read_text()
    assert page.name == "index.html"
    for dim in DIMENSIONS:
        assert dim in html
    data = page_data(html)
    assert [p["id"] for p in data["pairs"]] == [f"clip-{i}" for i in range(6)]
    for p in data["pairs"]:
        assert (page.parent / p["video_a"]).read_bytes() == f"{p['id'][-1]}a".encode()
        assert (page.parent / p["driving"]).is_file() and (page.parent / p["reference"]).is_file()
    sides = [p["a_on_left"] for p in data["pairs"]]
    assert len(set(sides)) == 2  # both orders occur
    again = export_pairs(pairs, tmp_path / "again", model_a="student", model_b="teacher", seed=3)
    assert page_data(again.read_text())["pairs"] == data["pairs"]  # the seed fixes the order
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html
    assert data["model_a"] == "student" and data["seed"] == 3


def test_export_rejects_bad_pairs(pairs, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        export_pairs([{**pairs[0], "video_b": tmp_path / "nope.mp4"}], tmp_path / "x",
                     model_a="a", model_b="b")
    with pytest.raises(InvalidInput, match="unique"):
        export_pairs([pairs[0], pairs[0]], tmp_path / "x", model_a="a", model_b="b")
    with pytest.raises(InvalidInput, match="pair id"):
        export_pairs([{**pairs[0], "id": "../up"}], tmp_path / "x", model_a="a", model_b="b")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_page_maps_left_right_choices_back_to_model_a(pairs, tmp_path):
    """The page's own script (run under node) writes a file that load_ratings accepts, with
    each choice seen from A's side."""
    page = export_pairs(pairs[:2], tmp_path / "gsb", model_a="student", model_b="teacher")
    html = page.read_text()
    logic = re.search(r'<script id="gsb-logic">(.*?)</script>', html, re.S).group(1)
    data = page_data(html)
    first, second = data["pairs"]
    left_is = {p["id"]: ("good" if p["a_on_left"] else "bad") for p in data["pairs"]}
    choices = {first["id"]: {"overall": "left", "identity": "same"},
               second["id"]: {"overall": "right"}}
    script = (logic + f"\nprocess.stdout.write(JSON.stringify(ratingsFile("
              f"{json.dumps(data)}, 'alice', {json.dumps(choices)})));")
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    (tmp_path / "alice.json").write_text(result.stdout)
    [file] = load_ratings(tmp_path / "alice.json")
    got = {r["id"]: r["judgements"] for r in file["ratings"]}
    flip = {"good": "bad", "bad": "good"}
    assert got[first["id"]] == {"overall": left_is[first["id"]], "identity": "same"}
    assert got[second["id"]] == {"overall": flip[left_is[second["id"]]]}
    assert file["rater"] == "alice" and file["model_b"] == "teacher"


def ratings_file(rater: str, judgements: list[dict]) -> dict:
    return {"format": "motioncontrol-gsb/1", "rater": rater, "model_a": "student",
            "model_b": "teacher", "seed": 0,
            "ratings": [{"id": f"c{i}", "judgements": j} for i, j in enumerate(judgements)]}


def test_load_ratings_rejects_malformed_files(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ratings_file("bob", [{"overall": "good"}])))
    assert load_ratings([good])[0]["rater"] == "bob"
    cases = {
        "broken.json": ("{not json", "not valid JSON"),
        "value.json": (json.dumps(ratings_file("bob", [{"overall": "better"}])),
                       r"overall is 'better'"),
        "dim.json": (json.dumps(ratings_file("bob", [{"colour": "good"}])),
                     "unknown dimension 'colour'"),
        "rater.json": (json.dumps(ratings_file("", [])), "'rater' must be"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidInput, match=message) as err:
            load_ratings([good, tmp_path / name])
        assert name in str(err.value)
    with pytest.raises(InvalidInput, match="not found"):
        load_ratings(tmp_path / "missing.json")


def test_gsb_scores_arithmetic(tmp_path):
    alice = ratings_file("alice", [{"overall": "good", "identity": "good"},
                                   {"overall": "same", "identity": "good"},
                                   {"overall": "bad"}])
    bob = ratings_file("bob", [{"overall": "good", "visual_quality": "bad"}])
    paths = []
    for f in (alice, bob):
        paths.append(tmp_path / f"{f['rater']}.json")
        paths[-1].write_text(json.dumps(f))
    scores = gsb_scores(load_ratings(paths))
    assert scores["overall"] == {"good": 2, "same": 1, "bad": 1, "score": 1.5}
    assert scores["identity"]["score"] == math.inf  # B + S == 0, G > 0
    assert scores["visual_quality"]["score"] == 0.0
    assert scores["motion_accuracy"]["score"] is None  # never judged
    table = gsb_table(scores)
    assert table[0][0] == "dimension" and len(table) == len(DIMENSIONS) + 1
    assert ["overall", 2, 1, 1, "1.500"] in table and ["identity", 2, 0, 0, "inf"] in table
    other = {**bob, "model_b": "baseline"}
    with pytest.raises(InvalidInput, match="different models"):
        gsb_scores([alice, other])


def test_proxy_judge_good_same_bad():
    a = {"ssim": 0.80, "psnr": 25.0, "pose_pck": 0.70, "hand_pck": 0.20, "face_nme": 0.10,
         "id_similarity": 0.90, "motion_smoothness": 0.98, "dynamic_degree": 1.0}
    b = {**a, "ssim": 0.70, "psnr": 22.0, "face_nme": 0.20, "id_similarity": 0.905}
    judged = proxy_judge(a, b)
    assert judged["visual_quality"] == "good"
    assert judged["expression_accuracy"] == "good"  # lower NME is better
    assert judged["identity"] == "same" and judged["motion_accuracy"] == "same"
    assert judged["overall"] == "good"
    reverse = proxy_judge(b, a)
    assert reverse["visual_quality"] == "bad" and reverse["overall"] == "bad"
    assert proxy_judge(a, b, tolerance=0.5)["visual_quality"] == "same"
    assert "identity" not in proxy_judge({"ssim": 0.5}, {"ssim": 0.5, "id_similarity": 0.9})
    assert "identity" not in proxy_judge({"id_similarity": math.nan}, {"id_similarity": 0.9})


def test_proxy_ratings_round_trip(tmp_path):
    a = [{"id": "x", "ssim": 0.9, "pose_pck": 0.8}, {"ssim": 0.5, "pose_pck": 0.8}]
    b = [{"id": "x", "ssim": 0.6, "pose_pck": 0.8}, {"ssim": 0.6, "pose_pck": 0.8}]
    file = proxy_ratings(a, b, "student", "teacher")
    path = tmp_path / "proxy.json"
    path.write_text(json.dumps(file))
    [loaded] = load_ratings(path)
    assert [r["id"] for r in loaded["ratings"]] == ["x", "clip-1"]
    scores = gsb_scores([loaded])
    assert scores["visual_quality"] == {"good": 1, "same": 0, "bad": 1, "score": 1.0}
    assert scores["motion_accuracy"]["same"] == 2
    with pytest.raises(InvalidInput, match="same clips"):
        proxy_ratings(a, b[:1], "student", "teacher")
