"""GSB (Good / Same / Bad) side-by-side human rating of two models, as in the Kling reports.

A rater sees the clips of model A and model B for the same inputs side by side (left/right
randomised per pair, so the rater does not know which is which), and judges per dimension
whether A is better (good), the same, or worse (bad). The score of a dimension is
(G + S) / (B + S): above 1, A is preferred.

    html = export_pairs(pairs, out_dir, model_a="student", model_b="teacher")  # raters open it
    ratings = load_ratings(["alice.json", "bob.json"])                           # files it saves
    print(gsb_table(gsb_scores(ratings)))

`proxy_ratings` writes the same file format from objective metrics (`proxy_judge`), so CI runs
the same table without raters. The page is one static HTML file: no server, no external
resources; judgements are saved as a JSON download. The evaluation (flows/evaluate.py) exports
the page of a student against its teacher and logs both tables with the student's run.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from string import Template

from models.errors import InvalidInput

DIMENSIONS = ("overall", "visual_quality", "dynamic_quality", "identity", "motion_accuracy",
              "expression_accuracy")
JUDGEMENTS = ("good", "same", "bad")  # from model A's point of view
FORMAT = "motioncontrol-gsb/1"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

# Objective metrics behind each dimension for the proxy judge: (key, higher is better).
PROXY_METRICS = {
    "visual_quality": (("ssim", True), ("psnr", True)),
    "dynamic_quality": (("motion_smoothness", True), ("dynamic_degree", True)),
    "identity": (("id_similarity", True),),
    "motion_accuracy": (("pose_pck", True), ("hand_pck", True)),
    "expression_accuracy": (("face_nme", False),),
}


# --- the rating page -------------------------------------------------------------------------


def _copy_media(pair: dict, out_dir: Path) -> dict:
    """Copy one pair's files into out_dir/media; returns the page's record of the pair."""
    pid = str(pair.get("id", ""))
    if not _SAFE_ID.match(pid):
        raise InvalidInput(f"pair id {pid!r} must be 1-100 letters, digits, '_', '.' or '-' "
                           "(it names the copied files)")
    record = {"id": pid, "prompt": str(pair.get("prompt") or "")}
    for key in ("video_a", "video_b", "reference", "driving"):
        if pair.get(key) is None:
            if key in ("video_a", "video_b"):
                raise InvalidInput(f"pair {pid!r} has no {key}: give the path of its mp4")
            continue
        src = Path(pair[key])
        if not src.is_file():
            raise InvalidInput(f"pair {pid!r}: {key} {src} does not exist")
        name = f"media/{pid}_{key}{src.suffix.lower()}"
        shutil.copyfile(src, out_dir / name)
        record[key] = name
    return record


def export_pairs(pairs: list[dict], out_dir: Path, *, model_a: str, model_b: str,
                 seed: int = 0) -> Path:
    """Copy each pair's media into `out_dir` and write the rating page `out_dir/index.html`.

    pairs: dicts with `id`, `video_a`, `video_b` (mp4 paths of model A and B), and optionally
    `reference` (image), `driving` (mp4) and `prompt`. Which model is shown on the left is
    drawn per pair from `seed` (recorded in the page and in the saved file); the page maps the
    rater's left/right choices back to A's point of view. The mapping sits in the page's
    script: raters who read the source can see it. Returns the path of index.html."""
    if not pairs:
        raise InvalidInput("no pairs to export: give at least one pair of clips")
    ids = [str(p.get("id")) for p in pairs]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"pair ids must be unique, got duplicates in {ids}")
    out_dir = Path(out_dir)
    (out_dir / "media").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = [{**_copy_media(p, out_dir), "a_on_left": rng.random() < 0.5} for p in pairs]
    data = {"format": FORMAT, "model_a": model_a, "model_b": model_b, "seed": seed,
            "dimensions": list(DIMENSIONS), "pairs": records}
    page = out_dir / "index.html"
    payload = json.dumps(data, indent=1).replace("</", "<\\/")  # never closes the script tag
    page.write_text(_PAGE.substitute(data=payload, logic=_LOGIC), encoding="utf-8")
    return page


# The pure part of the page's script (no DOM): also run by the tests under node.
_LOGIC = """
function judgementForA(choice, aOnLeft) {
  // choice: "left" | "same" | "right" (which side the rater preferred)
  if (choice === "same") return "same";
  return (choice === "left") === aOnLeft ? "good" : "bad";
}
function ratingsFile(data, rater, choices) {
  // choices: {pairId: {dimension: "left"|"same"|"right"}}; unrated dimensions are left out
  const ratings = data.pairs.map(function (p) {
    const judgements = {};
    const chosen = choices[p.id] || {};
    data.dimensions.forEach(function (d) {
      if (chosen[d]) judgements[d] = judgementForA(chosen[d], p.a_on_left);
    });
    return {id: p.id, a_on_left: p.a_on_left, judgements: judgements};
  });
  return {format: data.format, rater: rater, model_a: data.model_a, model_b: data.model_b,
          seed: data.seed, ratings: ratings};
}
"""

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>GSB side-by-side rating</title>
<style>
 body { font-family: sans-serif; margin: 1em; }
 .pair { border: 1px solid #999; padding: 0.5em; margin-bottom: 1.5em; }
 .media { display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; }
 .media figure { margin: 0; }
 video, img { width: 256px; image-rendering: pixelated; }
 table { border-collapse: collapse; margin-top: 0.5em; }
 td, th { padding: 0.2em 0.6em; }
</style>
</head>
<body>
<h1>Side-by-side rating</h1>
<p>For each pair, judge per dimension whether the <b>left</b> or the <b>right</b> clip is
better, or whether they are the same. Then enter your name and download your ratings (a JSON
file) and send it back.</p>
<p><label>Your name: <input id="rater" type="text"></label></p>
<div id="pairs"></div>
<p><button id="save">Download ratings</button> <span id="status"></span></p>
<script id="gsb-data" type="application/json">$data</script>
<script id="gsb-logic">$logic</script>
<script>
const data = JSON.parse(document.getElementById("gsb-data").textContent);
const choices = {};
const container = document.getElementById("pairs");

function figure(label, element) {
  const fig = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = label;
  fig.appendChild(element);
  fig.appendChild(caption);
  return fig;
}
function video(src) {
  const v = document.createElement("video");
  v.src = src; v.controls = true; v.loop = true; v.muted = true; v.autoplay = true;
  return v;
}

data.pairs.forEach(function (p, i) {
  choices[p.id] = {};
  const box = document.createElement("div");
  box.className = "pair";
  const title = document.createElement("h2");
  title.textContent = "Pair " + (i + 1) + " of " + data.pairs.length + (p.prompt ? ": " + p.prompt : "");
  box.appendChild(title);
  const media = document.createElement("div");
  media.className = "media";
  if (p.reference) {
    const img = document.createElement("img");
    img.src = p.reference;
    media.appendChild(figure("reference", img));
  }
  if (p.driving) media.appendChild(figure("driving video", video(p.driving)));
  const left = p.a_on_left ? p.video_a : p.video_b;
  const right = p.a_on_left ? p.video_b : p.video_a;
  media.appendChild(figure("LEFT", video(left)));
  media.appendChild(figure("RIGHT", video(right)));
  box.appendChild(media);
  const table = document.createElement("table");
  data.dimensions.forEach(function (d) {
    const row = table.insertRow();
    row.insertCell().textContent = d.split("_").join(" ");
    [["left", "left better"], ["same", "same"], ["right", "right better"]].forEach(function (o) {
      const cell = row.insertCell();
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio"; input.name = p.id + ":" + d; input.value = o[0];
      input.addEventListener("change", function () { choices[p.id][d] = o[0]; });
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + o[1]));
      cell.appendChild(label);
    });
  });
  box.appendChild(table);
  container.appendChild(box);
});

document.getElementById("save").addEventListener("click", function () {
  const rater = document.getElementById("rater").value.trim();
  if (!rater) { document.getElementById("status").textContent = "enter your name first"; return; }
  const file = ratingsFile(data, rater, choices);
  const blob = new Blob([JSON.stringify(file, null, 1)], {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "gsb_" + rater.replace(/[^A-Za-z0-9_-]/g, "_") + ".json";
  link.click();
  document.getElementById("status").textContent = "saved " + link.download;
});
</script>
</body>
</html>
""")


