"""README.md and docs/: links resolve, the README stays a front page, and numbers agree.

The README and docs/*.md are the reference; docs/history/*.md is the study log.
A number stated on more than one page is read here from its results file, and
every page that states it must state the value the file holds.

Links and images are Markdown's ``[text](target)`` and ``![alt](target)``
outside code; a target with a scheme (``https:``, ``mailto:``) is not
checked. A ``#anchor`` must name a heading of the target page, slugged as
GitHub does (lower case, punctuation dropped, spaces to hyphens).
"""

import json
import re
import statistics
from pathlib import Path

import pytest

import helpers

README = helpers.ROOT / "README.md"
PAGES = [README, *sorted((helpers.ROOT / "docs").glob("*.md"))]
HISTORY = sorted((helpers.ROOT / "docs" / "history").glob("*.md"))
RESULTS = helpers.ROOT / "results"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    return CODE.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    """The link and image targets of a Markdown file, in order."""
    return LINK.findall(_prose(path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: ``The `table1` recipe`` -> ``the-table1-recipe``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_the_docs_pages_exist():
    assert len(PAGES) > 1, "docs/*.md is missing"


@pytest.mark.parametrize("page", PAGES + HISTORY,
                         ids=lambda p: p.relative_to(helpers.ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved.relative_to(helpers.ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_docs_page_links_back_to_the_readme():
    for page in PAGES[1:]:
        assert "../README.md" in links(page), f"{page.name} does not link back to the README"
    for page in HISTORY:
        assert "../../README.md" in links(page), f"history/{page.name} lacks the README link"


def test_every_history_page_is_indexed_and_names_its_reference_page():
    index = set(links(helpers.ROOT / "docs" / "history" / "README.md"))
    for page in HISTORY:
        if page.name != "README.md":
            assert page.name in index, f"docs/history/README.md does not list {page.name}"
            assert any(t.startswith("../") and t.endswith(".md") and t != "../../README.md"
                       for t in links(page)), f"history/{page.name} names no reference page"


def test_every_reference_page_links_its_history_or_is_history_free():
    for page in PAGES[1:]:
        if (helpers.ROOT / "docs" / "history" / page.name).exists():
            assert f"history/{page.name}" in [t.partition("#")[0] for t in links(page)], \
                f"{page.name} does not link its history page"


def test_the_readme_indexes_every_docs_page():
    indexed = set(links(README))
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in indexed, f"README.md does not link to docs/{page.name}"
    assert "docs/history/README.md" in indexed, "README.md does not link to docs/history/"


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it to 250 (docs/ for more)"
    first_screen = "\n".join(lines[:40])
    for command in ("make train", "make test"):
        assert command in first_screen, f"{command!r} is not in README.md's first 40 lines"
    setup = re.search(r"```bash\n(.*?)```", first_screen, re.DOTALL)
    assert setup, "README.md's first screen has no set-up block"
    commands = [line.split("#")[0].strip() for line in setup.group(1).splitlines()]
    assert [c for c in commands if c] == ["make train", "make test"], commands
    assert "pip install" not in first_screen, "optional installs go below the first screen"
    head = "\n".join(lines[:120])
    for what in ("make train", "SpatialTransformer", "python -m experiments.table1", "| model |"):
        assert what in head, f"{what!r} is not in README.md's first 120 lines"


def test_the_link_checker_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `code` title\n[a](b.md#c) ![i](img.png) `[no](x)`\n"
                    "```\n[no](y)\n```\n[w](https://example.com)\n")
    assert links(page) == ["b.md#c", "img.png", "https://example.com"]
    assert anchors(page) == {"a-code-title"}


# -- No diary in the reference: no commit hashes, no tracker numbers, no dates ------------

HASH = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
ISSUE = re.compile(r"\bissues? \d+", re.IGNORECASE)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
QUOTED = re.compile(r'"[^"\n]*"')  # a message quoted as the program prints it


def diary_marks(text: str) -> list[str]:
    """Commit hashes, tracker numbers and dates in ``text`` (quoted messages aside)."""
    return [m.group(0) for pattern in (HASH, ISSUE, DATE)
            for m in pattern.finditer(QUOTED.sub("", text))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(helpers.ROOT).as_posix())
def test_reference_pages_carry_no_hashes_tracker_numbers_or_dates(page):
    marks = diary_marks(page.read_text())
    assert not marks, f"{page.name}: {marks} belong in docs/history/ (say what and why instead)"


def test_code_comments_of_stn_carry_no_hashes_or_tracker_numbers():
    found = []
    for path in sorted((helpers.ROOT / "stn").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if HASH.search(line) or ISSUE.search(line):
                found.append(f"{path.relative_to(helpers.ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_diary_check_sees_hashes_issues_and_dates():
    assert diary_marks("at `b8735a0` (issue 26) on 2026-12-06") == [
        "b8735a0", "issue 26", "2026-12-06"]
    assert diary_marks('pid 4242 "since 2026-12-07 04:01" 0.9930 1e-3 deadbeef') == []


# -- One source for numbers: each claim below is read from its results file -------------

def _json(name: str):
    return json.loads((RESULTS / name).read_text())


def _flat(page: str) -> str:
    """A page's text with every run of whitespace one space (claims wrap across lines)."""
    return " ".join((helpers.ROOT / page).read_text().split())


def _default_run_claims() -> list[tuple[str, tuple[str, ...]]]:
    metrics = _json("seed_seed/metrics.json")
    rows = {r["run"]: r for r in _json("alignment.json")["runs"]}
    seeds = [rows[f"results/seed_seed{tail}"] for tail in ("", "_s1", "_s2")]
    accuracies = [f"{1 - r['error_percent'] / 100:.4f}" for r in seeds]
    assert accuracies[0] == f"{metrics['test_accuracy']:.4f}", "alignment.json vs metrics.json"
    mean = statistics.mean(1 - r["error_percent"] / 100 for r in seeds)
    both, training = ("README.md", "docs/training.md"), ("docs/training.md",)
    return [(f"test accuracy {accuracies[0]}", ("README.md",)),
            (f"| 0 | `make train` | {accuracies[0]} | {seeds[0]['rotation_ratio']:.3f} |",
             training),
            (f"rotation ratio {seeds[0]['rotation_ratio']:.3f}", ("README.md",)),
            (f"shift std {seeds[0]['shift_std_px']:.2f} px", both),
            (f"{accuracies[1]} and {accuracies[2]}", ("README.md",)),
            *[(f"| {accuracies[i]} | {seeds[i]['rotation_ratio']:.3f} |", training)
              for i in (1, 2)],
            (f"Mean test accuracy {mean:.4f}", training),
            (f"{round(metrics['train_seconds'])} s of training",
             ("README.md", "docs/training.md", "docs/performance.md"))]


def _bench_claims() -> list[tuple[str, tuple[str, ...]]]:
    text = (RESULTS / "bench_default_run.txt").read_text()
    ratios = re.findall(r"its training is ([\d.]+x) the previous default's", text)
    flops = re.findall(r"\|\s+([\d.]+) TFLOP \(([\d.]+x)\)", text)
    assert len(ratios) == 3 and len(flops) == 6, "results/bench_default_run.txt changed shape"
    (ours, share), previous = flops[1], flops[0][0]
    pages = ("README.md", "docs/performance.md")
    return [*[(f"{ratio}", pages) for ratio in ratios],
            (f"{ours} TFLOP", pages + ("docs/training.md",)),
            (f"against {previous}", pages + ("docs/training.md",)),
            (f"({share})", ("docs/performance.md",))]


def _screen_claims() -> list[tuple[str, tuple[str, ...]]]:
    chosen = sorted((v for v in _json("screen_fast_default.json")["variants"]
                     if set(v["fields"]) <= {"preset", "recipe", "conv_pooling", "seed"}
                     and v["fields"].get("conv_pooling")),
                    key=lambda v: v["fields"].get("seed", 0))
    assert len(chosen) == 3, "the fast-default screen's choice no longer has 3 seeds"
    errors = " / ".join(f"{v['val_error_percent']:.2f}%" for v in chosen)
    ratios = " / ".join(f"{v['val_rotation_spread_ratio']:.3f}" for v in chosen)
    return [(f"validation error {errors}", ("docs/training.md",)),
            (f"rotation ratio {ratios}", ("docs/training.md",)),
            (f"{chosen[0]['train_flops'] / 1e12:.1f} TFLOP a run", ("docs/training.md",))]


def _table1_claims() -> list[tuple[str, tuple[str, ...]]]:
    text = (RESULTS / "table1.md").read_text()
    seeds = re.findall(r"- (.+?) on (RTS|R) over 3 seeds: ([\d.]+ \+- [\d.]+) %", text)
    assert len(seeds) == 3, "results/table1.md's seed lines changed shape"
    hours = re.search(r"([\d.]+) CPU-hours", text).group(1)
    pages = ("README.md", "docs/table1.md")
    return [*[(f"{model} {value}%", pages) for model, _, value in seeds],
            (f"{hours} CPU-hours", pages)]


def _tc_claims() -> list[tuple[str, tuple[str, ...]]]:
    record = _json("calibration_tc.json")
    chosen, paper = record["chosen"], record["paper_error_percent"]["FCN"]
    pages = ("README.md", "docs/protocols.md")
    return [(f"{chosen['pieces']} crops of {chosen['piece_size']}x{chosen['piece_size']} px",
             pages),
            (f"{chosen['val_error_percent']:.2f}%", pages), (f"{paper}%", pages),
            *[(f"FCN {r['fcn_val_error_percent']:.2f}%", pages) for r in record["rulers"]],
            *[(f"{r['cnn_val_error_percent']:.2f}%", (*pages, "docs/table1.md"))
              for r in record["rulers"]]]


def _colocalisation_claims() -> list[tuple[str, tuple[str, ...]]]:
    runs = _json("colocalisation.json")["runs"]
    (run,) = [r for r in runs if r["dataset"] == "T" and r["digit"] == 1 and r["seed"] == 0]
    return [(f"{round(100 * run['localised_fraction'])}% localised",
             ("README.md", "docs/colocalisation.md"))]


def _volumes_claims() -> list[tuple[str, tuple[str, ...]]]:
    record = _json("volumes.json")
    tilt = record["tilt"]
    return [*[(f"{100 * record['models'][m]['test_error']:.2f}%", ("README.md", "docs/volumes.md"))
              for m in ("st", "baseline")],
            (f"{tilt['input_mean_deg']:.2f} degrees on average without the transformer, "
             f"{tilt['output_mean_deg']:.2f} through the ST's map", ("docs/volumes.md",)),
            (f"{tilt['input_mean_deg']:.1f} degrees, is unchanged", ("README.md",))]


CLAIMS = [*_default_run_claims(), *_bench_claims(), *_screen_claims(), *_table1_claims(),
          *_tc_claims(), *_colocalisation_claims(), *_volumes_claims()]


@pytest.mark.parametrize("claim,pages", CLAIMS, ids=[c for c, _ in CLAIMS])
def test_each_page_states_the_number_its_results_file_holds(claim, pages):
    _assert_stated(claim, pages)


def _assert_stated(claim: str, pages: tuple[str, ...]) -> None:
    missing = [page for page in pages if " ".join(claim.split()) not in _flat(page)]
    assert not missing, f"{missing} do not state {claim!r} (read from results/)"


def _first_table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_table1_on_the_pages_is_results_table1_md():
    table = _first_table((RESULTS / "table1.md").read_text())
    literal = _first_table((RESULTS / "table1_literal.md").read_text())
    readme = README.read_text().split("## Results", 1)[1]
    page = (helpers.ROOT / "docs" / "table1.md").read_text()
    assert _first_table(readme) == table
    assert _first_table(page.split("## All 32 cells", 1)[1]) == table
    assert _first_table(page.split("## The literal readings of P and E", 1)[1]) == literal


def _results_table(text: str, header: str) -> dict[str, list[str]]:
    """Rows of the first table under a line starting with ``header``: model -> cells."""
    rows = _first_table(text[text.index(header):])
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in row.strip("|").split("|")] for row in rows[2:])}


@pytest.mark.parametrize("page,header", [("README.md", "**MNIST addition**"),
                                         ("docs/addition.md", "## Results")])
def test_the_addition_tables_are_results_addition_json(page, header):
    cells = {c["model"]: c for c in _json("addition.json")["cells"]}
    rows = _results_table((helpers.ROOT / page).read_text(), header)
    assert set(cells) <= set(rows), f"{page} lacks rows for {set(cells) - set(rows)}"
    for model, (ours, paper) in rows.items():
        if model in cells:
            assert ours == f"{cells[model]['error_percent']:.2f}", (page, model)
            paper_error = cells[model]["paper_error_percent"]  # None: the paper did not try it
            assert paper == ("-" if paper_error is None else f"{paper_error}"), (page, model)
        else:
            assert ours == "not yet run", f"{page}: {model} has no record in addition.json"


def _alignment_claims() -> list[tuple[str, tuple[str, ...]]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in _json("alignment.json")["runs"]:
        if run["model"] == "ST-CNN Aff":
            groups.setdefault((run["method"], run["protocol"]), []).append(run)
    rows = {"paper": "the paper's (no term)", "consistency": "the term",
            "consistency+jitter0.05": "the term, jitter 0.05",
            "consistency+jitter": "the term, jitter 0.1"}
    claims = []
    for (method, protocol), runs in sorted(groups.items()):
        errors = [r["error_percent"] for r in runs]
        ratios = [r["rotation_ratio"] for r in runs]
        error = f"{statistics.mean(errors):.2f} +- {statistics.stdev(errors):.2f}"
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
        claims.append((f"| {rows[method]} | {protocol} | {error} | {spread} |",
                       ("docs/alignment.md",)))
        if (method, protocol) == ("paper", "R"):
            claims.append((f"R from {spread}", ("README.md",)))
        if (method, protocol) == ("consistency+jitter0.05", "R"):
            claims.append((f"to {spread} over 3 seeds, at test error {error}%", ("README.md",)))
    return claims


@pytest.mark.parametrize("claim,pages", _alignment_claims(),
                         ids=[c for c, _ in _alignment_claims()])
def test_the_alignment_numbers_are_results_alignment_json(claim, pages):
    _assert_stated(claim, pages)