# --- ratings files ---------------------------------------------------------------------------


def _validate(data: object, where: str) -> dict:
    """The checked content of one ratings file; InvalidInput says what is wrong where."""
    def fail(what: str):
        raise InvalidInput(f"{where}: {what}; ratings files are written by the GSB page "
                           "(index.html) or proxy_ratings, do not edit them by hand")

    if not isinstance(data, dict):
        fail("expected a JSON object")
    if data.get("format") != FORMAT:
        fail(f"format is {data.get('format')!r}, expected {FORMAT!r}")
    for key in ("rater", "model_a", "model_b"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            fail(f"'{key}' must be a non-empty string")
    if not isinstance(data.get("ratings"), list):
        fail("'ratings' must be a list")
    for i, rating in enumerate(data["ratings"]):
        if not isinstance(rating, dict) or not isinstance(rating.get("id"), str):
            fail(f"ratings[{i}] must be an object with a string 'id'")
        judgements = rating.get("judgements")
        if not isinstance(judgements, dict):
            fail(f"ratings[{i}] ({rating['id']}) has no 'judgements' object")
        for dim, value in judgements.items():
            if dim not in DIMENSIONS:
                fail(f"ratings[{i}] ({rating['id']}): unknown dimension {dim!r}, expected one "
                     f"of {DIMENSIONS}")
            if value not in JUDGEMENTS:
                fail(f"ratings[{i}] ({rating['id']}): {dim} is {value!r}, expected one of "
                     f"{JUDGEMENTS}")
    return data


def load_ratings(paths: str | Path | Iterable[str | Path]) -> list[dict]:
    """Read and validate ratings files (one per rater); InvalidInput names the file and what is
    wrong with it."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    out = []
    for path in map(Path, paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"{path}: ratings file not found") from None
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{path}: not valid JSON ({err})") from None
        out.append(_validate(data, str(path)))
    return out


def gsb_scores(ratings: list[dict]) -> dict[str, dict[str, float | int | None]]:
    """Counts and score per dimension over every judgement of every file (all files must
    compare the same two models): {"good": G, "same": S, "bad": B, "score": (G+S)/(B+S)}.
    When B + S == 0 the score is inf if G > 0 (A won every judgement) and None when the
    dimension has no judgement at all."""
    ratings = [_validate(r, f"ratings file {i} (rater {r.get('rater')!r})"
                         if isinstance(r, dict) else f"ratings file {i}")
               for i, r in enumerate(ratings)]
    models = {(r["model_a"], r["model_b"]) for r in ratings}
    if len(models) > 1:
        raise InvalidInput(f"ratings files compare different models {sorted(models)}; score "
                           "each comparison separately")
    counts = {d: dict.fromkeys(JUDGEMENTS, 0) for d in DIMENSIONS}
    for file in ratings:
        for rating in file["ratings"]:
            for dim, value in rating["judgements"].items():
                counts[dim][value] += 1
    scores = {}
    for dim, c in counts.items():
        g, s, b = c["good"], c["same"], c["bad"]
        score = (g + s) / (b + s) if b + s else (math.inf if g else None)
        scores[dim] = {**c, "score": score}
    return scores


def gsb_table(scores: dict[str, dict]) -> list[list]:
    """Rows for a terminal table: a header, then one row per dimension."""
    rows: list[list] = [["dimension", "good", "same", "bad", "(G+S)/(B+S)"]]
    for dim, s in scores.items():
        score = s["score"]
        shown = "n/a" if score is None else "inf" if math.isinf(score) else f"{score:.3f}"
        rows.append([dim, s["good"], s["same"], s["bad"], shown])
    return rows


# --- the objective proxy ---------------------------------------------------------------------


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def proxy_judge(metrics_a: dict, metrics_b: dict, *,
                tolerance: float = 0.02) -> dict[str, str]:
    """Good/same/bad per dimension from objective metrics, from A's point of view.

    Per metric of a dimension (PROXY_METRICS) the relative difference
    (a - b) / max(|a|, |b|) (sign flipped where lower is better: face_nme) is taken, and the
    dimension's mean over the metrics both sides have: above `tolerance` good, below
    -tolerance bad, else same. A dimension with no such metric is left out. overall is the
    majority of the judged dimensions (good vs bad count; a tie is same)."""
    out = {}
    for dim, metrics in PROXY_METRICS.items():
        deltas = []
        for key, higher_better in metrics:
            a, b = metrics_a.get(key), metrics_b.get(key)
            if _finite(a) and _finite(b):
                scale = max(abs(a), abs(b))
                delta = (a - b) / scale if scale > 0 else 0.0
                deltas.append(delta if higher_better else -delta)
        if deltas:
            mean = sum(deltas) / len(deltas)
            out[dim] = "good" if mean > tolerance else "bad" if mean < -tolerance else "same"
    if out:
        votes = list(out.values())
        good, bad = votes.count("good"), votes.count("bad")
        out["overall"] = "good" if good > bad else "bad" if bad > good else "same"
    return out


def proxy_ratings(per_clip_metrics_a: list[dict], per_clip_metrics_b: list[dict],
                  model_a: str, model_b: str, *, tolerance: float = 0.02) -> dict:
    """A ratings file (the format the page saves) judged by `proxy_judge`, one rating per
    clip; a clip's id is its metrics' "id" if present, else "clip-<index>"."""
    if len(per_clip_metrics_a) != len(per_clip_metrics_b):
        raise InvalidInput(f"{len(per_clip_metrics_a)} clips of {model_a} but "
                           f"{len(per_clip_metrics_b)} of {model_b}: rate the same clips")
    ratings = [{"id": str(a.get("id", f"clip-{i}")),
                "judgements": proxy_judge(a, b, tolerance=tolerance)}
               for i, (a, b) in enumerate(zip(per_clip_metrics_a, per_clip_metrics_b,
                                              strict=True))]
    return {"format": FORMAT, "rater": "proxy (objective metrics)", "model_a": model_a,
            "model_b": model_b, "seed": None, "ratings": ratings}
